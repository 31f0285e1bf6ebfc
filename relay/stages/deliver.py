"""Recipient decisions and mailbox delivery (INTEROP-PROFILE.md §4 R-GW 1-2).

Used by the R-GW for Dispatches from peers and by the S-GW for its own local recipients.
For each recipient: RelayREMMDAcceptanceRejection, then, when accepted, delivery into the
mailbox and DeliveryNonDeliveryToRecipient. Delivery is idempotent (``Mailboxes.put``
with a key derived from the message and the recipient), so a replay after a crash files
nothing twice.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

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
from relay.readings import Received


def decide_and_deliver(
    context: NodeContext,
    about: Evidence,
    indices: Sequence[int],
    *,
    sending_provider: str,
    ileti_tip: IletiTip,
    original: tuple[Received, Span],
    key: str,
    accepted_at: float,
    refusal: tuple[Reason, str] | None = None,
    fresh_until: float | None = None,
) -> list[Evidence]:
    """Evidence for each recipient ``indices`` (1-based into ``about.recipients``; one named
    twice, by a RCPT TO given twice, is one recipient), not yet signed (callers sign it all at
    once); ``accepted_at`` is when the message was acknowledged (for the delivery latency);
    ``fresh_until``: until when no earlier attempt can have delivered (``Mailboxes.put``)."""
    issued: list[Evidence] = []

    def issue(
        kind: EvidenceType,
        event: Event,
        index: int,
        why: tuple[Reason, str] | None = None,
        teblig: dt.datetime | None = None,
        at: dt.datetime | None = None,
    ) -> None:
        issued.append(
            follow_up(
                about,
                context.provider,
                kind,
                event,
                at or context.clock(),
                recipient=index,
                reasons=[EventReason(*why)] if why else [],
                teblig_zamani=teblig,
            )
        )

    relay, delivery = (
        EvidenceType.RelayREMMDAcceptanceRejection,
        EvidenceType.DeliveryNonDeliveryToRecipient,
    )
    for index in dict.fromkeys(indices):  # once each: a second put would not search
        recipient = about.recipients[index - 1]
        account = context.mailboxes.account(recipient)
        reason = refusal
        if (
            reason is None
            and ileti_tip is IletiTip.eTebligat
            and sending_provider != ETEBLIGAT_PROVIDER
        ):
            reason = (Reason.PolicyViolation, "eTebligat is sent only through hs01 (PTT)")
        if reason is None and account is None:
            reason = (Reason.UnknownRecipient, f"{recipient} has no account here")
        if reason is not None or account is None:
            issue(relay, Event.Rejection, index, reason)
            continue
        issue(relay, Event.Acceptance, index)
        if account.state is AccountState.CLOSED:
            issue(
                delivery,
                Event.NonDelivery,
                index,
                (Reason.UnknownRecipient, f"{recipient} is closed"),
            )
            continue
        if context.config.refuse_when_full and context.mailboxes.is_full(account):
            issue(
                delivery,
                Event.NonDelivery,
                index,
                (Reason.MailboxFull, f"the mailbox of {recipient} is full"),
            )
            continue
        received, span = original
        with received.open(span) as source:
            context.mailboxes.put(
                recipient, "INBOX", f"{key}-{index}", source, fresh_until=fresh_until
            )
        context.metrics.delivery_seconds.labels(sending_provider).observe(
            max(0.0, context.now() - accepted_at)
        )
        # eTebligat: the Delivery evidence states the deemed-service time (§4 R-GW 4).
        delivered = context.clock()
        teblig = deemed_service_time(delivered) if ileti_tip is IletiTip.eTebligat else None
        issue(delivery, Event.Delivery, index, teblig=teblig, at=delivered)
    return issued
