"""R-GW: Dispatches from peers (INTEROP-PROFILE.md §4 "R-GW, on a Dispatch").

Takes: ``dispatch-in`` rows in state ``received``. Promises: the envelope is verified; every
recipient here gets RelayREMMDAcceptanceRejection and, when accepted, delivery and
DeliveryNonDeliveryToRecipient; every evidence is recorded in the ledger and queued back to
the S-GW as an Evidence message; the row becomes ``processed``. All of it commits in one
transaction after the idempotent mailbox writes, so a crash anywhere replays cleanly.
"""

from __future__ import annotations

import structlog

from interop.errors import KepError
from interop.evidence import xmlio
from interop.reasons import Reason
from relay.context import NodeContext
from relay.stages.deliver import decide_and_deliver
from relay.stages.issue import queue, record, write_messages
from relay.store import MessageRow

log = structlog.get_logger("kep.rgw")


def process_dispatch(context: NodeContext, row: MessageRow) -> None:
    path = context.spool.path(row.id)
    peer = row.peer or ""
    try:
        result = context.crypto.verify_envelope(path, context.clock(), peer)
        envelope = result.envelope
    except KepError as exc:  # intake read it already; a changed spool file is trouble
        context.metrics.verified("dispatch", False, exc.reason)
        log.error(
            "dispatch_unreadable",
            queue_id=row.id,
            remmd_id=row.remmd_id,
            peer=peer,
            detail=exc.detail,
        )
        with context.store.transaction() as db:
            context.store.set_state(db, row.id, "failed", last_reply=exc.detail)
        return
    context.metrics.verified("dispatch", result.ok, result.reason)
    about = (
        result.evidence.evidence
        if result.evidence is not None and result.evidence.evidence is not None
        else xmlio.parse(envelope.evidence_xml)  # the peer's words, to answer in kind
    )
    refusal: tuple[Reason, str] | None = None
    if not result.ok and result.reason is not None:
        refusal = (result.reason, result.detail)
    recipients = [r.lower() for r in about.recipients]
    indices = [recipients.index(r.lower()) + 1 for r in row.rcpt_to if r.lower() in recipients]
    missing = [r for r in row.rcpt_to if r.lower() not in recipients]
    if missing:
        log.warning(
            "rcpt_not_in_evidence",
            queue_id=row.id,
            remmd_id=row.remmd_id,
            peer=peer,
            count=len(missing),
        )
    assert envelope.original is not None
    issued = decide_and_deliver(
        context,
        about,
        indices,
        sending_provider=peer,
        ileti_tip=envelope.ileti_tip,
        original=(path, envelope.original),
        key=row.id,
        accepted_at=row.created,
        refusal=refusal,
    )
    outgoing = write_messages(
        context,
        issued,
        peer,
        dispatch_message_id=envelope.message_id,
        ileti_tip=envelope.ileti_tip.value,
        ileti_id=envelope.ileti_id,
    )
    with context.store.transaction() as db:
        for message in outgoing:
            record(
                context,
                db,
                message.issued,
                direction="issued",
                message_id=row.id,
                envelope_id=message.queue_id,
            )
            queue(context, db, message, parent=row.id)
        context.store.set_state(db, row.id, "processed")
    log.info(
        "dispatch_processed",
        queue_id=row.id,
        peer=peer,
        remmd_id=row.remmd_id,
        valid=result.ok,
        reason=result.reason.name if result.reason else None,
        evidence=len(issued),
    )
