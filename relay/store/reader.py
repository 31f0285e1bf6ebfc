"""Reading a node's store from elsewhere: a short-lived read-only connection of its own.

The monitoring listener reads state at scrape time on its own threads, and the operator tools
read other nodes' stores (``kep-relay mesh``); neither may touch the connections the stages use
nor wait for their locks. SQLite's WAL lets a reader see the last committed state alongside;
PostgreSQL's readers never wait for writers. ``snapshot`` makes several queries see one state
(one message's story, ``relay.store.status``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import psycopg

from interop.evidence.codes import Event, EvidenceType
from relay.lifecycle import HELD, PENDING, Kind, State
from relay.store.base import blob
from relay.store.database import Tx, psycopg_sql, sqlite_path
from relay.store.status import StatusQueries


class _Postgres:
    def __init__(self, connection: Any) -> None:
        self.connection = connection

    def execute(self, sql: str, params: Any = ()) -> Any:
        return self.connection.execute(psycopg_sql(sql), params)  # "%" doubled: always params


def _connect(url: str, timeout: float) -> tuple[Tx, Any]:
    """A read-only session on the store at ``url``, and what closes it."""
    if url.startswith("sqlite:///"):
        db = sqlite3.connect(f"file:{sqlite_path(url)}?mode=ro", uri=True, timeout=timeout)
        return db, db
    connection = psycopg.connect(
        url,
        autocommit=True,
        connect_timeout=max(1, int(timeout)),
        options="-c default_transaction_read_only=on",
    )
    return _Postgres(connection), connection  # type: ignore[return-value]


class StoreReader(StatusQueries):
    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url
        self.timeout = timeout

    def __enter__(self) -> StoreReader:
        self.db, self._connection = _connect(self.url, self.timeout)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._connection.close()

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """The queries inside read one committed state (a read transaction: SQLite's WAL
        snapshot, PostgreSQL's repeatable read), never writing and never waiting for a writer."""
        sqlite = self.url.startswith("sqlite:///")
        self.db.execute("BEGIN" if sqlite else "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            yield
        finally:
            self.db.execute("ROLLBACK")

    def ledger_length(self) -> int:
        row = self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM ledger").fetchone()
        return int(row[0])

    def queue(self) -> list[tuple[Kind, State, int, float]]:
        """(kind, state, count, oldest created) of the messages waiting or held."""
        states = [str(s) for s in (*PENDING, *HELD)]
        marks = ", ".join("?" * len(states))
        return [
            (Kind(kind), State(state), int(count), float(created))
            for kind, state, count, created in self.db.execute(
                "SELECT kind, state, COUNT(*), MIN(created) FROM messages"  # noqa: S608
                f" WHERE state IN ({marks}) GROUP BY kind, state",
                states,
            )
        ]

    def awaited(self) -> list[tuple[str, int, float]]:
        """(peer, Dispatches sent whose Delivery evidence has not come, the oldest's 250).

        Read from the open timers outwards: SQLite, which keeps no statistics, started from
        every message sent (its state index) and took seconds a scrape at a million messages;
        CROSS JOIN makes it take the tables in the order written (PostgreSQL plans it freely).
        """
        return [
            (str(peer), int(count), float(sent))
            for peer, count, sent in self.db.execute(
                "SELECT t.peer, COUNT(*), MIN(COALESCE(m.sent_at, m.updated)) FROM timers t"
                " CROSS JOIN messages m"
                " WHERE m.id = t.dispatch_id AND t.done = 0 AND m.state = ? GROUP BY t.peer",
                (str(State.SENT),),
            )
        ]

    def evidence_since(
        self, seq: int
    ) -> list[tuple[int, str, str, str, str | None, Kind | None, float, float | None]]:
        """Ledger records after ``seq``: (seq, direction, type, event, the message's peer and
        kind, when recorded, when the message was sent)."""
        return [
            (
                int(s),
                str(direction),
                str(type_),
                str(event),
                peer,
                Kind(kind) if kind else None,
                float(created),
                float(sent) if sent is not None else None,
            )
            for s, direction, type_, event, peer, kind, created, sent in self.db.execute(
                "SELECT l.seq, e.direction, e.type, e.event, m.peer, m.kind, e.created,"
                " COALESCE(m.sent_at, m.updated) FROM ledger l"
                " JOIN evidence e ON e.id = l.evidence_id"
                " LEFT JOIN messages m ON m.id = e.message_id WHERE l.seq > ? ORDER BY l.seq",
                (seq,),
            )
        ]

    def last_checkpoint(self) -> tuple[float, int] | None:
        """(when, records covered) of the newest checkpoint."""
        row = self.db.execute(
            "SELECT created, records FROM checkpoints ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        return (float(row[0]), int(row[1])) if row else None

    def newest_archive_token(self) -> bytes | None:
        row = self.db.execute(
            "SELECT token FROM archive_stamps ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        return blob(row[0]) if row else None

    def delivered(self, remmd_id: str, recipient: str) -> bool:
        """Delivery evidence for ``recipient`` of ``remmd_id`` is in the ledger."""
        row = self.db.execute(
            "SELECT 1 FROM evidence WHERE remmd_id = ? AND type = ? AND event = ?"
            " AND lower(recipient) = ?",
            (
                remmd_id,
                EvidenceType.DeliveryNonDeliveryToRecipient.value,
                Event.Delivery.value,
                recipient.lower(),
            ),
        ).fetchone()
        return row is not None

    def submission_outcome(self, queue_id: str) -> tuple[State, bytes | None] | None:
        """The state of the submission ``queue_id`` and the SubmissionAcceptanceRejection
        the S-GW issued for it, once it has (None: no such message)."""
        row = self.db.execute("SELECT state FROM messages WHERE id = ?", (queue_id,)).fetchone()
        if row is None:
            return None
        evidence = self.db.execute(
            "SELECT xml FROM evidence WHERE message_id = ? AND type = ? AND direction = ?",
            (queue_id, EvidenceType.SubmissionAcceptanceRejection.value, "issued"),
        ).fetchone()
        return State(row[0]), blob(evidence[0]) if evidence else None


def writable(url: str, timeout: float = 2.0) -> str | None:
    """Why the store cannot take a write now, or None (the readiness probe)."""
    if url.startswith("sqlite:///"):
        try:
            db = sqlite3.connect(sqlite_path(url), timeout=timeout, isolation_level=None)
            try:
                db.execute("BEGIN IMMEDIATE")
                db.execute("ROLLBACK")
            finally:
                db.close()
        except sqlite3.Error as exc:
            return f"store not writable: {exc}"
        return None
    try:
        with psycopg.connect(
            url, autocommit=True, connect_timeout=max(1, int(timeout))
        ) as connection:
            row = connection.execute("SELECT pg_is_in_recovery()").fetchone()
    except psycopg.Error as exc:
        return f"store not reachable: {str(exc).strip()[:200]}"
    if row is not None and row[0]:
        return "store is a read-only replica"
    return None
