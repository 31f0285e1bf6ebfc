"""``kep-relay ledger verify|checkpoint|archive``: the evidence ledger of profile §7, offline.

``verify`` recomputes the hash chain, verifies the archive time-stamp chain, every evidence
signature (as of the time its time-stamp proves, with the CRLs kept in the ledger) and every
signed checkpoint, as of ``--at`` (now by default); ``checkpoint`` signs the chain head now
(the running node does so daily, with an archive stamp); ``archive`` time-stamps the ledger
again now (when an algorithm weakens, say).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from typing import Any

from relay import ledger
from relay.cli.target import add_config, open_node
from relay.cli.verify_cmd import moment

# How often ``ledger verify`` says how far it is (on stderr).
PROGRESS_EVERY = 2.0


def register(commands: Any) -> None:
    ledger = commands.add_parser("ledger", help="the evidence ledger (profile §7)")
    lsub = ledger.add_subparsers(dest="ledger_command", required=True, metavar="ACTION")
    verify = lsub.add_parser("verify", help="check the hash chain and every evidence signature")
    add_config(verify)
    verify.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    verify.add_argument(
        "--at", type=moment, help="verify as of this ISO 8601 time (UTC if no zone)"
    )
    verify.set_defaults(run=run_ledger_verify)
    archive = lsub.add_parser("archive", help="time-stamp the ledger again now (RFC 4998 idea)")
    add_config(archive)
    archive.set_defaults(run=run_ledger_archive)
    checkpoint = lsub.add_parser("checkpoint", help="sign the chain head now (the node does daily)")
    add_config(checkpoint)
    checkpoint.set_defaults(run=run_ledger_checkpoint)


class Progress:
    """Prints ``done of records`` on stderr every ``PROGRESS_EVERY`` seconds."""

    def __init__(self) -> None:
        self.started = self.said = time.monotonic()

    def __call__(self, done: int, records: int) -> None:
        now = time.monotonic()
        if now - self.said < PROGRESS_EVERY and done < records:
            return
        if done == records and self.said == self.started:
            return  # quick: no line needed
        self.said = now
        rate = done / max(now - self.started, 1e-9)
        left = (records - done) / rate if rate else 0.0
        print(
            f"ledger: {done} of {records} evidence signatures checked"
            f" ({100 * done // max(records, 1)} %, about {left:.0f} s left)",
            file=sys.stderr,
            flush=True,
        )


def run_ledger_verify(args: argparse.Namespace) -> int:
    context = open_node(args)
    at = args.at or dt.datetime.now(dt.UTC)
    report = ledger.verify(context, at, progress=None if args.quiet else Progress())
    if report.chain_problem:
        print(f"ledger: INVALID: {report.chain_problem}")
        return 1
    for line in (*report.archive.problems, *report.evidence_problems, *report.checkpoint_problems):
        print(line)
    bad = len(report.evidence_problems)
    stamps = len(report.archive.stamps)
    print(
        f"ledger: {report.records} records, chain intact;"
        f" {report.records - bad} evidence signatures valid"
        + (f", {bad} INVALID" if bad else "")
        + f"; {report.checkpoints - len(report.checkpoint_problems)} of {report.checkpoints}"
        " signed checkpoints valid"
        + f"; {stamps} archive time-stamps valid"
        + (f", the chain broken: {len(report.archive.problems)}" if report.archive.problems else "")
    )
    return 0 if report.ok else 1


def run_ledger_archive(args: argparse.Namespace) -> int:
    context = open_node(args)
    if not context.stamping.configured:
        print("kep-relay: no time-stamping authority is configured", file=sys.stderr)
        return 2
    # Another node process may extend the chain at the same moment: then stamp again on it.
    for _ in range(3):
        if ledger.archive(context):
            break
    records, head = context.store.ledger_head()
    print(f"archive stamp: {records} records, head {head.hex()}")
    return 0


def run_ledger_checkpoint(args: argparse.Namespace) -> int:
    context = open_node(args)
    for _ in range(3):  # a node process may store one at the same moment: take it again after
        taken = ledger.take(context)
        if taken is not None:
            print(f"checkpoint: {taken.records} records, head {taken.head.hex()}")
            return 0
    print("kep-relay: node processes kept taking checkpoints meanwhile; try again", file=sys.stderr)
    return 1
