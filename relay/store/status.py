"""The read-only queries of one message's story (``kep-relay message status``).

Takes: a reading session (``StoreReader``'s, read-only, apart from the node's connections).
Promises: rows as frozen values, each query through an index except ``messages_of`` (an
account's recent messages, which reads the messages table: an address is not indexed, and an
index on it would cost every message its node takes in, for an operator's question); nothing
is written. A store at a version before the attempts history (migration 5: a node not started
since the upgrade) shows no attempts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from relay.lifecycle import Kind, State
from relay.store.base import blob
from relay.store.database import Tx

ATTEMPTS_VERSION = 5  # the migration that made the attempts table (relay.store.schema)

_MESSAGE_COLUMNS = (
    "id, kind, state, peer, remmd_id, mail_from, rcpt_to, created, updated, attempts,"
    " next_attempt, last_reply, parent"
)


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One ``messages`` row, as an operator reads it."""

    id: str
    kind: Kind
    state: State
    peer: str | None
    remmd_id: str | None
    mail_from: str
    recipients: tuple[str, ...]
    created: float
    updated: float
    attempts: int
    next_attempt: float | None
    last_reply: str | None
    parent: str | None


@dataclass(frozen=True, slots=True)
class StoredEvidence:
    """One evidence issued or received, with its XML (its reasons are inside)."""

    id: str
    direction: str
    type: str
    event: str
    recipient: str | None
    sender: str
    issuer: str
    message_id: str | None
    recorded: float
    xml: bytes


@dataclass(frozen=True, slots=True)
class RunningTimer:
    """A Dispatch's relay or evidence deadline not yet stopped."""

    dispatch_id: str
    peer: str
    relay_deadline: float | None
    evidence_deadline: float | None


@dataclass(frozen=True, slots=True)
class StoredAttempt:
    """One send to a peer: when, to which host, what came of it, the reply."""

    message_id: str
    number: int
    attempted: float
    host: str | None
    outcome: str
    reply: str


def _message(r: Sequence[Any]) -> StoredMessage:
    id_, kind, state, peer, remmd, mail_from, rcpt, created, updated, *rest = r
    tries, due, reply, parent = rest
    return StoredMessage(
        str(id_),
        Kind(str(kind)),
        State(str(state)),
        None if peer is None else str(peer),
        None if remmd is None else str(remmd),
        str(mail_from),
        tuple(str(a) for a in json.loads(str(rcpt))),
        float(created),
        float(updated),
        int(tries),
        None if due is None else float(due),
        None if reply is None else str(reply),
        None if parent is None else str(parent),
    )


def _evidence(r: Sequence[Any]) -> StoredEvidence:
    id_, direction, type_, event, recipient, sender, issuer, message_id, created, xml = r
    return StoredEvidence(
        str(id_),
        str(direction),
        str(type_),
        str(event),
        None if recipient is None else str(recipient),
        str(sender),
        str(issuer),
        None if message_id is None else str(message_id),
        float(created),
        blob(xml),
    )


def _like(text: str) -> str:
    """``text`` as a LIKE pattern matching itself (``ESCAPE '!'``)."""
    return text.replace("!", "!!").replace("%", "!%").replace("_", "!_")


class StatusQueries:
    """Mixed into ``StoreReader``: the queries of ``relay.story``."""

    db: Tx

    def messages_about(self, remmd_id: str) -> list[StoredMessage]:
        """Every row about ``remmd_id`` (its submission, Dispatches, Evidence messages), oldest
        first (index ``messages_by_remmd``)."""
        return [
            _message(r)
            for r in self.db.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE remmd_id = ?"  # noqa: S608
                " ORDER BY created, id",
                (remmd_id,),
            )
        ]

    def message_by_id(self, message_id: str) -> StoredMessage | None:
        r = self.db.execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ?",  # noqa: S608
            (message_id,),
        ).fetchone()
        return _message(r) if r is not None else None

    def evidence_about(self, remmd_id: str) -> list[StoredEvidence]:
        """Every evidence issued or received about ``remmd_id``, in the order recorded: by
        time, then by ledger record (indexes ``evidence_by_message``, the ledger's unique
        ``evidence_id``)."""
        rows = self.db.execute(
            "SELECT e.id, e.direction, e.type, e.event, e.recipient, e.sender, e.issuer,"
            " e.message_id, e.created, e.xml FROM evidence e"
            " LEFT JOIN ledger l ON l.evidence_id = e.id WHERE e.remmd_id = ?"
            " ORDER BY e.created, l.seq",
            (remmd_id,),
        )
        return [_evidence(r) for r in rows]

    def running_timers(self, remmd_id: str) -> list[RunningTimer]:
        """The relay and evidence timers of ``remmd_id``'s Dispatches still running (index
        ``timers_by_remmd``)."""
        return [
            RunningTimer(
                str(dispatch_id),
                str(peer),
                None if relay is None else float(relay),
                None if evidence is None else float(evidence),
            )
            for dispatch_id, peer, relay, evidence in self.db.execute(
                "SELECT dispatch_id, peer, relay_deadline, evidence_deadline FROM timers"
                " WHERE remmd_id = ? AND done = 0 ORDER BY peer, dispatch_id",
                (remmd_id,),
            )
        ]

    def attempts_of(self, message_ids: Sequence[str]) -> list[StoredAttempt]:
        """The attempts kept of each of ``message_ids``, in time order (the table's key)."""
        if not message_ids or not self._has_attempts():
            return []
        marks = ", ".join("?" * len(message_ids))
        return sorted(
            (
                StoredAttempt(str(m), int(n), float(at), host, str(outcome), str(reply))
                for m, n, at, host, outcome, reply in self.db.execute(
                    "SELECT message_id, number, attempted, host, outcome, reply"  # noqa: S608
                    f" FROM attempts WHERE message_id IN ({marks})",
                    tuple(message_ids),
                )
            ),
            key=lambda a: (a.attempted, a.message_id, a.number),
        )

    def messages_of(self, address: str, limit: int) -> list[StoredMessage]:
        """The newest ``limit`` messages ``address`` sent (its submissions) or was sent (a
        Dispatch from a peer, a submission of a user of this provider), newest first. Reads
        the table through: 0.2-0.25 s at a million messages (benchmarks/prefill.py)."""
        wanted = address.lower()
        return [
            _message(r)
            for r in self.db.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages"  # noqa: S608
                " WHERE kind IN (?, ?) AND (lower(mail_from) = ?"
                " OR lower(rcpt_to) LIKE ? ESCAPE '!') ORDER BY created DESC, id LIMIT ?",
                (
                    str(Kind.SUBMISSION),
                    str(Kind.DISPATCH_IN),
                    wanted,
                    # rcpt_to is a JSON list: the address between quotes, as json writes it.
                    f"%{_like(json.dumps(wanted))}%",
                    limit,
                ),
            )
        ]

    def _has_attempts(self) -> bool:
        row = self.db.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return row is not None and row[0] is not None and int(row[0]) >= ATTEMPTS_VERSION
