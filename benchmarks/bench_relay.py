"""Gateway benchmark against Postfix (issue target; run on demand, not in the test suite).

1. A simulated hs01 sends 5,000 Dispatches (4 KiB originals) over 20 mutual-TLS connections to
   a real hs02 node; timed from the first byte until hs02 has sent every Delivery evidence
   (to an evidence sink standing in for hs01).
2. In the same run, Debian's Postfix relays 5,000 4 KiB messages from smtp-source to
   smtp-sink over 20 sessions (a private instance in a temporary folder), timed until its queue
   is empty.
3. The peak RSS growth of an hs02 node and all its processes (each one's peak, summed) while
   it receives and delivers one 100 MiB Dispatch.

Prints both rates, the ratio (target >= 0.5 with P-256 certificates) and the RSS growth
(target <= 64 MiB above idle). Needs Postfix: benchmarks/install-postfix.sh (root).

The hs02 node runs as configured by ``--processes`` (``[node] processes``: a supervisor and
that many node processes; 1: the node alone, no supervisor), ``--crypto-workers``
(``[limits] crypto_workers``: a pool of verifying and signing processes under each node
process; only for a release that still has the pool, written to the configuration only when
not 0) and ``--store`` (``[store] url``; a ``postgresql://`` URL names a server on which
each hs02 of the run gets a fresh database, ``kep_bench_<random>``, dropped afterwards).
``--prefill-mailbox N`` and ``--prefill-evidence N`` give hs02, before it starts, N messages in
each recipient's INBOX and N evidence rows (with their messages and ledger records) in its
store (``benchmarks.prefill``), for the cost of a Dispatch on a node that holds a lot (issue 13:
within 10 % of the empty case); the store probe counts only what the run adds.

CPU per Dispatch, for the node, is that of its whole process tree (supervisor, node
processes, crypto workers, multiprocessing's resource trackers) over the timed window: for
each process of the tree /proc/<pid>/stat's utime + stime, plus cutime + cstime (what its
reaped children used), at the start and at the end of the window (``benchmarks.procstat``),
so a process that exits during the window (a worker pool made anew, a node process started
again) is still counted through its parent. After a clean shutdown the tree's whole life
(start-up, run and drain) is read with wait4() as a cross-check. With PostgreSQL the server's
CPU (all its processes, less the benchmark's own polling backend) is printed apart, with
the database's commits and rows written per Dispatch. On a server whose autovacuum is off (a
CI server), ``--vacuum-every S`` runs VACUUM (ANALYZE) every S seconds in its place: the
store's claims are planned from statistics, as on a production server.

Run:  .venv/bin/python -m benchmarks.bench_relay [--messages N] [--connections N]
          [--processes N] [--crypto-workers N] [--store URL] [--vacuum-every S]
          [--prefill-mailbox N] [--prefill-evidence N]
          [--skip-postfix] [--skip-large] [--log-dir DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
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
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosmtplib
import psycopg
from aiosmtpd.controller import Controller

from benchmarks.pgtemp import (
    Vacuumer,
    autovacuum_on,
    backend_pid,
    fresh_database,
    is_postgres,
    postmaster_pid,
)
from benchmarks.prefill import prefill_node
from benchmarks.procstat import (
    Proc,
    Snapshot,
    depth,
    machine_busy_seconds,
    read_proc,
    tree,
    tree_cpu_seconds,
)
from interop.cms.timestamp import LocalTsa
from interop.envelope.build import write_dispatch
from interop.envelope.smime import build_signed_message
from interop.evidence.issue import submission_evidence
from interop.evidence.xades import sign_evidence
from interop.pki.devpki import DevPki, generate
from interop.providers import BUILTIN_DIRECTORY
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

    def describe(self) -> str:
        store = "PostgreSQL" if is_postgres(self.store) else "SQLite"
        if is_postgres(self.store) and self.vacuum_every:
            store += f" (VACUUM ANALYZE every {self.vacuum_every:g} s)"
        held = f" prefill_mailbox={self.prefill_mailbox} prefill_evidence={self.prefill_evidence}"
        return f"processes={self.processes} crypto_workers={self.crypto_workers} store={store}" + (
            held if self.prefill_mailbox or self.prefill_evidence else ""
        )


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


def _log_lines(log: Path) -> Iterator[dict[str, Any] | str]:
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


def _joined_records(log: Path) -> int:
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
        f'[listen.peer]\naddress = "127.0.0.1:{peer_port}"\n'
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
            for line in _log_lines(log)
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


# Delivery evidence recorded since the probe opened (ledger records after ``seq``) whose
# Evidence message left: from the ledger's end, so a pre-filled store costs the poll nothing
# (CROSS JOIN: SQLite, which has no statistics, joins in this order).
DELIVERED = (
    "SELECT COUNT(*) FROM ledger l CROSS JOIN evidence e CROSS JOIN messages m"
    " WHERE l.seq > {seq} AND e.id = l.evidence_id AND m.id = e.envelope_id"
    " AND m.kind = 'evidence-out' AND m.state = 'sent'"
    " AND e.type = 'DeliveryNonDeliveryToRecipient'"
)
STATES = "SELECT kind, state, COUNT(*) FROM messages GROUP BY kind, state ORDER BY kind, state"


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
    sink: _Sink
    monitoring_port: int
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
    setup: Setup | None = None, limit_mib: int = 25, label: str = "hs02"
) -> Iterator[Hs02]:
    setup = setup or Setup()  # one node process, verifying and signing itself, on SQLite
    with tempfile.TemporaryDirectory() as folder, _store_for(setup) as store_url:
        root = Path(folder)
        pki = generate(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5), ["hs01", "hs02"])
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
        sink_port, peer_port = free_port(), free_port()
        sink = _Sink()
        controller = Controller(
            sink,
            hostname="127.0.0.1",
            port=sink_port,
            ssl_context=_tls(root / "pki", "hs01", ssl.Purpose.CLIENT_AUTH),
        )
        controller.start()
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
        )
        try:
            yield hs02
        finally:
            probe.close()
            hs02.exit_code, hs02.life_cpu = stop_node(node)
            controller.stop()
            if setup.log_dir is not None:
                setup.log_dir.mkdir(parents=True, exist_ok=True)
                stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
                hs02.log_copy = setup.log_dir / f"{label}-{stamp}-{os.getpid()}.log"
                shutil.copy(hs02.log, hs02.log_copy)


def _role(procs: dict[int, Proc], pid: int, root: int, processes: int) -> str:
    """What a process of hs02's tree is, from where it sits in it."""
    if "resource_tracker" in procs[pid].cmdline:
        return "multiprocessing resource trackers"
    level = depth(procs, pid, root)
    if processes > 1:
        if level == 0:
            return "supervisor"
        if level == 1:
            return f"node process pid {pid}"
        return "crypto workers"
    return "node process" if level == 0 else "crypto workers"


@dataclass
class GatewayRun:
    setup: Setup
    count: int
    elapsed: float
    node_ms: float  # CPU per Dispatch, the node's whole process tree
    roles_ms: dict[str, float]  # the same, by process (and what exited during the window)
    loadgen_ms: float
    postgres_ms: float | None  # the PostgreSQL server's, less the benchmark's own polling
    processes_seen: dict[str, list[int]]  # pids that appeared or vanished during the window
    life_cpu_s: float | None = None
    exit_code: int | None = None
    states: dict[str, int] = field(default_factory=dict)
    sink_count: int = 0
    problems: list[str] = field(default_factory=list)
    log_counts: dict[str, int] = field(default_factory=dict)
    log_copy: str | None = None
    latencies: dict[str, float] = field(default_factory=dict)
    database_per_dispatch: dict[str, float] = field(default_factory=dict)
    vacuum_runs: int | None = None  # the stand-in for autovacuum, when asked for
    busy_cores: float = 0.0  # the machine's busy CPU over the window, in cores
    others_cores: float = 0.0  # of which not this benchmark's (other work on the machine)

    @property
    def per_second(self) -> float:
        return self.count / self.elapsed


def _settle(hs02: Hs02, count: int, timeout: float = 120.0) -> dict[str, int]:
    """After the timed window: wait (untimed) until no work is left in hs02, so the counts of
    every kind and state can be checked."""
    deadline = time.monotonic() + timeout
    states: dict[str, int] = {}
    while time.monotonic() < deadline:
        states = hs02.probe.states()
        busy = sum(
            n for k, n in states.items() if k.split()[1] in ("received", "queued", "sending")
        )
        if not busy and hs02.sink.count >= states.get("evidence-out sent", 0):
            break
        time.sleep(0.5)
    return states


def _check(run: GatewayRun, states: dict[str, int], count: int) -> list[str]:
    expected = {"dispatch-in processed": count, "evidence-out sent": 2 * count}
    problems = [
        f"{key}: {states.get(key, 0)}, expected {n}"
        for key, n in expected.items()
        if states.get(key, 0) != n
    ]
    problems += [
        f"{key}: {n}, expected none" for key, n in states.items() if key not in expected and n
    ]
    if run.sink_count != states.get("evidence-out sent", 0):
        problems.append(
            f"the evidence sink received {run.sink_count} messages; the store says"
            f" {states.get('evidence-out sent', 0)} evidence messages were sent"
        )
    return problems


def _log_summary(log: Path) -> tuple[dict[str, int], list[str]]:
    """Warnings and errors in hs02's log, by level and event; lines that are not JSON."""
    counts: collections.Counter[str] = collections.Counter()
    other: list[str] = []
    for line in _log_lines(log):
        if isinstance(line, str):
            other.append(line)
        elif line.get("level") in ("warning", "error", "critical", "exception"):
            counts[f"{line.get('level')} {line.get('event')}"] += 1
    return dict(counts), other


def bench_gateway(count: int, connections: int, setup: Setup) -> GatewayRun:
    with hs02_node(setup, label="gateway") as hs02:
        print(f"    building {count} signed Dispatches …", flush=True)
        messages = [dispatch(hs02.pki, n, 4096) for n in range(count)]
        time.sleep(2)  # the workers are up
        root = hs02.node.pid
        postmaster = hs02.probe.postmaster
        poller = hs02.probe.backend
        before = Snapshot.take(root)
        pg_before = tree_cpu_seconds(postmaster) if postmaster else 0.0
        stats_before = hs02.probe.database_stats()
        hs02.probe.queries = 0
        polled = read_proc(poller) if poller else None
        poll_before = polled.own if polled else 0.0
        vacuumer = None
        if hs02.probe.pg is not None:
            if setup.vacuum_every:
                vacuumer = Vacuumer(hs02.probe.url, setup.vacuum_every)
                vacuumer.start()
            elif not autovacuum_on(hs02.probe.url):
                print(
                    "    NOTE: autovacuum is off on this PostgreSQL server and --vacuum-every"
                    " is not given: the store's tables are never analysed or vacuumed"
                )
        ours = os.times()
        machine = machine_busy_seconds()
        start = time.perf_counter()
        asyncio.run(send_all(messages, hs02.peer_port, hs02.client_tls, connections))
        while hs02.delivered() < count:
            if hs02.node.poll() is not None:
                raise SystemExit(f"hs02 exited with {hs02.node.returncode}: see {hs02.log}")
            time.sleep(0.2)
        elapsed = time.perf_counter() - start
        used = os.times()
        machine = machine_busy_seconds() - machine
        after = Snapshot.take(root)
        pg_after = tree_cpu_seconds(postmaster) if postmaster else 0.0
        polled = read_proc(poller) if poller else None
        poll_after = polled.own if polled else poll_before
        loadgen = used.user + used.system - ours.user - ours.system

        roles: dict[str, float] = collections.defaultdict(float)
        for pid, proc in after.procs.items():
            start_own = before.procs[pid].own if pid in before.procs else 0.0
            roles[_role(after.procs, pid, root, setup.processes)] += proc.own - start_own
        total = after.total() - before.total()
        exited = total - sum(roles.values())
        if abs(exited) >= 0.01:
            roles["exited during the window (through their parents' cutime)"] = exited
        seen = {
            "appeared": sorted(set(after.procs) - set(before.procs)),
            "vanished": sorted(set(before.procs) - set(after.procs)),
        }
        per = 1000 / count
        run = GatewayRun(
            setup,
            count,
            elapsed,
            total * per,
            {k: v * per for k, v in sorted(roles.items())},
            loadgen * per,
            ((pg_after - pg_before) - (poll_after - poll_before)) * per if postmaster else None,
            seen,
        )
        ours_s = (run.node_ms + run.loadgen_ms + (run.postgres_ms or 0.0)) * count / 1000
        run.busy_cores = machine / elapsed
        run.others_cores = max(0.0, machine - ours_s) / elapsed
        with contextlib.suppress(OSError):
            run.latencies = hs02.latencies()
        print(f"    timed window done in {elapsed:.1f} s; checking every message …", flush=True)
        run.states = _settle(hs02, count)
        if vacuumer is not None:
            run.vacuum_runs = vacuumer.stop()
        if stats_before:
            # All the work of the run (the window and what settling waited for); idle
            # backends report their counters within 10 s (PostgreSQL 15).
            time.sleep(11)
            stats_after = hs02.probe.database_stats()
            stats = {k: stats_after[k] - stats_before[k] for k in stats_after}
            stats["commits"] -= hs02.probe.queries  # the benchmark's own
            run.database_per_dispatch = {
                k: v if k.startswith("auto") else v / count for k, v in stats.items()
            }
        run.sink_count = hs02.sink.count
    run.life_cpu_s, run.exit_code = hs02.life_cpu, hs02.exit_code
    run.problems = _check(run, run.states, count)
    if run.exit_code != 0:
        run.problems.append(f"hs02 exited with {run.exit_code} after SIGTERM")
    run.log_counts, other = _log_summary(hs02.log_copy or hs02.log)
    if other:
        run.log_counts["lines that are not JSON"] = len(other)
        print("      lines of the log that are not JSON:", *other[:20], sep="\n        ")
    joined = _joined_records(hs02.log_copy or hs02.log)
    if joined:
        run.log_counts["lines holding two or more records (interleaved writes)"] = joined
    run.log_copy = str(hs02.log_copy) if hs02.log_copy else None
    return run


def report_gateway(run: GatewayRun) -> None:
    print(f"    hs02: {run.setup.describe()}")
    print(f"    kep-relay: {run.per_second:8.1f} messages/s ({run.count} in {run.elapsed:.1f} s)")
    print(f"      CPU per Dispatch, node, all its processes together: {run.node_ms:.1f} ms")
    for name, ms in run.roles_ms.items():
        print(f"        {name}: {ms:.1f} ms")
    for what, pids in run.processes_seen.items():
        if pids:
            print(f"        processes that {what} during the window: {pids}")
    if run.postgres_ms is not None:
        print(
            "      CPU per Dispatch, PostgreSQL server (all its processes, less the"
            f" benchmark's polling): {run.postgres_ms:.1f} ms"
        )
    print(
        "      CPU per Dispatch, load generator (the simulated hs01 and its evidence sink):"
        f" {run.loadgen_ms:.1f} ms"
    )
    total = run.node_ms + run.loadgen_ms + (run.postgres_ms or 0.0)
    cores = len(os.sched_getaffinity(0))
    print(
        f"      in all {total:.1f} ms: at most {cores * 1000 / total:.0f} messages/s"
        f" on this machine's {cores} cores"
    )
    print(
        f"      the machine was {run.busy_cores:.2f} of {cores} cores busy over the window,"
        f" {run.others_cores:.2f} of them with work not of this benchmark"
    )
    if run.life_cpu_s is not None:
        print(
            f"      node's whole life (start-up, run, drain; wait4 after a clean stop):"
            f" {run.life_cpu_s:.1f} s CPU,"
            f" of which the timed window {run.node_ms * run.count / 1000:.1f} s"
        )
    if run.latencies:
        print(
            f"      mean SMTP acceptance (MAIL FROM to the 250 after DATA):"
            f" {run.latencies['acceptance_ms']:.1f} ms; mean acceptance to mailbox:"
            f" {run.latencies['delivery_ms'] / 1000:.1f} s"
        )
    if run.database_per_dispatch:
        figures = ", ".join(f"{v:.1f} {k}" for k, v in run.database_per_dispatch.items())
        print(f"      PostgreSQL per Dispatch (autovacuum: during the run): {figures}")
    if run.vacuum_runs is not None:
        print(f"      VACUUM (ANALYZE) by the benchmark: {run.vacuum_runs} times")
    print(f"      store afterwards: {run.states}; evidence sink received {run.sink_count}")
    for problem in run.problems:
        print(f"      PROBLEM: {problem}")
    if run.log_counts:
        print(f"      log warnings/errors: {run.log_counts}")
    if run.log_copy:
        print(f"      log kept: {run.log_copy}")


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
    """The node and every process under it (supervisor, node processes, crypto workers)."""
    return list(tree(pid))


def bench_large(size_mib: int, setup: Setup) -> float:
    """Peak RSS growth of the node's processes together (each one's peak, summed)."""
    # The limit allows for the original's base64 and MIME overhead.
    with hs02_node(setup, limit_mib=size_mib + 10, label="large") as hs02:
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
    parser.add_argument("--processes", type=int, default=1, help="hs02's [node] processes")
    parser.add_argument(
        "--crypto-workers", type=int, default=0, help="hs02's [limits] crypto_workers"
    )
    parser.add_argument(
        "--store",
        default=None,
        help="hs02's [store] url (default: SQLite in its data folder); for postgresql://…"
        " each hs02 gets a fresh database kep_bench_<random> on that server, dropped after",
    )
    parser.add_argument(
        "--vacuum-every",
        type=float,
        default=0.0,
        help="PostgreSQL: VACUUM (ANALYZE) the store every this many seconds, standing in for"
        " autovacuum on a server where it is off (0: never)",
    )
    parser.add_argument(
        "--prefill-mailbox", type=int, default=0, help="messages in each INBOX before hs02 starts"
    )
    parser.add_argument(
        "--prefill-evidence", type=int, default=0, help="evidence rows before hs02 starts"
    )
    parser.add_argument("--skip-postfix", action="store_true", help="no Postfix half")
    parser.add_argument("--skip-large", action="store_true", help="no 100 MiB RSS part")
    parser.add_argument("--log-dir", type=Path, default=None, help="keep hs02's logs here")
    parser.add_argument("--json", type=Path, default=None, help="append the figures here")
    args = parser.parse_args()
    setup = Setup(
        args.processes,
        args.crypto_workers,
        args.store,
        args.log_dir,
        args.vacuum_every,
        args.prefill_mailbox,
        args.prefill_evidence,
    )
    print(
        f"(1) {args.messages} Dispatches of 4 KiB over {args.connections} mutual-TLS connections"
        " to hs02, until every Delivery evidence has left hs02"
    )
    run = bench_gateway(args.messages, args.connections, setup)
    report_gateway(run)
    record: dict[str, Any] = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "argv": sys.argv[1:],
        "code": str(ROOT),
        "setup": setup.describe(),
        "messages": run.count,
        "elapsed_s": round(run.elapsed, 2),
        "per_second": round(run.per_second, 2),
        "node_ms": round(run.node_ms, 2),
        "roles_ms": {k: round(v, 2) for k, v in run.roles_ms.items()},
        "postgres_ms": None if run.postgres_ms is None else round(run.postgres_ms, 2),
        "loadgen_ms": round(run.loadgen_ms, 2),
        "life_cpu_s": run.life_cpu_s,
        "states": run.states,
        "sink": run.sink_count,
        "problems": run.problems,
        "log": run.log_counts,
        "processes_seen": run.processes_seen,
        "latencies_ms": {k: round(v, 1) for k, v in run.latencies.items()},
        "vacuum_runs": run.vacuum_runs,
        "database_per_dispatch": {k: round(v, 2) for k, v in run.database_per_dispatch.items()},
        "busy_cores": round(run.busy_cores, 2),
        "others_cores": round(run.others_cores, 2),
    }
    if not args.skip_postfix:
        print(
            f"(2) Postfix relaying {args.messages} 4 KiB messages,"
            " smtp-source → postfix → smtp-sink"
        )
        theirs = bench_postfix(args.messages, args.connections)
        if theirs is not None:
            ratio = run.per_second / theirs
            record["postfix_per_second"] = round(theirs, 1)
            print(f"    Postfix:   {theirs:8.1f} messages/s")
            print(f"    ratio {ratio:.2f}   target >= 0.5: {'met' if ratio >= 0.5 else 'NOT met'}")
    if not args.skip_large:
        print(f"(3) one {args.size_mib} MiB Dispatch received and delivered by hs02")
        growth = bench_large(args.size_mib, setup)
        record["large_rss_mib"] = round(growth, 1)
        print(
            f"    {growth:.1f} MiB peak RSS above idle   target <= 64 MiB: "
            f"{'met' if growth <= 64 else 'NOT met'}"
        )
    if args.json is not None:
        with args.json.open("a") as out:
            out.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
