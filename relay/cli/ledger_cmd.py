"""``kep-relay ledger verify|checkpoint``: the evidence ledger of profile §7, offline.

``verify`` recomputes the hash chain, verifies every evidence signature and every signed
checkpoint; ``checkpoint`` signs the chain head now (the running node does so daily).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from interop.errors import KepError
from interop.evidence import xmlio
from interop.evidence.xades import verify_evidence
from relay import ledger
from relay.config import embedded_default, load
from relay.context import NodeContext, build_context


def register(commands: Any) -> None:
    ledger = commands.add_parser("ledger", help="the evidence ledger (profile §7)")
    lsub = ledger.add_subparsers(dest="ledger_command", required=True, metavar="ACTION")
    verify = lsub.add_parser("verify", help="check the hash chain and every evidence signature")
    verify.add_argument("--config", type=Path)
    verify.set_defaults(run=run_ledger_verify)
    checkpoint = lsub.add_parser("checkpoint", help="sign the chain head now (the node does daily)")
    checkpoint.add_argument("--config", type=Path)
    checkpoint.set_defaults(run=run_ledger_checkpoint)


def _context(args: argparse.Namespace) -> NodeContext:
    return build_context(load(args.config) if args.config else embedded_default())


def run_ledger_verify(args: argparse.Namespace) -> int:
    context = _context(args)
    count, problem = context.store.verify_ledger()
    if problem:
        print(f"ledger: INVALID after {count} records: {problem}")
        return 1
    bad = 0
    rows = context.store.db.execute("SELECT id, xml FROM evidence ORDER BY created")
    for evidence_id, xml in rows:
        try:
            issuer = xmlio.issuer_of(xmlio.safe_parse(bytes(xml)))
            entry = context.verifiers.trust.owner_of(issuer.rsplit("@", 1)[-1])
            if entry is None:
                raise KepError(f"issuer {issuer} is not in the trust list")
            result = verify_evidence(
                bytes(xml), context.clock(), context.verifiers.process(entry.id)
            )
            if not result.ok:
                raise KepError(result.detail)
        except KepError as exc:
            bad += 1
            print(f"evidence {evidence_id}: {exc.detail}")
    checked, problems = ledger.verify_checkpoints(context)
    for line in problems:
        print(line)
    print(
        f"ledger: {count} records, chain intact; {count - bad} evidence signatures valid"
        + (f", {bad} INVALID" if bad else "")
        + f"; {checked - len(problems)} of {checked} signed checkpoints valid"
    )
    return 1 if bad or problems else 0


def run_ledger_checkpoint(args: argparse.Namespace) -> int:
    taken = ledger.take(_context(args))
    print(f"checkpoint: {taken.records} records, head {taken.head.hex()}")
    return 0
