"""A real hs02 node for the gateway benchmark (``benchmarks.bench_relay``): its configuration,
its start and stop, the Dispatches hs01 sends it, and the benchmark's reading connection to its
store. hs01, the sending side, is ``benchmarks.lean_peer``, ``benchmarks.postfix_peer`` or the
Python clients and sink here (``send_all``, ``_Sink``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import io
import json
import os
import shutil
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiosmtplib
import psycopg
from aiosmtpd.controller import Controller

from benchmarks.lean_peer import LeanPeer, lean_peer
from benchmarks.pgtemp import (
    backend_pid,
    fresh_database,
    is_postgres,
    postmaster_pid,
)
from benchmarks.postfix_peer import (
    Hs01Peer,
    Hs01Tls,
    hs01_peer,
)
from benchmarks.prefill import prefill_node
from benchmarks.procstat import (
    tree,
)
from interop.cms.timestamp import LocalTsa
from interop.envelope.build import write_dispatch
from interop.envelope.smime import build_signed_message
from interop.evidence.issue import submission_evidence
from interop.evidence.xades import sign_evidence
from interop.pki.devpki import DevPki, generate
from interop.providers import BUILTIN_DIRECTORY
from relay.config_file import from_mapping
from relay.context import NodeContext, build_context
from relay.keys import write_pki

MiB = 1024 * 1024
ROOT = Path(__file__).resolve().parents[1]
RECIPIENTS = ("ayse.demir@hs02.kep.tr", "ali.yilmaz@hs02.kep.tr", "0123456789012345@hs02.kep.tr")
STOP_WAIT = 180.0  # the supervisor waits up to 120 s for its node processes to drain


@dataclass(frozen=True)
class Setup:
    """How hs02 runs."""

    processes: int = 1
    crypto_workers: int = 0
    store: str | None = None  # None: the SQLite default (data_dir/state.sqlite3)
    log_dir: Path | None = None  # keep each hs02's log there
    # PostgreSQL: VACUUM (ANALYZE) every this many seconds during the run (0: never), for a
    # server whose autovacuum is off.
    vacuum_every: float = 0.0
    # Held before the node starts (benchmarks.prefill): messages in each recipient's INBOX,
    # evidence rows in the store.
    prefill_mailbox: int = 0
    prefill_evidence: int = 0
    # py-spy hs02's node processes over the timed window (profile.py).
    profile: Path | None = None
    # [node] small_work ("loop" or "threads"); None: not written, the node's default.
    small_work: str | None = None

    def describe(self) -> str:
        store = "PostgreSQL" if is_postgres(self.store) else "SQLite"
        if is_postgres(self.store) and self.vacuum_every:
            store += f" (VACUUM ANALYZE every {self.vacuum_every:g} s)"
        held = f" prefill_mailbox={self.prefill_mailbox} prefill_evidence={self.prefill_evidence}"
        work = f" small_work={self.small_work}" if self.small_work else ""
        return (
            f"processes={self.processes} crypto_workers={self.crypto_workers} store={store}"
            + work
            + (held if self.prefill_mailbox or self.prefill_evidence else "")
        )


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dev_pki() -> DevPki:
    """The benchmarks' development PKI for hs01 and hs02, valid from a moment ago."""
    return generate(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5), ["hs01", "hs02"])


@contextlib.contextmanager
def hs02_in_process(pki: DevPki) -> Iterator[NodeContext]:
    """hs02's node context in this process (SQLite, ``pki`` written into a fresh data folder
    under the working directory), closed and removed after."""
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as folder:
        root = Path(folder)
        write_pki(pki, root / "pki")
        config = from_mapping(
            {"node": {"provider": "hs02", "dev_pki": "pki", "data_dir": "data"}}, "b", root
        )
        context = build_context(config)
        try:
            yield context
        finally:
            context.store.close()


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


class EvidenceSink(Protocol):
    """Where hs02 sends hs01's evidence: ``count`` is how many messages it accepted."""

    @property
    def count(self) -> int: ...


class _Sink:
    """The Python evidence sink (--sender python), an aiosmtpd handler in this process."""

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


def log_lines(log: Path) -> Iterator[dict[str, Any] | str]:
    """The node's log: JSON records as dicts, anything else (a traceback) as text. Records of
    node processes sharing the file can run together on one line (each record and its newline
    are two writes), so every record on a line is read."""
    if not log.exists():
        return
    decoder = json.JSONDecoder()
    for raw in log.read_text(errors="replace").splitlines():
        position, line = 0, raw.strip()
        while position < len(line):
            try:
                parsed, position = decoder.raw_decode(line, position)
            except ValueError:
                yield line[position:]
                break
            yield parsed if isinstance(parsed, dict) else str(parsed)


def joined_records(log: Path) -> int:
    """Lines of the log holding more than one record (written by two processes at once)."""
    if not log.exists():
        return 0
    return sum(1 for line in log.read_text(errors="replace").splitlines() if "}{" in line)


def start_node(
    root: Path,
    peer_port: int,
    sink_port: int,
    setup: Setup,
    store_url: str | None,
    limit_mib: int = 25,
    monitoring_port: int = 0,
) -> subprocess.Popen[bytes]:
    (root / "hs02.toml").write_text(
        f'[node]\nprovider = "hs02"\ndata_dir = "hs02"\ndev_pki = "pki"\n'
        f"processes = {setup.processes}\n"
        + (f'small_work = "{setup.small_work}"\n' if setup.small_work else "")
        + f'[listen.peer]\naddress = "127.0.0.1:{peer_port}"\n'
        f'[listen.submission]\naddress = "127.0.0.1:{free_port()}"\n'
        f'[listen.monitoring]\naddress = "127.0.0.1:{monitoring_port or free_port()}"\n'
        f'[peers.hs01]\nroute = "127.0.0.1:{sink_port}"\nmessage_limit_mib = {limit_mib}\n'
        f'[timers]\nqueue_poll = "0.1s"\n'
        # Only when asked for: a release without the pool refuses the key.
        + (f"[limits]\ncrypto_workers = {setup.crypto_workers}\n" if setup.crypto_workers else "")
        + (f'[store]\nurl = "{store_url}"\n' if store_url else "")
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = root / "hs02.log"
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
        stderr=log.open("ab"),
        env=env,
        cwd=root,
    )
    # Every node process listening on the peer port (SO_REUSEPORT spreads connections only
    # over those already there).
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace").splitlines()[-20:]
            raise SystemExit(
                f"hs02 exited with {process.returncode} at start; the end of its log:\n"
                + "\n".join(tail)
            )
        listening = sum(
            1
            for line in log_lines(log)
            if isinstance(line, dict)
            and line.get("event") == "listening"
            and line.get("listener") == "peer"
        )
        if listening >= setup.processes:
            return process
        time.sleep(0.2)
    process.kill()
    tail = log.read_text(errors="replace").splitlines()[-20:]
    raise SystemExit("hs02 did not start within 60 s; the end of its log:\n" + "\n".join(tail))


def recipient_of(message: bytes) -> str:
    return next(r for r in RECIPIENTS if r.encode() in message[:4000])


def received_digests(hs02: Hs02) -> list[str]:
    """SHA-256 of each Dispatch as hs02 received it (computed while spooling it), not counting
    those the store held before the run."""
    return [
        str(digest)
        for (digest,) in hs02.probe.rows(RECEIVED.format(created=hs02.probe.held_created))
    ]


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
            await client.sendmail("ali.yilmaz@hs01.kep.tr", [recipient_of(message)], message)
        await client.quit()

    await asyncio.gather(*(worker() for _ in range(connections)))


# Delivery evidence recorded since the probe opened (ledger records after ``seq``) whose
# Evidence message left: from the ledger's end, so a pre-filled store costs the poll nothing
# (CROSS JOIN: SQLite, which has no statistics, joins in this order).
DELIVERED = (
    "SELECT COUNT(*) FROM ledger l CROSS JOIN evidence e CROSS JOIN messages m"
    " WHERE l.seq > {seq} AND e.id = l.evidence_id AND m.id = e.envelope_id"
    " AND m.kind = 'evidence-out' AND m.state = 'sent'"
    " AND e.type = 'DeliveryNonDeliveryToRecipient'"
)
# Dispatches received in this run (created after what the store held before it).
RECEIVED = "SELECT sha256 FROM messages WHERE kind = 'dispatch-in' AND created > {created!r}"
STATES = "SELECT kind, state, COUNT(*) FROM messages GROUP BY kind, state ORDER BY kind, state"
# Each Evidence message sent about a Dispatch of this run: when the Dispatch was accepted,
# when the Evidence message was queued (the Dispatch processed) and when the peer took it
# (seconds since the epoch).
EVIDENCE_SENT = (
    "SELECT d.created, e.created, e.sent_at FROM messages e JOIN messages d ON d.id = e.parent"
    " WHERE e.kind = 'evidence-out' AND e.sent_at IS NOT NULL"
    " AND d.kind = 'dispatch-in' AND d.created > {created!r}"
)


class StoreProbe:
    """The benchmark's own reading connection to hs02's store (SQLite file or PostgreSQL)."""

    def __init__(self, url: str) -> None:
        self.pg: psycopg.Connection[tuple[Any, ...]] | None = None
        self.sqlite: sqlite3.Connection | None = None
        self.backend: int | None = None
        self.postmaster: int | None = None
        self.queries = 0  # statements (each a transaction of its own) since last reset
        self.url = url
        if is_postgres(url):
            self.pg = psycopg.connect(url, autocommit=True)
            self.backend = backend_pid(self.pg)
            self.postmaster = postmaster_pid(self.pg)
        else:
            self.sqlite = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=30)
        # What the store held before the run (benchmarks.prefill) is not the run's work.
        self.held_seq = int(self.rows("SELECT COALESCE(MAX(seq), 0) FROM ledger")[0][0])
        self.held_created = float(
            self.rows("SELECT COALESCE(MAX(created), 0) FROM messages WHERE kind = 'dispatch-in'")[
                0
            ][0]
        )
        self.held: dict[str, int] = {}
        self.held = self.states()

    def rows(self, query: str) -> list[tuple[Any, ...]]:
        self.queries += 1
        if self.pg is not None:
            return self.pg.execute(query).fetchall()
        assert self.sqlite is not None
        with self.sqlite:
            return self.sqlite.execute(query).fetchall()

    def delivered(self) -> int:
        return int(self.rows(DELIVERED.format(seq=self.held_seq))[0][0])

    def database_stats(self) -> dict[str, int]:
        """PostgreSQL's counters for this database (commits, rollbacks, rows written);
        empty for SQLite. The benchmark's own polling adds one commit per poll."""
        if self.pg is None:
            return {}
        self.queries += 2
        self.pg.execute("SELECT pg_stat_force_next_flush()")
        row = self.pg.execute(
            "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted,"
            " deadlocks FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
        assert row is not None
        names = ("commits", "rollbacks", "rows inserted", "rows updated", "rows deleted")
        stats = {name: int(v) for name, v in zip((*names, "deadlocks"), row, strict=True)}
        # Whether autovacuum analysed the messages table meanwhile (the claims' plans
        # depend on its statistics).
        table = self.pg.execute(
            "SELECT autoanalyze_count, autovacuum_count FROM pg_stat_user_tables"
            " WHERE relname = 'messages'"
        ).fetchone()
        self.queries += 1
        if table is not None:
            stats["autoanalyze runs on messages"] = int(table[0])
            stats["autovacuum runs on messages"] = int(table[1])
        return stats

    def evidence_delays(self) -> dict[str, float]:
        """How long this run's Evidence messages took, in seconds: from their Dispatch's
        acceptance to the peer's 250 (mean), and from being queued, as the Dispatch was
        processed, to that 250 (mean and 95th percentile: evidence that keeps pace with the
        processing, or waits until the load stops). Empty when none was sent."""
        rows = self.rows(EVIDENCE_SENT.format(created=self.held_created))
        if not rows:
            return {}
        waits = sorted(float(sent) - float(queued) for _, queued, sent in rows)
        return {
            "accepted_to_sent_s": statistics.fmean(float(s) - float(a) for a, _, s in rows),
            "queued_mean_s": statistics.fmean(waits),
            "queued_p95_s": waits[min(len(waits) - 1, int(0.95 * len(waits)))],
        }

    def states(self) -> dict[str, int]:
        counts = {f"{kind} {state}": int(n) for kind, state, n in self.rows(STATES)}
        return {k: n - self.held.get(k, 0) for k, n in counts.items() if n != self.held.get(k)}

    def close(self) -> None:
        if self.pg is not None:
            self.pg.close()
        if self.sqlite is not None:
            self.sqlite.close()


@dataclass
class Hs02:
    """A real hs02 node, an evidence sink standing in for hs01, and hs01's client TLS."""

    root: Path
    pki: DevPki
    peer_port: int
    node: subprocess.Popen[bytes]
    client_tls: ssl.SSLContext
    setup: Setup
    probe: StoreProbe
    sink: EvidenceSink
    monitoring_port: int
    peer: Hs01Peer | LeanPeer | None  # hs01 as Postfix or lean processes (--sender)
    # After the node stopped: its whole tree's CPU (wait4), and whether it stopped cleanly.
    life_cpu: float | None = None
    exit_code: int | None = None
    log_copy: Path | None = None

    def delivered(self) -> int:
        return self.probe.delivered()

    def latencies(self) -> dict[str, float]:
        """Mean SMTP acceptance (MAIL FROM to the 250 after DATA) and mean local delivery
        (acceptance to the mailbox) so far, in ms, from the node's /metrics."""
        import urllib.request

        url = f"http://127.0.0.1:{self.monitoring_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        sums: dict[str, float] = collections.defaultdict(float)
        for line in text.splitlines():
            for name in ("kep_smtp_acceptance_seconds", "kep_local_delivery_seconds"):
                for part in ("_sum", "_count"):
                    if line.startswith(name + part) and 'listener="submission"' not in line:
                        sums[name + part] += float(line.rsplit(" ", 1)[1])
        return {
            "acceptance_ms": 1000
            * sums["kep_smtp_acceptance_seconds_sum"]
            / max(1.0, sums["kep_smtp_acceptance_seconds_count"]),
            "delivery_ms": 1000
            * sums["kep_local_delivery_seconds_sum"]
            / max(1.0, sums["kep_local_delivery_seconds_count"]),
        }

    @property
    def log(self) -> Path:
        return self.root / "hs02.log"


def stop_node(process: subprocess.Popen[bytes]) -> tuple[int, float | None]:
    """SIGTERM, then reap it with wait4(): its exit code and the CPU of its whole tree (its own
    and every descendant it, or they, reaped); None for the CPU when it had to be killed."""
    process.terminate()
    deadline = time.monotonic() + STOP_WAIT
    killed = False
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            cpu = usage.ru_utime + usage.ru_stime
            return process.returncode, None if killed else cpu
        if time.monotonic() > deadline and not killed:
            print(f"    hs02 did not stop within {STOP_WAIT:.0f} s of SIGTERM: killed")
            for proc in tree(process.pid).values():
                with contextlib.suppress(OSError):
                    os.kill(proc.pid, 9)
            killed = True
        time.sleep(0.05)


@contextlib.contextmanager
def _store_for(setup: Setup) -> Iterator[str | None]:
    if is_postgres(setup.store):
        assert setup.store is not None
        with fresh_database(setup.store) as url:
            yield url
    else:
        yield setup.store


@contextlib.contextmanager
def hs02_node(
    setup: Setup | None = None,
    limit_mib: int = 25,
    label: str = "hs02",
    sender: str = "python",
    connections: int = 20,
) -> Iterator[Hs02]:
    """hs02 and, by ``sender``, hs01's evidence sink and (started by ``Hs02.peer.load``) its
    senders: lean processes (lean), two private Postfix instances (postfix), or an aiosmtpd
    sink in this process, the client TLS for ``send_all`` (python)."""
    setup = setup or Setup()  # one node process, verifying and signing itself, on SQLite
    with (
        tempfile.TemporaryDirectory() as folder,
        _store_for(setup) as store_url,
        contextlib.ExitStack() as hs01,
    ):
        root = Path(folder)
        pki = dev_pki()
        write_pki(pki, root / "pki")
        if setup.prefill_mailbox or setup.prefill_evidence:
            print(
                "    pre-filled hs02: "
                + prefill_node(
                    root / "hs02",
                    store_url,
                    mailbox=setup.prefill_mailbox,
                    evidence=setup.prefill_evidence,
                    addresses=RECIPIENTS,
                ),
                flush=True,
            )
        peer_port = free_port()
        peer: Hs01Peer | LeanPeer | None = None
        sink: EvidenceSink
        if sender in ("postfix", "lean"):
            tls = Hs01Tls.from_pki(root / "pki")
            if sender == "postfix":
                peer = hs01.enter_context(hs01_peer(tls, peer_port, connections))
            else:
                peer = hs01.enter_context(lean_peer(tls, peer_port, connections))
            sink, sink_port = peer, peer.sink_port
        else:
            sink, sink_port = _Sink(), free_port()
            controller = Controller(
                sink,
                hostname="127.0.0.1",
                port=sink_port,
                ssl_context=_tls(root / "pki", "hs01", ssl.Purpose.CLIENT_AUTH),
            )
            controller.start()
            hs01.callback(controller.stop)
        monitoring_port = free_port()
        node = start_node(
            root,
            peer_port,
            sink_port,
            setup,
            store_url,
            limit_mib=limit_mib,
            monitoring_port=monitoring_port,
        )
        probe = StoreProbe(store_url or f"sqlite:///{root / 'hs02' / 'state.sqlite3'}")
        hs02 = Hs02(
            root,
            pki,
            peer_port,
            node,
            _tls(root / "pki", "hs01", ssl.Purpose.SERVER_AUTH),
            setup,
            probe,
            sink,
            monitoring_port,
            peer,
        )
        try:
            yield hs02
        finally:
            probe.close()
            hs02.exit_code, hs02.life_cpu = stop_node(node)
            if setup.log_dir is not None:
                setup.log_dir.mkdir(parents=True, exist_ok=True)
                stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
                hs02.log_copy = setup.log_dir / f"{label}-{stamp}-{os.getpid()}.log"
                shutil.copy(hs02.log, hs02.log_copy)
