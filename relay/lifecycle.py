"""The life of a message at a node: its kinds, its states, and every move between them.

This is the ground floor: it imports nothing of the relay. The store moves a message only
along ``MOVES`` (``Store.move`` refuses anything else, loudly); stages, metrics and the
operator tools name kinds and states by these enums, never by strings. docs/architecture.md
draws the same table (a test checks that they agree).

A message is one envelope the node received or made, with its spool file (INTEROP-PROFILE.md
§2-§4):

* ``SUBMISSION``: a user's signed message from the provider's own systems (§4 S-GW);
* ``DISPATCH_IN``: a Dispatch from a peer (§4 R-GW);
* ``EVIDENCE_IN``: an Evidence message from a peer (§4 S-GW, on an Evidence);
* ``DISPATCH_OUT``: a Dispatch this node made for a peer (§4 Relay);
* ``EVIDENCE_OUT``: an Evidence message this node made for a peer (§4 R-GW 4).

Work on a message is claimed: a node process holds a ``received`` message while it processes
it and a ``sending`` one while it is on the wire, under a lease it renews and a fencing token
(``relay.store.messages``). A move made under a claim that is no longer current raises
``Superseded`` and changes nothing, so a process that stalled past its lease cannot undo what
the node that took over did.

An operator moves messages too (``kep-relay queue``, ``OPERATOR_MOVES``): holds, releases,
retries now, ends them. Such a move never takes a message a live claim holds (``Claimed``);
it ends a claim whose lease ran out and adds one to the fencing token, so that claim's late
holder changes nothing.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping


class Kind(enum.StrEnum):
    SUBMISSION = "submission"
    DISPATCH_IN = "dispatch-in"
    EVIDENCE_IN = "evidence-in"
    DISPATCH_OUT = "dispatch-out"
    EVIDENCE_OUT = "evidence-out"

    @property
    def label(self) -> str:
        """What metrics call it: ``dispatch`` and ``evidence`` for what goes out."""
        return self.value.removesuffix("-out")


class State(enum.StrEnum):
    RECEIVED = "received"  # acknowledged (250), to be processed
    PROCESSED = "processed"  # every obligation of processing met
    REJECTED = "rejected"  # a submission the S-GW refused, with evidence (§4 S-GW 2)
    QUEUED = "queued"  # to be sent, now or after its back-off
    SENDING = "sending"  # claimed by the queue manager, on the wire
    SENT = "sent"  # the peer answered 250
    FAILED = "failed"  # the peer answered 5xx: given up, with evidence where one is due
    EXPIRED = "expired"  # its lifetime ended without a 250 (relay timeout, evidence lifetime)
    INVALID = "invalid"  # a peer's evidence that did not verify: held for an operator
    UNMATCHED = "unmatched"  # a peer's evidence about no Dispatch of ours: held
    QUARANTINED = "quarantined"  # its processing kept failing: held, its sender told
    HOLD = "hold"  # held by an operator: never claimed, sent or removed until released
    DELETED = "deleted"  # ended by an operator (``last_reply`` says who and why); kept as a row


RECEIVED_KINDS = frozenset({Kind.SUBMISSION, Kind.DISPATCH_IN, Kind.EVIDENCE_IN})
SENT_KINDS = frozenset({Kind.DISPATCH_OUT, Kind.EVIDENCE_OUT})

# Waiting in a stage, and held for an operator (what the queue gauges show).
PENDING = (State.RECEIVED, State.QUEUED, State.SENDING)
HELD = (State.INVALID, State.UNMATCHED, State.QUARANTINED, State.HOLD)

# (kind, from, to): every move the stages make, with the profile section behind it.
STAGE_MOVES: Mapping[tuple[Kind, State, State], str] = {
    # A user's message at the S-GW (§4 "S-GW, on submission").
    (Kind.SUBMISSION, State.RECEIVED, State.PROCESSED): "§4 S-GW 2-3: accepted, Dispatches queued",
    (Kind.SUBMISSION, State.RECEIVED, State.REJECTED): "§4 S-GW 2: Rejection issued, stop here",
    (Kind.SUBMISSION, State.RECEIVED, State.QUARANTINED): "§4 S-GW 2: cannot be processed",
    # A Dispatch at the R-GW (§4 "R-GW, on a Dispatch").
    (Kind.DISPATCH_IN, State.RECEIVED, State.PROCESSED): "§4 R-GW 1-4: evidence issued",
    (Kind.DISPATCH_IN, State.RECEIVED, State.QUARANTINED): "§4 R-GW 1: Rejection, put aside",
    # Evidence at the S-GW (§4 "S-GW, on an Evidence").
    (Kind.EVIDENCE_IN, State.RECEIVED, State.PROCESSED): "§4: recorded, filed, timers stopped",
    (Kind.EVIDENCE_IN, State.RECEIVED, State.INVALID): "§4: did not verify: kept, reported",
    (Kind.EVIDENCE_IN, State.RECEIVED, State.UNMATCHED): "§4: unknown message: kept, reported",
    (Kind.EVIDENCE_IN, State.RECEIVED, State.QUARANTINED): "§4: cannot be processed: kept",
    # A Dispatch to a peer (§4 "Relay").
    (Kind.DISPATCH_OUT, State.QUEUED, State.SENDING): "§4 Relay: an attempt",
    (Kind.DISPATCH_OUT, State.SENDING, State.SENT): "§2: 250, now awaiting evidence",
    (Kind.DISPATCH_OUT, State.SENDING, State.QUEUED): "§4 Relay: 4xx or no answer, back-off",
    (Kind.DISPATCH_OUT, State.SENDING, State.FAILED): "§4 Relay: 5xx, RelayREMMDFailure",
    (Kind.DISPATCH_OUT, State.QUEUED, State.EXPIRED): "§4 Relay: relay_timeout, failure",
    (Kind.DISPATCH_OUT, State.SENT, State.SENT): "§4: evidence_timeout, failure issued",
    # An Evidence message to a peer (§4 R-GW 4: the same queue and retry rules).
    (Kind.EVIDENCE_OUT, State.QUEUED, State.SENDING): "§4 R-GW 4: an attempt",
    (Kind.EVIDENCE_OUT, State.SENDING, State.SENT): "§2: the peer has it",
    (Kind.EVIDENCE_OUT, State.SENDING, State.QUEUED): "§4: 4xx or no answer, back-off",
    (Kind.EVIDENCE_OUT, State.SENDING, State.FAILED): "§4: 5xx, given up",
    (Kind.EVIDENCE_OUT, State.SENDING, State.EXPIRED): "evidence_lifetime ended (choice)",
    (Kind.EVIDENCE_OUT, State.SENT, State.QUEUED): "§2: a repeated Dispatch, sent again",
    (Kind.EVIDENCE_OUT, State.FAILED, State.QUEUED): "§2: a repeated Dispatch, sent again",
    (Kind.EVIDENCE_OUT, State.EXPIRED, State.QUEUED): "§2: a repeated Dispatch, sent again",
    # A Dispatch an operator holds still has its relay timer: its sender is owed an answer.
    (Kind.DISPATCH_OUT, State.HOLD, State.EXPIRED): "§4 Relay: relay_timeout while held, failure",
}

# What an operator does with ``kep-relay queue`` (relay/operator.py), never a stage. The
# operator also requeues an Evidence message with the stages' own moves (sent, failed,
# expired -> queued, as a repeated Dispatch does). A message an operator ends goes to
# ``deleted`` and stays a row; a sender still owed an answer gets its evidence first.
_RECEIVED, _SENT = sorted(RECEIVED_KINDS), sorted(SENT_KINDS)
OPERATOR_MOVES: Mapping[tuple[Kind, State, State], str] = {
    # retry: due now, not after its back-off.
    **{(k, State.QUEUED, State.QUEUED): "operator retry: due now" for k in _SENT},
    **{(k, State.RECEIVED, State.RECEIVED): "operator retry: due now" for k in _RECEIVED},
    # hold: never claimed, sent or removed until released.
    **{(k, State.QUEUED, State.HOLD): "operator hold" for k in _SENT},
    **{(k, State.RECEIVED, State.HOLD): "operator hold" for k in _RECEIVED},
    # release: back where it was, due now; what the node put aside, processed again.
    **{(k, State.HOLD, State.QUEUED): "operator release: due now" for k in _SENT},
    **{(k, State.HOLD, State.RECEIVED): "operator release: due now" for k in _RECEIVED},
    (Kind.SUBMISSION, State.QUARANTINED, State.RECEIVED): "operator release: no evidence issued",
    (Kind.DISPATCH_IN, State.QUARANTINED, State.RECEIVED): "operator release: no evidence issued",
    (Kind.EVIDENCE_IN, State.QUARANTINED, State.RECEIVED): "operator release: processed again",
    (Kind.EVIDENCE_IN, State.INVALID, State.RECEIVED): "operator release: verified again",
    (Kind.EVIDENCE_IN, State.UNMATCHED, State.RECEIVED): "operator release: matched again",
    # delete: ended for good.
    (Kind.DISPATCH_OUT, State.QUEUED, State.DELETED): "operator delete: RelayREMMDFailure",
    (Kind.DISPATCH_OUT, State.HOLD, State.DELETED): "operator delete: RelayREMMDFailure",
    (Kind.EVIDENCE_OUT, State.QUEUED, State.DELETED): "operator delete: evidence in the ledger",
    (Kind.EVIDENCE_OUT, State.HOLD, State.DELETED): "operator delete: evidence in the ledger",
    (Kind.SUBMISSION, State.HOLD, State.DELETED): "operator delete: Rejection if owed",
    (Kind.SUBMISSION, State.QUARANTINED, State.DELETED): "operator delete: Rejection if owed",
    (Kind.DISPATCH_IN, State.HOLD, State.DELETED): "operator delete: Rejection if owed",
    (Kind.DISPATCH_IN, State.QUARANTINED, State.DELETED): "operator delete: Rejection if owed",
    (Kind.EVIDENCE_IN, State.HOLD, State.DELETED): "operator delete: kept as a row",
    (Kind.EVIDENCE_IN, State.QUARANTINED, State.DELETED): "operator delete: kept as a row",
    (Kind.EVIDENCE_IN, State.INVALID, State.DELETED): "operator delete: kept as a row",
    (Kind.EVIDENCE_IN, State.UNMATCHED, State.DELETED): "operator delete: kept as a row",
}

# Every move the store allows.
MOVES: Mapping[tuple[Kind, State, State], str] = {**STAGE_MOVES, **OPERATOR_MOVES}

# The gateway's own copy of a message goes once every obligation on it is met (§7, 1.1).
# One an operator ended (``deleted``) is done with too: it is never taken up again.
CONTENT_DONE: Mapping[Kind, tuple[State, ...]] = {
    Kind.SUBMISSION: (State.PROCESSED, State.REJECTED, State.DELETED),
    Kind.DISPATCH_IN: (State.PROCESSED, State.DELETED),
    Kind.EVIDENCE_IN: (State.PROCESSED, State.DELETED),
    Kind.DISPATCH_OUT: (State.SENT, State.FAILED, State.EXPIRED, State.DELETED),
    Kind.EVIDENCE_OUT: (State.SENT, State.FAILED, State.EXPIRED, State.DELETED),
}

# A node process that stopped (a crash, kill -9) leaves its claimed messages where they were;
# when its lease runs out, or it starts again under the same name, they go back to where
# any node can take them up (§2: a crash after 250 loses nothing).
RECOVERY: Mapping[State, State] = {State.SENDING: State.QUEUED}


def sources(
    kind: Kind, to: State, table: Mapping[tuple[Kind, State, State], str] = MOVES
) -> tuple[State, ...]:
    """The states a ``kind`` message may move to ``to`` from (along ``table``)."""
    return tuple(f for (k, f, t) in table if k is kind and t is to)


def allowed(kind: Kind, source: State, to: State) -> bool:
    return (kind, source, to) in MOVES


class IllegalMove(RuntimeError):
    """A move the table does not have: a bug, never a peer's doing."""


class Superseded(RuntimeError):
    """The node process's claim on a message ended (its lease ran out) and another took the
    message over: this one's work on it is void, and its transaction changes nothing."""


class Claimed(RuntimeError):
    """A node process holds the message now (a live claim): an operator's move would take
    it from under that process's work, so it is not made; ``owner`` names the process."""

    def __init__(self, queue_id: str, owner: str) -> None:
        super().__init__(f"{queue_id} is being processed by {owner}")
        self.queue_id = queue_id
        self.owner = owner
