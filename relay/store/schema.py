"""The store's tables (SQLite), and the columns added since the first release.

Kinds and states are the values of ``relay.lifecycle``; the table comments name them.
"""

from __future__ import annotations

import sqlite3

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


def migrate(db: sqlite3.Connection) -> None:
    """Columns added since the first release, for stores made before them."""
    columns = {r["name"] for r in db.execute("PRAGMA table_info(messages)")}
    if "sent_at" not in columns:
        db.execute("ALTER TABLE messages ADD COLUMN sent_at REAL")
    if "headers" not in columns:
        db.execute("ALTER TABLE messages ADD COLUMN headers TEXT")
    if "content_gone" not in columns:
        db.execute("ALTER TABLE messages ADD COLUMN content_gone INTEGER NOT NULL DEFAULT 0")
    # The messages whose content is still on disk: few, once obligations are met (§7).
    db.execute(
        "CREATE INDEX IF NOT EXISTS messages_content ON messages (kind, state, updated)"
        " WHERE content_gone = 0"
    )
    columns = {r["name"] for r in db.execute("PRAGMA table_info(evidence)")}
    if "validation_set" not in columns:
        db.execute("ALTER TABLE evidence ADD COLUMN validation_set BLOB")
    columns = {r["name"] for r in db.execute("PRAGMA table_info(accounts)")}
    if "etebligat" not in columns:
        db.execute("ALTER TABLE accounts ADD COLUMN etebligat INTEGER NOT NULL DEFAULT 0")
