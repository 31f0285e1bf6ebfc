"""The store's tables and how a store made by an earlier release is brought up to date.

The tables are written once, in SQLite's words; ``for_postgres`` gives PostgreSQL's (64-bit
floats and integers, ``BYTEA``, identity keys). Migrations run on start, under the
database's write lock (SQLite) or an advisory lock (PostgreSQL), so the node processes of a
provider starting together bring the store up to date once; ``schema_version`` says how far
it is. Kinds and states are the values of ``relay.lifecycle``; the table comments name them.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from relay.store.database import Database, Tx

TABLES = """
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
                                  -- failed, expired, invalid, unmatched, quarantined, hold,
                                  -- deleted (relay.lifecycle.State)
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
    content_gone INTEGER NOT NULL DEFAULT 0  -- its content (spool file, or the bytes in
                                             -- contents) was removed (profile §7)
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


def for_postgres(ddl: str) -> str:
    """The same statements with PostgreSQL's column types."""
    ddl = re.sub(
        r"\bINTEGER PRIMARY KEY\b", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", ddl
    )
    ddl = re.sub(r"\bINTEGER\b", "BIGINT", ddl)
    ddl = re.sub(r"\bREAL\b", "DOUBLE PRECISION", ddl)
    return re.sub(r"\bBLOB\b", "BYTEA", ddl)


def _statements(database: Database, ddl: str) -> list[str]:
    if database.dialect == "postgresql":
        ddl = for_postgres(ddl)
    return [s for s in (part.strip() for part in ddl.split(";\n")) if s.strip(";\n ")]


def _columns(tx: Tx, database: Database, table: str) -> set[str]:
    if database.dialect == "sqlite":
        return {str(r[1]) for r in tx.execute(f"PRAGMA table_info({table})")}
    return {
        str(r[0])
        for r in tx.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ?", (table,)
        )
    }


def _first_release(tx: Tx, database: Database) -> None:
    """The tables, and the columns added before versions were counted (an old SQLite store)."""
    for statement in _statements(database, TABLES):
        tx.execute(statement)
    added = {
        "messages": [
            ("sent_at", "REAL"),
            ("headers", "TEXT"),
            ("content_gone", "INTEGER NOT NULL DEFAULT 0"),
        ],
        "evidence": [("validation_set", "BLOB")],
        "accounts": [("etebligat", "INTEGER NOT NULL DEFAULT 0")],
    }
    for table, columns in added.items():
        present = _columns(tx, database, table)
        for name, kind in columns:
            if name not in present:
                for statement in _statements(
                    database, f"ALTER TABLE {table} ADD COLUMN {name} {kind}"
                ):
                    tx.execute(statement)
    # The messages whose content is still on disk: few, once obligations are met (§7).
    tx.execute(
        "CREATE INDEX IF NOT EXISTS messages_content ON messages (kind, state, updated)"
        " WHERE content_gone = 0"
    )


LEASES = """
-- owner: the node process working on it now; lease_until: its claim ends then unless
-- renewed; fence: +1 at every claim, so a stale holder's late write changes nothing.
ALTER TABLE messages ADD COLUMN owner TEXT;
ALTER TABLE messages ADD COLUMN lease_until REAL;
ALTER TABLE messages ADD COLUMN fence INTEGER NOT NULL DEFAULT 0;
UPDATE messages SET next_attempt = created
    WHERE next_attempt IS NULL AND state IN ('received', 'queued');
CREATE INDEX IF NOT EXISTS messages_leases ON messages (owner) WHERE owner IS NOT NULL;
"""


def _leases(tx: Tx, database: Database) -> None:
    """Many node processes: claims with a lease and a fencing token; a waiting message always
    has the time it is due, so the ready path is one range of ``messages_due``."""
    for statement in _statements(database, LEASES):
        tx.execute(statement)


FIRST_CLAIMS = """
-- A stage holding a message's first claim (fence 1) files into mailboxes without searching
-- them for an earlier attempt's copy (relay/mailbox.py). A received message waiting now may
-- have been half done by a release before fencing, whose claims left no token: its next
-- claim must not be taken for a first one.
UPDATE messages SET fence = 1 WHERE state = 'received' AND fence = 0;
"""


def _first_claims(tx: Tx, database: Database) -> None:
    """Messages waiting at the upgrade count as claimed once: their filing searches."""
    for statement in _statements(database, FIRST_CLAIMS):
        tx.execute(statement)


LOOKUPS = """
-- Each a lookup of one message's rows that scanned the whole table (EXPLAIN QUERY PLAN on a
-- store of a million evidence): a cost per Dispatch growing with what the node holds.
-- evidence_in: which recipients' Delivery evidence came (per Evidence message received);
-- retrieval and RelayREMMDFailure: the evidence of a message.
CREATE INDEX IF NOT EXISTS evidence_by_message_id ON evidence (message_id);
-- A resend (a repeated Dispatch): the evidence an Evidence message carried.
CREATE INDEX IF NOT EXISTS evidence_by_envelope ON evidence (envelope_id);
-- A repeated Dispatch: the Evidence messages made for it, queued again.
CREATE INDEX IF NOT EXISTS messages_by_parent ON messages (parent);
-- evidence_in: the timer stopped when every recipient's Delivery evidence has come.
CREATE INDEX IF NOT EXISTS timers_by_remmd ON timers (remmd_id, peer);
"""


def _lookups(tx: Tx, database: Database) -> None:
    """Indexes for the lookups on the way of a Dispatch that scanned a table."""
    for statement in _statements(database, LOOKUPS):
        tx.execute(statement)


ATTEMPTS = """
-- Each send of a dispatch-out or evidence-out (kep-relay message status): when, to which
-- host, what came of it and the peer's reply; written with the outcome's move. A message
-- keeps its last relay.store.attempts.ATTEMPTS_KEPT: attempt number n lies in slot n modulo
-- that, so a message retried for days overwrites its oldest in place.
CREATE TABLE IF NOT EXISTS attempts (
    message_id TEXT NOT NULL,     -- the messages row sent
    slot INTEGER NOT NULL,        -- number modulo ATTEMPTS_KEPT
    number INTEGER NOT NULL,      -- 1 for its first attempt, counting on across resends
    attempted REAL NOT NULL,      -- when the outcome was recorded
    host TEXT,                    -- host:port that answered, when one did
    outcome TEXT NOT NULL,        -- sent (250), deferred (4xx, no answer), failed (5xx)
    reply TEXT NOT NULL,          -- the peer's reply, or what went wrong (truncated)
    PRIMARY KEY (message_id, slot)
);
"""


def _attempts(tx: Tx, database: Database) -> None:
    """The history of send attempts, beside the last reply ``messages`` keeps."""
    for statement in _statements(database, ATTEMPTS):
        tx.execute(statement)


CONTENTS = """
-- Evidence messages to peers, held here rather than as spool files: small (one evidence in a
-- signed envelope), made again from the ledger for a resend once removed, and a file apiece
-- cost a file created, synced and removed for each (relay/issuing.py). A row goes with the
-- rest of its message's content once the message's obligations are met (profile §7).
CREATE TABLE IF NOT EXISTS contents (
    message_id TEXT PRIMARY KEY,  -- the messages row (evidence-out)
    data BLOB NOT NULL            -- the message as sent, byte for byte
);
"""


def _contents(tx: Tx, database: Database) -> None:
    """Evidence messages' bytes in the store, written with their queue rows."""
    for statement in _statements(database, CONTENTS):
        tx.execute(statement)


# Each step brings a store from the version before it to its own; append only.
MIGRATIONS: list[tuple[int, str, Callable[[Tx, Database], None]]] = [
    (1, "the tables of the first releases", _first_release),
    (2, "leases and fencing tokens for many node processes", _leases),
    (3, "received messages waiting at the upgrade count as claimed once", _first_claims),
    (4, "indexes for lookups by message, envelope, parent and timer", _lookups),
    (5, "the history of send attempts", _attempts),
    (6, "Evidence messages' content in the store", _contents),
]
VERSION = MIGRATIONS[-1][0]


def migrate(database: Database) -> int:
    """Bring the store to ``VERSION``; returns the version it was at."""
    with database.transaction() as tx:
        database.serialise(tx, "migrations")
        tx.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = tx.execute("SELECT MAX(version) FROM schema_version").fetchone()
        found = int(row[0]) if row and row[0] is not None else 0
        for version, _, step in MIGRATIONS:
            if version > found:
                step(tx, database)
                tx.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
        if found > VERSION:
            raise RuntimeError(
                f"the store is at version {found}, newer than this release ({VERSION})"
            )
        return found
