"""R-GW: Dispatches from peers (INTEROP-PROFILE.md §4 "R-GW, on a Dispatch").

Takes: ``dispatch-in`` rows in state ``received``. Promises: the envelope is verified; every
recipient here gets RelayREMMDAcceptanceRejection and, when accepted, delivery and
DeliveryNonDeliveryToRecipient; every evidence is recorded in the ledger and queued back to
the S-GW as an Evidence message; the row becomes ``processed``. All of it commits in one
transaction after the idempotent mailbox writes, so a crash anywhere replays cleanly. On
failure: an envelope that cannot be read (intake read it already) raises, and the node puts
it aside with Rejection evidence for the S-GW (``relay.stages.quarantine``).
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from interop.envelope.parse import ParsedEnvelope
from interop.envelope.verify import EnvelopeVerification
from interop.errors import KepError
from interop.evidence import xmlio
from interop.evidence.model import Evidence
from interop.reasons import Reason
from relay.context import NodeContext
from relay.issuing import Outgoing, queue, write_messages
from relay.lifecycle import State
from relay.readings import Received
from relay.stages.deliver import decide_and_deliver
from relay.steps import IN_PLACE, Steps
from relay.store import MessageRow

log = structlog.get_logger("kep.rgw")


async def process_dispatch(
    context: NodeContext,
    row: MessageRow,
    steps: Steps = IN_PLACE,
    received: Received | None = None,
) -> None:
    """The R-GW for ``row``, in steps: the file is read (unless the node read it with its
    claim: ``received``), the envelope verified, recipients decided and delivered, the evidence
    signed, and everything committed. A small message's verifying and signing are
    ``steps.cpu`` (the event loop's thread, in a node); a large one's, or signing that asks a
    remote TSA, are blocking steps like the rest."""
    if received is None:
        received = await steps.blocking(context.receive, row)
    computing = steps.cpu if received.small and context.crypto.signs_in_process else steps.blocking
    result = await computing(verify, context, row, received)
    issued = await steps.blocking(deliver, context, row, received, result)
    outgoing = await computing(sign_back, context, row, result.envelope, issued)
    await steps.last(commit_back, context, row, outgoing, State.PROCESSED)
    log.info(
        "dispatch_processed",
        queue_id=row.id,
        peer=row.peer or "",
        remmd_id=row.remmd_id,
        valid=result.ok,
        reason=result.reason.name if result.reason else None,
        evidence=len(issued),
    )


def verify(context: NodeContext, row: MessageRow, received: Received) -> EnvelopeVerification:
    try:
        result = context.crypto.verify_envelope(received, context.clock(), row.peer or "")
    except KepError as exc:
        context.metrics.verified("dispatch", False, exc.reason)
        raise
    context.metrics.verified("dispatch", result.ok, result.reason)
    return result


def deliver(
    context: NodeContext, row: MessageRow, received: Received, result: EnvelopeVerification
) -> list[Evidence]:
    """Each recipient's evidence (not signed yet), and delivery of the original (in
    ``received``) into the mailboxes of those accepted."""
    peer = row.peer or ""
    envelope = result.envelope
    about = (
        result.evidence.evidence
        if result.evidence is not None and result.evidence.evidence is not None
        else xmlio.parse(envelope.evidence_xml)  # the peer's words, to answer in kind
    )
    refusal: tuple[Reason, str] | None = None
    if not result.ok and result.reason is not None:
        refusal = (result.reason, result.detail)
    indices = recipient_indices(about, row.rcpt_to)
    missing = [r for r in row.rcpt_to if r.lower() not in {a.lower() for a in about.recipients}]
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
        original=(received, envelope.original),
        key=row.id,
        accepted_at=row.created,
        refusal=refusal,
        fresh_until=context.fresh_until(row),
    )
    return issued


def recipient_indices(about: Evidence, rcpt_to: Sequence[str]) -> list[int]:
    """1-based indices into ``about.recipients`` of the RCPT TO addresses it names (§5)."""
    named = [r.lower() for r in about.recipients]
    return [named.index(r.lower()) + 1 for r in rcpt_to if r.lower() in named]


def send_back(
    context: NodeContext,
    row: MessageRow,
    envelope: ParsedEnvelope,
    evidence: Sequence[Evidence],
    *,
    state: State,
    detail: str | None = None,
) -> None:
    """Sign ``evidence`` about the Dispatch in ``row`` and queue each back to the S-GW as an
    Evidence message (§4 R-GW 4); the ledger, the queue and the row's move to ``state`` commit
    in one transaction."""
    commit_back(context, row, sign_back(context, row, envelope, evidence), state, detail)


def sign_back(
    context: NodeContext, row: MessageRow, envelope: ParsedEnvelope, evidence: Sequence[Evidence]
) -> list[Outgoing]:
    """Sign each evidence and make its Evidence message to the Dispatch's S-GW (CPU only, when
    the TSA is in process)."""
    return write_messages(
        context,
        evidence,
        row.peer or "",
        dispatch_message_id=envelope.message_id,
        ileti_tip=envelope.ileti_tip.value,
        ileti_id=envelope.ileti_id,
    )


def commit_back(
    context: NodeContext,
    row: MessageRow,
    outgoing: Sequence[Outgoing],
    state: State,
    detail: str | None = None,
) -> None:
    """Queue the Evidence messages (their evidence recorded in the ledger) and move ``row`` to
    ``state``, in one transaction."""
    with context.store.transaction() as db:
        for message in outgoing:
            queue(context, db, message, parent=row.id)
        context.store.move(db, row, state, last_reply=detail)
