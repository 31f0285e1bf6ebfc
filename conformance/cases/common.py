"""Steps many cases share: a Dispatch delivered with its evidence examined, and the verdict
on a Dispatch the target must refuse (at SMTP, or with Rejection evidence, never delivered)."""

from __future__ import annotations

from conformance.dispatch import Outgoing
from conformance.session import EvidenceIn, Session

RELAY = "RelayREMMDAcceptanceRejection"
DELIVERY = "DeliveryNonDeliveryToRecipient"
RETRIEVAL = "RetrievalNonRetrievalByRecipient"
REASON_PREFIXES = ("http:uri.etsi.org/REM/EventReason#", "http://uri.etsi.org/REM/EventReason#")


async def delivered(
    s: Session, count: int = 1, **kwargs: object
) -> tuple[Outgoing, list[EvidenceIn]]:
    """A Dispatch to ``count`` recipients, accepted and delivered: relay acceptance and
    delivery evidence for each, every one examined."""
    outgoing = s.dispatch(s.recipients(count), **kwargs)
    await s.send_and_expect_250(outgoing)
    expected: list[tuple[str, str, int | None]] = []
    for index in range(1, count + 1):
        expected += [(RELAY, "Acceptance", index), (DELIVERY, "Delivery", index)]
    came = await s.expect(outgoing, expected)
    return outgoing, came


def one(came: list[EvidenceIn], kind: str, event: str, index: int | None = None) -> EvidenceIn:
    return next(
        e
        for e in came
        if e.kind == kind and e.event == event and (index is None or e.index == index)
    )


async def refused(s: Session, outgoing: Outgoing, why: str, reasons: tuple[str, ...] = ()) -> None:
    """The target must not deliver ``outgoing``: a 5xx reply to it (§2), or Rejection
    evidence for every recipient (§4 R-GW 1), with one of ``reasons`` when given. A 4xx is
    wrong (§2: 4xx is for what may pass later) and so is silence after a 250."""
    final = (await s.answered(s.send(outgoing), f"{why}: answered")).final
    if 500 <= final.code < 600:
        s.check(f"{why}: refused at SMTP with 5xx (§2)", True, str(final))
        return
    s.require(
        f"{why}: refused (5xx) or accepted for evidence (250), not deferred (§2)",
        final.code == 250,
        str(final),
    )
    expected: list[tuple[str, str, int | None]] = [
        (RELAY, "Rejection", i) for i in range(1, len(outgoing.recipients) + 1)
    ]
    came = await s.evidence(outgoing, expected)
    for item in came:
        s.examine(item, outgoing)
    positive = [e.label for e in came if e.event in ("Acceptance", "Delivery")]
    s.require(f"{why}: never accepted or delivered (§4 R-GW 1)", not positive, ", ".join(positive))
    rejections = [e for e in came if e.kind == RELAY and e.event == "Rejection"]
    s.require(
        f"{why}: Rejection evidence for every recipient (§4 R-GW 1)",
        len(rejections) >= len(outgoing.recipients),
        ", ".join(e.label for e in came) or "no evidence came",
    )
    if reasons:
        for item in rejections:
            have = reason_names(item)
            s.check(
                f"{why}: reason is {' or '.join(reasons)} (§4, §6)",
                any(r in have for r in reasons),
                ", ".join(have) or "no reason given",
            )


def reason_names(item: EvidenceIn) -> list[str]:
    if item.evidence is None:
        return []
    return [r.reason.name for r in item.evidence.reasons]
