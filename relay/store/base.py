"""What every part of the store shares: the connection, its lock, the clock, rows as values."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from relay.lifecycle import Kind, State
from relay.store.database import (
    Database,
    PostgresDatabase,
    Row,
    SqliteDatabase,
    Tx,
    open_database,
)
from relay.store.schema import migrate

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
    # The claim it was read under (relay.store.messages): a move checks it is still current.
    fence: int = 0
    owner: str | None = None
    lease_until: float | None = None

    def first_claim_until(self, owner: str, lease: float) -> float | None:
        """Until when ``owner``, holding this row as claimed, can be sure that no other attempt
        at the message's work has begun or can begin: the row is ``owner``'s claim and the
        message's first (``fence`` 1: every claim adds one, and so does a recovery of the
        claim), and no one takes a claim over before its lease runs out. Half the lease
        (``lease``) is kept back, the margin for a stall between asking and writing and for
        clocks that differ a little. None when the row was not read under such a claim: an
        attempt before this one may have written files, and they must be looked for
        (``Mailboxes.put``)."""
        if self.fence != 1 or self.owner != owner or self.lease_until is None:
            return None
        return self.lease_until - lease / 2


def message_row(r: Row) -> MessageRow:
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
        int(r["fence"]),
        r["owner"],
        r["lease_until"],
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


# Seconds between two attempts to make removed content unreadable from the database's files
# (``Database.purge``): an attempt that other processes' work stops half-way still copies the
# write-ahead log as a checkpoint does, so under load they are spaced; once the node is quiet,
# the next one completes.
PURGE_EVERY = 5.0


class StoreBase:
    """The store on one database (``relay.store.database``): SQLite by default, PostgreSQL
    for many machines.

    ``transaction()`` is one write transaction; ``database.read()`` a read that, on the thread
    of a transaction, sees that transaction's writes. ``clock`` (seconds since the epoch) is
    the node's one clock: the store reads no other.
    """

    def __init__(
        self,
        database: Database | Path | str,
        synchronous: str = "FULL",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(database, Path):
            database = SqliteDatabase(database, synchronous)
        elif isinstance(database, str):
            database = open_database(database, synchronous=synchronous)
        self.database = database
        self.clock = clock
        self._purge_owed = False  # content was removed and may still be read from the files
        self._purge_tried: float | None = None
        migrate(database)

    @property
    def url(self) -> str:
        """Where the store is, for a reader of its own (``relay.store.reader``)."""
        if isinstance(self.database, SqliteDatabase):
            return f"sqlite:///{self.database.path}"
        assert isinstance(self.database, PostgresDatabase)
        return self.database.url

    @property
    def holds_content(self) -> bool:
        """Whether a message's content may be held here rather than in a spool file: only
        where removing it makes it unreadable from the database's files (profile §7)."""
        return self.database.forgets_deleted

    def purge_removed(self) -> bool:
        """Once content was removed from the store (``content_removed``), make it unreadable
        from the database's files (``Database.purge``), trying at most every ``PURGE_EVERY``
        seconds; whether nothing is owed now."""
        if not self._purge_owed:
            return True
        now = self.clock()
        if self._purge_tried is not None and now - self._purge_tried < PURGE_EVERY:
            return False
        self._purge_tried = now
        self._purge_owed = not self.database.purge()
        return not self._purge_owed

    def close(self) -> None:
        self.database.close()

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[Tx]:
        """A write transaction; ``durable=False`` for one whose loss in a power failure costs
        nothing (``Database.transaction``)."""
        with self.database.transaction(durable=durable) as tx:
            yield tx
