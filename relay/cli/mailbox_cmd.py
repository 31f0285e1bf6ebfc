"""``kep-relay mailbox list|show|read`` and ``kep-relay ledger verify``: a node's data, offline.

``read`` opens a message as its recipient would, so it issues the Retrieval evidence; the
running node sends it on its next pass over the queue.
"""

from __future__ import annotations

import argparse
import sys
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

from interop.envelope.fields import decode_text
from interop.errors import KepError
from interop.evidence import xmlio
from interop.evidence.xades import verify_evidence
from relay import ledger
from relay.config import embedded_default, load
from relay.context import NodeContext, build_context
from relay.stages.retrieval import retrieve


def register(commands: Any) -> None:
    mailbox = commands.add_parser("mailbox", help="read an account's mailbox")
    sub = mailbox.add_subparsers(dest="mailbox_command", required=True, metavar="ACTION")
    for action, text in (
        ("list", "list messages"),
        ("show", "print a message"),
        ("read", "open a message as its recipient (issues Retrieval evidence)"),
    ):
        p = sub.add_parser(action, help=text)
        p.add_argument("--config", type=Path)
        p.add_argument("address")
        p.add_argument("--folder", choices=("INBOX", "Sent", "Delil"), default="INBOX")
        if action != "list":
            p.add_argument("number", type=int, help="the number `list` shows")
        p.set_defaults(run=run_mailbox, action=action)
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


def run_mailbox(args: argparse.Namespace) -> int:
    context = _context(args)
    if context.mailboxes.account(args.address) is None:
        print(f"kep-relay: {args.address} has no account here", file=sys.stderr)
        return 2
    messages = context.mailboxes.list(args.address, args.folder)
    if args.action == "list":
        for number, (path, seen) in enumerate(messages, 1):
            with path.open("rb") as handle:
                headers = BytesHeaderParser(policy=default_policy).parse(handle)
            subject = decode_text(str(headers.get("Subject", "")))
            print(
                f"{number:4} {'   ' if seen else 'new'} {headers.get('Date', '')[:31]:31} "
                f"{str(headers.get('From', ''))[:32]:32} {subject}"
            )
        if not messages:
            print("(empty)")
        return 0
    if not 1 <= args.number <= len(messages):
        print(f"kep-relay: there is no message {args.number} in {args.folder}", file=sys.stderr)
        return 2
    path, _seen = messages[args.number - 1]
    sys.stdout.buffer.write(path.read_bytes())
    if args.action == "read" and args.folder == "INBOX":
        issued = retrieve(context, args.address, path)
        if issued is not None:
            print(f"\n-- Retrieval evidence {issued.evidence.identifier} issued", file=sys.stderr)
    return 0


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
