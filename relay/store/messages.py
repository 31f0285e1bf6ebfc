"""Messages and their moves along ``relay.lifecycle``: received, queued, sent, removed.

A message changes state only through ``move``, which checks the move against
``relay.lifecycle.MOVES`` in the same statement that makes it (``WHERE state IN`` the allowed
sources): a move the table does not have, or one from a state the message is no longer in, is
refused with ``IllegalMove`` and nothing changes.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence

from relay.lifecycle import (
    CONTENT_DONE,
    RECEIVED_KINDS,
    RECOVERY,
    SENT_KINDS,
    IllegalMove,
    Kind,
    State,
    allowed,
    sources,
)
from relay.store.base import MessageRow, StoreBase, message_row


def _marks(values: Iterable[object]) -> tuple[str, tuple[str, ...]]:
    """``?, ?, ?`` and the values as text, for an ``IN (...)`` of enum members."""
    texts = tuple(str(v) for v in values)
    return ", ".join("?" * len(texts)), texts


class MessageQueries(StoreBase):
    def add_message(
        self,
        db: sqlite3.Connection,
        *,
        id: str,
        kind: Kind,
        peer: str | None,
        remmd_id: str | None,
        mail_from: str,
        rcpt_to: Sequence[str],
        size: int,
        sha256: str,
        state: State,
        next_attempt: float | None = None,
        parent: str | None = None,
        headers: Mapping[str, str | None] | None = None,
    ) -> None:
        now = self.clock()
        db.execute(
            "INSERT INTO messages (id, kind, peer, remmd_id, mail_from, rcpt_to, size, sha256,"
            " state, created, updated, next_attempt, parent, headers)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                id,
                str(kind),
                peer,
                remmd_id,
                mail_from,
                json.dumps(list(rcpt_to)),
                size,
                sha256,
                str(state),
                now,
                now,
                next_attempt,
                parent,
                json.dumps(dict(headers)) if headers else None,
            ),
        )

    def move(self, db: sqlite3.Connection, row: MessageRow, to: State, **fields: object) -> None:
        """Move ``row`` to ``to`` (and set ``fields``) in the caller's transaction, along the
        lifecycle table only; ``IllegalMove`` when the move is not in it or the message is no
        longer where a move to ``to`` may start."""
        if not any(allowed(row.kind, source, to) for source in State):
            raise IllegalMove(f"a {row.kind} message never moves to {to}")
        marks, froms = _marks(sources(row.kind, to))
        assignments = ", ".join(["state = ?", "updated = ?", *(f"{k} = ?" for k in fields)])
        changed = db.execute(
            f"UPDATE messages SET {assignments} WHERE id = ? AND state IN ({marks})",  # noqa: S608 (names are ours)
            (str(to), self.clock(), *fields.values(), row.id, *froms),
        ).rowcount
        if changed != 1:
            now = db.execute("SELECT state FROM messages WHERE id = ?", (row.id,)).fetchone()
            raise IllegalMove(
                f"{row.kind} {row.id} cannot move to {to} from "
                f"{now[0] if now else 'nowhere (no such message)'}"
            )

    def message(self, message_id: str) -> MessageRow | None:
        with self._lock:
            r = self.db.execute("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone()
            return message_row(r) if r else None

    def find(self, kind: Kind, peer: str, remmd_id: str) -> MessageRow | None:
        """The first message of ``kind`` exchanged with ``peer`` about ``remmd_id`` (indexed)."""
        with self._lock:
            r = self.db.execute(
                "SELECT * FROM messages WHERE remmd_id = ? AND peer = ? AND kind = ?"
                " ORDER BY created LIMIT 1",
                (remmd_id, peer, str(kind)),
            ).fetchone()
            return message_row(r) if r else None

    def resend_evidence_of(self, message_id: str) -> int:
        """Queue again every Evidence message made for ``message_id`` (a repeated Dispatch,
        INTEROP-PROFILE.md §2: the evidence already issued is returned again)."""
        # Those on the wire (sending) go anyway.
        ended = [s for s in sources(Kind.EVIDENCE_OUT, State.QUEUED) if s is not State.SENDING]
        marks, froms = _marks(ended)
        query = (
            "UPDATE messages SET state = ?, next_attempt = NULL, attempts = 0, updated = ?"  # noqa: S608
            f" WHERE parent = ? AND kind = ? AND state IN ({marks})"
        )
        with self.transaction() as db:
            count: int = db.execute(
                query,
                (str(State.QUEUED), self.clock(), message_id, str(Kind.EVIDENCE_OUT), *froms),
            ).rowcount
            return count

    def messages(self, *, kind: Kind | None = None, state: State | None = None) -> list[MessageRow]:
        with self._lock:
            query, args = "SELECT * FROM messages WHERE 1=1", []
            if kind:
                query += " AND kind = ?"
                args.append(str(kind))
            if state:
                query += " AND state = ?"
                args.append(str(state))
            return [message_row(r) for r in self.db.execute(query + " ORDER BY created", args)]

    def received_due(self, now: float) -> list[MessageRow]:
        """Received messages to process now (one whose processing failed waits its back-off)."""
        marks, kinds = _marks(sorted(RECEIVED_KINDS))
        with self._lock:
            rows = self.db.execute(
                f"SELECT * FROM messages WHERE state = ? AND kind IN ({marks})"  # noqa: S608
                " AND (next_attempt IS NULL OR next_attempt <= ?) ORDER BY created",
                (str(State.RECEIVED), *kinds, now),
            )
            return [message_row(r) for r in rows]

    def processing_failed(
        self, message_id: str, *, counted: bool, retry_at: float, detail: str
    ) -> int:
        """Record a failed processing run; returns the runs counted against the message."""
        with self.transaction() as db:
            db.execute(
                "UPDATE messages SET attempts = attempts + ?, next_attempt = ?, last_reply = ?,"
                " updated = ? WHERE id = ? AND state = ?",
                (
                    1 if counted else 0,
                    retry_at,
                    detail[:500],
                    self.clock(),
                    message_id,
                    str(State.RECEIVED),
                ),
            )
            row = db.execute("SELECT attempts FROM messages WHERE id = ?", (message_id,)).fetchone()
            return int(row[0]) if row else 0

    def claim_due(self, now: float, limit: int = 100) -> list[MessageRow]:
        """Messages to send now, moved to ``sending`` in one transaction, so no second pass
        takes them (§4 Relay)."""
        marks, kinds = _marks(sorted(SENT_KINDS))
        with self.transaction() as db:
            rows = [
                message_row(r)
                for r in db.execute(
                    f"SELECT * FROM messages WHERE state = ? AND kind IN ({marks})"  # noqa: S608
                    " AND (next_attempt IS NULL OR next_attempt <= ?)"
                    " ORDER BY next_attempt LIMIT ?",
                    (str(State.QUEUED), *kinds, now, limit),
                )
            ]
            for row in rows:
                self.move(db, row, State.SENDING)
            return rows

    def recover(self) -> int:
        """At start: messages a stopped node left half-way go back where they can be taken up
        (``relay.lifecycle.RECOVERY``); returns how many."""
        moved = 0
        with self.transaction() as db:
            for source, target in RECOVERY.items():
                moved += db.execute(
                    "UPDATE messages SET state = ?, updated = ? WHERE state = ?",
                    (str(target), self.clock(), str(source)),
                ).rowcount
        return moved

    def content_done(self, before: float, limit: int = 1000) -> list[str]:
        """Messages whose every obligation was met before ``before`` and whose spool file is
        still there (INTEROP-PROFILE.md §7: the gateway's own copy goes then). Held messages
        (invalid, unmatched, quarantined) and those still to be processed or sent stay."""
        clauses, args = [], []
        for kind, states in CONTENT_DONE.items():
            marks, texts = _marks(states)
            clauses.append(f"(kind = ? AND state IN ({marks}))")
            args += [str(kind), *texts]
        with self._lock:
            rows = self.db.execute(
                "SELECT id FROM messages WHERE content_gone = 0 AND updated <= ?"  # noqa: S608
                f" AND ({' OR '.join(clauses)}) LIMIT ?",
                (before, *args, limit),
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

    def spool_ids(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self.db.execute("SELECT id FROM messages")}
