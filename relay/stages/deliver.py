"""Recipient decisions and mailbox delivery (INTEROP-PROFILE.md §4 R-GW 1-2).

Used by the R-GW for Dispatches from peers and by the S-GW for its own local recipients.
For each recipient: RelayREMMDAcceptanceRejection, then, when accepted, delivery into the
mailbox and DeliveryNonDeliveryToRecipient. Delivery is idempotent (``Mailboxes.deliver``
with a key derived from the message and the recipient), so a replay after a crash files
nothing twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from interop.envelope.fields import IletiTip
from interop.envelope.mime import Span
from interop.evidence.codes import Event, EvidenceType
from interop.evidence.issue import follow_up
from interop.evidence.model import EventReason, Evidence
from interop.evidence.teblig import deemed_service_time
from interop.providers import ETEBLIGAT_PROVIDER
from interop.reasons import Reason
from relay.context import NodeContext
from relay.mailbox import AccountState
from relay.spool import SpanReader
from relay.stages.issue import Issued, sign


def decide_and_deliver(
    context: NodeContext,
    about: Evidence,
    indices: Sequence[int],
    *,
    sending_provider: str,
    ileti_tip: IletiTip,
    original: tuple[Path, Span],
    key: str,
    refusal: tuple[Reason, str] | None = None,
) -> list[Issued]:
    """Evidence for each recipient ``indices`` (1-based into ``about.recipients``)."""
    me = context.provider
    issued: list[Issued] = []
    for index in indices:
        recipient = about.recipients[index - 1]
        reason = refusal
        if (
            reason is None
            and ileti_tip is IletiTip.eTebligat
            and sending_provider != ETEBLIGAT_PROVIDER
        ):
            reason = (Reason.PolicyViolation, "eTebligat is sent only through hs01 (PTT)")
        account = context.mailboxes.account(recipient)
        if reason is None and account is None:
            reason = (Reason.UnknownRecipient, f"{recipient} has no account here")
        now = context.clock()
        if reason is not None:
            issued.append(
                sign(
                    context,
                    follow_up(
                        about,
                        me,
                        EvidenceType.RelayREMMDAcceptanceRejection,
                        Event.Rejection,
                        now,
                        recipient=index,
                        reasons=[EventReason(*reason)],
                    ),
                )
            )
            continue
        assert account is not None
        issued.append(
            sign(
                context,
                follow_up(
                    about,
                    me,
                    EvidenceType.RelayREMMDAcceptanceRejection,
                    Event.Acceptance,
                    now,
                    recipient=index,
                ),
            )
        )
        problem: tuple[Reason, str] | None = None
        if account.state is AccountState.CLOSED:
            problem = (Reason.UnknownRecipient, f"{recipient} is closed")
        elif context.config.refuse_when_full and context.mailboxes.is_full(account):
            problem = (Reason.MailboxFull, f"the mailbox of {recipient} is full")
        if problem is not None:
            issued.append(
                sign(
                    context,
                    follow_up(
                        about,
                        me,
                        EvidenceType.DeliveryNonDeliveryToRecipient,
                        Event.NonDelivery,
                        context.clock(),
                        recipient=index,
                        reasons=[EventReason(*problem)],
                    ),
                )
            )
            continue
        path, span = original
        with SpanReader(path, span.start, span.end) as source:
            context.mailboxes.deliver(recipient, "INBOX", f"{key}-{index}", source)  # type: ignore[arg-type]
        delivered = context.clock()
        teblig = deemed_service_time(delivered) if ileti_tip is IletiTip.eTebligat else None
        issued.append(
            sign(
                context,
                follow_up(
                    about,
                    me,
                    EvidenceType.DeliveryNonDeliveryToRecipient,
                    Event.Delivery,
                    delivered,
                    recipient=index,
                    teblig_zamani=teblig,
                ),
            )
        )
    return issued
