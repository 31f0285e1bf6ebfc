"""What every part of the store shares: the connection, its lock, the clock, rows as values."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from relay.lifecycle import Kind, State
from relay.store.schema import SCHEMA, migrate

GENESIS = b"\x00" * 32


@dataclass(frozen=True, slots=True)
class MessageRow:
    id: str
    kind: Kind
    peer: str | None
    remmd_id: str | None
    mail_from: str
    rcpt_to: tuple[str, ...]
    size: int
    sha256: str
    state: State
    created: float
    attempts: int
    next_attempt: float | None
    last_reply: str | None
    parent: str | None
    headers: dict[str, str | None] = dataclasses.field(default_factory=dict)


def message_row(r: sqlite3.Row) -> MessageRow:
    return MessageRow(
        r["id"],
        Kind(r["kind"]),
        r["peer"],
        r["remmd_id"],
        r["mail_from"],
        tuple(json.loads(r["rcpt_to"])),
        r["size"],
        r["sha256"],
        State(r["state"]),
        r["created"],
        r["attempts"],
        r["next_attempt"],
        r["last_reply"],
        r["parent"],
        json.loads(r["headers"]) if r["headers"] else {},
    )


def blob(value: object) -> bytes:
    """A BLOB column's value as bytes, whatever SQLite holds (text after a change, say)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return str(value).encode("utf-8", "surrogateescape")


def ledger_hash(prev: bytes, evidence_id: str, xml: bytes) -> bytes:
    """Record hash: SHA-256 over the previous hash, the id and the evidence bytes (§7)."""
    h = hashlib.sha256(prev)
    h.update(len(evidence_id).to_bytes(4, "big") + evidence_id.encode())
    h.update(hashlib.sha256(xml).digest())
    return h.digest()


class StoreBase:
    """One SQLite connection shared by the node's threads.

    Every use holds one lock: a transaction from ``transaction()`` to its commit, a read for
    its query. So no thread reads another's uncommitted changes, and a thread inside its own
    transaction (the lock is re-entrant) reads its own. ``clock`` (seconds since the epoch) is
    the node's one clock: the store reads no other.
    """

    def __init__(
        self, path: Path, synchronous: str = "FULL", clock: Callable[[], float] = time.time
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.clock = clock
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={synchronous}")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.executescript(SCHEMA)
        migrate(self.db)
        self._lock = threading.RLock()

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
