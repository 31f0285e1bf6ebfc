"""The node's durable state in SQLite (WAL, synchronous=FULL by default).

Tables: ``messages`` (every envelope received or made, with its state in its stage),
``evidence`` (every evidence issued or received), ``ledger`` (the hash chain of profile §7 over
the evidence, append-only) and ``timers`` (relay and evidence deadlines of Dispatches sent).
Each stage changes state in one transaction, so a crash leaves every message in exactly one
state and replaying a stage is safe.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,           -- dispatch-in, evidence-in, submission, dispatch-out,
                                  -- evidence-out
    peer TEXT,                    -- provider it came from or goes to
    remmd_id TEXT,                -- X-REM-Message-Identifier
    mail_from TEXT NOT NULL,
    rcpt_to TEXT NOT NULL,        -- JSON list
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    state TEXT NOT NULL,          -- received, processed, rejected, queued, sending, sent,
                                  -- failed, expired, invalid, unmatched, quarantined
    created REAL NOT NULL,
    updated REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,  -- sending attempts; for received kinds, failed
                                          -- processing runs counted against the message
    next_attempt REAL,
    last_reply TEXT,
    parent TEXT,                  -- the message this one was made from
    sent_at REAL,                 -- when a peer last answered 250 (evidence round trips)
    headers TEXT,                 -- evidence-out: JSON of the Evidence message's header values,
                                  -- to make it again for a resend once its file is gone
    content_gone INTEGER NOT NULL DEFAULT 0  -- its spool file was removed (profile §7)
);
CREATE UNIQUE INDEX IF NOT EXISTS messages_dedupe
    ON messages (kind, peer, remmd_id) WHERE kind = 'dispatch-in';
CREATE INDEX IF NOT EXISTS messages_due ON messages (state, next_attempt);
CREATE INDEX IF NOT EXISTS messages_by_remmd ON messages (remmd_id, peer);
CREATE TABLE IF NOT EXISTS evidence (
    id TEXT PRIMARY KEY,          -- EvidenceIdentifier
    direction TEXT NOT NULL,      -- issued, received
    remmd_id TEXT NOT NULL,
    type TEXT NOT NULL,
    event TEXT NOT NULL,
    recipient TEXT,
    sender TEXT NOT NULL,
    issuer TEXT NOT NULL,
    message_id TEXT,              -- the messages row it was carried in or made for
    envelope_id TEXT,             -- the Evidence message carrying it, when sent
    xml BLOB NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS evidence_by_message ON evidence (remmd_id);
CREATE TABLE IF NOT EXISTS validation_objects (  -- what verifying evidence offline needs (§7)
    sha256 BLOB PRIMARY KEY,      -- of the DER
    kind TEXT NOT NULL,           -- certificate, crl
    der BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS validation_sets (  -- the objects one evidence's verification used
    id BLOB PRIMARY KEY,          -- SHA-256 of the members' hashes, sorted
    members BLOB NOT NULL         -- the members' 32-byte hashes, sorted, concatenated
);
CREATE TABLE IF NOT EXISTS ledger (
    seq INTEGER PRIMARY KEY,
    evidence_id TEXT NOT NULL UNIQUE,
    prev_hash BLOB NOT NULL,
    hash BLOB NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS accounts (  -- managed with kep-relay account; override the file
    address TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    state TEXT NOT NULL,
    quota INTEGER NOT NULL,
    updated REAL NOT NULL,
    etebligat INTEGER NOT NULL DEFAULT 0  -- authorised to send eTebligat (profile §4)
);
CREATE TABLE IF NOT EXISTS account_signers (  -- who may sign for an account, and when (§1)
    address TEXT NOT NULL,
    number TEXT NOT NULL,         -- TC Kimlik No or YKN of the signer's certificate
    role TEXT NOT NULL,           -- holder (a person's account), operator (a legal person's)
    since REAL NOT NULL,
    until REAL,                   -- NULL: still allowed; rows are never deleted
    PRIMARY KEY (address, number, role, since)
);
CREATE TABLE IF NOT EXISTS checkpoints (
    seq INTEGER PRIMARY KEY,
    records INTEGER NOT NULL,     -- ledger records the signed head covers
    head BLOB NOT NULL,
    document BLOB NOT NULL,       -- the signed text (relay/ledger.py)
    signature BLOB NOT NULL,      -- detached CMS by the process certificate
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS archive_stamps (  -- the ledger's time-stamp chain (§7, RFC 4998 idea)
    seq INTEGER PRIMARY KEY,
    records INTEGER NOT NULL,     -- ledger records the stamped head covers
    head BLOB NOT NULL,           -- the chain's hash at that length
    checkpoint INTEGER,           -- the checkpoint whose signature it covers too, if any
    previous BLOB NOT NULL,       -- SHA-256 of the stamp before (32 zero bytes for the first)
    token BLOB NOT NULL,          -- RFC 3161 token over archive_data(...) (relay/ledger.py)
    validation_set BLOB,          -- the TSA's chain and CRLs when it was taken
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS timers (
    dispatch_id TEXT PRIMARY KEY, -- the dispatch-out message
    remmd_id TEXT NOT NULL,
    peer TEXT NOT NULL,
    relay_deadline REAL,          -- no 250 by then: RelayREMMDFailure
    evidence_deadline REAL,       -- no Delivery/NonDelivery by then: RelayREMMDFailure
    done INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS timers_open ON timers (peer) WHERE done = 0;
"""

GENESIS = b"\x00" * 32


@dataclass(frozen=True, slots=True)
class MessageRow:
    id: str
    kind: str
    peer: str | None
    remmd_id: str | None
    mail_from: str
    rcpt_to: tuple[str, ...]
    size: int
    sha256: str
    state: str
    created: float
    attempts: int
    next_attempt: float | None
    last_reply: str | None
    parent: str | None
    headers: dict[str, str | None] = dataclasses.field(default_factory=dict)


def _row(r: sqlite3.Row) -> MessageRow:
    return MessageRow(
        r["id"],
        r["kind"],
        r["peer"],
        r["remmd_id"],
        r["mail_from"],
        tuple(json.loads(r["rcpt_to"])),
        r["size"],
        r["sha256"],
        r["state"],
        r["created"],
        r["attempts"],
        r["next_attempt"],
        r["last_reply"],
        r["parent"],
        json.loads(r["headers"]) if r["headers"] else {},
    )


def _blob(value: object) -> bytes:
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


class Store:
    """One SQLite connection shared by the node's threads.

    Every use holds one lock: a transaction from ``transaction()`` to its commit, a read for
    its query. So no thread reads another's uncommitted changes, and a thread inside its own
    transaction (the lock is re-entrant) reads its own.
    """

    def __init__(self, path: Path, synchronous: str = "FULL") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={synchronous}")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.executescript(SCHEMA)
        self._migrate()
        self._lock = threading.RLock()

    def _migrate(self) -> None:
        """Columns added since the first release, for stores made before them."""
        columns = {r["name"] for r in self.db.execute("PRAGMA table_info(messages)")}
        if "sent_at" not in columns:
            self.db.execute("ALTER TABLE messages ADD COLUMN sent_at REAL")
        if "headers" not in columns:
            self.db.execute("ALTER TABLE messages ADD COLUMN headers TEXT")
        if "content_gone" not in columns:
            self.db.execute(
                "ALTER TABLE messages ADD COLUMN content_gone INTEGER NOT NULL DEFAULT 0"
            )
        # The messages whose content is still on disk: few, once obligations are met (§7).
        self.db.execute(
            "CREATE INDEX IF NOT EXISTS messages_content ON messages (kind, state, updated)"
            " WHERE content_gone = 0"
        )
        columns = {r["name"] for r in self.db.execute("PRAGMA table_info(evidence)")}
        if "validation_set" not in columns:
            self.db.execute("ALTER TABLE evidence ADD COLUMN validation_set BLOB")
        columns = {r["name"] for r in self.db.execute("PRAGMA table_info(accounts)")}
        if "etebligat" not in columns:
            self.db.execute("ALTER TABLE accounts ADD COLUMN etebligat INTEGER NOT NULL DEFAULT 0")

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

    # -- messages ---------------------------------------------------------------------------

    def add_message(
        self,
        db: sqlite3.Connection,
        *,
        id: str,
        kind: str,
        peer: str | None,
        remmd_id: str | None,
        mail_from: str,
        rcpt_to: Sequence[str],
        size: int,
        sha256: str,
        state: str,
        next_attempt: float | None = None,
        parent: str | None = None,
        headers: Mapping[str, str | None] | None = None,
    ) -> None:
        now = time.time()
        db.execute(
            "INSERT INTO messages (id, kind, peer, remmd_id, mail_from, rcpt_to, size, sha256,"
            " state, created, updated, next_attempt, parent, headers)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                id,
                kind,
                peer,
                remmd_id,
                mail_from,
                json.dumps(list(rcpt_to)),
                size,
                sha256,
                state,
                now,
                now,
                next_attempt,
                parent,
                json.dumps(dict(headers)) if headers else None,
            ),
        )

    def set_state(
        self, db: sqlite3.Connection, message_id: str, state: str, **fields: object
    ) -> None:
        assignments = ["state = ?", "updated = ?"] + [f"{k} = ?" for k in fields]
        db.execute(
            f"UPDATE messages SET {', '.join(assignments)} WHERE id = ?",  # noqa: S608 (keys are ours)
            (state, time.time(), *fields.values(), message_id),
        )

    def message(self, message_id: str) -> MessageRow | None:
        with self._lock:
            r = self.db.execute("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone()
            return _row(r) if r else None

    def find(self, kind: str, peer: str, remmd_id: str) -> MessageRow | None:
        """The first message of ``kind`` exchanged with ``peer`` about ``remmd_id`` (indexed)."""
        with self._lock:
            r = self.db.execute(
                "SELECT * FROM messages WHERE remmd_id = ? AND peer = ? AND kind = ?"
                " ORDER BY created LIMIT 1",
                (remmd_id, peer, kind),
            ).fetchone()
            return _row(r) if r else None

    def resend_evidence_of(self, message_id: str) -> int:
        """Queue again every Evidence message made for ``message_id`` (a repeated Dispatch,
        INTEROP-PROFILE.md §2: the evidence already issued is returned again)."""
        with self.transaction() as db:
            count: int = db.execute(
                "UPDATE messages SET state = 'queued', next_attempt = NULL, attempts = 0,"
                " updated = ? WHERE parent = ? AND kind = 'evidence-out'"
                " AND state IN ('sent', 'failed', 'expired')",
                (time.time(), message_id),
            ).rowcount
            return count

    def messages(self, *, kind: str | None = None, state: str | None = None) -> list[MessageRow]:
        with self._lock:
            query, args = "SELECT * FROM messages WHERE 1=1", []
            if kind:
                query += " AND kind = ?"
                args.append(kind)
            if state:
                query += " AND state = ?"
                args.append(state)
            return [_row(r) for r in self.db.execute(query + " ORDER BY created", args)]

    def received_due(self, now: float) -> list[MessageRow]:
        """Received messages to process now (one whose processing failed waits its back-off)."""
        with self._lock:
            rows = self.db.execute(
                "SELECT * FROM messages WHERE state = 'received' AND (next_attempt IS NULL OR"
                " next_attempt <= ?) ORDER BY created",
                (now,),
            )
            return [_row(r) for r in rows]

    def processing_failed(
        self, message_id: str, *, counted: bool, retry_at: float, detail: str
    ) -> int:
        """Record a failed processing run; returns the runs counted against the message."""
        with self.transaction() as db:
            db.execute(
                "UPDATE messages SET attempts = attempts + ?, next_attempt = ?, last_reply = ?,"
                " updated = ? WHERE id = ? AND state = 'received'",
                (1 if counted else 0, retry_at, detail[:500], time.time(), message_id),
            )
            row = db.execute("SELECT attempts FROM messages WHERE id = ?", (message_id,)).fetchone()
            return int(row[0]) if row else 0

    def due(self, now: float, limit: int = 100) -> list[MessageRow]:
        with self._lock:
            rows = self.db.execute(
                "SELECT * FROM messages WHERE state = 'queued' AND (next_attempt IS NULL OR"
                " next_attempt <= ?) ORDER BY next_attempt LIMIT ?",
                (now, limit),
            )
            return [_row(r) for r in rows]

    def next_due_time(self) -> float | None:
        with self._lock:
            r = self.db.execute(
                "SELECT MIN(COALESCE(next_attempt, 0)) FROM messages WHERE state = 'queued'"
            ).fetchone()
            value: float | None = r[0]
            return value

    def content_done(self, before: float, limit: int = 1000) -> list[str]:
        """Messages whose every obligation was met before ``before`` and whose spool file is
        still there (INTEROP-PROFILE.md §7: the gateway's own copy goes then). Held messages
        (invalid, unmatched, quarantined) and those still to be processed or sent stay."""
        with self._lock:
            rows = self.db.execute(
                "SELECT id FROM messages WHERE content_gone = 0 AND updated <= ? AND ("
                " (kind = 'submission' AND state IN ('processed', 'rejected'))"
                " OR (kind IN ('dispatch-in', 'evidence-in') AND state = 'processed')"
                " OR (kind IN ('dispatch-out', 'evidence-out')"
                " AND state IN ('sent', 'failed', 'expired'))) LIMIT ?",
                (before, limit),
            )
            return [str(r[0]) for r in rows]

    def content_removed(self, ids: Sequence[str]) -> None:
        with self.transaction() as db:
            db.executemany("UPDATE messages SET content_gone = 1 WHERE id = ?", [(i,) for i in ids])

    def content_restored(self, message_id: str, size: int, sha256: str) -> None:
        """An Evidence message made again for a resend (its first copy went after sending)."""
        with self.transaction() as db:
            db.execute(
                "UPDATE messages SET content_gone = 0, size = ?, sha256 = ? WHERE id = ?",
                (size, sha256, message_id),
            )

    def evidence_carried_by(self, envelope_id: str) -> bytes | None:
        """The signed evidence an Evidence message we made carries."""
        with self._lock:
            row = self.db.execute(
                "SELECT xml FROM evidence WHERE envelope_id = ?", (envelope_id,)
            ).fetchone()
            return bytes(row[0]) if row else None

    def spool_ids(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self.db.execute("SELECT id FROM messages")}

    # -- evidence and ledger -----------------------------------------------------------------

    def add_evidence(
        self,
        db: sqlite3.Connection,
        *,
        id: str,
        direction: str,
        remmd_id: str,
        type: str,
        event: str,
        recipient: str | None,
        sender: str,
        issuer: str,
        xml: bytes,
        message_id: str | None,
        envelope_id: str | None = None,
        validation: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        """Record an evidence and append it to the ledger, in the caller's transaction.

        ``validation``: (kind, DER) of the certificates and CRLs verifying it needs, kept with
        it (profile §7, long-term verification), each object stored once.
        """
        now = time.time()
        validation_set = self._put_validation_set(db, validation) if validation else None
        db.execute(
            "INSERT INTO evidence (id, direction, remmd_id, type, event, recipient, sender,"
            " issuer, message_id, envelope_id, xml, created, validation_set)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                id,
                direction,
                remmd_id,
                type,
                event,
                recipient,
                sender,
                issuer,
                message_id,
                envelope_id,
                xml,
                now,
                validation_set,
            ),
        )
        last = db.execute("SELECT hash FROM ledger ORDER BY seq DESC LIMIT 1").fetchone()
        prev = bytes(last[0]) if last else GENESIS
        db.execute(
            "INSERT INTO ledger (evidence_id, prev_hash, hash, created) VALUES (?,?,?,?)",
            (id, prev, ledger_hash(prev, id, xml), now),
        )

    def _put_validation_set(
        self, db: sqlite3.Connection, objects: Sequence[tuple[str, bytes]]
    ) -> bytes:
        hashes = {}
        for kind, der in objects:
            hashes[hashlib.sha256(der).digest()] = (kind, der)
        members = b"".join(sorted(hashes))
        set_id = hashlib.sha256(members).digest()
        if db.execute("SELECT 1 FROM validation_sets WHERE id = ?", (set_id,)).fetchone():
            return set_id  # the usual case: the same chain and CRLs as the evidence before
        db.executemany(
            "INSERT OR IGNORE INTO validation_objects (sha256, kind, der) VALUES (?,?,?)",
            [(h, kind, der) for h, (kind, der) in hashes.items()],
        )
        db.execute("INSERT INTO validation_sets (id, members) VALUES (?,?)", (set_id, members))
        return set_id

    def validation_set(self, set_id: bytes) -> list[tuple[str, bytes]]:
        """(kind, DER) of the objects of a validation set."""
        with self._lock:
            row = self.db.execute(
                "SELECT members FROM validation_sets WHERE id = ?", (set_id,)
            ).fetchone()
            if row is None:
                return []
            members = bytes(row[0])
            found = []
            for i in range(0, len(members), 32):
                obj = self.db.execute(
                    "SELECT kind, der FROM validation_objects WHERE sha256 = ?",
                    (members[i : i + 32],),
                ).fetchone()
                if obj is not None:
                    found.append((str(obj[0]), bytes(obj[1])))
            return found

    def validation_objects(self, kind: str) -> list[bytes]:
        """The DER of every kept object of ``kind`` (certificate, crl)."""
        with self._lock:
            return [
                bytes(r[0])
                for r in self.db.execute(
                    "SELECT der FROM validation_objects WHERE kind = ?", (kind,)
                )
            ]

    def ledger_evidence(self) -> list[tuple[int, str, bytes, bytes | None]]:
        """(seq, evidence id, signed XML, validation set) of every ledger record, in order."""
        with self._lock:
            return [
                (int(r[0]), str(r[1]), _blob(r[2]), _blob(r[3]) if r[3] is not None else None)
                for r in self.db.execute(
                    "SELECT l.seq, l.evidence_id, e.xml, e.validation_set FROM ledger l"
                    " JOIN evidence e ON e.id = l.evidence_id ORDER BY l.seq"
                )
            ]

    def evidence_for(self, remmd_id: str) -> list[sqlite3.Row]:
        with self._lock:
            return list(
                self.db.execute(
                    "SELECT * FROM evidence WHERE remmd_id = ? ORDER BY created", (remmd_id,)
                )
            )

    def evidence_of_message(self, message_id: str) -> list[sqlite3.Row]:
        with self._lock:
            return list(
                self.db.execute(
                    "SELECT * FROM evidence WHERE message_id = ? ORDER BY created", (message_id,)
                )
            )

    def verify_ledger(self) -> tuple[int, str | None]:
        """(records checked, first problem or None): recomputes every link of the chain."""
        with self._lock:
            prev = GENESIS
            count = 0
            rows = self.db.execute(
                "SELECT l.seq, l.evidence_id, l.prev_hash, l.hash, e.xml FROM ledger l"
                " LEFT JOIN evidence e ON e.id = l.evidence_id ORDER BY l.seq"
            )
            for seq, evidence_id, prev_hash, record_hash, xml in rows:
                # Values are read as the bytes they should be: one changed into text, or
                # removed, is a change like any other, never a crash of the auditor's tool.
                if xml is None:
                    return count, f"record {seq}: evidence {evidence_id} is missing"
                if _blob(prev_hash) != prev:
                    return count, f"record {seq}: does not follow the record before it"
                if ledger_hash(prev, str(evidence_id), _blob(xml)) != _blob(record_hash):
                    return count, f"record {seq}: evidence {evidence_id} was changed"
                prev = _blob(record_hash)
                count += 1
            return count, None

    def ledger_head(self) -> tuple[int, bytes]:
        """(records, hash of the last record) of the chain now."""
        with self._lock:
            row = self.db.execute(
                "SELECT COUNT(*), (SELECT hash FROM ledger ORDER BY seq DESC LIMIT 1) FROM ledger"
            ).fetchone()
            return int(row[0]), bytes(row[1]) if row[1] is not None else GENESIS

    def ledger_hashes(self) -> list[bytes]:
        with self._lock:
            return [_blob(h) for (h,) in self.db.execute("SELECT hash FROM ledger ORDER BY seq")]

    def add_checkpoint(
        self, records: int, head: bytes, document: bytes, signature: bytes, created: float
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO checkpoints (records, head, document, signature, created)"
                " VALUES (?,?,?,?,?)",
                (records, head, document, signature, created),
            )

    def last_checkpoint(self) -> tuple[int, bytes] | None:
        """(seq, signature) of the newest checkpoint."""
        with self._lock:
            row = self.db.execute(
                "SELECT seq, signature FROM checkpoints ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            return (int(row[0]), bytes(row[1])) if row else None

    def add_archive_stamp(
        self,
        *,
        records: int,
        head: bytes,
        checkpoint: int | None,
        previous: bytes,
        token: bytes,
        validation: Sequence[tuple[str, bytes]],
        created: float,
    ) -> None:
        with self.transaction() as db:
            validation_set = self._put_validation_set(db, validation) if validation else None
            db.execute(
                "INSERT INTO archive_stamps (records, head, checkpoint, previous, token,"
                " validation_set, created) VALUES (?,?,?,?,?,?,?)",
                (records, head, checkpoint, previous, token, validation_set, created),
            )

    def archive_stamps(self) -> list[sqlite3.Row]:
        """Every archive stamp, oldest first."""
        with self._lock:
            return list(self.db.execute("SELECT * FROM archive_stamps ORDER BY seq"))

    def checkpoint_signature(self, seq: int) -> bytes | None:
        with self._lock:
            row = self.db.execute(
                "SELECT signature FROM checkpoints WHERE seq = ?", (seq,)
            ).fetchone()
            return bytes(row[0]) if row else None

    def last_checkpoint_time(self) -> float | None:
        with self._lock:
            row = self.db.execute("SELECT MAX(created) FROM checkpoints").fetchone()
            return float(row[0]) if row and row[0] is not None else None

    def checkpoints(self) -> list[tuple[int, int, bytes, bytes, bytes]]:
        """(seq, records, head, document, signature) of every checkpoint, oldest first."""
        with self._lock:
            return [
                (int(r[0]), int(r[1]), bytes(r[2]), bytes(r[3]), bytes(r[4]))
                for r in self.db.execute(
                    "SELECT seq, records, head, document, signature FROM checkpoints ORDER BY seq"
                )
            ]

    # -- accounts ----------------------------------------------------------------------------

    def account_row(self, address: str) -> sqlite3.Row | None:
        with self._lock:
            row: sqlite3.Row | None = self.db.execute(
                "SELECT * FROM accounts WHERE address = ?", (address.lower(),)
            ).fetchone()
            return row

    def account_rows(self) -> list[sqlite3.Row]:
        with self._lock:
            return list(self.db.execute("SELECT * FROM accounts ORDER BY address"))

    def put_account(
        self, address: str, type: str, state: str, quota: int, etebligat: bool = False
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO accounts (address, type, state, quota, updated, etebligat)"
                " VALUES (?,?,?,?,?,?) ON CONFLICT(address) DO UPDATE SET type = excluded.type,"
                " state = excluded.state, quota = excluded.quota, updated = excluded.updated,"
                " etebligat = excluded.etebligat",
                (address.lower(), type, state, quota, time.time(), int(etebligat)),
            )

    def allow_signer(self, address: str, number: str, role: str, at: float) -> bool:
        """From ``at`` on, ``number`` may sign for ``address`` as ``role``; a new holder ends
        the previous one. False when it already may (nothing is recorded twice)."""
        with self.transaction() as db:
            open_rows = db.execute(
                "SELECT number FROM account_signers WHERE address = ? AND role = ?"
                " AND until IS NULL",
                (address.lower(), role),
            ).fetchall()
            if any(r["number"] == number for r in open_rows):
                return False
            if role == "holder":
                db.execute(
                    "UPDATE account_signers SET until = ? WHERE address = ? AND role = 'holder'"
                    " AND until IS NULL",
                    (at, address.lower()),
                )
            db.execute(
                "INSERT INTO account_signers (address, number, role, since) VALUES (?,?,?,?)",
                (address.lower(), number, role, at),
            )
            return True

    def end_signer(self, address: str, number: str, role: str, at: float) -> bool:
        """From ``at`` on, ``number`` no longer signs for ``address`` as ``role`` (the record
        of when it did stays). False when it did not."""
        with self.transaction() as db:
            changed: int = db.execute(
                "UPDATE account_signers SET until = ? WHERE address = ? AND number = ?"
                " AND role = ? AND until IS NULL",
                (at, address.lower(), number, role),
            ).rowcount
            return changed > 0

    def signers_at(self, address: str, at: float) -> dict[str, str]:
        """Number → role of everyone who could sign for ``address`` at ``at``."""
        with self._lock:
            rows = self.db.execute(
                "SELECT number, role FROM account_signers WHERE address = ? AND since <= ?"
                " AND (until IS NULL OR until > ?)",
                (address.lower(), at, at),
            )
            return {str(r["number"]): str(r["role"]) for r in rows}

    def signer_history(self, address: str) -> list[sqlite3.Row]:
        with self._lock:
            return list(
                self.db.execute(
                    "SELECT * FROM account_signers WHERE address = ? ORDER BY since, number",
                    (address.lower(),),
                )
            )

    # -- timers ------------------------------------------------------------------------------

    def set_timer(
        self,
        db: sqlite3.Connection,
        dispatch_id: str,
        remmd_id: str,
        peer: str,
        *,
        relay_deadline: float | None = None,
        evidence_deadline: float | None = None,
    ) -> None:
        db.execute(
            "INSERT INTO timers (dispatch_id, remmd_id, peer, relay_deadline, evidence_deadline)"
            " VALUES (?,?,?,?,?) ON CONFLICT(dispatch_id) DO UPDATE SET"
            " relay_deadline = excluded.relay_deadline,"
            " evidence_deadline = excluded.evidence_deadline",
            (dispatch_id, remmd_id, peer, relay_deadline, evidence_deadline),
        )

    def stop_timer(self, db: sqlite3.Connection, remmd_id: str, peer: str) -> None:
        db.execute("UPDATE timers SET done = 1 WHERE remmd_id = ? AND peer = ?", (remmd_id, peer))

    def expired_timers(self, now: float) -> list[sqlite3.Row]:
        with self._lock:
            return list(
                self.db.execute(
                    "SELECT * FROM timers WHERE done = 0 AND ((relay_deadline IS NOT NULL AND"
                    " relay_deadline <= ?) OR (evidence_deadline IS NOT NULL AND"
                    " evidence_deadline <= ?))",
                    (now, now),
                )
            )

    # -- read-only queries for exports of one message's evidence (relay/export.py) ------------

    def ledger_records_of(self, remmd_id: str) -> list[sqlite3.Row]:
        """The evidence about ``remmd_id`` with its ledger record's ``seq``, in ledger order."""
        with self._lock:
            return list(
                self.db.execute(
                    "SELECT e.*, l.seq AS seq FROM evidence e JOIN ledger l"
                    " ON l.evidence_id = e.id WHERE e.remmd_id = ? ORDER BY l.seq",
                    (remmd_id,),
                )
            )

    def ledger_hash_at(self, seq: int) -> bytes | None:
        """The hash of ledger record ``seq`` (``GENESIS`` for 0; None when there is none)."""
        if seq == 0:
            return GENESIS
        with self._lock:
            row = self.db.execute("SELECT hash FROM ledger WHERE seq = ?", (seq,)).fetchone()
            return _blob(row[0]) if row else None

    def ledger_digests(self, first: int, last: int) -> list[tuple[int, str, bytes | None, bytes]]:
        """(seq, evidence id, SHA-256 of its XML or None when the evidence is gone, stored
        hash) of the ledger records ``first``..``last``: a ledger proof's content, with no
        evidence's bytes held in memory at once (a day of records may be millions)."""
        with self._lock:
            rows = self.db.execute(
                "SELECT l.seq, l.evidence_id, e.xml, l.hash FROM ledger l"
                " LEFT JOIN evidence e ON e.id = l.evidence_id"
                " WHERE l.seq BETWEEN ? AND ? ORDER BY l.seq",
                (first, last),
            )
            return [
                (
                    int(seq),
                    str(evidence_id),
                    hashlib.sha256(_blob(xml)).digest() if xml is not None else None,
                    _blob(record_hash),
                )
                for seq, evidence_id, xml, record_hash in rows
            ]
