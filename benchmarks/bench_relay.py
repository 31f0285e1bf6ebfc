"""Gateway benchmark against Postfix (issue target; run on demand, not in the test suite).

1. A simulated hs01 sends 5,000 Dispatches (4 KiB originals) over 20 mutual-TLS connections to
   a real hs02 node; timed from the first byte until hs02 has sent every Delivery evidence
   (to an evidence sink standing in for hs01).
2. In the same run, Debian's Postfix relays 5,000 4 KiB messages from smtp-source to
   smtp-sink over 20 sessions (a private instance in a temporary folder), timed until its queue
   is empty.
3. The peak RSS growth of an hs02 node and its crypto workers (each one's peak, summed) while
   it receives and delivers one 100 MiB Dispatch.

Prints both rates, the ratio (target >= 0.5 with P-256 certificates) and the RSS growth
(target <= 64 MiB above idle). Needs Postfix: benchmarks/install-postfix.sh (root).

Run:  .venv/bin/python -m benchmarks.bench_relay [--messages N] [--connections N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import io
import os
import shutil
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiosmtplib
from aiosmtpd.controller import Controller

from interop.cms.timestamp import LocalTsa
from interop.envelope.build import write_dispatch
from interop.envelope.smime import build_signed_message
from interop.evidence.issue import submission_evidence
from interop.evidence.xades import sign_evidence
from interop.pki.devpki import DevPki, generate
from interop.providers import BUILTIN_DIRECTORY
from relay.pkidir import write_pki

MiB = 1024 * 1024
ROOT = Path(__file__).resolve().parents[1]
RECIPIENTS = ("ayse.demir@hs02.kep.tr", "ali.yilmaz@hs02.kep.tr", "0123456789012345@hs02.kep.tr")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dispatch(pki: DevPki, number: int, body_bytes: int) -> bytes:
    user = pki.user("ali.yilmaz@hs01.kep.tr")
    now = dt.datetime.now(dt.UTC)
    recipient = RECIPIENTS[number % len(RECIPIENTS)]
    attachment = os.urandom(body_bytes * 3 // 4) if body_bytes > 8192 else b""
    original = build_signed_message(
        user.signer,
        sender=user.address,
        recipients=[recipient],
        subject=f"Yük {number}",
        body="x" * (1300 if not attachment else 10),
        now=now,
        attachments=(("ek.bin", "application/octet-stream", attachment),) if attachment else (),
    )
    evidence = submission_evidence(
        io.BytesIO(original),
        BUILTIN_DIRECTORY["hs01"],
        user.address,
        [recipient],
        f"bench-{number}-{os.getpid()}@hs01.kep.tr",
        now,
    )
    signer = pki.providers["hs01"].process
    # As a production S-GW sends them: XAdES-T evidence in a CAdES-T envelope (profile §3, §5).
    tsa = LocalTsa(pki.tsa, os.getpid())

    def stamp(data: bytes) -> bytes:
        return tsa.stamp(data, now)

    out = io.BytesIO()
    write_dispatch(
        out,
        io.BytesIO(original),
        evidence,
        sign_evidence(evidence, signer, now, timestamp=stamp),
        signer,
        now,
        message_id=f"<bench-{number}@hs01.kep.tr>",
        timestamp=stamp,
    )
    return out.getvalue()


class _Sink:
    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.count += 1
        return "250 2.0.0 OK"


def _tls(folder: Path, provider: str, purpose: ssl.Purpose) -> ssl.SSLContext:
    context = ssl.create_default_context(purpose, cafile=str(folder / "ca" / "tls-ca.crt"))
    context.load_cert_chain(
        str(folder / "providers" / provider / "tls.crt"),
        str(folder / "providers" / provider / "tls.key"),
    )
    context.check_hostname = False
    return context


def start_node(
    root: Path, peer_port: int, sink_port: int, limit_mib: int = 25
) -> subprocess.Popen[bytes]:
    (root / "hs02.toml").write_text(
        f'[node]\nprovider = "hs02"\ndata_dir = "hs02"\ndev_pki = "pki"\n'
        f'[listen.peer]\naddress = "127.0.0.1:{peer_port}"\n'
        f'[listen.submission]\naddress = "127.0.0.1:{free_port()}"\n'
        f'[listen.monitoring]\naddress = "127.0.0.1:{free_port()}"\n'
        f'[peers.hs01]\nroute = "127.0.0.1:{sink_port}"\nmessage_limit_mib = {limit_mib}\n'
        f'[timers]\nqueue_poll = "0.1s"\n'
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "relay.cli",
            "serve",
            "--config",
            str(root / "hs02.toml"),
            "--log-format",
            "json",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(root / "hs02.log").open("ab"),
        env=env,
        cwd=root,
    )
    deadline = time.monotonic() + 30
    import socket

    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", peer_port), timeout=0.2):
                return process
        except OSError:
            time.sleep(0.1)
    raise SystemExit("hs02 did not start")


async def send_all(messages: list[bytes], port: int, tls: ssl.SSLContext, connections: int) -> None:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for message in messages:
        queue.put_nowait(message)

    async def worker() -> None:
        client = aiosmtplib.SMTP(
            hostname="127.0.0.1", port=port, use_tls=True, tls_context=tls, timeout=120
        )
        await client.connect()
        while not queue.empty():
            message = queue.get_nowait()
            rcpt = next(r for r in RECIPIENTS if r.encode() in message[:4000])
            await client.sendmail("ali.yilmaz@hs01.kep.tr", [rcpt], message)
        await client.quit()

    await asyncio.gather(*(worker() for _ in range(connections)))


def delivered(db: Path) -> int:
    with sqlite3.connect(db, timeout=30) as connection:
        return int(
            connection.execute(
                "SELECT COUNT(*) FROM messages m JOIN evidence e ON e.envelope_id = m.id"
                " WHERE m.kind = 'evidence-out' AND m.state = 'sent'"
                " AND e.type = 'DeliveryNonDeliveryToRecipient'"
            ).fetchone()[0]
        )


@dataclass
class Hs02:
    """A real hs02 node, an evidence sink standing in for hs01, and hs01's client TLS."""

    root: Path
    pki: DevPki
    peer_port: int
    node: subprocess.Popen[bytes]
    client_tls: ssl.SSLContext

    def delivered(self) -> int:
        return delivered(self.root / "hs02" / "state.sqlite3")


@contextlib.contextmanager
def hs02_node(limit_mib: int = 25) -> Iterator[Hs02]:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        pki = generate(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5), ["hs01", "hs02"])
        write_pki(pki, root / "pki")
        sink_port, peer_port = free_port(), free_port()
        controller = Controller(
            _Sink(),
            hostname="127.0.0.1",
            port=sink_port,
            ssl_context=_tls(root / "pki", "hs01", ssl.Purpose.CLIENT_AUTH),
        )
        controller.start()
        node = start_node(root, peer_port, sink_port, limit_mib=limit_mib)
        try:
            yield Hs02(
                root, pki, peer_port, node, _tls(root / "pki", "hs01", ssl.Purpose.SERVER_AUTH)
            )
        finally:
            node.terminate()
            node.wait(timeout=60)
            controller.stop()


@dataclass
class GatewayRun:
    per_second: float
    cpu_ms: dict[str, float]  # CPU (user + system) per message, by process


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_gateway(count: int, connections: int) -> GatewayRun:
    with hs02_node() as hs02:
        print(f"    building {count} signed Dispatches …", flush=True)
        messages = [dispatch(hs02.pki, n, 4096) for n in range(count)]
        time.sleep(2)  # the workers are up
        node, *workers = _family(hs02.node.pid)
        before = {pid: _cpu_seconds(pid) for pid in (node, *workers)}
        ours = os.times()
        start = time.perf_counter()
        asyncio.run(send_all(messages, hs02.peer_port, hs02.client_tls, connections))
        while hs02.delivered() < count:
            time.sleep(0.2)
        elapsed = time.perf_counter() - start
        used = os.times()
        spent = {pid: _cpu_seconds(pid) - before[pid] for pid in before}
        cpu = {
            "node": spent[node],
            "crypto workers": sum(spent[pid] for pid in workers),
            "load generator (hs01 and its sink)": used.user + used.system - ours.user - ours.system,
        }
        return GatewayRun(count / elapsed, {k: v / count * 1000 for k, v in cpu.items()})


def bench_postfix(count: int, connections: int) -> float | None:
    tools = [shutil.which(t) for t in ("postfix", "smtp-source", "smtp-sink", "postqueue")]
    if not all(tools) and not Path("/usr/sbin/postfix").exists():
        print("    Postfix is not installed: run benchmarks/install-postfix.sh (as root)")
        return None
    with tempfile.TemporaryDirectory() as folder:
        conf = Path(folder)
        sink_port, in_port = free_port(), free_port()
        queue_dir = conf / "queue"
        data_dir = conf / "data"
        conf.chmod(0o755)  # Postfix daemons run as the postfix user and must reach the queue
        for d in (queue_dir, data_dir):
            d.mkdir()
        shutil.chown(data_dir, user="postfix")
        shutil.copy("/etc/postfix/master.cf", conf / "master.cf")
        with (conf / "master.cf").open("a") as master:
            master.write(f"127.0.0.1:{in_port} inet n - n - - smtpd\n")
        (conf / "main.cf").write_text(
            f"queue_directory = {queue_dir}\ndata_directory = {data_dir}\n"
            "inet_interfaces = loopback-only\ninet_protocols = ipv4\nmydestination =\n"
            f"relayhost = [127.0.0.1]:{sink_port}\nmynetworks = 127.0.0.0/8\n"
            "smtpd_recipient_restrictions = permit_mynetworks, reject\n"
            "compatibility_level = 3.6\nsmtputf8_enable = no\n"
            "default_process_limit = 100\nsmtp_destination_concurrency_limit = 20\n"
            "alias_maps =\nalias_database =\nlocal_recipient_maps =\n"
        )
        sink = subprocess.Popen(
            [
                "smtp-sink",
                *(["-u", "postfix"] if os.geteuid() == 0 else []),
                f"127.0.0.1:{sink_port}",
                "256",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        env = {**os.environ, "MAIL_CONFIG": str(conf)}
        subprocess.run(
            ["postfix", "-c", str(conf), "start"], check=True, env=env, capture_output=True
        )
        try:
            time.sleep(1)
            start = time.perf_counter()
            subprocess.run(
                [
                    "smtp-source",
                    "-c",
                    "-l",
                    "4096",
                    "-m",
                    str(count),
                    "-s",
                    str(connections),
                    "-f",
                    "ali@hs01.kep.tr",
                    "-t",
                    "ayse@hs02.kep.tr",
                    f"127.0.0.1:{in_port}",
                ],
                check=True,
                capture_output=True,
            )
            while True:
                queue = subprocess.run(
                    ["postqueue", "-c", str(conf), "-p"],
                    check=False,
                    capture_output=True,
                    text=True,
                    env=env,
                ).stdout
                if "Mail queue is empty" in queue:
                    break
                time.sleep(0.1)
            return count / (time.perf_counter() - start)
        finally:
            subprocess.run(
                ["postfix", "-c", str(conf), "stop"], check=False, env=env, capture_output=True
            )
            sink.terminate()


def _kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _family(pid: int) -> list[int]:
    """The node and its crypto workers (its child processes)."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    children.append(int(entry.name))
    return [pid, *children]


def bench_large(size_mib: int) -> float:
    """Peak RSS growth of the node and its workers together (each one's peak, summed)."""
    # The limit allows for the original's base64 and MIME overhead.
    with hs02_node(limit_mib=size_mib + 10) as hs02:
        message = dispatch(hs02.pki, 0, size_mib * MiB)
        time.sleep(2)  # the workers are up
        family = _family(hs02.node.pid)
        idle = {pid: _kib(pid, "VmRSS") for pid in family}
        for pid in family:
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset the peak-RSS mark
        asyncio.run(send_all([message], hs02.peer_port, hs02.client_tls, 1))
        while hs02.delivered() < 1:
            time.sleep(0.2)
        return sum(_kib(pid, "VmHWM") - idle[pid] for pid in family) / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--size-mib", type=int, default=100)
    args = parser.parse_args()
    print(
        f"(1) {args.messages} Dispatches of 4 KiB over {args.connections} mutual-TLS connections"
        " to hs02, until every Delivery evidence has left hs02"
    )
    run = bench_gateway(args.messages, args.connections)
    ours = run.per_second
    print(f"    kep-relay: {ours:8.1f} messages/s")
    for name, ms in run.cpu_ms.items():
        print(f"      CPU per message, {name}: {ms:.1f} ms")
    total = sum(run.cpu_ms.values())
    cores = len(os.sched_getaffinity(0))
    print(
        f"      in all {total:.1f} ms: at most {cores * 1000 / total:.0f} messages/s"
        f" on this machine's {cores} cores"
    )
    print(f"(2) Postfix relaying {args.messages} 4 KiB messages, smtp-source → postfix → smtp-sink")
    theirs = bench_postfix(args.messages, args.connections)
    if theirs is not None:
        ratio = ours / theirs
        print(f"    Postfix:   {theirs:8.1f} messages/s")
        print(f"    ratio {ratio:.2f}   target >= 0.5: {'met' if ratio >= 0.5 else 'NOT met'}")
    print(f"(3) one {args.size_mib} MiB Dispatch received and delivered by hs02 (with its workers)")
    growth = bench_large(args.size_mib)
    print(
        f"    {growth:.1f} MiB peak RSS above idle   target <= 64 MiB: "
        f"{'met' if growth <= 64 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
