"""Reading a node's store from elsewhere: a short-lived read-only connection of its own.

The monitoring listener reads state at scrape time on its own threads, and the operator tools
read other nodes' stores (``kep-relay mesh``); neither may touch the connection the stages use
nor wait for its lock. SQLite's WAL lets a reader see the last committed state alongside.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from types import TracebackType

from interop.evidence.codes import Event, EvidenceType
from relay.lifecycle import HELD, PENDING, Kind, State
from relay.store.base import blob


class StoreReader:
    def __init__(self, path: Path, timeout: float = 5.0) -> None:
        self.path = path
        self.timeout = timeout

    def __enter__(self) -> StoreReader:
        self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=self.timeout)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.db.close()

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
        """(peer, Dispatches sent whose Delivery evidence has not come, the oldest's 250)."""
        return [
            (str(peer), int(count), float(sent))
            for peer, count, sent in self.db.execute(
                "SELECT t.peer, COUNT(*), MIN(COALESCE(m.sent_at, m.updated)) FROM timers t"
                " JOIN messages m ON m.id = t.dispatch_id"
                " WHERE t.done = 0 AND m.state = ? GROUP BY t.peer",
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


def writable(path: Path, timeout: float = 2.0) -> str | None:
    """Why the store cannot take a write lock now, or None (the readiness probe)."""
    try:
        db = sqlite3.connect(path, timeout=timeout, isolation_level=None)
        try:
            db.execute("BEGIN IMMEDIATE")
            db.execute("ROLLBACK")
        finally:
            db.close()
    except sqlite3.Error as exc:
        return f"store not writable: {exc}"
    return None
