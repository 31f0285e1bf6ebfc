"""Many node processes on one store (issue: many nodes, one provider): claims are disjoint,
a lease that runs out hands the work to another process, the fencing token refuses a stale
holder's late write, delayed retries stay off the ready path, and the ledger stays one chain
with concurrent writers. Each test runs on SQLite and on a real PostgreSQL (``store_url``)."""

from __future__ import annotations

import random
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from relay.lifecycle import Kind, State, Superseded
from relay.store import MessageRow, Store, is_duplicate, schema
from relay.store.database import SqliteDatabase
from relay.store.reader import StoreReader

LEASE = 60.0


class Clock:
    """The stores' one clock, moved by the test (seconds since the epoch)."""

    def __init__(self) -> None:
        self.now = 2_000_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def stores(store_url: str, clock: Clock) -> Iterator[tuple[Store, Store]]:
    """Two node processes' stores on one database."""
    a, b = Store(store_url, clock=clock), Store(store_url, clock=clock)
    yield a, b
    a.close()
    b.close()


def _add(store: Store, count: int, kind: Kind, state: State, prefix: str = "m") -> list[str]:
    ids = [f"{prefix}{i:04d}" for i in range(count)]
    with store.transaction() as db:
        for i in ids:
            store.add_message(
                db, id=i, kind=kind, peer="hs02", remmd_id=f"{i}@hs02.kep.tr",
                mail_from="a@hs02.kep.tr", rcpt_to=["b@hs01.kep.tr"], size=1, sha256="00",
                state=state,
            )  # fmt: skip
    return ids


def _move(store: Store, row: MessageRow, to: State) -> None:
    with store.transaction() as db:
        store.move(db, row, to)


def _in_threads(work: list[Callable[[], None]]) -> None:
    failures: list[BaseException] = []

    def run(job: Callable[[], None]) -> None:
        try:
            job()
        except BaseException as exc:  # reported below, on the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(job,)) for job in work]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures, failures


def test_processes_claiming_together_never_share_a_message(
    stores: tuple[Store, Store], clock: Clock
) -> None:
    a, b = stores
    ids = _add(a, 120, Kind.DISPATCH_IN, State.RECEIVED)
    taken: dict[str, list[str]] = {}

    def worker(store: Store, owner: str) -> Callable[[], None]:
        def work() -> None:
            mine = taken.setdefault(owner, [])
            while rows := store.claim_received(owner, clock(), LEASE, limit=7):
                for row in rows:
                    mine.append(row.id)
                    _move(store, row, State.PROCESSED)

        return work

    _in_threads([worker(s, f"node/{i}") for i, s in enumerate((a, b, a, b))])
    everything = [i for claimed in taken.values() for i in claimed]
    assert sorted(everything) == ids  # each exactly once
    assert {r.state for r in a.messages(kind=Kind.DISPATCH_IN)} == {State.PROCESSED}
    assert a.holders() == {}


def test_a_lease_that_runs_out_hands_the_work_over_and_fences_the_late_writer(
    stores: tuple[Store, Store], clock: Clock
) -> None:
    a, b = stores
    _add(a, 1, Kind.DISPATCH_IN, State.RECEIVED)
    [stale] = a.claim_received("node-a/1", clock(), LEASE)
    assert b.claim_received("node-b/1", clock(), LEASE) == []  # held: not claimable
    clock.now += LEASE + 1  # node a stalls past its lease (a GC pause, a frozen VM, death)
    [fresh] = b.claim_received("node-b/1", clock(), LEASE)
    assert fresh.fence > stale.fence
    # Node a wakes up and finishes: its write is refused, nothing is done twice.
    with pytest.raises(Superseded):
        _move(a, stale, State.PROCESSED)
    assert a.processing_failed(stale, counted=True, retry_at=clock(), detail="late") == 0
    a.release(stale)  # changes nothing either
    assert a.holders() == {"node-b/1": 1}
    _move(b, fresh, State.PROCESSED)
    done = b.message(fresh.id)
    assert done is not None and done.state is State.PROCESSED and done.attempts == 0


def test_what_a_dead_process_was_sending_goes_back_to_the_queue_for_the_others(
    stores: tuple[Store, Store], clock: Clock
) -> None:
    a, b = stores
    _add(a, 3, Kind.DISPATCH_OUT, State.QUEUED)
    claimed = a.claim_due("node-a/1", clock(), LEASE)
    assert [r.state for r in claimed] == [State.SENDING] * 3
    clock.now += LEASE / 2
    assert b.recover() == 0  # alive: its claims stand
    clock.now += LEASE
    assert b.recover() == 3  # node a stopped renewing: back to the queue, fenced
    again = b.claim_due("node-b/1", clock(), LEASE)
    assert sorted(r.id for r in again) == sorted(r.id for r in claimed)
    with pytest.raises(Superseded):
        _move(a, claimed[0], State.SENT)
    for row in again:
        _move(b, row, State.SENT)
    assert {r.state for r in b.messages(kind=Kind.DISPATCH_OUT)} == {State.SENT}


def test_a_renewed_lease_keeps_the_claim(stores: tuple[Store, Store], clock: Clock) -> None:
    a, b = stores
    _add(a, 2, Kind.EVIDENCE_OUT, State.QUEUED)
    a.claim_due("node-a/1", clock(), LEASE)
    for _ in range(5):  # renewed every third of a lease, for well over a lease
        clock.now += LEASE / 3
        assert a.renew("node-a/1", clock(), LEASE) == 2
        assert b.recover() == 0
        assert b.claim_due("node-b/1", clock(), LEASE) == []


def test_a_process_starting_again_under_its_name_takes_back_its_own_claims(
    stores: tuple[Store, Store], clock: Clock
) -> None:
    a, b = stores
    _add(a, 1, Kind.DISPATCH_OUT, State.QUEUED, "out")
    _add(a, 1, Kind.SUBMISSION, State.RECEIVED, "sub")
    a.claim_due("node-a/1", clock(), LEASE)
    a.claim_received("node-a/1", clock(), LEASE)
    # Restarted at once (systemd): no need to wait out its own leases.
    assert b.recover("node-a/1") == 2
    assert a.holders() == {}
    assert [r.state for r in a.messages(kind=Kind.DISPATCH_OUT)] == [State.QUEUED]
    assert len(b.claim_received("node-b/1", clock(), LEASE)) == 1


def test_a_delayed_retry_stays_off_the_ready_path(
    stores: tuple[Store, Store], clock: Clock
) -> None:
    a, b = stores
    _add(a, 1, Kind.DISPATCH_IN, State.RECEIVED)
    [row] = a.claim_received("node-a/1", clock(), LEASE)
    assert a.processing_failed(row, counted=True, retry_at=clock() + 30, detail="x") == 1
    assert b.claim_received("node-b/1", clock(), LEASE) == []
    clock.now += 31
    [again] = b.claim_received("node-b/1", clock(), LEASE)
    assert again.attempts == 1 and again.last_reply == "x"


def _add_due(store: Store, message_id: str, due: float) -> None:
    """A received message due at ``due`` (one waiting for its reader, or a retry)."""
    with store.transaction() as db:
        store.add_message(
            db, id=message_id, kind=Kind.DISPATCH_IN, peer="hs02",
            remmd_id=f"{message_id}@hs02.kep.tr", mail_from="a@hs02.kep.tr",
            rcpt_to=["b@hs01.kep.tr"], size=1, sha256="00", state=State.RECEIVED,
            next_attempt=due,
        )  # fmt: skip


def test_a_message_waiting_for_its_reader_is_its_alone_and_never_passes_an_older_one(
    stores: tuple[Store, Store], clock: Clock
) -> None:
    """A received message due a moment later (relay.readings.READER_FIRST) is claimed before
    then only by the process that names it, and after one that waits longer."""
    a, b = stores
    [older] = _add(a, 1, Kind.DISPATCH_IN, State.RECEIVED, prefix="old")
    _add_due(a, "fresh", clock() + 5)
    [first] = b.claim_received("node-b/1", clock(), LEASE, 2)
    assert first.id == older  # the other process: only what is due
    assert b.claim_received("node-b/1", clock(), LEASE, 2) == []
    [mine] = a.claim_received("node-a/1", clock(), LEASE, 2, mine=["fresh", "gone"])
    assert mine.id == "fresh" and mine.owner == "node-a/1"
    # Named with an older one waiting: the older one first.
    [older2] = _add(a, 1, Kind.DISPATCH_IN, State.RECEIVED, prefix="older")
    _add_due(a, "fresh2", clock() + 5)
    [one] = a.claim_received("node-a/1", clock(), LEASE, 1, mine=["fresh2"])
    assert one.id == older2
    clock.now += 5
    [late] = b.claim_received("node-b/1", clock(), LEASE, 2)
    assert late.id == "fresh2"  # its reader did not come: any process takes it


def test_a_process_with_nothing_to_do_takes_up_what_waits_for_a_busier_one(
    stores: tuple[Store, Store], clock: Clock
) -> None:
    """claim_awaited: messages waiting for their reader (due within the given seconds), never
    a retry waiting its back-off, nor one due later than that."""
    a, b = stores
    for message_id, due in (("waits", 5.0), ("later", 30.0), ("retry", 3.0)):
        _add_due(a, message_id, clock() + due)
    [retry] = a.claim_received("node-a/1", clock(), LEASE, 1, mine=["retry"])
    assert a.processing_failed(retry, counted=False, retry_at=clock() + 3, detail="x") == 0
    assert [r.id for r in b.claim_awaited("node-b/1", clock(), LEASE, 5, 5.0)] == ["waits"]


def test_the_ledger_stays_one_chain_with_concurrent_writers(
    stores: tuple[Store, Store], clock: Clock
) -> None:
    a, b = stores

    def writer(store: Store, name: str) -> Callable[[], None]:
        def work() -> None:
            for i in range(15):
                with store.transaction() as db:
                    store.add_evidence(
                        db, id=f"{name}-{i}", direction="issued", remmd_id=f"r{i}",
                        type="RelayREMMDAcceptanceRejection", event="Acceptance",
                        recipient=None, sender="a@hs01.kep.tr", issuer="hs01",
                        xml=f"<e>{name}-{i}</e>".encode(), message_id=None,
                    )  # fmt: skip

        return work

    _in_threads([writer(s, f"w{i}") for i, s in enumerate((a, b, a, b))])
    assert a.verify_ledger() == (60, None)
    assert b.ledger_head()[0] == 60
    # Record N is the N-th link: numbered without gaps (ledger proofs count on it).
    assert a.ledger_hash_at(60) == a.ledger_hashes()[-1]
    assert a.ledger_hash_at(61) is None


def test_migrations_run_once_when_processes_start_together(store_url: str) -> None:
    opened: list[Store] = []
    lock = threading.Lock()

    def start() -> None:
        store = Store(store_url)
        with lock:
            opened.append(store)

    _in_threads([start for _ in range(4)])
    with opened[0].database.read() as db:
        versions = [int(r[0]) for r in db.execute("SELECT version FROM schema_version")]
    assert versions == sorted(set(versions)) and versions[-1] >= 2
    for store in opened:
        store.close()


def test_the_same_dispatch_stored_by_two_nodes_at_once_is_one_message(
    stores: tuple[Store, Store],
) -> None:
    """Two nodes storing one Dispatch at once: the database's unique key refuses the second,
    and intake (relay/stages/intake.py) answers it as the repeat it is (§2)."""
    a, b = stores
    _add(a, 1, Kind.DISPATCH_IN, State.RECEIVED, "first")
    # Each database raises its own class of error: what matters is that it is a duplicate.
    with pytest.raises(Exception) as refused, b.transaction() as db:
        b.add_message(
            db, id="second", kind=Kind.DISPATCH_IN, peer="hs02",
            remmd_id="first0000@hs02.kep.tr", mail_from="a@hs02.kep.tr",
            rcpt_to=["b@hs01.kep.tr"], size=1, sha256="00", state=State.RECEIVED,
        )  # fmt: skip
    assert is_duplicate(refused.value)
    assert [m.id for m in b.messages(kind=Kind.DISPATCH_IN)] == ["first0000"]


def test_node_processes_sweeping_at_once_do_not_deadlock(stores: tuple[Store, Store]) -> None:
    """Every node process's retention pass marks the same finished messages at once, each in
    its own order (a regression: PostgreSQL found a deadlock and the pass failed)."""
    a, b = stores
    ids = _add(a, 60, Kind.DISPATCH_IN, State.RECEIVED)

    def sweeper(store: Store, seed: int) -> Callable[[], None]:
        order = random.Random(seed).sample(ids, len(ids))  # noqa: S311 (an order, not a secret)

        def sweep() -> None:
            for _ in range(10):
                store.content_removed(order)

        return sweep

    _in_threads([sweeper(s, i) for i, s in enumerate((a, b, a, b))])


def test_a_percent_sign_in_a_query_means_itself(stores: tuple[Store, Store]) -> None:
    """Queries are written with ``?``; psycopg's ``%`` is escaped for them, with or without
    parameters (a query without any must not keep a doubled ``%``)."""
    a, _ = stores
    with a.database.read() as db:
        assert db.execute("SELECT '100%'").fetchone()[0] == "100%"
        assert db.execute("SELECT '5%' || ?", ("x",)).fetchone()[0] == "5%x"


def test_only_the_first_claim_of_a_message_may_file_without_searching(
    stores: tuple[Store, Store], clock: Clock
) -> None:
    """A stage files into mailboxes without searching them only under a message's first claim
    (relay/mailbox.py): after a failed run, a takeover or a restart, the next attempt searches
    for what the one before may have filed."""
    a, b = stores
    ids = _add(a, 3, Kind.DISPATCH_IN, State.RECEIVED)
    first = a.claim_received("node-a/1", clock(), LEASE)
    assert [r.first_claim_until("node-a/1", LEASE) for r in first] == [clock() + LEASE / 2] * 3
    assert first[0].first_claim_until("node-b/1", LEASE) is None  # not b's claim
    # A failed run: the next claim is not the first.
    a.processing_failed(first[0], counted=True, retry_at=clock(), detail="x")
    # A process starting again under its name.
    assert b.recover("node-a/1") == 2
    # A takeover of a claim whose lease ran out (node b stalled or died).
    [held] = b.claim_received("node-b/1", clock(), LEASE, limit=1)
    clock.now += LEASE + 1
    again = a.claim_received("node-a/1", clock(), LEASE)
    assert sorted(r.id for r in again) == ids
    assert [r.first_claim_until("node-a/1", LEASE) for r in again] == [None] * 3
    assert held.first_claim_until("node-b/1", LEASE) is None  # after the failed run


def test_the_upgrade_to_first_claims_and_lookup_indexes(
    store_url: str, monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    """Migrations 3 and 4 on a store of the release before: a received message waiting then
    (perhaps half done by a release without fencing tokens) is not taken for a first claim,
    one claimed under a token keeps it; the lookups of one message's rows get their indexes."""
    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:2])
    monkeypatch.setattr(schema, "VERSION", 2)
    old = Store(store_url, clock=clock)
    [waiting, claimed] = _add(old, 2, Kind.SUBMISSION, State.RECEIVED)
    with old.transaction() as db:
        db.execute("UPDATE messages SET fence = 0 WHERE id = ?", (waiting,))
        db.execute(
            "UPDATE messages SET fence = 1, owner = 'node-a/1', lease_until = ? WHERE id = ?",
            (clock() + LEASE, claimed),
        )
    old.close()
    monkeypatch.undo()
    new = Store(store_url, clock=clock)
    try:
        fences = {m.id: m.fence for m in new.messages()}
        assert fences == {waiting: 1, claimed: 1}
        [row] = new.claim_received("node-b/1", clock(), LEASE)
        assert row.id == waiting and row.first_claim_until("node-b/1", LEASE) is None
        with new.database.read() as db:
            versions = [int(r[0]) for r in db.execute("SELECT version FROM schema_version")]
            if new.database.dialect == "sqlite":
                query = "SELECT name FROM sqlite_master WHERE type = 'index'"
            else:
                query = "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'"
            indexes = {str(r[0]) for r in db.execute(query)}
        assert versions == list(range(1, schema.VERSION + 1))
        assert {
            "evidence_by_message_id",
            "evidence_by_envelope",
            "messages_by_parent",
            "timers_by_remmd",
        } <= indexes
    finally:
        new.close()


def test_the_lookups_of_one_message_read_through_an_index(tmp_path: Path) -> None:
    """Issue 13: what the node holds must not make a Dispatch dearer. Each lookup of one
    message's rows on the way of a Dispatch (or of a repeated one) is planned through an index,
    never as a scan of the table (SQLite plans without statistics, so a plan here is the plan
    at a million rows; PostgreSQL's were checked by hand on a pre-filled store)."""
    store = Store(tmp_path / "state.sqlite3")
    assert isinstance(store.database, SqliteDatabase)
    db = store.database.db
    statements: list[str] = []
    db.set_trace_callback(statements.append)
    with store.transaction() as tx:
        store.delivery_recipients(tx, "d1")
        store.stop_timer(tx, "d1@hs02.kep.tr", "hs01")
    store.evidence_of_message("d1")
    store.evidence_carried_by("e1")
    store.resend_evidence_of("d1")
    store.find(Kind.DISPATCH_OUT, "hs01", "d1@hs02.kep.tr")
    db.set_trace_callback(None)
    queries = [s for s in statements if s.startswith(("SELECT", "UPDATE"))]
    assert len(queries) == 6
    for query in queries:
        plan = [str(r[3]) for r in db.execute(f"EXPLAIN QUERY PLAN {query}")]
        assert not [step for step in plan if step.startswith("SCAN")], (query, plan)
    store.close()


def test_the_evidence_awaited_is_counted_from_the_open_timers(tmp_path: Path) -> None:
    """The scrape-time count of Dispatches awaiting evidence started, on SQLite, from every
    message sent: 0.9-1.2 s a scrape at a million messages (benchmarks/prefill.py), though
    none was awaited. It starts from the open timers now."""
    store = Store(tmp_path / "state.sqlite3")
    store.close()
    with StoreReader(f"sqlite:///{tmp_path / 'state.sqlite3'}") as reader:
        statements: list[str] = []
        assert isinstance(reader.db, sqlite3.Connection)
        reader.db.set_trace_callback(statements.append)
        assert reader.awaited() == []
        reader.db.set_trace_callback(None)
        (query,) = statements
        plan = [str(r[3]) for r in reader.db.execute(f"EXPLAIN QUERY PLAN {query}")]
    assert plan[0].startswith("SCAN t USING INDEX timers_open"), plan
    assert not [step for step in plan[1:] if step.startswith("SCAN")], plan


def _synchronous_at_each_commit(store: Store) -> list[str]:
    """The synchronous setting each COMMIT of ``store``'s SQLite connection runs under."""
    database = store.database
    assert isinstance(database, SqliteDatabase)
    setting = [database.synchronous.upper()]
    commits: list[str] = []

    def traced(statement: str) -> None:
        if statement.startswith("PRAGMA synchronous="):
            setting[0] = statement.partition("=")[2].upper()
        elif statement == "COMMIT":
            commits.append(setting[0])

    database.db.set_trace_callback(traced)
    return commits


def test_claims_commit_without_a_sync_and_every_move_with_one(tmp_path: Path, clock: Clock) -> None:
    """On SQLite, claiming, renewing and releasing commit as NORMAL (no sync of the WAL: a
    lost claim is taken again); adding and moving messages stay FULL, and the setting is
    back to FULL after each claim, one that failed included."""
    store = Store(f"sqlite:///{tmp_path / 'state.sqlite3'}", clock=clock)
    _add(store, 3, Kind.DISPATCH_IN, State.RECEIVED)
    _add(store, 1, Kind.EVIDENCE_OUT, State.QUEUED, prefix="e")
    commits = _synchronous_at_each_commit(store)
    [row] = store.claim_received("p1", clock.now, LEASE, 1)
    store.claim_due("p1", clock.now, LEASE)
    store.renew("p1", clock.now, LEASE)
    assert commits == ["NORMAL", "NORMAL", "NORMAL"]
    _move(store, row, State.PROCESSED)
    assert commits[-1] == "FULL"
    taken = store.take("m0001", "p1", clock.now, LEASE)
    assert taken is not None
    store.release(taken)
    assert commits[-2:] == ["NORMAL", "NORMAL"]
    _add(store, 1, Kind.DISPATCH_IN, State.RECEIVED, prefix="n")
    assert commits[-1] == "FULL"
    with pytest.raises(sqlite3.OperationalError), store.transaction(durable=False) as db:
        db.execute("SELECT * FROM no_such_table")
    assert store.database.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # type: ignore[attr-defined]
    store.close()


def test_a_store_configured_not_to_sync_is_left_so(tmp_path: Path, clock: Clock) -> None:
    store = Store(f"sqlite:///{tmp_path / 'state.sqlite3'}", clock=clock, synchronous="OFF")
    _add(store, 1, Kind.DISPATCH_IN, State.RECEIVED)
    commits = _synchronous_at_each_commit(store)
    store.claim_received("p1", clock.now, LEASE, 1)
    assert commits == ["OFF"]
    store.close()
