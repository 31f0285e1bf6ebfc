"""What an operator's queue commands do to one message (``kep-relay queue``), and why not when
they do not apply.

Takes: a queue id, an action (``Action``), who acts (the OS user) and, to delete, why.
Promises: each move is one of ``relay.lifecycle.MOVES``, made by the store in one conditional
statement (``Store.operator_move``) or, when ending a message owes its sender evidence, under a
claim (``Store.take``) by the stage function that issues that evidence; a message a node process
holds now (a live claim) is never moved ("being processed by OWNER; try again"); every move is
logged (``operator_move``: queue id, from, to, who). What does not apply is refused with one line
saying why, and nothing changes.

What each action means (docs/operations.md "The queue"):

* ``retry``: due now. A message waiting its back-off (queued, or received after a failed
  processing run) is taken up by the node's next pass (``timers.queue_poll``).
* ``hold``: a queued or received message is held: never claimed, sent, or removed, until
  released. A held Dispatch still ends at its ``relay_timeout`` (its sender is owed an answer).
* ``release``: a held message goes back, due now. A message the node put aside is processed
  again with its attempts counted from zero: evidence that was invalid or unmatched (after the
  trust list was fixed, say), or a quarantined one, unless its sender was given Rejection
  evidence then (processing it again would answer twice, the second time perhaps otherwise).
* ``delete``: ended for good, kept as a ``deleted`` row that says who and why; its spool file
  goes by retention. A sender still owed an answer gets it first: a Dispatch to a peer ends with
  RelayREMMDFailure, a held Dispatch or submission of ours to process with Rejection, both
  reason ``Other``, "withdrawn by the operator of <domain>".
* ``requeue``: an Evidence message to a peer is sent again (sent, failed or expired), as for a
  repeated Dispatch; a Dispatch that failed or expired is not (its sender has RelayREMMDFailure
  and must submit again).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog

from interop.evidence.model import EventReason
from interop.reasons import Reason
from relay.context import NodeContext
from relay.lifecycle import RECEIVED_KINDS, Claimed, Kind, State, Superseded, allowed
from relay.stages import quarantine
from relay.stages.outbound import relay_failure
from relay.store import MessageRow, Store

log = structlog.get_logger("kep.operator")

TRIES = 3  # a message moved by the node between reading and moving is read again, this often


class Action(enum.StrEnum):
    RETRY = "retry"
    HOLD = "hold"
    RELEASE = "release"
    DELETE = "delete"
    REQUEUE = "requeue"

    @property
    def sources(self) -> tuple[State, ...]:
        """The states a message must be in for this action to apply (to some kind)."""
        return _SOURCES[self]


_SOURCES = {
    Action.RETRY: (State.QUEUED, State.RECEIVED),
    Action.HOLD: (State.QUEUED, State.RECEIVED),
    Action.RELEASE: (State.HOLD, State.QUARANTINED, State.INVALID, State.UNMATCHED),
    Action.DELETE: (State.QUEUED, State.HOLD, State.QUARANTINED, State.INVALID, State.UNMATCHED),
    Action.REQUEUE: (State.SENT, State.FAILED, State.EXPIRED),
}
_GONE = _SOURCES[Action.REQUEUE]  # a message to a peer that went (or was given up)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one message: moved (``source`` to ``to``) or refused (``why``)."""

    queue_id: str
    source: State | None = None
    to: State | None = None
    why: str | None = None

    @property
    def done(self) -> bool:
        return self.why is None


@dataclass(frozen=True, slots=True)
class _Move:
    to: State
    fields: Mapping[str, object]
    answer: bool = False  # ended with evidence for its sender, under a claim


class Refused(Exception):
    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class Queue:
    """An operator's moves on a node's store. ``node`` opens the node's context (its keys
    and TSA) the first time a move must issue evidence; ``who`` and ``reason`` are logged."""

    def __init__(
        self,
        store: Store,
        who: str,
        *,
        node: Callable[[], NodeContext] | None = None,
        reason: str | None = None,
    ) -> None:
        self.store = store
        self.who = who
        self.reason = reason
        self._open_node = node
        self._node: NodeContext | None = None

    def act(self, action: Action, queue_id: str) -> Outcome:
        for _ in range(TRIES):
            row = self.store.message(queue_id)
            if row is None:
                return Outcome(queue_id, why="no such message")
            try:
                move = self._plan(action, row)
                moved = self._answer(row, move) if move.answer else self._move(row, move)
            except Refused as refused:
                return Outcome(queue_id, row.state, why=refused.why)
            except Claimed as claimed:
                return Outcome(queue_id, row.state, why=_busy(claimed.owner))
            except Superseded:
                continue  # the node moved it since: decide again on what it is now
            log.info(
                "operator_move",
                queue_id=row.id,
                remmd_id=row.remmd_id,
                peer=row.peer,
                kind=row.kind,
                action=action.value,
                who=self.who,
                reason=self.reason,
                **{"from": row.state.value, "to": moved.value},
            )
            return Outcome(queue_id, row.state, moved)
        return Outcome(queue_id, why="it keeps moving; try again")

    def _plan(self, action: Action, row: MessageRow) -> _Move:
        """The move ``action`` makes of ``row``; ``Refused`` saying why when there is none."""
        now = self.store.clock()
        if row.owner is not None and (row.lease_until or 0.0) >= now:
            raise Refused(_busy(row.owner))
        waiting = State.RECEIVED if row.kind in RECEIVED_KINDS else State.QUEUED
        due = {"next_attempt": now}
        if action is Action.RETRY and row.state is waiting:
            return _Move(waiting, due)
        if action is Action.HOLD and row.state is waiting:
            return _Move(State.HOLD, {})
        if action is Action.RELEASE and row.state is State.HOLD:
            return _Move(waiting, due)
        if action is Action.RELEASE and row.state in (State.INVALID, State.UNMATCHED):
            return _Move(State.RECEIVED, {**due, "attempts": 0})
        if action is Action.RELEASE and row.state is State.QUARANTINED:
            if self.store.issued_about(row.id):
                raise Refused(
                    "quarantined, and its sender was given Rejection evidence then: processed"
                    " again it would be answered twice; the sender may send it again"
                )
            return _Move(State.RECEIVED, {**due, "attempts": 0})
        if action is Action.REQUEUE and row.kind is Kind.EVIDENCE_OUT and row.state in _GONE:
            return _Move(State.QUEUED, {**due, "attempts": 0})
        if action is Action.DELETE:
            return self._deletion(row)
        raise Refused(_why_not(action, row))

    def _deletion(self, row: MessageRow) -> _Move:
        if not allowed(row.kind, row.state, State.DELETED):
            raise Refused(_why_not(Action.DELETE, row))
        if self.reason is None:
            raise Refused("say why (--reason TEXT)")
        note = {"last_reply": f"deleted by {self.who}: {self.reason}"[:500]}
        if row.kind is Kind.DISPATCH_OUT:
            return _Move(State.DELETED, note, answer=True)  # RelayREMMDFailure to its sender
        owed = row.kind in (Kind.SUBMISSION, Kind.DISPATCH_IN)  # Rejection, unless given
        return _Move(State.DELETED, note, answer=owed and not self.store.issued_about(row.id))

    def _move(self, row: MessageRow, move: _Move) -> State:
        return self.store.operator_move(row, move.to, **move.fields).state

    def _answer(self, row: MessageRow, move: _Move) -> State:
        """End ``row`` with evidence for its sender: claimed first, so no node process sends
        or processes it meanwhile, then the stage's own way of answering."""
        context = self._context()
        now = context.now()
        taken = context.store.take(row.id, context.owner, now, context.config.store.lease)
        if taken is None:
            current = context.store.message(row.id)
            raise Claimed(row.id, current.owner if current and current.owner else "a node")
        try:
            if taken.state is not row.state:
                raise Superseded(f"{row.id} moved meanwhile")
            detail = f"withdrawn by the operator of {context.provider.domain}"
            note = str(move.fields["last_reply"])
            if taken.kind is Kind.DISPATCH_OUT:
                relay_failure(context, taken, Reason.Other, detail, state=move.to, last_reply=note)
            else:
                quarantine.refuse(context, taken, EventReason(Reason.Other, detail), move.to, note)
        finally:
            context.store.release(taken)  # when it did not move (a move ends the claim)
        after = context.store.message(row.id)
        if after is None or after.state is not move.to:
            raise Refused("no evidence of its submission to answer to; not deleted")
        return after.state

    def _context(self) -> NodeContext:
        if self._node is None:
            if self._open_node is None:
                raise Refused("ending it issues evidence, and the node's keys are not open")
            self._node = self._open_node()
        return self._node

    def close(self) -> None:
        if self._node is not None:
            self._node.crypto.close()
            self._node.stamping.close()
            self._node.store.close()


def _busy(owner: str) -> str:
    return f"being processed by {owner}; try again"


def _why_not(action: Action, row: MessageRow) -> str:
    """One line on why ``action`` does not apply to ``row`` where it is now."""
    state, kind = row.state, row.kind
    ended = {
        State.PROCESSED: "processed: its evidence was issued",
        State.REJECTED: "rejected: its sender has Rejection evidence",
        State.DELETED: "deleted: ended for good",
        State.SENDING: "being sent; try again",
    }
    if state in ended:
        return ended[state]
    if state is State.HOLD:
        return "held already" if action is Action.HOLD else "held; release it first"
    if state in (State.QUARANTINED, State.INVALID, State.UNMATCHED):
        return f"{state}: put aside by the node; release processes it again, delete ends it"
    if kind is Kind.DISPATCH_OUT and state is State.SENT:
        return "sent: the peer accepted it (250); its evidence obligations run on timers"
    if kind is Kind.DISPATCH_OUT and state in (State.FAILED, State.EXPIRED):
        return f"{state}: its sender has RelayREMMDFailure; the sender must submit it again"
    if kind is Kind.EVIDENCE_OUT and state in (State.SENT, State.FAILED, State.EXPIRED):
        if action is Action.DELETE:
            return f"{state}: ended already (its evidence stays in the ledger)"
        return f"{state}: no longer queued; requeue sends it again"
    if action is Action.REQUEUE:
        return f"{state}: requeue sends again an Evidence message that went out; retry it"
    if action is Action.RELEASE:
        return f"{state}: not held; retry takes it up now"
    if action is Action.DELETE and state is State.RECEIVED:
        return "received: waiting to be processed; hold it first"
    return f"{state}: {action} does not apply"
