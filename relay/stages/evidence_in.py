"""S-GW: Evidence messages from peers (INTEROP-PROFILE.md §4 "S-GW, on an Evidence").

Takes: ``evidence-in`` rows in state ``received``. Promises: transport, envelope and evidence
signatures are verified and the issuer is the provider the Dispatch went to; the evidence is
recorded in the ledger and the message filed in the original sender's Delil folder; timers
stop when their evidence has come. Evidence that fails verification, or that is about no
message we sent, is kept (state ``invalid`` or ``unmatched``) and reported, never dropped.
"""

from __future__ import annotations

import structlog

from interop.envelope.verify import EnvelopeVerification
from interop.errors import KepError
from interop.evidence.codes import EvidenceType
from relay.context import NodeContext
from relay.issuing import Issued, material_of, record
from relay.lifecycle import Kind, State
from relay.readings import Received
from relay.steps import IN_PLACE, Steps
from relay.store import MessageRow

log = structlog.get_logger("kep.evidence_in")

_FINAL = {EvidenceType.DeliveryNonDeliveryToRecipient.value}


async def process_evidence(
    context: NodeContext,
    row: MessageRow,
    steps: Steps = IN_PLACE,
    received: Received | None = None,
) -> None:
    """The S-GW for the Evidence message ``row``, in steps: the file is read (unless the node
    read it with its claim: ``received``), the envelope and its evidence verified
    (``steps.cpu`` for a small message: the event loop's thread, in a node), then the evidence
    recorded and filed in one blocking step."""
    if received is None:
        received = await steps.blocking(context.receive, row)
    computing = steps.cpu if received.small else steps.blocking
    verified = await computing(verify, context, row, received)
    if isinstance(verified, str):
        await steps.last(_keep, context, row, State.INVALID, verified)
        return
    await steps.last(file_received, context, row, received, verified)


def verify(context: NodeContext, row: MessageRow, received: Received) -> EnvelopeVerification | str:
    """The verification of an envelope whose evidence verified, or why it is not one."""
    try:
        result = context.crypto.verify_envelope(received, context.clock(), row.peer)
    except KepError as exc:
        context.metrics.verified("evidence", False, exc.reason)
        return exc.detail
    context.metrics.verified("evidence", result.ok, result.reason)
    if not result.ok or result.evidence is None or result.evidence.evidence is None:
        return result.detail
    return result


def file_received(
    context: NodeContext, row: MessageRow, received: Received, verified: EnvelopeVerification
) -> None:
    """Record evidence verified, file it in its sender's Delil folder and stop its timer, or
    keep it ``unmatched`` when it is about no Dispatch we sent."""
    store = context.store
    assert verified.evidence is not None and verified.evidence.evidence is not None
    evidence = verified.evidence.evidence
    dispatch = store.find(Kind.DISPATCH_OUT, row.peer or "", evidence.message.remmd_message_id)
    if dispatch is None:
        _keep(
            context,
            row,
            State.UNMATCHED,
            f"no Dispatch {evidence.message.remmd_message_id} to {row.peer}",
        )
        return
    issued = Issued(evidence, verified.envelope.evidence_xml)
    with store.transaction() as db:
        if not store.has_evidence(db, evidence.identifier):  # resent (§2): filed once
            record(
                context,
                db,
                issued,
                direction="received",
                message_id=dispatch.id,
                envelope_id=row.id,
                validation=material_of(verified.evidence),
            )
            with received.open() as source:
                fresh = context.fresh_until(row)
                context.mailboxes.put(
                    dispatch.mail_from, "Delil", row.id, source, fresh_until=fresh
                )
        got = store.delivery_recipients(db, dispatch.id)
        if {r.lower() for r in dispatch.rcpt_to} <= got:
            store.stop_timer(db, dispatch.remmd_id or "", row.peer or "")
        store.move(db, row, State.PROCESSED)
    log.info(
        "evidence_received",
        queue_id=row.id,
        peer=row.peer,
        remmd_id=evidence.message.remmd_message_id,
        type=evidence.type.value,
        evidence_event=evidence.event.value,
    )


def _keep(context: NodeContext, row: MessageRow, state: State, detail: str) -> None:
    with context.store.transaction() as db:
        context.store.move(db, row, state, last_reply=detail[:500])
    log.warning(
        "evidence_kept",
        state=state,
        queue_id=row.id,
        remmd_id=row.remmd_id,
        peer=row.peer,
        detail=detail,
    )
