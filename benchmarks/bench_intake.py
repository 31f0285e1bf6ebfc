"""A small received message's content: held in the store with its row, or a spool file.

For each Dispatch (a 4 KiB original in the envelope hs01 sends, as ``bench_relay`` builds it),
what the node does with its bytes from the 250 to their removal, in one process on SQLite:

* intake's commit (``PeerIntake._commit``, as the listener calls it after DATA);
* the claim's read (``NodeContext.receive``), and the move to ``processed``;
* retention's removal (``retention.sweep``) and, held, the purge of the store's files.

``held`` is the node as it runs on SQLite; ``file`` the same code with the store made to say it
cannot forget deleted bytes (``Database.forgets_deleted``, as PostgreSQL does), so every
message is a spool file: created, written, fsync'd, renamed, its folder fsync'd, read back,
removed. The two alternate, each in a fresh data folder, ``--rounds`` times. Prints the CPU
(user and system, this process's own counters) and the wall time per message of each, and
their difference.

Run:  .venv/bin/python -m benchmarks.bench_intake [--messages N] [--rounds N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import structlog
from aiosmtpd.smtp import Envelope

from benchmarks.hs02 import dev_pki, dispatch, hs02_in_process
from interop.pki.devpki import DevPki
from relay.lifecycle import Kind, State
from relay.smtp.server import Connection
from relay.spool import SpoolWriter
from relay.stages import retention
from relay.stages.intake import PeerIntake

MODES = ("held", "file")


def run(pki: DevPki, messages: list[bytes], mode: str) -> tuple[float, float]:
    """CPU and wall seconds per message, from intake's commit to the content's removal."""
    with hs02_in_process(pki) as context:
        if mode == "file":
            context.store.database.forgets_deleted = False
        intake = PeerIntake(context, lambda: None)
        envelope = Envelope()
        envelope.mail_from = "ali.yilmaz@hs01.kep.tr"
        envelope.rcpt_tos = ["ayse.demir@hs02.kep.tr"]
        connection = Connection(("127.0.0.1", 2525), provider="hs01")
        cpu, wall = time.process_time(), time.perf_counter()
        for number, data in enumerate(messages):
            writer = intake.open_sink(connection, envelope)
            assert isinstance(writer, SpoolWriter)
            writer.write(data)
            reply = intake._commit(  # the commit as the listener makes it after DATA
                writer,
                kind=Kind.DISPATCH_IN,
                peer="hs01",
                remmd_id=f"bench-{number}@hs01.kep.tr",
                envelope=envelope,
            )
            assert reply.code == 250, str(reply)
        for row in context.store.claim_received(context.owner, context.now(), 60, len(messages)):
            received = context.receive(row)
            assert received.data is not None
            with context.store.transaction() as db:
                context.store.move(db, row, State.PROCESSED)
        removed = retention.sweep(context)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        assert removed == len(messages), removed
        assert list(context.spool.msg_dir.iterdir()) == []
    return cpu / len(messages), wall / len(messages)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # errors only
    pki = dev_pki()
    messages = [dispatch(pki, n, 4096) for n in range(args.messages)]
    print(f"{args.messages} Dispatches of {len(messages[0])} bytes a round, SQLite")
    results: dict[str, list[tuple[float, float]]] = {mode: [] for mode in MODES}
    for _ in range(args.rounds):
        for mode in MODES:
            results[mode].append(run(pki, messages, mode))
    for mode in MODES:
        cpus = ", ".join(f"{c * 1e3:.3f}" for c, _ in results[mode])
        walls = ", ".join(f"{w * 1e3:.3f}" for _, w in results[mode])
        print(f"  {mode}: CPU per message {cpus} ms; wall {walls} ms")
    held = statistics.mean(c for c, _ in results["held"])
    filed = statistics.mean(c for c, _ in results["file"])
    print(f"  held in the store saves {(filed - held) * 1e3:.3f} ms of CPU per message")


if __name__ == "__main__":
    main()
