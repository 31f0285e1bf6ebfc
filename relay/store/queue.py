"""An operator's moves of messages (``kep-relay queue``), as the store makes them.

``operator_move`` moves one message along ``relay.lifecycle.MOVES`` in one conditional
statement: only from the state and fencing token the operator's command read it with, and only
when no live claim holds it (a node process processing or sending it now: ``Claimed``, nothing
changes). The move adds one to the fencing token and ends a claim whose lease ran out, so a
node process that stalled holding the message changes nothing afterwards (its late write raises
``Superseded``). A message moved since it was read raises ``Superseded`` too: the caller reads
it again and decides anew. Nothing here deletes a row: a message an operator ends is moved to
``deleted`` and keeps its history.
"""

from __future__ import annotations

from relay.lifecycle import Claimed, IllegalMove, State, Superseded, allowed
from relay.store.base import MessageRow, StoreBase, message_row


class QueueQueries(StoreBase):
    def operator_move(self, row: MessageRow, to: State, **fields: object) -> MessageRow:
        """Move ``row`` (as read) to ``to`` and set ``fields``; returns the row as moved.
        ``IllegalMove`` when the table has no such move, ``Claimed`` when a live claim holds
        the message, ``Superseded`` when it moved or was claimed since it was read,
        ``LookupError`` when there is no such message."""
        if not allowed(row.kind, row.state, to):
            raise IllegalMove(f"a {row.kind} message never moves from {row.state} to {to}")
        now = self.clock()
        assignments = ", ".join(
            ["state = ?", "updated = ?", "owner = NULL", "lease_until = NULL", "fence = fence + 1"]
            + [f"{k} = ?" for k in fields]
        )
        with self.transaction() as db:
            moved = db.execute(
                f"UPDATE messages SET {assignments}"  # noqa: S608 (the names are ours)
                " WHERE id = ? AND state = ? AND fence = ?"
                " AND (lease_until IS NULL OR lease_until < ?) RETURNING *",
                (str(to), now, *fields.values(), row.id, str(row.state), row.fence, now),
            ).fetchone()
            if moved is not None:
                return message_row(moved)
            found = db.execute("SELECT * FROM messages WHERE id = ?", (row.id,)).fetchone()
        if found is None:
            raise LookupError(f"no message {row.id}")
        current = message_row(found)
        if current.owner is not None and (current.lease_until or 0.0) >= now:
            raise Claimed(row.id, current.owner)
        raise Superseded(f"{row.kind} {row.id} moved meanwhile: it is {current.state} now")

    def issued_about(self, message_id: str) -> int:
        """How many evidence this node issued about the message ``message_id`` (its sender's
        answer: a Rejection given when it was put aside, say)."""
        with self.database.read() as db:
            row = db.execute(
                "SELECT COUNT(*) FROM evidence WHERE message_id = ? AND direction = 'issued'",
                (message_id,),
            ).fetchone()
            return int(row[0])
