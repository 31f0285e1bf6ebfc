"""Quarantine: received messages whose processing keeps failing (INTEROP-PROFILE.md §4).

Takes: a ``received`` row whose processing failed ``limits.max_processing_attempts`` times on
something in the message (trouble of the machine, a full disk say, never counts: see
``relay.errors.is_environmental``). Promises: it is never retried again; it is put aside in
state ``quarantined`` (counted in ``kep_messages_quarantined_total``, shown by
``kep_queue_messages`` and the alert ``KepMessagesHeld``) and its sender hears: the S-GW of a
Dispatch gets RelayREMMDAcceptanceRejection for each recipient, a local sender of a submission
gets SubmissionAcceptanceRejection in its Delil folder. The reason is the input's own
(``InvalidMessageFormat`` for what cannot be read) or ``TechnicalMalfunction`` when the fault is
ours. An Evidence message from a peer is only put aside: evidence is not answered with
evidence. ``refuse`` is the same answer for a message an operator ends before it was
processed (``relay.operator``: state ``deleted``). On failure: when not even the refusal can
be made, the message is still put aside and the log says so (``quarantine_without_evidence``),
so it is not retried for ever.
"""

from __future__ import annotations

import structlog

from interop.envelope.parse import parse_envelope
from interop.errors import KepError
from interop.evidence import xmlio
from interop.evidence.codes import Event, EvidenceType
from interop.evidence.issue import follow_up, submission_evidence
from interop.evidence.model import EventReason
from interop.reasons import Reason
from relay.context import NodeContext
from relay.issuing import file_evidence, record, sign
from relay.lifecycle import Kind, State
from relay.stages.rgw import recipient_indices, send_back
from relay.stages.sgw import remmd_id_for
from relay.store import MessageRow

log = structlog.get_logger("kep.quarantine")

# What a sender reads when the fault is ours: no internals (they are in the log).
OUR_FAULT = "the message could not be processed by this provider (technical malfunction)"


def refusal_for(exc: BaseException) -> EventReason:
    """The reason a sender is given for a message that cannot be processed."""
    if isinstance(exc, KepError) and exc.permanent:
        return EventReason(exc.reason, exc.detail[:1000])
    return EventReason(Reason.TechnicalMalfunction, OUR_FAULT)


def put_aside(context: NodeContext, row: MessageRow, exc: BaseException) -> None:
    why = refusal_for(exc)
    try:
        refuse(context, row, why, State.QUARANTINED)
    except Exception:
        log.exception(
            "quarantine_without_evidence", queue_id=row.id, remmd_id=row.remmd_id, kind=row.kind
        )
        _hold(context, row, why)
    context.metrics.quarantined.labels(row.kind, why.reason.name).inc()
    log.error(
        "message_quarantined",
        queue_id=row.id,
        remmd_id=row.remmd_id,
        peer=row.peer or context.provider.id,
        kind=row.kind,
        reason=why.reason.name,
        attempts=context.config.limits.max_processing_attempts,
    )


def refuse(
    context: NodeContext, row: MessageRow, why: EventReason, state: State, note: str | None = None
) -> None:
    """Answer the sender of ``row`` (claimed), a received message that will not be processed,
    with Rejection for ``why``, and move it to ``state`` (``quarantined``; ``deleted`` when an
    operator ends it), keeping ``note`` (default: the reason's details) as its last reply.
    An Evidence message is only moved: evidence is not answered with evidence."""
    note = (note if note is not None else why.details)[:500]
    if row.kind is Kind.DISPATCH_IN:
        _refuse_dispatch(context, row, why, state, note)
    elif row.kind is Kind.SUBMISSION:
        _refuse_submission(context, row, why, state, note)
    else:
        _move(context, row, state, note)


def _hold(context: NodeContext, row: MessageRow, why: EventReason) -> None:
    _move(context, row, State.QUARANTINED, why.details[:500])


def _move(context: NodeContext, row: MessageRow, state: State, note: str) -> None:
    with context.store.transaction() as db:
        context.store.move(db, row, state, last_reply=note)


def _refuse_dispatch(
    context: NodeContext, row: MessageRow, why: EventReason, state: State, note: str
) -> None:
    """Rejection to the S-GW for each recipient, queued back like any evidence (§4 R-GW 1)."""
    with context.receive(row).open() as stream:
        envelope = parse_envelope(stream)
    about = xmlio.parse(envelope.evidence_xml)
    evidence = [
        follow_up(
            about,
            context.provider,
            EvidenceType.RelayREMMDAcceptanceRejection,
            Event.Rejection,
            context.clock(),
            recipient=index,
            reasons=[why],
        )
        for index in recipient_indices(about, row.rcpt_to)
    ]
    send_back(context, row, envelope, evidence, state=state, detail=note)


def _refuse_submission(
    context: NodeContext, row: MessageRow, why: EventReason, state: State, note: str
) -> None:
    """SubmissionAcceptanceRejection filed for the sender (§4 S-GW 2); nothing is relayed."""
    with context.receive(row).open() as stream:
        issued = sign(
            context,
            submission_evidence(
                stream,
                context.provider,
                row.mail_from,
                [r.lower() for r in row.rcpt_to],
                remmd_id_for(context, row.id),
                context.clock(),
                reasons=[why],
            ),
        )
    key = f"{row.id}-{state}"  # one filing per message and end: a replay finds it
    issued = file_evidence(context, issued, row.mail_from, key)
    with context.store.transaction() as db:
        record(context, db, issued, direction="issued", message_id=row.id, envelope_id=key)
        context.store.move(db, row, state, last_reply=note)
