"""The history of send attempts of ``dispatch-out`` and ``evidence-out`` messages.

Takes: one attempt's outcome, in the transaction that records that outcome on the message
(``relay.stages.outbound``), so the history and the message's state never disagree. Promises:
one statement per attempt (an upsert numbering it from the message's rows, read through the
table's key), and at most ``ATTEMPTS_KEPT`` rows per message: attempt ``n`` goes to slot ``n``
modulo ``ATTEMPTS_KEPT``, so the oldest is overwritten in place. ``messages.attempts`` and
``last_reply`` stay what the queue manager reads; this table is for people
(``kep-relay message status``, read through ``relay.store.status``).
"""

from __future__ import annotations

from relay.store.base import MessageRow, StoreBase
from relay.store.database import Tx

# The last attempts kept per message. A Dispatch retried over its whole relay_timeout (24 h)
# at the default back-off (retry_initial 60 s doubling to retry_max 30 min) makes about 53,
# so a day of a dead peer is kept whole; an Evidence message retried over evidence_lifetime
# (5 days, about 245 attempts) keeps its last 64.
ATTEMPTS_KEPT = 64
# Characters of a reply kept: as ``messages.last_reply`` keeps (a peer's reply is one line, a
# connection failure names every address tried).
REPLY_KEPT = 500


class AttemptQueries(StoreBase):
    def add_attempt(
        self, db: Tx, row: MessageRow, *, outcome: str, reply: str, host: str | None
    ) -> None:
        """Record an attempt to send ``row`` (``outcome``: sent, deferred or failed) in the
        caller's transaction, numbered one after the message's last."""
        # The number comes from the message's own rows (at most ATTEMPTS_KEPT, read through
        # the key); a message is sent by one claim holder at a time, so no two number at once.
        db.execute(
            "INSERT INTO attempts (message_id, slot, number, attempted, host, outcome, reply)"
            " SELECT ?, (COALESCE(MAX(number), 0) + 1) % ?, COALESCE(MAX(number), 0) + 1,"
            " ?, ?, ?, ? FROM attempts WHERE message_id = ?"
            " ON CONFLICT (message_id, slot) DO UPDATE SET number = excluded.number,"
            " attempted = excluded.attempted, host = excluded.host,"
            " outcome = excluded.outcome, reply = excluded.reply",
            (row.id, ATTEMPTS_KEPT, self.clock(), host, outcome, reply[:REPLY_KEPT], row.id),
        )
