"""What happened to one message at this node, read from its store (``kep-relay message status``).

Takes: a ``StoreReader`` (read-only), what the operator asked about (a REMMD id, a queue id or
an account's address) and ``now`` (seconds since the epoch, for the time left on timers).
Promises: values only, never a write: a ``Story`` with every row of the message (its
submission, one Dispatch per peer provider, the Dispatch received, Evidence messages in and
out), every evidence issued or received about it with the reasons its XML gives, the relay and
evidence timers still running, and the send attempts with the peers' replies; or, for an
address, its recent messages in one line each (``Summary``). ``story_json`` and
``listing_json`` give the stable JSON shape that docs/operations.md ("Following one message")
documents; a key is only ever added to it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from interop.errors import KepError
from interop.evidence import xmlio
from relay.lifecycle import Kind
from relay.store.reader import StoreReader
from relay.store.status import RunningTimer, StoredAttempt, StoredEvidence, StoredMessage


@dataclass(frozen=True, slots=True)
class Reason:
    """An EventReason of an evidence: its ETSI name and the details it gives."""

    name: str
    details: str


@dataclass(frozen=True, slots=True)
class EvidenceEntry:
    stored: StoredEvidence
    reasons: tuple[Reason, ...]


@dataclass(frozen=True, slots=True)
class Deadline:
    """A running timer: ``which`` is ``relay`` (no 250 by then) or ``evidence`` (no Delivery
    evidence by then); either ends the relay with RelayREMMDFailure."""

    dispatch_id: str
    peer: str
    which: str
    at: float


@dataclass(frozen=True, slots=True)
class Story:
    asked: str
    remmd_id: str | None
    messages: tuple[StoredMessage, ...]
    evidence: tuple[EvidenceEntry, ...]
    deadlines: tuple[Deadline, ...]
    attempts: tuple[StoredAttempt, ...]
    now: float


@dataclass(frozen=True, slots=True)
class Summary:
    """One message of an account, for a one-line listing."""

    message: StoredMessage
    direction: str  # sent (the account's own submission), received
    evidence: int
    last: EvidenceEntry | None


def _reasons(evidence: StoredEvidence) -> tuple[Reason, ...]:
    try:
        parsed = xmlio.parse(evidence.xml)
    except KepError:  # kept although unreadable (an invalid evidence-in): its row still says much
        return ()
    return tuple(Reason(r.reason.name, r.details) for r in parsed.reasons)


def _deadlines(timers: list[RunningTimer]) -> tuple[Deadline, ...]:
    found = []
    for t in timers:
        if t.relay_deadline is not None:
            found.append(Deadline(t.dispatch_id, t.peer, "relay", t.relay_deadline))
        if t.evidence_deadline is not None:
            found.append(Deadline(t.dispatch_id, t.peer, "evidence", t.evidence_deadline))
    return tuple(sorted(found, key=lambda d: d.at))


def story(reader: StoreReader, asked: str, now: float) -> Story | None:
    """The story of the REMMD id ``asked``, or of the message whose queue id it is (with the
    rest of its REMMD id's story); None when the store knows neither."""
    with reader.snapshot():
        remmd_id: str | None = asked
        messages = reader.messages_about(asked)
        evidence = reader.evidence_about(asked)
        if not messages and not evidence:
            row = reader.message_by_id(asked)
            if row is None:
                return None
            remmd_id = row.remmd_id
            messages, evidence = [row], []
            if remmd_id is not None:
                messages = reader.messages_about(remmd_id)
                evidence = reader.evidence_about(remmd_id)
        timers = reader.running_timers(remmd_id) if remmd_id is not None else []
        attempts = reader.attempts_of([m.id for m in messages])
    return Story(
        asked,
        remmd_id,
        tuple(messages),
        tuple(EvidenceEntry(e, _reasons(e)) for e in evidence),
        _deadlines(timers),
        tuple(attempts),
        now,
    )


def summaries(reader: StoreReader, address: str, limit: int) -> list[Summary]:
    """The newest ``limit`` messages ``address`` sent or was sent, newest first."""
    found = []
    with reader.snapshot():
        for row in reader.messages_of(address, limit):
            evidence = reader.evidence_about(row.remmd_id) if row.remmd_id else []
            sent = row.kind is Kind.SUBMISSION and row.mail_from.lower() == address.lower()
            last = EvidenceEntry(evidence[-1], _reasons(evidence[-1])) if evidence else None
            found.append(Summary(row, "sent" if sent else "received", len(evidence), last))
    return found


# -- the JSON shape ------------------------------------------------------------------------


def iso(when: float | None) -> str | None:
    """ISO 8601 in UTC, to the millisecond (``2026-01-05T10:12:03.120Z``)."""
    if when is None:
        return None
    text = dt.datetime.fromtimestamp(when, dt.UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def message_json(m: StoredMessage) -> dict[str, Any]:
    return {
        "id": m.id,
        "kind": str(m.kind),
        "state": str(m.state),
        "peer": m.peer,
        "remmd_id": m.remmd_id,
        "from": m.mail_from,
        "recipients": list(m.recipients),
        "created": iso(m.created),
        "updated": iso(m.updated),
        "attempts": m.attempts,
        "next_attempt": iso(m.next_attempt),
        "last_reply": m.last_reply,
        "parent": m.parent,
    }


def evidence_json(e: StoredEvidence, reasons: tuple[Reason, ...] = ()) -> dict[str, Any]:
    return {
        "time": iso(e.recorded),
        "direction": e.direction,
        "issuer": e.issuer,
        "type": e.type,
        "event": e.event,
        "recipient": e.recipient,
        "reasons": [{"reason": r.name, "details": r.details} for r in reasons],
        "id": e.id,
        "message_id": e.message_id,
    }


def story_json(s: Story) -> dict[str, Any]:
    peers = {m.id: m.peer for m in s.messages}
    return {
        "query": s.asked,
        "remmd_id": s.remmd_id,
        "as_of": iso(s.now),
        "messages": [message_json(m) for m in s.messages],
        "evidence": [evidence_json(e.stored, e.reasons) for e in s.evidence],
        "timers": [
            {
                "dispatch_id": d.dispatch_id,
                "peer": d.peer,
                "timer": d.which,
                "deadline": iso(d.at),
                "left_seconds": round(d.at - s.now, 3),
            }
            for d in s.deadlines
        ],
        "attempts": [
            {
                "time": iso(a.attempted),
                "message_id": a.message_id,
                "number": a.number,
                "peer": peers.get(a.message_id),
                "host": a.host,
                "outcome": a.outcome,
                "reply": a.reply,
            }
            for a in s.attempts
        ],
    }


def listing_json(
    address: str, found: list[Summary], now: float, full: Story | None
) -> dict[str, Any]:
    return {
        "address": address,
        "as_of": iso(now),
        "messages": [
            {
                **message_json(f.message),
                "direction": f.direction,
                "evidence": f.evidence,
                "last_evidence": (
                    evidence_json(f.last.stored, f.last.reasons) if f.last is not None else None
                ),
            }
            for f in found
        ],
        "story": story_json(full) if full is not None else None,
    }
