"""The queue manager: Dispatches and Evidence messages to peers (INTEROP-PROFILE.md §4 "Relay").

Takes: ``dispatch-out`` and ``evidence-out`` rows in state ``queued``. Promises: each goes
through the one way out (``Transport.send``); a 250 makes it ``sent`` (a Dispatch then waits
for its evidence under ``evidence_timeout``); 4xx and connection trouble retry with back-off
from ``retry_initial`` doubling to ``retry_max``; a 5xx on a Dispatch, or ``relay_timeout``
without a 250 (an operator's hold stops the sending, not the timer), ends the relay with
RelayREMMDFailure filed for the sender, and so does ``evidence_timeout`` without Delivery
evidence. Each attempt goes into the attempts history (``relay.store.attempts``) in the
transaction that records its outcome.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from interop.evidence import xmlio
from interop.evidence.codes import Event, EvidenceType
from interop.evidence.issue import follow_up
from interop.evidence.model import EventReason
from interop.reasons import Reason
from relay.context import NodeContext
from relay.issuing import file_evidence, record, remake_message, sign
from relay.lifecycle import Kind, State, Superseded
from relay.metrics import code_class
from relay.steps import ON_THREADS
from relay.store import MessageRow, Row, Tx
from relay.transport.base import READ_WITH_ENTRY, Entry, Outcome, Result, Transport

log = structlog.get_logger("kep.outbound")


def backoff(context: NodeContext, attempts: int) -> float:
    timers = context.config.timers
    return float(min(timers.retry_initial * (2 ** max(0, attempts - 1)), timers.retry_max))


async def send_due(context: NodeContext, transport: Transport) -> int:
    """Send everything due now, concurrently; returns how many were tried.

    Outcomes are recorded as they come in, in groups: what finished while the previous group
    was being committed is committed together, the messages peers accepted in one transaction
    (``_settle_sent``), so a busy queue pays one commit for several sends and an idle one
    waits for nothing."""
    claimed = await context.small_steps.blocking(_claim_due, context)
    tries = {
        asyncio.create_task(_attempt(context, transport, row, entry)): row for row, entry in claimed
    }
    pending = set(tries)
    while pending:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        await _record(context, [(tries[task], task.result()) for task in done])
    return len(claimed)


def _claim_due(context: NodeContext) -> list[tuple[MessageRow, Entry | Exception]]:
    """Rows due now, moved to ``sending`` and claimed for this node process in one
    transaction, so no other pass or process sends them; each with what the transport sends
    (``_entry``), made in the same step (small work: ``NodeContext.small_steps``), or what kept
    it from being made."""
    rows = context.store.claim_due(context.owner, context.now(), context.config.store.lease)
    return [(row, _entry_or_trouble(context, row)) for row in rows]


def _entry_or_trouble(context: NodeContext, row: MessageRow) -> Entry | Exception:
    try:
        return _entry(context, row)
    except Exception as exc:  # the try fails (below); the others of the pass go on
        return exc


async def _attempt(
    context: NodeContext, transport: Transport, row: MessageRow, entry: Entry | Exception
) -> Result:
    """One try at sending ``row``; never raises (what goes wrong is a temporary outcome)."""
    try:
        if isinstance(entry, Exception):  # its content could not be read or made
            raise entry
        result = await transport.send(entry)
    except Exception as exc:  # a transport bug must not stop the queue: try again later
        context.metrics.failed(exc)
        log.exception("transport_failed", queue_id=row.id, peer=row.peer, kind=row.kind)
        result = Result(Outcome.TEMPORARY, f"local error: {type(exc).__name__}")
    _count(context, row, result)
    return result


async def _record(context: NodeContext, outcomes: list[tuple[MessageRow, Result]]) -> None:
    """Record what some tries came to: the accepted ones in one transaction, the others (a
    retry, a failure and its evidence) each in its own. Commits block: a peer's acceptance is
    recorded where small work runs (``NodeContext.small_steps``); anything else (a refused
    Dispatch's failure evidence is signed, maybe by a remote TSA) on a thread."""
    sent = [(row, result) for row, result in outcomes if result.outcome is Outcome.DELIVERED]
    others = [(row, result) for row, result in outcomes if result.outcome is not Outcome.DELIVERED]
    if len(sent) > 1:
        try:
            for row in await context.small_steps.blocking(_settle_sent, context, sent):
                context.claim_lost(row.kind, row.id)
            sent = []
        except Exception as exc:  # the group did not commit: each on its own, as below
            context.metrics.failed(exc)
            log.warning("sent_group_not_recorded", count=len(sent), error=repr(exc))
    for row, result in sent + others:
        await _settle_one(context, row, result)


async def _settle_one(context: NodeContext, row: MessageRow, result: Result) -> None:
    try:
        steps = context.small_steps if result.outcome is Outcome.DELIVERED else ON_THREADS
        await steps.blocking(_settle, context, row, result)
    except Superseded:  # stalled past the lease: another process sends it (§2: the same message)
        context.claim_lost(row.kind, row.id)
    except Exception as exc:
        # Not recorded (the store, the disk or the TSA in trouble). Back to the queue, so it
        # goes again later: a peer that took it already says so (§2: the same message).
        context.metrics.failed(exc)
        log.exception("send_not_recorded", queue_id=row.id, peer=row.peer, kind=row.kind)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(_requeue, context, row)


def _entry(context: NodeContext, row: MessageRow) -> Entry:
    """What the transport sends for ``row`` (blocking: made with the claim, on its thread): an
    Evidence message, or a small Dispatch where the store holds content (``sgw._dispatch``),
    from the store; anything else from its spool file, read whole when small
    (``READ_WITH_ENTRY``)."""
    path = context.spool.path(row.id)
    evidence = row.kind is Kind.EVIDENCE_OUT
    held = context.store.content(row.id) if evidence else context.held(row)
    if evidence and held is None and not path.exists():  # not one an earlier release spooled
        # Sent before and removed (§7); a repeated Dispatch asks for it again (§2).
        held = remake_message(context, row)
    if held is not None:
        return Entry(row.id, row.peer or "", row.mail_from, row.rcpt_to, path, len(held), held)
    size = path.stat().st_size
    content = path.read_bytes() if size <= READ_WITH_ENTRY else None
    return Entry(row.id, row.peer or "", row.mail_from, row.rcpt_to, path, size, content)


def _requeue(context: NodeContext, row: MessageRow) -> None:
    with context.store.transaction() as db:
        context.store.move(
            db, row, State.QUEUED, next_attempt=context.now() + backoff(context, row.attempts + 1)
        )


def _settle_sent(context: NodeContext, sent: list[tuple[MessageRow, Result]]) -> list[MessageRow]:
    """Record messages peers accepted, in one transaction; returns those another node process
    took over meanwhile (their move changed nothing, so the others still commit)."""
    lost: list[MessageRow] = []
    with context.store.transaction() as db:
        for row, result in sent:
            try:
                _sent(context, db, row, result)
            except Superseded:
                lost.append(row)
    gone = {row.id for row in lost}
    for row, result in sent:
        if row.id not in gone:
            _log_sent(row, result)
    return lost


def _sent(context: NodeContext, db: Tx, row: MessageRow, result: Result) -> None:
    """``row`` accepted by its peer, in the caller's transaction: ``sent``, the attempt in its
    history, and for a Dispatch the wait for its evidence."""
    store = context.store
    store.move(
        db,
        row,
        State.SENT,
        attempts=row.attempts + 1,
        last_reply=result.reply[:500],
        sent_at=context.now(),
    )
    _attempted(context, db, row, result)
    if row.kind is Kind.DISPATCH_OUT:
        store.set_timer(
            db,
            row.id,
            row.remmd_id or "",
            row.peer or "",
            evidence_deadline=context.now() + context.config.timers.evidence_timeout,
        )


def _log_sent(row: MessageRow, result: Result) -> None:
    log.info(
        "message_sent",
        queue_id=row.id,
        kind=row.kind,
        peer=row.peer,
        remmd_id=row.remmd_id,
        reply=result.reply[:100],
    )


def _settle(context: NodeContext, row: MessageRow, result: Result) -> None:
    store = context.store
    attempts = row.attempts + 1
    if result.outcome is Outcome.DELIVERED:
        with store.transaction() as db:
            _sent(context, db, row, result)
        _log_sent(row, result)
        return
    if result.outcome is Outcome.TEMPORARY and _outlived(context, row):
        _give_up(context, row, attempts, result)
        return
    if result.outcome is Outcome.TEMPORARY:
        with store.transaction() as db:
            store.move(
                db,
                row,
                State.QUEUED,
                attempts=attempts,
                last_reply=result.reply[:500],
                next_attempt=context.now() + backoff(context, attempts),
            )
            _attempted(context, db, row, result)
        log.warning(
            "message_deferred",
            queue_id=row.id,
            remmd_id=row.remmd_id,
            kind=row.kind,
            peer=row.peer,
            attempts=attempts,
            reply=result.reply[:200],
        )
        return
    log.warning(
        "message_refused",
        queue_id=row.id,
        remmd_id=row.remmd_id,
        kind=row.kind,
        peer=row.peer,
        reply=result.reply[:200],
    )
    if row.kind is Kind.DISPATCH_OUT:
        relay_failure(
            context,
            row,
            Reason.R_REMMD_Malfunction,
            f"{row.peer} answered: {result.reply}",
            attempt=result,
        )
    else:
        with store.transaction() as db:
            store.move(db, row, State.FAILED, attempts=attempts, last_reply=result.reply[:500])
            _attempted(context, db, row, result)


def _outlived(context: NodeContext, row: MessageRow) -> bool:
    """An Evidence message past ``timers.evidence_lifetime`` (a Dispatch has its relay timer)."""
    lifetime = context.config.timers.evidence_lifetime
    return row.kind is Kind.EVIDENCE_OUT and context.now() - row.created >= lifetime


def _give_up(context: NodeContext, row: MessageRow, attempts: int, result: Result) -> None:
    """The end of an Evidence message the peer never took: kept as ``expired`` and counted, so
    an operator sees it (alert KepEvidenceExpired); the evidence stays in the ledger."""
    reply = result.reply
    with context.store.transaction() as db:
        context.store.move(db, row, State.EXPIRED, attempts=attempts, last_reply=reply[:500])
        _attempted(context, db, row, result)
    context.metrics.expired.labels(row.peer or "", row.kind).inc()
    log.error(
        "evidence_expired",
        queue_id=row.id,
        remmd_id=row.remmd_id,
        peer=row.peer,
        attempts=attempts,
        reply=reply[:200],
    )


# What an attempt came to, in metrics and in the attempts history.
OUTCOMES = {Outcome.DELIVERED: "sent", Outcome.TEMPORARY: "deferred", Outcome.PERMANENT: "failed"}


def _attempted(context: NodeContext, db: Tx, row: MessageRow, result: Result) -> None:
    """The attempt in the history (``kep-relay message status``), in the transaction that
    records its outcome on the message."""
    context.store.add_attempt(
        db, row, outcome=OUTCOMES[result.outcome], reply=result.reply, host=result.host
    )


def _count(context: NodeContext, row: MessageRow, result: Result) -> None:
    metrics, peer, cls = context.metrics, row.peer or "", code_class(result.code)
    outcome = OUTCOMES[result.outcome]
    metrics.relayed.labels(peer, row.kind.label, outcome, cls).inc()
    answered = cls != "none"  # any SMTP reply: the peer is there, whatever it said
    metrics.peer_up.labels(peer).set(1 if answered else 0)
    if answered:
        metrics.peer_last_contact.labels(peer).set_to_current_time()


def relay_failure(
    context: NodeContext,
    dispatch: MessageRow,
    reason: Reason,
    details: str,
    *,
    state: State = State.FAILED,
    attempt: Result | None = None,
    last_reply: str | None = None,
) -> None:
    """RelayREMMDFailure for a Dispatch, filed in the sender's Delil folder; timers stop; the
    Dispatch moves to ``state`` keeping ``last_reply`` (default: ``details``). ``attempt``:
    the send whose answer ended the relay, recorded with the failure."""
    store = context.store
    about_rows = [e for e in store.evidence_of_message(dispatch.id) if e["direction"] == "issued"]
    if not about_rows:
        log.error(
            "dispatch_without_evidence",
            queue_id=dispatch.id,
            remmd_id=dispatch.remmd_id,
            peer=dispatch.peer,
        )
        return
    about = xmlio.parse(bytes(about_rows[0]["xml"]))
    issued = sign(
        context,
        follow_up(
            about,
            context.provider,
            EvidenceType.RelayREMMDFailure,
            Event.DeliveryExpiration,
            context.clock(),
            reasons=[EventReason(reason, details[:1000])],
        ),
    )
    # Filed under a key derived from the Dispatch, so a replay finds it (idempotent).
    key = f"{dispatch.id}-failure"
    issued = file_evidence(context, issued, dispatch.mail_from, key)
    with store.transaction() as db:
        record(context, db, issued, direction="issued", message_id=dispatch.id, envelope_id=key)
        store.stop_timer(db, dispatch.remmd_id or "", dispatch.peer or "")
        store.move(db, dispatch, state, last_reply=(last_reply or details)[:500])
        if attempt is not None:
            _attempted(context, db, dispatch, attempt)
    if state is State.EXPIRED:
        context.metrics.expired.labels(dispatch.peer or "", dispatch.kind).inc()
    log.warning(
        "relay_failed",
        queue_id=dispatch.id,
        peer=dispatch.peer,
        remmd_id=dispatch.remmd_id,
        reason=reason.name,
    )


def check_timers(context: NodeContext) -> int:
    """Fire the relay and evidence timers that ran out. Each Dispatch is claimed first and its
    timer read again under the claim, so one node process fires it, once; a Dispatch being
    sent now is left for the next pass."""
    now = context.now()
    fired = 0
    for expired in context.store.expired_timers(now):
        dispatch = context.store.take(
            expired["dispatch_id"], context.owner, now, context.config.store.lease
        )
        if dispatch is None:
            continue
        try:
            timer = context.store.timer(dispatch.id)  # another process may have fired it
            if timer is not None and not timer["done"] and _fire(context, dispatch, timer, now):
                fired += 1
        finally:
            context.store.release(dispatch)  # when it did not move (a move ends the claim)
    return fired


def _fire(context: NodeContext, dispatch: MessageRow, timer: Row, now: float) -> bool:
    relay_deadline, evidence_deadline = timer["relay_deadline"], timer["evidence_deadline"]
    # One an operator holds too: holding it stops its sending, not the sender's answer (§4).
    waiting = dispatch.state in (State.QUEUED, State.HOLD)
    if waiting and relay_deadline is not None and relay_deadline <= now:
        relay_failure(
            context,
            dispatch,
            Reason.R_REMMD_Unreachable,
            f"{dispatch.peer} did not accept the Dispatch within the relay timeout",
            state=State.EXPIRED,
        )
        return True
    if dispatch.state is State.SENT and evidence_deadline is not None and evidence_deadline <= now:
        relay_failure(
            context,
            dispatch,
            Reason.S_REMMD_ReceivedNoDeliveryInfoFromR_REMMD,
            f"no delivery evidence from {dispatch.peer} within the evidence timeout",
            state=State.SENT,
        )
        return True
    return False
