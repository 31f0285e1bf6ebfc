"""A Dispatch through one node process, the network apart: the CPU of the node's own work.

For each Dispatch (a 4 KiB original in the envelope hs01 sends, as ``bench_relay`` builds it),
in one process on SQLite, with the node's code as it runs (small work in place):

* intake after DATA (``PeerIntake.finish``: the envelope read, committed with its row);
* the claim as a node process makes it (``Node.claim``'s query, naming what it read) and the
  R-GW (``process_dispatch``: verify, deliver, sign both evidence, queue their messages);
* the queue manager's pass (``outbound.send_due``: claims, entries, the outcome recorded)
  with a transport that answers 250 at once, so no SMTP client or TLS is in the figure;
* retention's sweep.

The whole gateway (``bench_relay``) adds the SMTP server and client, TLS, the event loop's
turns between connections, a second node process sharing the store, and a machine's drift
between runs of ±20 %; this one is a single thread doing one message after another, whose CPU
moves a few per cent between runs, so a change of a few per cent can be seen: run it on the
code before and after, in turn (``--rounds``).

Prints the CPU (user and system, this process's own counters) and wall time per Dispatch of
each round, and checks what each Dispatch came to (processed, Relay and Delivery evidence
queued and sent).

Run:  .venv/bin/python -m benchmarks.bench_dispatch [--messages N] [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import statistics
import time

from aiosmtpd.smtp import Envelope

from benchmarks.hs02 import RECIPIENTS, dev_pki, dispatch, hs02_in_process
from interop.envelope.smime import build_signed_message
from interop.pki.devpki import DevPki
from relay import logs
from relay.context import NodeContext
from relay.lifecycle import Kind, State
from relay.node import PROCESSORS
from relay.readings import READER_FIRST, Received
from relay.smtp.server import Connection
from relay.spool import SpoolWriter
from relay.stages import outbound, retention
from relay.stages.intake import PeerIntake, SubmissionIntake
from relay.steps import IN_PLACE
from relay.store import MessageRow
from relay.transport.base import Entry, Outcome, Result

BLOCK = 4096  # bytes of DATA handed to the spool writer at a time, as the listener does
SEND_EVERY = 20  # messages between two passes of the queue manager
SUBMITTER = "ayse.demir@hs02.kep.tr"  # --submissions: a user of hs02
PEER_RECIPIENT = "ali.yilmaz@hs01.kep.tr"  # and the user of hs01 she writes to


class Accepting:
    """A peer that takes every message at once."""

    def __init__(self) -> None:
        self.sent = 0

    async def send(self, entry: Entry) -> Result:
        self.sent += 1
        return Result(Outcome.DELIVERED, "250 2.0.0 Ok", 250, host="hs01")

    async def close(self) -> None:
        return None


def _claim(context: NodeContext) -> list[tuple[MessageRow, Received]]:
    """One message as a node process claims it (``Node.claim``), with what it received."""
    now = context.now()
    mine = context.readings.waiting(now, 9)
    lease = context.config.store.lease
    rows = context.store.claim_received(context.owner, now, lease, 1, mine)
    if not rows:
        rows = context.store.claim_awaited(context.owner, now, lease, 1, READER_FIRST)
    return [(row, context.receive(row)) for row in rows]


def submission(pki: DevPki, number: int) -> bytes:
    """A user's message as hs02's own systems submit it: signed with the sender's e-imza, a
    4 KiB body, to a user of hs01 (so the S-GW makes a Dispatch for hs01)."""
    user = pki.user(SUBMITTER)
    return build_signed_message(
        user.signer,
        sender=user.address,
        recipients=[PEER_RECIPIENT],
        subject=f"Yük {number}",
        body="x" * 4096,
        now=dt.datetime.now(dt.UTC),
    )


async def _run(context: NodeContext, messages: list[bytes], submissions: bool) -> int:
    intake: PeerIntake | SubmissionIntake = (
        SubmissionIntake(context, lambda: None)
        if submissions
        else PeerIntake(context, lambda: None)
    )
    connection = Connection(("127.0.0.1", 2525), provider=None if submissions else "hs01")
    transport = Accepting()
    for number, data in enumerate(messages):
        envelope = Envelope()
        if submissions:
            envelope.mail_from, envelope.rcpt_tos = SUBMITTER, [PEER_RECIPIENT]
        else:
            envelope.mail_from = "ali.yilmaz@hs01.kep.tr"
            envelope.rcpt_tos = [RECIPIENTS[number % len(RECIPIENTS)]]
        sink = intake.open_sink(connection, envelope)
        assert isinstance(sink, SpoolWriter)
        for start in range(0, len(data), BLOCK):
            sink.write(data[start : start + BLOCK])
        reply = await intake.finish(connection, envelope, sink)
        assert reply.code == 250, str(reply)
        for row, received in _claim(context):
            await PROCESSORS[row.kind](context, row, IN_PLACE, received)
        if (number + 1) % SEND_EVERY == 0:
            await outbound.send_due(context, transport)
    while await outbound.send_due(context, transport):
        pass
    retention.sweep(context)
    return transport.sent


def run(pki: DevPki, messages: list[bytes], submissions: bool = False) -> tuple[float, float]:
    """CPU and wall seconds per message, from intake to retention."""
    with hs02_in_process(pki) as context:
        cpu, wall = time.process_time(), time.perf_counter()
        with open(os.devnull, "w") as nowhere, contextlib.redirect_stderr(nowhere):
            # Its log lines written, as a node's.
            sent = asyncio.run(_run(context, messages, submissions))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        kind = Kind.SUBMISSION if submissions else Kind.DISPATCH_IN
        processed = context.store.messages(kind=kind)
        assert all(m.state is State.PROCESSED for m in processed), "not every one processed"
        assert len(processed) == len(messages)
        # A Dispatch to hs01 for each submission; two Evidence messages for each Dispatch.
        expected = (1 if submissions else 2) * len(messages)
        assert sent == expected, f"{sent} messages sent, not {expected}"
    return cpu / len(messages), wall / len(messages)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--submissions",
        action="store_true",
        help="the S-GW instead: hs02's users' submissions, each made a Dispatch to hs01",
    )
    args = parser.parse_args()
    logs.configure("json")
    pki = dev_pki()
    if args.submissions:
        messages = [submission(pki, n) for n in range(args.messages)]
        what = "submissions (S-GW)"
    else:
        messages = [dispatch(pki, n, 4096) for n in range(args.messages)]
        what = "Dispatches (R-GW)"
    print(f"{args.messages} {what} of {len(messages[0])} bytes a round, SQLite, one process")
    results = [run(pki, messages, args.submissions) for _ in range(args.rounds)]
    cpus = ", ".join(f"{c * 1e3:.2f}" for c, _ in results)
    walls = ", ".join(f"{w * 1e3:.2f}" for _, w in results)
    median = statistics.median(c for c, _ in results) * 1e3
    print(f"  CPU per message: {cpus} ms (median {median:.2f})")
    print(f"  wall per message: {walls} ms")


if __name__ == "__main__":
    main()
