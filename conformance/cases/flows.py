"""What the target does with a Dispatch (INTEROP-PROFILE.md §2, §4 R-GW): accept and deliver,
refuse each reason of §4 with the right evidence, treat a repeated Dispatch as the same one,
answer a mailbox it cannot deliver into with NonDelivery (where its operator names one), and
issue Retrieval evidence when the recipient reads (where the target lets the suite trigger a
read)."""

from __future__ import annotations

import asyncio
import datetime as dt
import shlex
import zoneinfo

from conformance.cases.common import (
    DELIVERY,
    REASON_PREFIXES,
    RELAY,
    RETRIEVAL,
    delivered,
    one,
    reason_names,
    refused,
)
from conformance.cases.evidence import check_fields, reason_codes
from conformance.dispatch import signed_original
from conformance.registry import CaseSkipped, case
from conformance.session import Session

ISTANBUL = zoneinfo.ZoneInfo("Europe/Istanbul")


@case(
    "KEP-OF-01",
    "a Dispatch is accepted, delivered, and both evidence come back",
    section="§2, §4 R-GW 1-2, 4",
    etsi="OF-NORMAL",
    rule="Per recipient, issue RelayREMMDAcceptanceRejection: Acceptance. Deliver into each "
    "accepted recipient's mailbox and issue DeliveryNonDeliveryToRecipient (Delivery). Send "
    "every evidence back to the S-GW as an Evidence message.",
)
async def accepted_and_delivered(s: Session) -> None:
    await delivered(s)


@case(
    "KEP-OF-02",
    "two recipients: evidence per recipient, each referring to its own",
    section="§4 R-GW 1-2, §5",
    etsi="OF-NORMAL",
    rule="EvidenceRefersToRecipient (1-based index into RecipientsDetails; relay, delivery and "
    "retrieval evidence are issued one per recipient and carry it).",
)
async def two_recipients(s: Session) -> None:
    outgoing, came = await delivered(s, 2)
    for item in came:
        if item.evidence is None or item.index is None:
            continue
        s.check(
            f"{item.label}: EvidenceRefersToRecipient names a recipient of the Dispatch",
            item.evidence.recipient == outgoing.recipients[item.index - 1],
            f"#{item.index} = {item.evidence.recipient}",
        )


@case(
    "KEP-OF-03",
    "an unknown recipient is refused with UnknownRecipient, the other delivered",
    section="§4 R-GW 1, §6",
    etsi="EVF-RELACC",
    rule="Per recipient, issue RelayREMMDAcceptanceRejection: Acceptance, or Rejection with a "
    "reason (… UnknownRecipient).",
)
async def unknown_recipient(s: Session) -> None:
    known = s.recipients(1)[0]
    outgoing = s.dispatch((known, s.unknown_recipient))
    await s.send_and_expect_250(outgoing)
    came = await s.expect(
        outgoing,
        [(RELAY, "Acceptance", 1), (DELIVERY, "Delivery", 1), (RELAY, "Rejection", 2)],
    )
    rejection = one(came, RELAY, "Rejection", 2)
    s.check(
        "the Rejection's reason is UnknownRecipient (§6: 10)",
        "UnknownRecipient" in reason_names(rejection),
        ", ".join(reason_names(rejection)),
    )
    stray = [e.label for e in came if e.index == 2 and e.kind == DELIVERY]
    s.check("no delivery evidence for the refused recipient", not stray, ", ".join(stray))


@case(
    "KEP-OF-04",
    "a broken user signature is refused with InvalidUserSignature",
    section="§4 R-GW 1, §6",
    etsi="OF-REJECT",
    rule="Verify … the user's signature on the original. Then, per recipient, issue "
    "RelayREMMDAcceptanceRejection: … Rejection with a reason (InvalidUserSignature …).",
)
async def broken_user_signature(s: Session) -> None:
    recipients = s.recipients(1)
    data, message_id = signed_original(s.pki, s.sender(), recipients, "bozuk imza", s.now())
    # One base64 letter of the signed body changed: the e-imza no longer covers the bytes.
    marker = data.index(b"Content-Transfer-Encoding: base64\r\n\r\n") + 38
    changed = (
        data[:marker] + (b"B" if data[marker : marker + 1] != b"B" else b"C") + data[marker + 1 :]
    )
    outgoing = s.dispatch(recipients, original=(changed, message_id))
    await refused(s, outgoing, "broken e-imza", ("InvalidUserSignature",))


@case(
    "KEP-OF-05",
    "a revoked user certificate is refused with UserCertExpiredOrRevoked",
    section="§1, §4 R-GW 1, §6",
    etsi="OF-REJECT",
    rule="User certificates (e-imza): verified against the configured ESHS root CAs, for "
    "validity at signing time and revocation. Rejection with a reason (UserCertExpiredOrRevoked).",
)
async def revoked_user(s: Session) -> None:
    sender = s.sender(state="revoked")
    outgoing = s.dispatch(sender=sender)
    await refused(s, outgoing, "revoked e-imza", ("UserCertExpiredOrRevoked",))


@case(
    "KEP-OF-06",
    "an expired user certificate is refused with UserCertExpiredOrRevoked",
    section="§1, §4 R-GW 1, §6",
    etsi="OF-REJECT",
    rule="User certificates (e-imza): verified … for validity at signing time and revocation.",
)
async def expired_user(s: Session) -> None:
    sender = s.sender(state="expired")
    outgoing = s.dispatch(sender=sender)
    await refused(s, outgoing, "expired e-imza", ("UserCertExpiredOrRevoked",))


@case(
    "KEP-OF-07",
    "a Dispatch signed with another provider's process certificate is refused",
    section="§1, §4 R-GW 1",
    etsi="OF-REJECT",
    rule="Verify the envelope signature (signer = the peer's process certificate).",
)
async def wrong_envelope_signer(s: Session) -> None:
    others = [p for p in s.pki.dev.providers if p not in (s.me, s.target)]
    if not others:
        raise CaseSkipped("the PKI folder holds no third provider to sign with")
    outgoing = s.dispatch(envelope_signer=others[0])
    await refused(
        s, outgoing, f"signed by {others[0]}", ("PolicyViolation", "InvalidMessageFormat")
    )


@case(
    "KEP-OF-08",
    "an original that is not the one the evidence describes is refused",
    section="§3, §4 R-GW 1",
    etsi="OF-REJECT",
    rule="The original message is never re-encoded … Verifiers MUST hash the raw bytes as "
    "received (ds:DigestValue: SHA-256 of the original message bytes).",
)
async def altered_original(s: Session) -> None:
    recipients = s.recipients(1)
    original = signed_original(s.pki, s.sender(), recipients, "değişmiş ileti", s.now())
    outgoing = s.dispatch(recipients, original=original, digest_of=original[0] + b"\r\n")
    await refused(s, outgoing, "digest mismatch", ("InvalidMessageFormat",))


@case(
    "KEP-OF-09",
    "a repeated Dispatch is the same message: 250, and the same evidence again",
    section="§2",
    etsi="COF-IDEMPOTENCE",
    rule="The R-GW MUST treat a repeated X-REM-Message-Identifier from the same peer as the "
    "same message (no second mailbox copy; the evidence it already issued is returned again, "
    "with the same EvidenceIdentifier).",
)
async def repeated_dispatch(s: Session) -> None:
    outgoing, first = await delivered(s)
    before = {e.evidence.identifier for e in first if e.evidence}
    await s.send_and_expect_250(outgoing)
    # The evidence again: two more of the same kinds (4 in all).
    wanted: list[tuple[str, str, int | None]] = [
        (RELAY, "Acceptance", 1),
        (DELIVERY, "Delivery", 1),
    ] * 2
    came = await s.evidence(outgoing, wanted)
    again = [e for e in came if e.received.number not in {f.received.number for f in first}]
    for item in again:
        s.examine(item, outgoing)
    s.require(
        "the evidence came again after the repeat",
        len(again) >= 2,
        f"{len(again)} Evidence message(s) after the repeat",
    )
    ids = {e.evidence.identifier for e in again if e.evidence}
    s.check(
        "the same EvidenceIdentifiers, no new evidence (§2)",
        ids <= before,
        f"before {sorted(before)}, after {sorted(ids)}",
    )


def _etebligat_provider(s: Session, want_hs01: bool) -> str:
    for provider in (s.me, s.options.second_provider):
        if provider is not None and (provider == "hs01") == want_hs01:
            return provider
    raise CaseSkipped(
        "needs the suite to play "
        + ("hs01 (--as or --second-provider)" if want_hs01 else "a provider other than hs01")
    )


@case(
    "KEP-OF-10",
    "eTebligat from a provider other than hs01 is refused with PolicyViolation",
    section="§4 R-GW 1",
    etsi="OF-REJECT",
    rule="eTebligat from a provider other than hs01 is Rejection, PolicyViolation.",
)
async def etebligat_elsewhere(s: Session) -> None:
    provider = _etebligat_provider(s, want_hs01=False)
    sender = s.sender(provider)
    recipients = s.recipients(1)
    original = signed_original(
        s.pki,
        sender,
        recipients,
        "eTebligat",
        s.now(),
        extra_headers=(("X-TR-REM-iletiTip", "eTebligat"),),
    )
    outgoing = s.dispatch(recipients, provider=provider, sender=sender, original=original)
    await refused(s, outgoing, f"eTebligat from {provider}", ("PolicyViolation",))


@case(
    "KEP-OF-11",
    "eTebligat from hs01: Delivery evidence states the deemed-service time",
    section="§4 R-GW 4, §5",
    etsi="EVF-DELREC",
    rule="For eTebligat, the Delivery evidence also states the deemed-service time: 23:59:59 "
    "Europe/Istanbul of the fifth day after delivery, in an Extension (TebligZamani).",
)
async def etebligat_teblig_zamani(s: Session) -> None:
    provider = _etebligat_provider(s, want_hs01=True)
    sender = s.sender(provider)
    recipients = s.recipients(1)
    original = signed_original(
        s.pki,
        sender,
        recipients,
        "eTebligat",
        s.now(),
        extra_headers=(("X-TR-REM-iletiTip", "eTebligat"),),
    )
    outgoing = s.dispatch(recipients, provider=provider, sender=sender, original=original)
    await s.send_and_expect_250(outgoing)
    came = await s.expect(outgoing, [(RELAY, "Acceptance", 1), (DELIVERY, "Delivery", 1)])
    item = one(came, DELIVERY, "Delivery", 1)
    s.check(
        "X-TR-REM-iletiTip: eTebligat on the Evidence message (§3)",
        item.received.header("X-TR-REM-iletiTip") == "eTebligat",
        str(item.received.header("X-TR-REM-iletiTip")),
    )
    evidence = item.evidence
    s.require("the Delivery evidence is readable", evidence is not None, item.problem or "")
    assert evidence is not None
    teblig = evidence.teblig_zamani
    s.require("TebligZamani present", teblig is not None, "no TebligZamani extension")
    assert teblig is not None
    delivered_local = evidence.event_time.astimezone(ISTANBUL)
    expected = dt.datetime.combine(
        delivered_local.date() + dt.timedelta(days=5), dt.time(23, 59, 59), ISTANBUL
    )
    s.check(
        "TebligZamani is 23:59:59 Europe/Istanbul of the fifth day after delivery",
        teblig == expected.astimezone(dt.UTC),
        f"{teblig.isoformat()} (expected {expected.astimezone(dt.UTC).isoformat()})",
    )


@case(
    "KEP-OF-12",
    "the recipient reads the message: Retrieval evidence comes back",
    section="§4 R-GW 3-4",
    etsi="EVF-RETRREC",
    rule="When the recipient opens the message, issue RetrievalNonRetrievalByRecipient "
    "(Retrieval).",
    required=False,
)
async def retrieval(s: Session) -> None:
    command = s.options.read_command
    if not command:
        raise CaseSkipped("no --read-command: the target offers the suite no way to open a message")
    outgoing, _came = await delivered(s)
    filled = command.format(
        recipient=shlex.quote(outgoing.recipients[0]),
        subject=shlex.quote(outgoing.subject),
        remmd=shlex.quote(outgoing.remmd),
    )
    process = await asyncio.create_subprocess_shell(
        filled, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await process.communicate()
    s.require(
        "the read command succeeded",
        process.returncode == 0,
        f"{filled}: exit {process.returncode}: {output.decode(errors='replace')[-300:]}",
    )
    came = await s.expect(outgoing, [(RETRIEVAL, "Retrieval", 1)])
    item = one(came, RETRIEVAL, "Retrieval", 1)
    s.check(
        "Retrieval evidence refers to the recipient who read",
        item.evidence is not None and item.evidence.recipient == outgoing.recipients[0],
        str(item.evidence.recipient if item.evidence else item.problem),
    )


async def not_delivered(s: Session, recipient: str, reason: str) -> None:
    """A Dispatch to an ordinary mailbox and to ``recipient``, which the target cannot deliver
    into: the first is delivered; the second is accepted for relay, then NonDelivery with
    ``reason`` (§4 R-GW 2), never Delivery; the NonDelivery evidence holds every field §5
    requires (DelilTuru 41) and its reason in the standard's URI form (§5, §6)."""
    ordinary = s.recipients(1)[0]
    outgoing = s.dispatch((ordinary, recipient))
    await s.send_and_expect_250(outgoing)
    came = await s.expect(
        outgoing,
        [
            (RELAY, "Acceptance", 1),
            (DELIVERY, "Delivery", 1),
            (RELAY, "Acceptance", 2),
            (DELIVERY, "NonDelivery", 2),
        ],
    )
    wrong = [e.label for e in came if e.index == 2 and e.event in ("Delivery", "Rejection")]
    s.check(
        f"{recipient}: no Delivery (nor relay Rejection) evidence (§4 R-GW 2)",
        not wrong,
        ", ".join(wrong),
    )
    item = one(came, DELIVERY, "NonDelivery", 2)
    s.check(
        f"the NonDelivery's reason is {reason} (§4 R-GW 2, §6)",
        reason in reason_names(item),
        ", ".join(reason_names(item)) or "no reason given",
    )
    check_fields(s, item, outgoing, "NonDelivery", "41")
    codes = reason_codes(item)
    s.check(
        f"EventReason Code http:uri.etsi.org/REM/EventReason#{reason} (§5)",
        any(c in [p + reason for p in REASON_PREFIXES] for c in codes),
        ", ".join(codes) or "no EventReason",
    )


@case(
    "KEP-OF-13",
    "a full mailbox, where the target refuses on full: NonDelivery with MailboxFull",
    section="§4 R-GW 2, §6",
    etsi="EVF-DELREC",
    rule="Deliver into each accepted recipient's mailbox and issue "
    "DeliveryNonDeliveryToRecipient (Delivery, or NonDelivery with … MailboxFull only where "
    "the provider's policy refuses on full mailboxes: the default keeps receiving).",
)
async def mailbox_full(s: Session) -> None:
    recipient = s.options.full_recipient
    if not recipient:
        raise CaseSkipped(
            "no --full-recipient: the target's operator named no full mailbox (give one only "
            "where its policy refuses on full mailboxes)"
        )
    await not_delivered(s, recipient, "MailboxFull")


@case(
    "KEP-OF-14",
    "a closed account: NonDelivery with UnknownRecipient",
    section="§4 R-GW 2, §6",
    etsi="EVF-DELREC",
    rule="Deliver into each accepted recipient's mailbox and issue "
    "DeliveryNonDeliveryToRecipient (Delivery, or NonDelivery with UnknownRecipient for a "
    "closed account …).",
)
async def account_closed(s: Session) -> None:
    recipient = s.options.closed_recipient
    if not recipient:
        raise CaseSkipped("no --closed-recipient: the target's operator named no closed account")
    await not_delivered(s, recipient, "UnknownRecipient")
