"""Dispatches the suite sends as a sending provider (INTEROP-PROFILE.md §3, §4 S-GW 3), made
with the project's protocol library from the PKI folder's users and process certificates.

Takes the PKI, who sends to whom, and what to spoil (a case testing a refusal builds the
Dispatch a faulty or hostile provider would); promises an ``Outgoing`` holding the bytes and
everything the evidence coming back must repeat (REMMD id, digest, sender, recipients).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import io
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from conformance.identity import Pki
from interop.cms.timestamp import LocalTsa
from interop.envelope.build import write_dispatch
from interop.envelope.smime import build_signed_message
from interop.evidence.issue import submission_evidence
from interop.evidence.model import Evidence
from interop.evidence.xades import sign_evidence


@dataclass(frozen=True, slots=True)
class Outgoing:
    data: bytes
    provider: str  # the provider whose gateway sends it
    remmd: str
    sender: str
    recipients: tuple[str, ...]
    original: bytes
    evidence: Evidence  # the SubmissionAcceptanceRejection inside
    message_id: str  # the envelope's own Message-ID
    ua_message_id: str  # the original's Message-ID
    subject: str

    @property
    def digest(self) -> bytes:
        """The SHA-256 the Dispatch's evidence records (of the original, unless a case made it
        lie): what every evidence about this message must repeat."""
        return self.evidence.message.digest


def new_remmd(domain: str) -> str:
    """A fresh REMMD message id: every case's Dispatches are new to the target."""
    return f"conf-{uuid.uuid4().hex}@{domain}"


def signed_original(
    pki: Pki,
    sender: str,
    recipients: tuple[str, ...],
    subject: str,
    now: dt.datetime,
    *,
    signing_user: str | None = None,
    body: str = "Uygunluk sınaması iletisi.\nA conformance test message.\n",
    extra_headers: tuple[tuple[str, str], ...] = (),
    attachments: tuple[tuple[str, str, bytes], ...] = (),
) -> tuple[bytes, str]:
    """A user-signed original message and its Message-ID."""
    message_id = email.utils.make_msgid("conf", domain=sender.rsplit("@", 1)[-1])
    signer = pki.dev.user(signing_user or sender).signer
    data = build_signed_message(
        signer,
        sender=sender,
        recipients=list(recipients),
        subject=subject,
        body=body,
        now=now,
        message_id=message_id,
        extra_headers=extra_headers,
        attachments=attachments,
    )
    return data, message_id


def build(
    pki: Pki,
    provider: str,
    sender: str,
    recipients: tuple[str, ...],
    now: dt.datetime,
    *,
    subject: str | None = None,
    original: tuple[bytes, str] | None = None,
    envelope_signer: str | None = None,
    remmd: str | None = None,
    extra_headers: tuple[tuple[str, str], ...] = (),
    stamp: bool = True,
    evidence_xml: Callable[[bytes], bytes] | None = None,
    digest_of: bytes | None = None,
) -> Outgoing:
    """A Dispatch from ``provider``'s gateway. ``envelope_signer``: another provider's process
    certificate signs it; ``evidence_xml``: rewrites the signed delil.xml (hostile input);
    ``digest_of``: the submission evidence records the digest of these bytes instead."""
    domain = pki.provider(provider).domain
    subject = subject or f"Uygunluk {uuid.uuid4().hex[:8]} ğüşİ"
    data, ua_message_id = original or signed_original(
        pki, sender, recipients, subject, now, extra_headers=extra_headers
    )
    remmd = remmd or new_remmd(domain)
    evidence = submission_evidence(
        io.BytesIO(digest_of if digest_of is not None else data),
        pki.directory_entry(provider),
        sender,
        recipients,
        remmd,
        now,
    )
    signer = pki.process(envelope_signer or provider)
    tsa = LocalTsa(pki.tsa())
    xml = sign_evidence(evidence, signer, now, timestamp=lambda d: tsa.stamp(d, now))
    if evidence_xml is not None:
        xml = evidence_xml(xml)
    out = io.BytesIO()
    message_id = f"<d-{evidence.identifier}@{domain}>"
    write_dispatch(
        out,
        io.BytesIO(data),
        evidence,
        xml,
        signer,
        now,
        message_id=message_id,
        timestamp=(lambda s: tsa.stamp(s, now)) if stamp else None,
    )
    return Outgoing(
        out.getvalue(),
        provider,
        remmd,
        sender,
        recipients,
        data,
        evidence,
        message_id,
        ua_message_id,
        subject,
    )
