"""Filing a message (``Mailboxes.put``) into an empty folder and into one of 50,000 messages.

Issue 13, requirement 2: the cost of a Dispatch must not grow with what the node holds. A
delivery under a message's first claim (``fresh_until``: the normal path) writes without
listing the folder; a replay (after a crash or a takeover) lists it to find an earlier copy.
Prints the CPU time (the process's, so fsync waits do not count) and the wall time per put of
4 KiB for both paths and both folders; the folder is filled as the node fills it
(``benchmarks.prefill.fill_mailboxes``: half read, in cur/).

Run:  .venv/bin/python -m benchmarks.bench_mailbox [--held N] [--puts N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchmarks.prefill import fill_mailboxes
from relay.mailbox import Mailboxes

ADDRESS = "ayse.demir@hs02.kep.tr"
MESSAGE = b"x" * 4096


def measure(held: int, puts: int, *, replay: bool) -> tuple[float, float]:
    """(CPU ms, wall ms) per put into a folder holding ``held`` messages."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        now = time.time()
        fill_mailboxes(root, [ADDRESS], held, now=now)
        boxes = Mailboxes(root, [])
        fresh = None if replay else now + 3600
        cpu, wall = time.process_time(), time.perf_counter()
        for i in range(puts):
            boxes.put(ADDRESS, "INBOX", f"{i:024x}-1", MESSAGE, fresh_until=fresh)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        return cpu / puts * 1000, wall / puts * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--held", type=int, default=50_000, help="messages in the full folder")
    parser.add_argument("--puts", type=int, default=200)
    args = parser.parse_args()
    print(f"Mailboxes.put of 4 KiB, {args.puts} puts each, CPU (wall) per put")
    for replay in (False, True):
        path = "replay (searches the folder)" if replay else "first claim (fresh_until)"
        figures = [measure(held, args.puts, replay=replay) for held in (0, args.held)]
        (cpu0, wall0), (cpu1, wall1) = figures
        print(
            f"  {path:30} empty: {cpu0:6.2f} ms ({wall0:5.2f} ms)"
            f"   {args.held} held: {cpu1:6.2f} ms ({wall1:5.2f} ms)"
        )


if __name__ == "__main__":
    main()
