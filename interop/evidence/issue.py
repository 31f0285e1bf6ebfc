"""Making the evidence a gateway issues (INTEROP-PROFILE.md §4), from what it already knows.

The S-GW's SubmissionAcceptanceRejection is made from the original message; every later evidence
about the same message repeats its sender, recipients and message details (§5), so they are
derived from it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Sequence
from typing import BinaryIO

from interop.cms.hashing import hash_stream
from interop.envelope.fields import decode_text
from interop.envelope.mime import Headers, Span, read_headers
from interop.errors import MalformedInput
from interop.evidence.codes import Event, EvidenceType
from interop.evidence.model import EventReason, Evidence, MessageDetails, recordable
from interop.providers import Provider


def new_identifier() -> str:
    """A globally unique EvidenceIdentifier (§5: e.g. a UUID)."""
    return str(uuid.uuid4())


def submission_evidence(
    original: BinaryIO,
    issuer: Provider,
    sender: str,
    recipients: Sequence[str],
    remmd_message_id: str,
    now: dt.datetime,
    *,
    reasons: Sequence[EventReason] = (),
) -> Evidence:
    """SubmissionAcceptanceRejection for ``original`` (Rejection when reasons are given).

    A message whose header block cannot be read is still answered: its evidence records no
    subject or Message-ID, only its digest, and the reasons say why it was refused.
    """
    size = original.seek(0, 2)
    try:
        headers, _body = read_headers(original, Span(0, size))
    except MalformedInput:
        headers = Headers(())
    original.seek(0)
    digest = hash_stream(original, "sha256")
    return Evidence(
        type=EvidenceType.SubmissionAcceptanceRejection,
        event=Event.Rejection if reasons else Event.Acceptance,
        identifier=new_identifier(),
        issuer=issuer.evidence_address,
        event_time=now,
        submission_time=now,
        sender=sender,
        recipients=tuple(recipients),
        message=MessageDetails(
            subject=recordable(decode_text(headers.get("Subject"))),
            ua_message_id=recordable(headers.get("Message-ID") or ""),
            remmd_message_id=remmd_message_id,
            digest=digest,
        ),
        reasons=tuple(reasons),
    )


def follow_up(
    about: Evidence,
    issuer: Provider,
    evidence_type: EvidenceType,
    event: Event,
    now: dt.datetime,
    *,
    recipient: int | None = None,
    reasons: Sequence[EventReason] = (),
    teblig_zamani: dt.datetime | None = None,
) -> Evidence:
    """A later evidence about the message ``about`` describes (``recipient`` is 1-based)."""
    return dataclasses.replace(
        about,
        type=evidence_type,
        event=event,
        identifier=new_identifier(),
        issuer=issuer.evidence_address,
        event_time=now,
        refers_to_recipient=recipient,
        reasons=tuple(reasons),
        issuer_certificate=None,
        teblig_zamani=teblig_zamani,
        delil_turu=None,
    )
