"""Benchmark of the outbound transport's memory (run on demand, not in the test suite).

Relays one 1 MiB and one 25 MiB Dispatch from a spool file through ``SmtpTransport`` to a real
hs02 node, each in a fresh process, and reports how far the sending process's peak RSS rose
above what it held before (warmed up by one small Dispatch over the same pooled connection).
For comparison, the same for the transport before streaming: the whole file read into memory
and handed to aiosmtplib's ``sendmail``. Target: the 25 MiB Dispatch raises the peak no more
than the 1 MiB one does (within 1 MiB of measurement noise).

Run:  .venv/bin/python -m benchmarks.bench_outbound [--sizes-mib 1 25]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiosmtplib

from benchmarks.hs02 import RECIPIENTS, MiB, dispatch, hs02_node
from interop.pki.devpki import DevPki
from relay.config_file import from_mapping
from relay.context import build_context
from relay.transport.base import Entry, Outcome
from relay.transport.smtp import SmtpTransport

SENDER = "ali.yilmaz@hs01.kep.tr"
ENVELOPE_BYTES = 16 * 1024  # about what a Dispatch adds to its original's attachment


def sized_dispatch(pki: DevPki, number: int, mib: int) -> bytes:
    """A Dispatch of about ``mib`` MiB (``dispatch`` sizes the attachment's base64 text, which
    gains a CRLF every 76 characters)."""
    return dispatch(pki, number, int((mib * MiB - ENVELOPE_BYTES) * 76 / 78))


class WholeFileTransport(SmtpTransport):
    """The transport before streaming: ``read_bytes`` and aiosmtplib's ``sendmail``."""

    async def _transaction(
        self, client: aiosmtplib.SMTP, entry: Entry
    ) -> tuple[list[aiosmtplib.SMTPRecipientRefused], aiosmtplib.SMTPResponse]:
        if isinstance(client.transport, asyncio.WriteTransport):
            client.transport.set_write_buffer_limits()  # asyncio's defaults, as it had them
        data = await asyncio.to_thread(entry.path.read_bytes)
        errors, message = await client.sendmail(
            entry.mail_from, list(entry.rcpt_to), data, mail_options=[f"SIZE={len(data)}"]
        )
        refused = [aiosmtplib.SMTPRecipientRefused(r.code, r.message, a) for a, r in errors.items()]
        return refused, aiosmtplib.SMTPResponse(250, message)


def _kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _recipient(path: Path) -> str:
    """The recipient ``bench_relay.dispatch`` chose (named in the headers)."""
    with path.open("rb") as stream:
        head = stream.read(4000)
    return next(r for r in RECIPIENTS if r.encode() in head)


def child(root: str, port: str, way: str, warm: str, big: str) -> None:
    """Runs in a fresh process: one small Dispatch, then the large one; report the peak."""
    folder = Path(root)
    with tempfile.TemporaryDirectory() as data_dir:
        config = from_mapping(
            {
                "node": {"provider": "hs01", "dev_pki": str(folder / "pki"), "data_dir": data_dir},
                "peers": {"hs02": {"route": f"127.0.0.1:{port}"}},
            },
            "bench",
            folder,
        )
        context = build_context(config)
        kind = SmtpTransport if way == "streamed" else WholeFileTransport

        def entry(path: Path) -> Entry:
            rcpt = _recipient(path)
            return Entry(path.name, "hs02", SENDER, (rcpt,), path, path.stat().st_size)

        async def go() -> dict[str, object]:
            transport = kind(context, timeout=120)
            try:
                warm_up = await transport.send(entry(Path(warm)))
                if warm_up.outcome is not Outcome.DELIVERED:
                    raise SystemExit(f"hs02 did not take the small Dispatch: {warm_up.reply}")
                gc.collect()
                try:
                    Path("/proc/self/clear_refs").write_text("5")  # reset the peak mark (Linux)
                    baseline, peak_field = _kib("VmRSS"), "VmHWM"
                except OSError:  # no clear_refs: the lifetime peak (KiB on Linux) so far
                    baseline, peak_field = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, ""
                start = time.perf_counter()
                result = await transport.send(entry(Path(big)))
                seconds = time.perf_counter() - start
                peak = (
                    _kib(peak_field)
                    if peak_field
                    else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                )
                return {
                    "outcome": result.outcome.value,
                    "reply": result.reply,
                    "seconds": seconds,
                    "peak_growth_kib": peak - baseline,
                }
            finally:
                await transport.close()

        try:
            report = asyncio.run(go())
        finally:
            context.store.close()
    print(json.dumps(report))


def run_child(root: Path, port: int, way: str, warm: Path, big: Path) -> dict[str, float]:
    arguments = [str(root), str(port), way, str(warm), str(big)]
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_outbound", "--child", *arguments],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"the {way} child failed:\n{done.stderr[-3000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    if report["outcome"] != "delivered":
        raise SystemExit(f"hs02 did not take the Dispatch ({way}): {report['reply']}")
    return {"growth_mib": report["peak_growth_kib"] / 1024, "seconds": report["seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes-mib", type=int, nargs="+", default=[1, 25])
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    ways = ("streamed", "whole file")
    with hs02_node(limit_mib=max(args.sizes_mib) + 10) as hs02:
        number = 0
        files: dict[tuple[str, int], tuple[Path, Path]] = {}
        print("building the Dispatches …", flush=True)
        for way in ways:
            for size in args.sizes_mib:
                # A Dispatch of each size per run: hs02 takes a REMMD id once.
                warm, big = hs02.root / f"warm-{number}.eml", hs02.root / f"big-{number}.eml"
                warm.write_bytes(dispatch(hs02.pki, number, 4096))
                big.write_bytes(sized_dispatch(hs02.pki, number + 1, size))
                files[(way, size)] = warm, big
                number += 2
        time.sleep(2)  # hs02's workers are up
        figures = {
            key: run_child(hs02.root, hs02.peer_port, key[0], warm, big)
            for key, (warm, big) in files.items()
        }
        file_mib = {
            size: files["streamed", size][1].stat().st_size / MiB for size in args.sizes_mib
        }
    print(
        "Peak RSS growth of the sending process relaying one Dispatch to hs02"
        " (a fresh process each; MiB above the warmed-up sender, and the time taken)"
    )
    sizes = args.sizes_mib
    labels = {"streamed": "streamed (now)", "whole file": "read_bytes + sendmail (before)"}
    header = "".join(f"{file_mib[s]:>10.1f} MiB file" for s in sizes)
    print(f"    {'':32}{header}")
    for way in ways:
        cells = "".join(
            f"{figures[way, s]['growth_mib']:>10.1f} MiB {figures[way, s]['seconds']:>6.2f} s"
            for s in sizes
        )
        print(f"    {labels[way]:32}{cells}")
    small, large = min(sizes), max(sizes)
    streamed = figures["streamed", large]["growth_mib"]
    met = streamed <= figures["streamed", small]["growth_mib"] + 1
    print(
        f"    target: {large} MiB costs no more than {small} MiB (within 1 MiB): "
        f"{'met' if met else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
