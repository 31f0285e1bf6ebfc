"""The evidence value: everything §5 requires, checked when built."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

from interop.errors import EvidenceFormatError
from interop.evidence.codes import (
    DELIL_TURU,
    EVENTS_OF_TYPE,
    PER_RECIPIENT_TYPES,
    Event,
    EvidenceType,
)
from interop.limits import DEFAULT_LIMITS
from interop.reasons import Reason

_MAX_TEXT = 4096  # subjects, details and identifiers: generous, bounded
_IDENTIFIER = re.compile(r"^[\x21-\x7e]{1,256}$")
# Characters XML 1.0 cannot hold (§2.2 Char: controls, surrogates, U+FFFE, U+FFFF): evidence
# holding them could be built but not written.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def utc_seconds(value: dt.datetime, what: str) -> dt.datetime:
    """Evidence times are UTC (§5) with whole seconds, so writing and reading round-trip."""
    if value.tzinfo is None:
        raise EvidenceFormatError(f"{what} must carry a time zone")
    try:
        return value.astimezone(dt.UTC).replace(microsecond=0)
    except OverflowError as exc:  # 9999-12-31T23:59:59-01:00 is in the year 10000 in UTC
        raise EvidenceFormatError(f"{what} {value.isoformat()} is out of range in UTC") from exc


def recordable(text: str) -> str:
    """Outside text (a user's Subject:, Message-ID:) as evidence can record it.

    Recorded, not judged: characters XML cannot hold or that ``_check_text`` refuses become
    U+FFFD and the text is cut to the bound, so an odd subject never makes evidence impossible.
    """
    return _NOT_XML.sub("\ufffd", text)[:_MAX_TEXT]


def _check_text(value: str, what: str, *, empty_ok: bool = False) -> None:
    if not isinstance(value, str):
        raise EvidenceFormatError(f"{what} must be text")
    if not value and not empty_ok:
        raise EvidenceFormatError(f"{what} is empty")
    if len(value) > _MAX_TEXT:
        raise EvidenceFormatError(f"{what} is longer than {_MAX_TEXT} characters")
    if any(ord(c) < 0x20 and c not in "\t\n\r" for c in value):
        raise EvidenceFormatError(f"{what} holds control characters")
    if _NOT_XML.search(value):
        raise EvidenceFormatError(f"{what} holds characters XML cannot carry")


@dataclass(frozen=True, slots=True)
class EventReason:
    reason: Reason
    details: str = ""

    def __post_init__(self) -> None:
        _check_text(self.details, "EventReason Details", empty_ok=True)


@dataclass(frozen=True, slots=True)
class MessageDetails:
    """``SenderMessageDetails`` of the original message (§5)."""

    subject: str
    ua_message_id: str
    remmd_message_id: str
    digest: bytes  # SHA-256 of the original message bytes
    digest_algorithm: str = "sha256"

    def __post_init__(self) -> None:
        _check_text(self.subject, "MessageSubject", empty_ok=True)
        _check_text(self.ua_message_id, "UAMessageIdentifier", empty_ok=True)
        _check_text(self.remmd_message_id, "MessageIdentifierByREMMD")
        if self.digest_algorithm != "sha256" or len(self.digest) != 32:
            raise EvidenceFormatError("the message digest must be a SHA-256 value")


@dataclass(frozen=True, slots=True)
class Evidence:
    """One evidence about one message. Build with keyword arguments; invalid ones cannot exist."""

    type: EvidenceType
    event: Event
    identifier: str
    issuer: str  # the issuer's evidence address, delil@<domain>
    event_time: dt.datetime
    submission_time: dt.datetime
    sender: str
    recipients: tuple[str, ...]
    message: MessageDetails
    reasons: tuple[EventReason, ...] = ()
    refers_to_recipient: int | None = None  # 1-based index into recipients
    issuer_certificate: bytes | None = None  # DER, set when signed
    teblig_zamani: dt.datetime | None = None  # eTebligat deemed-service time (§4 R-GW 4)
    delil_turu: int | None = field(default=None)

    def __post_init__(self) -> None:
        if self.event not in EVENTS_OF_TYPE[self.type]:
            raise EvidenceFormatError(
                f"{self.type.value} cannot carry the event {self.event.value}"
            )
        if self.event.is_negative and not self.reasons:
            raise EvidenceFormatError(f"a {self.event.value} evidence needs at least one reason")
        if not _IDENTIFIER.match(self.identifier):
            raise EvidenceFormatError("EvidenceIdentifier must be 1-256 visible ASCII characters")
        for what, value in (("issuer", self.issuer), ("sender", self.sender)):
            _check_text(value, what)
        if not self.recipients:
            raise EvidenceFormatError("RecipientsDetails needs at least one recipient")
        if len(self.recipients) > DEFAULT_LIMITS.recipients:
            raise EvidenceFormatError(f"more than {DEFAULT_LIMITS.recipients} recipients")
        for recipient in self.recipients:
            _check_text(recipient, "recipient")
        if self.refers_to_recipient is not None and not (
            1 <= self.refers_to_recipient <= len(self.recipients)
        ):
            raise EvidenceFormatError(
                f"EvidenceRefersToRecipient {self.refers_to_recipient} is not between 1 and "
                f"{len(self.recipients)}"
            )
        if self.type in PER_RECIPIENT_TYPES and self.refers_to_recipient is None:
            raise EvidenceFormatError(
                f"{self.type.value} is issued per recipient and needs EvidenceRefersToRecipient"
            )
        object.__setattr__(self, "event_time", utc_seconds(self.event_time, "EventTime"))
        object.__setattr__(
            self, "submission_time", utc_seconds(self.submission_time, "SubmissionTime")
        )
        if self.teblig_zamani is not None:
            object.__setattr__(
                self, "teblig_zamani", utc_seconds(self.teblig_zamani, "TebligZamani")
            )
        expected = DELIL_TURU.get((self.type, self.event))
        if self.delil_turu is None:
            object.__setattr__(self, "delil_turu", expected)
        elif self.delil_turu != expected:
            raise EvidenceFormatError(
                f"DelilTuru {self.delil_turu} does not match {self.type.value} {self.event.value}"
            )

    @property
    def recipient(self) -> str | None:
        """The recipient this evidence is about, when it is per recipient."""
        if self.refers_to_recipient is None:
            return None
        return self.recipients[self.refers_to_recipient - 1]

    @property
    def reason(self) -> Reason | None:
        return self.reasons[0].reason if self.reasons else None
