"""Where a node's CPU goes: py-spy samples of its processes, summed into a short table.

py-spy (``pip install -e '.[bench]'``) samples each node process from outside, with
``--gil``: a sample is taken only from the thread holding the GIL, so what it counts is Python
running, and native code called with the GIL held (lxml, libxmlsec1, asn1crypto's Python,
``cryptography``'s signatures). Native code that lets the GIL go (SQLite's statements,
hashing large buffers, ``fsync``, socket I/O) is not counted, and is named in the table's
note. Each sample is charged to an area by the innermost frame of the project's own code on its
stack (so the library work a project function asks for is that function's area); a sample
with no project frame is charged by its innermost library (the event loop, aiosmtpd, ssl...).

Run alone against a running node:
    .venv/bin/python -m benchmarks.profile --pid PID [--pid PID ...] --seconds 30
or through ``benchmarks.bench_relay --profile DIR``, which profiles hs02's node processes
over the whole timed window (py-spy stopped at its end, ``stop``) and prints the table.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

RATE = 200  # samples per second and process
UNTIL_STOPPED = 24 * 3600.0  # seconds: a profile ended by ``stop``, not by py-spy's clock
# Project files → area, first match wins (paths as py-spy prints them, relative to the root).
PROJECT_AREAS = (
    ("interop/evidence/xades", "evidence XAdES signatures (python-xmlsec, lxml)"),
    ("interop/evidence/", "evidence XML model (lxml)"),
    ("interop/cms/", "CMS signatures and RFC 3161 tokens (asn1crypto, cryptography)"),
    ("relay/tsa", "CMS signatures and RFC 3161 tokens (asn1crypto, cryptography)"),
    ("interop/pathval", "certificate paths and revocation"),
    ("interop/revocation", "certificate paths and revocation"),
    ("interop/trust", "certificate paths and revocation"),
    ("interop/envelope/", "envelope MIME (parse, build)"),
    ("interop/", "interop, other"),
    ("relay/store/", "store (SQL and its Python)"),
    ("relay/spool", "spool and mailbox files"),
    ("relay/mailbox", "spool and mailbox files"),
    ("relay/smtp/", "SMTP server (aiosmtpd and ours)"),
    ("relay/transport/", "SMTP client (aiosmtplib and ours)"),
    ("relay/logs", "logging (structlog)"),
    ("relay/metrics", "metrics (prometheus-client)"),
    ("relay/", "relay stages and lifecycle"),
)
# Library frames (no project frame on the stack) → area.
LIBRARY_AREAS = (
    ("aiosmtpd/", "SMTP server (aiosmtpd and ours)"),
    ("aiosmtplib/", "SMTP client (aiosmtplib and ours)"),
    ("email/", "SMTP server (aiosmtpd and ours)"),  # aiosmtpd parses addresses with it
    ("ssl.py", "TLS (ssl)"),
    ("sslproto.py", "TLS (ssl)"),
    ("structlog/", "logging (structlog)"),
    ("prometheus_client/", "metrics (prometheus-client)"),
    ("sqlite3/", "store (SQL and its Python)"),
    ("psycopg", "store (SQL and its Python)"),
    ("asyncio/", "event loop and thread hand-offs"),
    ("concurrent/", "event loop and thread hand-offs"),
    ("threading.py", "event loop and thread hand-offs"),
    ("selectors.py", "event loop and thread hand-offs"),
    ("uvloop/", "event loop and thread hand-offs"),
)
# The frames every sample of a node process starts with (the command line, the event loop's
# runner): not an area of their own.
RUNNERS = ("relay/cli/", "relay/processes.py")
_FRAME_FILE = re.compile(r"\((?P<file>[^():]+)(?::\d+)?\)\s*$")


def record(pids: Iterable[int], seconds: float, folder: Path) -> list[subprocess.Popen[bytes]]:
    """Start py-spy on each process (raw folded stacks into ``folder``); returns them."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        raise SystemExit("py-spy is not installed: pip install -e '.[bench]'")
    folder.mkdir(parents=True, exist_ok=True)
    return [
        subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(int(seconds)),
                "--rate",
                str(RATE),
                "--gil",
                "--nonblocking",
                "--format",
                "raw",
                "--output",
                str(folder / f"node-{pid}.folded"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for pid in pids
    ]


def stop(spies: Iterable[subprocess.Popen[bytes]]) -> None:
    """End each py-spy now (SIGINT, as Control-C: it writes what it sampled) and wait."""
    for spy in spies:
        if spy.poll() is None:
            spy.send_signal(signal.SIGINT)
    for spy in spies:
        spy.wait()


def area_of(frames: list[str]) -> str:
    """The area of one sample; ``frames`` from the outermost to the innermost."""
    files = [m.group("file") for f in frames if (m := _FRAME_FILE.search(f))]
    for file in reversed(files):
        if file.startswith(RUNNERS):
            continue
        for prefix, area in PROJECT_AREAS:
            if file.startswith(prefix):
                return area
    for file in reversed(files):
        for marker, area in LIBRARY_AREAS:
            if marker in file:
                return area
    return "other"


def areas(folded: Iterable[Path]) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    for path in folded:
        for line in path.read_text(errors="replace").splitlines():
            stack, _, number = line.rpartition(" ")
            if not number.isdigit():
                continue
            counts[area_of(stack.split(";")[1:])] += int(number)  # [0]: the thread
    return counts


def per_dispatch(
    counts: collections.Counter[str], dispatches: float, cpu_ms: float, processes: int
) -> str:
    """Markdown: ms of GIL-held time per Dispatch in each area, from samples taken while
    ``dispatches`` were carried; the rest of ``cpu_ms`` (the node's CPU per Dispatch from its
    own counters) is what ran without the GIL."""
    rows = []
    held = 0.0
    for area, n in counts.most_common():
        ms = n / RATE * 1000 / dispatches
        held += ms
        rows.append(f"| {area} | {ms:.2f} |")
    rows.append(
        f"| without the GIL (SQLite, fsync, sockets and TLS records, thread switches, the"
        f" kernel) | {max(0.0, cpu_ms - held):.2f} |"
    )
    return "\n".join(
        [
            "| area | ms of CPU per Dispatch |",
            "|---|---|",
            *rows,
            f"| **all (the node's own counters)** | **{cpu_ms:.2f}** |",
            f"\n{sum(counts.values())} samples of {processes} node process(es), py-spy --gil at"
            f" {RATE}/s, over {dispatches:.0f} Dispatches",
        ]
    )


def table(counts: collections.Counter[str], cpu_ms: float | None = None) -> str:
    """Markdown: each area's share of the samples, and of ``cpu_ms`` when given."""
    total = sum(counts.values()) or 1
    head = "| area | share of samples |" + (" ≈ ms per Dispatch |" if cpu_ms else "")
    rule = "|---|---|" + ("---|" if cpu_ms else "")
    rows = [
        f"| {area} | {100 * n / total:.1f} % |" + (f" {cpu_ms * n / total:.2f} |" if cpu_ms else "")
        for area, n in counts.most_common()
    ]
    return "\n".join([head, rule, *rows, f"\n{total} samples (py-spy --gil, {RATE}/s)"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pid", type=int, action="append", default=[])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=Path("profile-raw"))
    parser.add_argument("--cpu-ms", type=float, default=None, help="CPU per Dispatch, to split")
    parser.add_argument("folded", nargs="*", type=Path, help="summarise these files instead")
    args = parser.parse_args()
    files = list(args.folded)
    if args.pid:
        for spy in record(args.pid, args.seconds, args.out):
            spy.wait()
        files += sorted(args.out.glob("node-*.folded"))
    print(table(areas(files), args.cpu_ms))


if __name__ == "__main__":
    main()
