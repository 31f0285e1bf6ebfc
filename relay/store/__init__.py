"""The node's durable state, in SQLite (the embedded default: WAL, synchronous=FULL) or in
PostgreSQL (``relay.store.database``): the only part of the relay that speaks SQL.

Tables (``schema.py``): ``messages`` (every envelope received or made, in its state of
``relay.lifecycle``), ``evidence`` (every evidence issued or received, with what verifying it
needs), ``ledger`` (the hash chain of profile §7 over the evidence, append-only),
``checkpoints`` and ``archive_stamps`` (its signatures and time-stamp chain), ``accounts`` and
``account_signers``, ``timers`` (relay and evidence deadlines) and ``attempts`` (the last sends
of each message to a peer, with the replies). Each stage changes state in one transaction, so
a crash leaves every message in exactly one state and replaying a stage is safe. The queries
live by concern: ``messages.py``, ``evidence.py``, ``accounts.py``, ``timers.py``,
``attempts.py``, ``export.py``, ``queue.py`` (an operator's moves); ``base.py`` holds the
database and the clock, ``database.py`` what differs between the two databases, ``schema.py``
the tables and their migrations, and ``reader.py`` the read-only view of metrics and operator
tools (with ``status.py``, the queries of one message's story).
"""

from __future__ import annotations

from relay.store.accounts import AccountQueries
from relay.store.attempts import AttemptQueries
from relay.store.base import GENESIS, MessageRow, blob, ledger_hash
from relay.store.database import Database, Row, Tx, is_duplicate, open_database
from relay.store.evidence import EvidenceQueries
from relay.store.export import ExportQueries
from relay.store.messages import MessageQueries
from relay.store.queue import QueueQueries
from relay.store.timers import TimerQueries

__all__ = [
    "GENESIS",
    "Database",
    "MessageRow",
    "Row",
    "Store",
    "Tx",
    "blob",
    "is_duplicate",
    "ledger_hash",
    "open_database",
]


class Store(
    MessageQueries,
    QueueQueries,
    EvidenceQueries,
    AccountQueries,
    TimerQueries,
    AttemptQueries,
    ExportQueries,
):
    """Every query of the node, by concern, on one database."""
