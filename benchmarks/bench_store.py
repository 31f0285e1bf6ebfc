"""The store on its own: SQLite (a temporary file) against PostgreSQL (a fresh database).

(a) Claim and commit: messages added, then claimed in batches (``claim_received``: received
    Dispatches, or ``claim_due``: queued evidence messages, moved to ``sending`` by the claim)
    and each moved to its next state in a transaction of its own, as a node process does;
    by 1 and by 2 claimers at once, each a process of its own with its own ``Store``. Prints
    claims/s (claimed and moved), the wall time per claim+move inside one claimer, the CPU per
    claim+move of the claimers and of the PostgreSQL server, and checks that every message
    moved exactly once. Every second a claimer renews its leases (``renew``), as a node does
    every third of a lease; that call's time is printed too.
(b) Ledger appends (``add_evidence`` in a transaction of its own; the append is serialised in
    the database), by 1 and by 2 writers; checks afterwards that the hash chain is whole.
(c) Content: a 4 KiB and a 25 MiB message body stored durably as a file in a folder (write,
    fsync, rename, fsync of the folder) against in PostgreSQL as 1 MiB BYTEA rows in one
    transaction (streamed from a file, never whole in memory), and read back.

Run:  .venv/bin/python -m benchmarks.bench_store [--seconds N] [--postgres URL]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import multiprocessing
import os
import queue
import resource
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from benchmarks.pgtemp import fresh_database, is_postgres, postmaster_pid, server_cpu_seconds
from benchmarks.procstat import machine_busy_seconds
from relay.lifecycle import IllegalMove, Kind, State, Superseded
from relay.store import GENESIS, Store, blob, ledger_hash

MiB = 1024 * 1024
LEASE = 60.0
CHUNK = MiB
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


# -- where a store lives --------------------------------------------------------------------


@contextlib.contextmanager
def fresh_store(kind: str, postgres: str) -> Iterator[str]:
    """The URL of an empty store: a new SQLite file, or a new PostgreSQL database."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="kep-bench-store-") as folder:
            yield f"sqlite:///{folder}/state.sqlite3"
    else:
        with fresh_database(postgres, prefix="kep_bench_store") as url:
            yield url


class ServerCpu:
    """The PostgreSQL server's CPU over a stretch (0 for SQLite: it has no server)."""

    def __init__(self, url: str) -> None:
        self.postmaster: int | None = None
        if is_postgres(url):
            with psycopg.connect(url, autocommit=True) as connection:
                self.postmaster = postmaster_pid(connection)
        self.start = self.now()

    def now(self) -> float:
        return server_cpu_seconds(self.postmaster) if self.postmaster else 0.0

    def spent(self) -> float:
        return self.now() - self.start


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- (a) claims -----------------------------------------------------------------------------

PATHS: dict[str, tuple[Kind, State, State]] = {
    # (kind added, state added in, state it is moved to after the claim)
    "received→processed (claim_received)": (Kind.DISPATCH_IN, State.RECEIVED, State.PROCESSED),
    "queued→sending→sent (claim_due)": (Kind.EVIDENCE_OUT, State.QUEUED, State.SENT),
}


def populate(url: str, kind: Kind, state: State, count: int, tag: str, analyze: bool) -> None:
    """``count`` messages of ``kind`` in ``state``, due now; then, unless ``analyze`` is off,
    the planner's statistics, as autovacuum (PostgreSQL) would have gathered them on a store
    that has been running: without them PostgreSQL plans a claim as a sort of every waiting
    message (a cost that grows with the backlog), with them as a walk of ``messages_due``."""
    store = Store(url)
    try:
        for start in range(0, count, 1000):
            with store.transaction() as db:
                for n in range(start, min(count, start + 1000)):
                    store.add_message(
                        db,
                        id=f"{tag}-{n:08d}",
                        kind=kind,
                        peer="hs01",
                        remmd_id=f"bench-{tag}-{n}@hs01.kep.tr",
                        mail_from="ali.yilmaz@hs01.kep.tr",
                        rcpt_to=["ayse.demir@hs02.kep.tr"],
                        size=25_000,
                        sha256=hashlib.sha256(f"{tag}{n}".encode()).hexdigest(),
                        state=state,
                    )
        if analyze:
            with store.transaction() as db:
                db.execute("ANALYZE messages")
    finally:
        store.close()


@dataclass
class Worked:
    done: int = 0
    elapsed: float = 0.0
    cpu: float = 0.0
    busy: int = 0  # SQLite: the write lock not had within its busy timeout
    superseded: int = 0
    illegal: int = 0
    ran_out: bool = False
    renew_s: float = 0.0
    renews: int = 0


def _claimer(
    url: str,
    owner: str,
    path: str,
    batch: int,
    seconds: float,
    ready: Any,
    go: Any,
    results: Any,
) -> None:
    """One claimer process: claim up to ``batch``, move each claimed message in a transaction
    of its own, until ``seconds`` have passed or nothing is left."""
    store = Store(url)
    _, _, target = PATHS[path]
    claim: Callable[[str, float, float, int], list[Any]] = (
        store.claim_received if target is State.PROCESSED else store.claim_due
    )
    worked = Worked()
    ready.put(owner)
    go.wait()
    cpu, start = _cpu(), time.perf_counter()
    deadline, renew_at = start + seconds, start + 1.0
    while time.perf_counter() < deadline:
        try:
            rows = claim(owner, store.clock(), LEASE, batch)
        except sqlite3.OperationalError:
            worked.busy += 1
            continue
        if not rows:
            worked.ran_out = True
            break
        for row in rows:
            try:
                with store.transaction() as db:
                    store.move(db, row, target)
                worked.done += 1
            except sqlite3.OperationalError:
                worked.busy += 1  # left claimed: its lease would run out
            except Superseded:
                worked.superseded += 1
            except IllegalMove:
                worked.illegal += 1
        if time.perf_counter() >= renew_at:
            began = time.perf_counter()
            store.renew(owner, store.clock(), LEASE)
            worked.renew_s += time.perf_counter() - began
            worked.renews += 1
            renew_at += 1.0
    worked.elapsed = time.perf_counter() - start
    worked.cpu = _cpu() - cpu
    store.close()
    results.put(worked)


@dataclass
class Started:
    """The machine's busy CPU, the server's CPU and the time when the processes were told go."""

    machine: float = 0.0
    server: float = 0.0
    at: float = 0.0


def _run_processes(
    target: Callable[..., None], args_for: list[tuple[Any, ...]], server: ServerCpu
) -> tuple[list[Worked], Started]:
    """Start one process per argument tuple (each gets ready, go, results after them), start
    them together once all are ready, and collect what each did."""
    spawn = multiprocessing.get_context("spawn")
    ready, results, go = spawn.Queue(), spawn.Queue(), spawn.Event()
    processes = [spawn.Process(target=target, args=(*a, ready, go, results)) for a in args_for]
    for process in processes:
        process.start()
    for _ in processes:
        ready.get(timeout=120)
    started = Started(machine_busy_seconds(), server.now(), time.perf_counter())
    go.set()
    worked: list[Worked] = []
    while len(worked) < len(processes):
        try:
            worked.append(results.get(timeout=1.0))
        except queue.Empty:
            dead = [p for p in processes if p.exitcode not in (None, 0)]
            if dead:
                raise SystemExit(f"a benchmark process died: exit {dead[0].exitcode}") from None
    for process in processes:
        process.join()
    return worked, started


def _spent(started: Started, server: ServerCpu, worked: list[Worked]) -> tuple[float, float]:
    """The server's CPU since go, and the cores busy meanwhile with work not of this
    measurement (other work on the machine; the processes' own exit counts, a little)."""
    server_cpu = server.now() - started.server
    wall = time.perf_counter() - started.at
    ours = server_cpu + sum(w.cpu for w in worked)
    return server_cpu, max(0.0, machine_busy_seconds() - started.machine - ours) / wall


def _count_in(url: str, state: State) -> int:
    store = Store(url)
    try:
        with store.database.read() as db:
            row = db.execute("SELECT COUNT(*) FROM messages WHERE state = ?", (str(state),))
            return int(row.fetchone()[0])
    finally:
        store.close()


def bench_claims(
    kind: str,
    postgres: str,
    path: str,
    batch: int,
    claimers: int,
    seconds: float,
    guess: float,
    analyze: bool = True,
) -> tuple[float, dict[str, Any]]:
    """Returns the claims/s measured (the next measurement's guess) and the figures."""
    added_kind, added_state, target = PATHS[path]
    count = int(max(2000, guess * seconds * 1.5))
    with fresh_store(kind, postgres) as url:
        populate(url, added_kind, added_state, count, "m", analyze)
        server = ServerCpu(url)
        worked, started = _run_processes(
            _claimer,
            [(url, f"bench/{i + 1}", path, batch, seconds) for i in range(claimers)],
            server,
        )
        server_cpu, others = _spent(started, server, worked)
        moved = _count_in(url, target)
    done = sum(w.done for w in worked)
    elapsed = max(w.elapsed for w in worked)
    rate = done / elapsed
    figures = {
        "claims_per_s": rate,
        "ms_per_claim_move": 1000 * sum(w.elapsed for w in worked) / max(1, done),
        "client_cpu_ms": 1000 * sum(w.cpu for w in worked) / max(1, done),
        "server_cpu_ms": 1000 * server_cpu / max(1, done),
        "renew_ms": 1000 * sum(w.renew_s for w in worked) / max(1, sum(w.renews for w in worked)),
        "busy": sum(w.busy for w in worked),
        "superseded": sum(w.superseded for w in worked),
        "illegal": sum(w.illegal for w in worked),
        "ran_out": any(w.ran_out for w in worked),
        "moved_in_store": moved,
        "done": done,
        "added": count,
        "others": others,
    }
    return rate, figures


# -- (b) the ledger -------------------------------------------------------------------------

VALIDATION = [
    ("certificate", b"\x30\x82" + os.urandom(1200)),
    ("certificate", b"\x30\x82" + os.urandom(1100)),
    ("crl", b"\x30\x82" + os.urandom(600)),
]


def _appender(url: str, writer: int, seconds: float, ready: Any, go: Any, results: Any) -> None:
    """One writer process: evidence recorded and appended to the ledger, one per transaction,
    with its (usual: already known) validation set, as the stages record it."""
    store = Store(url)
    body = os.urandom(4500)  # a signed XAdES-T evidence is some 6 KiB; its size hardly matters
    worked = Worked()
    ready.put(writer)
    go.wait()
    cpu, start = _cpu(), time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        n = worked.done
        evidence_id = f"ev-{writer}-{n}"
        try:
            with store.transaction() as db:
                store.add_evidence(
                    db,
                    id=evidence_id,
                    direction="issued",
                    remmd_id=f"bench-{writer}-{n}@hs01.kep.tr",
                    type="DeliveryNonDeliveryToRecipient",
                    event="Delivery",
                    recipient="ayse.demir@hs02.kep.tr",
                    sender="ali.yilmaz@hs01.kep.tr",
                    issuer="hs02",
                    xml=evidence_id.encode() + body,
                    message_id=f"m-{writer}-{n}",
                    validation=VALIDATION,
                )
            worked.done += 1
        except sqlite3.OperationalError:
            worked.busy += 1
    worked.elapsed = time.perf_counter() - start
    worked.cpu = _cpu() - cpu
    store.close()
    results.put(worked)


def check_chain(url: str) -> str | None:
    """None when the ledger is 1…N with every link right; else what is wrong."""
    store = Store(url)
    try:
        with store.database.read() as db:
            rows = db.execute(
                "SELECT l.seq, l.evidence_id, l.prev_hash, l.hash, e.xml FROM ledger l"
                " JOIN evidence e ON e.id = l.evidence_id ORDER BY l.seq"
            ).fetchall()
        prev = GENESIS
        for expected, (seq, evidence_id, prev_hash, hash_, xml) in enumerate(rows, start=1):
            if int(seq) != expected:
                return f"record {expected} is numbered {seq}"
            if blob(prev_hash) != prev:
                return f"record {seq}: its previous hash is not record {seq - 1}'s"
            prev = ledger_hash(prev, str(evidence_id), blob(xml))
            if blob(hash_) != prev:
                return f"record {seq}: its hash does not follow"
        return None
    finally:
        store.close()


def bench_ledger(kind: str, postgres: str, writers: int, seconds: float) -> dict[str, Any]:
    with fresh_store(kind, postgres) as url:
        Store(url).close()  # the tables, before the writers race to make them
        server = ServerCpu(url)
        worked, started = _run_processes(
            _appender, [(url, i + 1, seconds) for i in range(writers)], server
        )
        server_cpu, others = _spent(started, server, worked)
        broken = check_chain(url)
        records = _count(url, "ledger")
    done = sum(w.done for w in worked)
    return {
        "appends_per_s": done / max(w.elapsed for w in worked),
        "ms_per_append": 1000 * sum(w.elapsed for w in worked) / max(1, done),
        "client_cpu_ms": 1000 * sum(w.cpu for w in worked) / max(1, done),
        "server_cpu_ms": 1000 * server_cpu / max(1, done),
        "busy": sum(w.busy for w in worked),
        "records": records,
        "done": done,
        "chain": broken or "whole",
        "others": others,
    }


def _count(url: str, table: str) -> int:
    store = Store(url)
    try:
        with store.database.read() as db:
            return int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])  # noqa: S608
    finally:
        store.close()


# -- (c) content ----------------------------------------------------------------------------


def make_body(path: Path, size: int) -> None:
    """A message body like a Dispatch's: base64 lines of random bytes, written in chunks."""
    import base64

    with path.open("wb") as out:
        left = size
        while left > 0:
            raw = base64.encodebytes(os.urandom(min(CHUNK, left) * 3 // 4 + 3))[: min(CHUNK, left)]
            out.write(raw)
            left -= len(raw)


class FileContent:
    """Content as a file of a folder, written durably: temporary, fsync, rename, fsync dir."""

    name = "file (write, fsync, rename, fsync dir)"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)

    def put(self, key: str, source: Path) -> None:
        temporary = self.folder / f".{key}.tmp"
        with source.open("rb") as data, temporary.open("wb") as out:
            while chunk := data.read(CHUNK):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.rename(temporary, self.folder / key)
        os.fsync(self.dir_fd)

    def get(self, key: str) -> str:
        digest = hashlib.sha256()
        with (self.folder / key).open("rb") as data:
            while chunk := data.read(CHUNK):
                digest.update(chunk)
        return digest.hexdigest()

    def close(self) -> None:
        os.close(self.dir_fd)


class PostgresContent:
    """Content as 1 MiB BYTEA rows in PostgreSQL, all of a message in one transaction."""

    def __init__(self, url: str, storage: str) -> None:
        self.connection: psycopg.Connection[tuple[Any, ...]] = psycopg.connect(url)
        self.name = f"PostgreSQL BYTEA rows of 1 MiB, STORAGE {storage}"
        with self.connection.transaction():
            self.connection.execute(
                "CREATE TABLE content (id TEXT NOT NULL, seq INTEGER NOT NULL,"
                " data BYTEA NOT NULL, PRIMARY KEY (id, seq))"
            )
            # EXTENDED (the default) tries pglz on each value; EXTERNAL stores it as it is.
            self.connection.execute(f"ALTER TABLE content ALTER COLUMN data SET STORAGE {storage}")
        self.connection.commit()

    def put(self, key: str, source: Path) -> None:
        with self.connection.transaction(), source.open("rb") as data:
            seq = 0
            while chunk := data.read(CHUNK):
                self.connection.execute(
                    "INSERT INTO content (id, seq, data) VALUES (%s, %s, %b)", (key, seq, chunk)
                )
                seq += 1

    def get(self, key: str) -> str:
        """Chunk by chunk, each by its key, in one transaction: one chunk in memory at once."""
        digest = hashlib.sha256()
        with self.connection.transaction():
            seq = 0
            while True:
                row = self.connection.execute(
                    "SELECT data FROM content WHERE id = %s AND seq = %s", (key, seq), binary=True
                ).fetchone()
                if row is None:
                    break
                digest.update(row[0])
                seq += 1
        return digest.hexdigest()

    def close(self) -> None:
        self.connection.close()


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        while chunk := data.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def bench_content(
    store: FileContent | PostgresContent, source: Path, seconds: float, at_least: int, url: str
) -> dict[str, float]:
    size = source.stat().st_size
    expected = _digest(source)
    server = ServerCpu(url)
    cpu, start, n = _cpu(), time.perf_counter(), 0
    while n < at_least or time.perf_counter() - start < seconds:
        store.put(f"m{n}", source)
        n += 1
    written = time.perf_counter() - start
    write_cpu, write_server = _cpu() - cpu, server.spent()
    server = ServerCpu(url)
    cpu, start = _cpu(), time.perf_counter()
    for i in range(n):
        if store.get(f"m{i}") != expected:
            raise SystemExit(f"{store.name}: message {i} read back differs")
    read = time.perf_counter() - start
    read_cpu, read_server = _cpu() - cpu, server.spent()
    return {
        "n": n,
        "write_mb_s": n * size / written / 1e6,
        "write_ms": 1000 * written / n,
        "write_cpu_ms": 1000 * (write_cpu + write_server) / n,
        "read_mb_s": n * size / read / 1e6,
        "read_ms": 1000 * read / n,
        "read_cpu_ms": 1000 * (read_cpu + read_server) / n,
    }


# -- the report -----------------------------------------------------------------------------


def claim_figures(args: argparse.Namespace, kinds: list[str], batches: list[int]) -> None:
    print(
        "(a) claim + move, each move a transaction of its own; claimers are processes"
        + ("; NOT analysed" if args.no_analyze else "")
    )
    for kind in kinds:
        guess = 3000.0
        for path in PATHS:
            for batch in batches:
                for claimers in (1, 2):
                    guess, f = bench_claims(
                        kind,
                        args.postgres,
                        path,
                        batch,
                        claimers,
                        args.seconds,
                        guess,
                        analyze=not args.no_analyze,
                    )
                    notes = [f"{f[k]} {k}" for k in ("busy", "superseded", "illegal") if f[k]]
                    if f["moved_in_store"] != f["done"]:
                        notes.append(
                            f"PROBLEM: {f['done']} moves made, {f['moved_in_store']} in the store"
                        )
                    if f["ran_out"]:
                        notes.append(f"ran out of the {f['added']} messages added")
                    print(
                        f"    {kind:10} {path:36} batch {batch:2} claimers {claimers}:"
                        f" {f['claims_per_s']:7.0f} claims/s, {f['ms_per_claim_move']:5.2f} ms"
                        f" per claim+move in a claimer; CPU {f['client_cpu_ms']:.2f} ms client"
                        f" + {f['server_cpu_ms']:.2f} ms server; renew {f['renew_ms']:.2f} ms;"
                        f" others {f['others']:.2f} cores"
                        + (f"  [{'; '.join(notes)}]" if notes else "")
                    )


def ledger_figures(args: argparse.Namespace, kinds: list[str]) -> None:
    print("(b) ledger appends (add_evidence, one per transaction; writers are processes)")
    for kind in kinds:
        for writers in (1, 2):
            f = bench_ledger(kind, args.postgres, writers, args.seconds)
            print(
                f"    {kind:10} writers {writers}: {f['appends_per_s']:7.0f} appends/s,"
                f" {f['ms_per_append']:5.2f} ms per append in a writer;"
                f" CPU {f['client_cpu_ms']:.2f} ms client + {f['server_cpu_ms']:.2f} ms server;"
                f" {f['records']} records, chain {f['chain']}; others {f['others']:.2f} cores"
                + (f", {f['busy']} busy" if f["busy"] else "")
            )


def content_figures(args: argparse.Namespace, kinds: list[str]) -> None:
    print("(c) content: a message body stored durably and read back (from the page cache)")
    with tempfile.TemporaryDirectory(prefix="kep-bench-content-") as folder:
        root = Path(folder)
        sources = {"4 KiB": root / "small.eml", "25 MiB": root / "large.eml"}
        make_body(sources["4 KiB"], 4096)
        make_body(sources["25 MiB"], 25 * MiB)
        for label, source in sources.items():
            at_least = 200 if label == "4 KiB" else 3
            files = FileContent(root / f"spool-{label.replace(' ', '')}")
            rows: list[tuple[FileContent | PostgresContent, str]] = [
                (files, f"sqlite:///{root}/none")
            ]
            contexts = contextlib.ExitStack()
            with contexts:
                if "postgresql" in kinds:
                    for storage in ("EXTENDED", "EXTERNAL"):
                        url = contexts.enter_context(
                            fresh_database(args.postgres, prefix="kep_bench_content")
                        )
                        pg = PostgresContent(url, storage)
                        contexts.callback(pg.close)
                        rows.append((pg, url))
                for store, url in rows:
                    f = bench_content(store, source, args.seconds, at_least, url)
                    print(
                        f"    {label:6} {store.name:48} ×{f['n']:<5}"
                        f" write {f['write_mb_s']:7.1f} MB/s {f['write_ms']:8.2f} ms each"
                        f" (CPU {f['write_cpu_ms']:.2f} ms);"
                        f" read {f['read_mb_s']:7.1f} MB/s {f['read_ms']:7.2f} ms each"
                        f" (CPU {f['read_cpu_ms']:.2f} ms)"
                    )
            files.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument(
        "--postgres", default=DEFAULT_POSTGRES, help="a server to make databases on"
    )
    parser.add_argument("--batches", default="1,8", help="claim sizes, comma-separated")
    parser.add_argument(
        "--no-analyze",
        action="store_true",
        help="(a) without the planner's statistics (a store autovacuum has not analysed yet)",
    )
    parser.add_argument("--parts", default="abc", help="which of (a), (b), (c) to run")
    parser.add_argument(
        "--only", choices=("sqlite", "postgresql"), default=None, help="one database only"
    )
    args = parser.parse_args()
    kinds = [args.only] if args.only else ["sqlite", "postgresql"]
    batches = [int(b) for b in args.batches.split(",")]
    print(f"store micro-benchmark, {args.seconds:g} s per measurement, {os.cpu_count()} cores")

    if "a" in args.parts:
        claim_figures(args, kinds, batches)
    if "b" in args.parts:
        ledger_figures(args, kinds)
    if "c" in args.parts:
        content_figures(args, kinds)


if __name__ == "__main__":
    main()
