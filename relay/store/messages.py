"""Messages and their moves along ``relay.lifecycle``: received, queued, sent, removed.

A message changes state only through ``move``, which checks the move against
``relay.lifecycle.MOVES`` in the same statement that makes it (``WHERE state IN`` the allowed
sources): a move the table does not have, or one from a state the message is no longer in, is
refused with ``IllegalMove`` and nothing changes.

Claims (many node processes, on one machine or many): ``claim_received`` and ``claim_due``
take waiting messages for one process (``owner``) until ``lease_until``, adding one to the
message's ``fence``; on PostgreSQL with ``FOR UPDATE SKIP LOCKED``, so processes claiming at
once take different messages. The holder renews its leases (``renew``); a move checks the
fence it was claimed under and clears the claim, so a holder whose lease ran out, and whose
message another process took, gets ``Superseded`` and its transaction changes nothing. A
message waits with the time it is due (``next_attempt``): one waiting for a retry is never on
the ready path of the index ``messages_due``. A received message can be due a moment after it
arrives, kept that long for the node process that read it (``relay.readings``): that process
names it when it claims (``claim_received(mine=...)``) and takes it at once; a process with
nothing else to do takes it early (``claim_awaited``); any process takes it once it is due.

Claims, renewals and releases commit without waiting for the disk where the database allows
(``durable=False``: SQLite, whose node processes all stop with the machine). A power failure
may lose the last of them, and costs nothing: a node starting again takes back its own claims
(``recover``), and a message whose claim was lost is simply claimed again, as if the crash
had come just before. Every move that changes what a message is stays durable.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence

from relay.lifecycle import (
    CONTENT_DONE,
    RECEIVED_KINDS,
    RECOVERY,
    SENT_KINDS,
    STAGE_MOVES,
    IllegalMove,
    Kind,
    State,
    Superseded,
    allowed,
    sources,
)
from relay.store.base import MessageRow, StoreBase, blob, message_row
from relay.store.database import Tx


def _marks(values: Iterable[object]) -> tuple[str, tuple[str, ...]]:
    """``?, ?, ?`` and the values as text, for an ``IN (...)`` of enum members."""
    texts = tuple(str(v) for v in values)
    return ", ".join("?" * len(texts)), texts


def _received() -> tuple[str, tuple[str, ...]]:
    """The condition (and its values) of a received message a stage processes."""
    marks, kinds = _marks(sorted(RECEIVED_KINDS))
    return f"state = ? AND kind IN ({marks})", (str(State.RECEIVED), *kinds)


class MessageQueries(StoreBase):
    def add_message(
        self,
        db: Tx,
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
        content: bytes | None = None,
    ) -> None:
        """A new message; ``content``: its bytes, held in the store (an Evidence message)
        rather than in a spool file."""
        now = self.clock()
        if next_attempt is None and state in (State.RECEIVED, State.QUEUED):
            next_attempt = now  # due at once: on the ready path
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
        if content is not None:
            db.execute("INSERT INTO contents (message_id, data) VALUES (?, ?)", (id, content))

    def content(self, message_id: str) -> bytes | None:
        """The bytes of a message held in the store (``add_message``'s ``content``); None
        when it is in a spool file, or gone (§7)."""
        with self.database.read() as db:
            r = db.execute("SELECT data FROM contents WHERE message_id = ?", (message_id,))
            found = r.fetchone()
            return blob(found[0]) if found else None

    def move(self, db: Tx, row: MessageRow, to: State, **fields: object) -> None:
        """Move ``row`` to ``to`` (and set ``fields``) in the caller's transaction, along the
        lifecycle table only, and end the claim it was read under; ``IllegalMove`` when the
        move is not in the table or the message is no longer where a move to ``to`` may start,
        ``Superseded`` when another process claimed it since."""
        if not any(allowed(row.kind, source, to) for source in State):
            raise IllegalMove(f"a {row.kind} message never moves to {to}")
        marks, froms = _marks(sources(row.kind, to))
        assignments = ", ".join(
            ["state = ?", "updated = ?", "owner = NULL", "lease_until = NULL"]
            + [f"{k} = ?" for k in fields]
        )
        changed = db.execute(
            f"UPDATE messages SET {assignments} WHERE id = ? AND fence = ?"  # noqa: S608 (names are ours)
            f" AND state IN ({marks})",
            (str(to), self.clock(), *fields.values(), row.id, row.fence, *froms),
        ).rowcount
        if changed != 1:
            now = db.execute("SELECT state, fence FROM messages WHERE id = ?", (row.id,)).fetchone()
            if now is not None and int(now[1]) != row.fence:
                raise Superseded(f"{row.kind} {row.id} was taken over by another node process")
            raise IllegalMove(
                f"{row.kind} {row.id} cannot move to {to} from "
                f"{now[0] if now else 'nowhere (no such message)'}"
            )

    def message(self, message_id: str) -> MessageRow | None:
        with self.database.read() as db:
            r = db.execute("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone()
            return message_row(r) if r else None

    def find(self, kind: Kind, peer: str, remmd_id: str) -> MessageRow | None:
        """The first message of ``kind`` exchanged with ``peer`` about ``remmd_id`` (indexed)."""
        with self.database.read() as db:
            r = db.execute(
                "SELECT * FROM messages WHERE remmd_id = ? AND peer = ? AND kind = ?"
                " ORDER BY created LIMIT 1",
                (remmd_id, peer, str(kind)),
            ).fetchone()
            return message_row(r) if r else None

    def resend_evidence_of(self, message_id: str) -> int:
        """Queue again every Evidence message made for ``message_id`` (a repeated Dispatch,
        INTEROP-PROFILE.md §2: the evidence already issued is returned again)."""
        # Those on the wire (sending) go anyway; one an operator holds stays held.
        ended = [
            s
            for s in sources(Kind.EVIDENCE_OUT, State.QUEUED, STAGE_MOVES)
            if s is not State.SENDING
        ]
        marks, froms = _marks(ended)
        query = (
            "UPDATE messages SET state = ?, next_attempt = ?, attempts = 0, updated = ?"  # noqa: S608
            f" WHERE parent = ? AND kind = ? AND state IN ({marks})"
        )
        now = self.clock()
        with self.transaction() as db:
            count: int = db.execute(
                query,
                (str(State.QUEUED), now, now, message_id, str(Kind.EVIDENCE_OUT), *froms),
            ).rowcount
            return count

    def messages(self, *, kind: Kind | None = None, state: State | None = None) -> list[MessageRow]:
        with self.database.read() as db:
            query, args = "SELECT * FROM messages WHERE 1=1", []
            if kind:
                query += " AND kind = ?"
                args.append(str(kind))
            if state:
                query += " AND state = ?"
                args.append(str(state))
            return [message_row(r) for r in db.execute(query + " ORDER BY created", args)]

    def claim_received(
        self, owner: str, now: float, lease: float, limit: int = 100, mine: Sequence[str] = ()
    ) -> list[MessageRow]:
        """Received messages due now that no live claim holds, claimed for ``owner`` until
        ``now + lease`` (one whose processing failed waits its back-off); ``mine``: messages
        this process read as they arrived, taken before they are due. Taken in the order they
        are due, so one that waits longer is never passed over for those."""
        return self._claim(*_received(), owner=owner, now=now, lease=lease, limit=limit, mine=mine)

    def claim_awaited(
        self, owner: str, now: float, lease: float, limit: int, within: float
    ) -> list[MessageRow]:
        """Received messages waiting for the process that read them, due within ``within``
        seconds and never tried, claimed for ``owner``: a process with nothing else to do
        takes them up rather than wait while another has more than it can start."""
        where, args = _received()
        return self._claim(
            f"{where} AND last_reply IS NULL",
            args,
            owner=owner,
            now=now,
            lease=lease,
            limit=limit,
            due_by=now + within,
        )

    def claim_due(self, owner: str, now: float, lease: float, limit: int = 100) -> list[MessageRow]:
        """Messages to send now, moved to ``sending`` and claimed for ``owner`` in one
        transaction, so no other pass or process sends them (§4 Relay)."""
        marks, kinds = _marks(sorted(SENT_KINDS))
        assert all(allowed(k, State.QUEUED, State.SENDING) for k in SENT_KINDS)
        return self._claim(
            f"state = ? AND kind IN ({marks})",
            (str(State.QUEUED), *kinds),
            owner=owner,
            now=now,
            lease=lease,
            limit=limit,
            to=State.SENDING,
        )

    def _claim(
        self,
        where: str,
        args: Sequence[object],
        *,
        owner: str,
        now: float,
        lease: float,
        limit: int,
        to: State | None = None,
        mine: Sequence[str] = (),
        due_by: float | None = None,
    ) -> list[MessageRow]:
        move = ", state = ?" if to is not None else ""
        named, _ = _marks(mine)
        due = f"(next_attempt <= ? OR id IN ({named}))" if mine else "next_attempt <= ?"
        query = (
            f"UPDATE messages SET owner = ?, lease_until = ?, fence = fence + 1{move}"  # noqa: S608
            " WHERE id IN (SELECT id FROM messages"
            f" WHERE {where} AND {due} AND (lease_until IS NULL OR lease_until < ?)"
            f" ORDER BY next_attempt LIMIT ?{self.database.skip_locked}) RETURNING *"
        )
        values = (
            owner,
            now + lease,
            *((str(to),) if to else ()),
            *args,
            now if due_by is None else due_by,
            *mine,
            now,
            limit,
        )
        with self.transaction(durable=False) as db:
            rows = [message_row(r) for r in db.execute(query, values).fetchall()]
        return sorted(rows, key=lambda r: (r.next_attempt or 0.0, r.created))

    def take(self, message_id: str, owner: str, now: float, lease: float) -> MessageRow | None:
        """Claim one message for ``owner`` (a timer's work on it) unless a live claim holds it."""
        with self.transaction(durable=False) as db:
            r = db.execute(
                "UPDATE messages SET owner = ?, lease_until = ?, fence = fence + 1"
                " WHERE id = ? AND (lease_until IS NULL OR lease_until < ?) RETURNING *",
                (owner, now + lease, message_id, now),
            ).fetchone()
        return message_row(r) if r is not None else None

    def renew(self, owner: str, now: float, lease: float) -> int:
        """Extend every claim ``owner`` holds to ``now + lease``; returns how many it holds."""
        with self.transaction(durable=False) as db:
            count: int = db.execute(
                "UPDATE messages SET lease_until = ? WHERE owner = ?", (now + lease, owner)
            ).rowcount
            return count

    def release(self, row: MessageRow) -> None:
        """End a claim without a move (the work was not done; the message waits as it was)."""
        with self.transaction(durable=False) as db:
            db.execute(
                "UPDATE messages SET owner = NULL, lease_until = NULL WHERE id = ? AND fence = ?",
                (row.id, row.fence),
            )

    def processing_failed(
        self, row: MessageRow, *, counted: bool, retry_at: float, detail: str
    ) -> int:
        """Record a failed processing run and end its claim; returns the runs counted against
        the message (0 when another process took it over meanwhile: nothing is recorded)."""
        with self.transaction() as db:
            changed = db.execute(
                "UPDATE messages SET attempts = attempts + ?, next_attempt = ?, last_reply = ?,"
                " updated = ?, owner = NULL, lease_until = NULL"
                " WHERE id = ? AND state = ? AND fence = ?",
                (
                    1 if counted else 0,
                    retry_at,
                    detail[:500],
                    self.clock(),
                    row.id,
                    str(State.RECEIVED),
                    row.fence,
                ),
            ).rowcount
            if changed != 1:
                return 0
            found = db.execute("SELECT attempts FROM messages WHERE id = ?", (row.id,)).fetchone()
            return int(found[0]) if found else 0

    def recover(self, owner: str | None = None) -> int:
        """Claims whose holder is gone: those of ``owner`` (a node process starting again
        under its name), and any whose lease has run out. Messages held half-way go back where
        any process can take them up (``relay.lifecycle.RECOVERY``); the fence moves on, so a
        holder that was only slow changes nothing any more. Returns how many."""
        now = self.clock()
        moved = 0
        with self.transaction() as db:
            self.database.serialise(db, "recovery")  # every process looks, one at a time
            for source, target in RECOVERY.items():
                moved += db.execute(
                    "UPDATE messages SET state = ?, updated = ?, next_attempt = ?, owner = NULL,"
                    " lease_until = NULL, fence = fence + 1"
                    # No owner: left by a release before claims were recorded.
                    " WHERE state = ? AND (owner IS NULL OR owner = ? OR lease_until < ?)",
                    (str(target), now, now, str(source), owner, now),
                ).rowcount
            if owner is not None:  # received ones wait as they were, due at once
                moved += db.execute(
                    "UPDATE messages SET owner = NULL, lease_until = NULL, fence = fence + 1"
                    " WHERE owner = ?",
                    (owner,),
                ).rowcount
        return moved

    def holders(self) -> dict[str, int]:
        """Claims held now, by node process."""
        with self.database.read() as db:
            return {
                str(r[0]): int(r[1])
                for r in db.execute(
                    "SELECT owner, COUNT(*) FROM messages WHERE owner IS NOT NULL GROUP BY owner"
                )
            }

    def content_done(self, before: float, limit: int = 1000) -> list[str]:
        """Messages whose every obligation was met before ``before`` and whose spool file is
        still there (INTEROP-PROFILE.md §7: the gateway's own copy goes then). Held messages
        (invalid, unmatched, quarantined, hold) and those still to be processed or sent stay."""
        clauses, args = [], []
        for kind, states in CONTENT_DONE.items():
            marks, texts = _marks(states)
            clauses.append(f"(kind = ? AND state IN ({marks}))")
            args += [str(kind), *texts]
        with self.database.read() as db:
            rows = db.execute(
                "SELECT id FROM messages WHERE content_gone = 0 AND updated <= ?"  # noqa: S608
                f" AND ({' OR '.join(clauses)}) LIMIT ?",
                (before, *args, limit),
            )
            return [str(r[0]) for r in rows]

    def content_removed(self, ids: Sequence[str]) -> None:
        with self.transaction() as db:
            # Node processes sweeping at once would lock the same rows in different orders
            # (a deadlock on PostgreSQL): one sweep at a time, rows in one order.
            self.database.serialise(db, "retention")
            rows = [(i,) for i in sorted(ids)]
            db.executemany("UPDATE messages SET content_gone = 1 WHERE id = ?", rows)
            held = db.executemany("DELETE FROM contents WHERE message_id = ?", rows).rowcount
        if held and self.database.forgets_deleted:
            self._purge_owed = True  # its bytes may still be in the files (``purge_removed``)

    def content_restored(self, message_id: str, content: bytes) -> None:
        """An Evidence message made again for a resend (its first copy went after sending),
        held in the store again."""
        with self.transaction() as db:
            db.execute(
                "UPDATE messages SET content_gone = 0, size = ?, sha256 = ? WHERE id = ?",
                (len(content), hashlib.sha256(content).hexdigest(), message_id),
            )
            db.execute("DELETE FROM contents WHERE message_id = ?", (message_id,))
            db.execute(
                "INSERT INTO contents (message_id, data) VALUES (?, ?)", (message_id, content)
            )

    def known_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` are messages of the store."""
        found: set[str] = set()
        with self.database.read() as db:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ", ".join("?" * len(chunk))
                found.update(
                    str(r[0])
                    for r in db.execute(f"SELECT id FROM messages WHERE id IN ({marks})", chunk)  # noqa: S608
                )
        return found
