"""Verify a whole envelope: envelope CMS, evidence XAdES, header/evidence agreement, and for a
Dispatch the original's digest and the user's S/MIME signature (INTEROP-PROFILE.md §3, §4).

The stream is read twice at most: once to find the structure, once to hash every span that a
signature or digest covers, in a single pass. A caller that read the structure already (the
relay's intake, before acknowledging the message) hands it in and the stream is read once:
what the signatures and digests cover is hashed from the stream all the same.
"""

from __future__ import annotations

import datetime as dt
import hmac
from dataclasses import dataclass
from typing import BinaryIO

from interop.cms.hashing import hash_ranges, hashable
from interop.cms.verify import SignatureResult, verify_parsed
from interop.envelope import fields as F
from interop.envelope.parse import ParsedEnvelope, parse_envelope
from interop.envelope.smime import SignedMessage, locate_signed_message
from interop.errors import CmsFormatError, EnvelopeFormatError, LimitExceeded
from interop.evidence import xmlio
from interop.evidence.codes import Event, EvidenceType
from interop.evidence.xades import EvidenceResult, verify_evidence_tree
from interop.limits import DEFAULT_LIMITS, Limits
from interop.pathval import CertificateValidator, subject_text
from interop.reasons import Reason
from interop.verifiers import Verifiers


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class EnvelopeVerification:
    envelope: ParsedEnvelope
    issuer_id: str | None
    envelope_signature: SignatureResult | None
    evidence: EvidenceResult | None
    user_signature: SignatureResult | None
    user_message: SignedMessage | None
    original_digest: bytes | None
    checks: tuple[Check, ...]
    reason: Reason | None
    detail: str

    @property
    def ok(self) -> bool:
        return self.reason is None


class _Checks:
    def __init__(self) -> None:
        self.items: list[Check] = []
        self.reason: Reason | None = None
        self.detail = "valid"

    def add(self, name: str, ok: bool, detail: str, reason: Reason | None = None) -> bool:
        self.items.append(Check(name, ok, detail))
        if not ok and self.reason is None:
            self.reason = reason or Reason.InvalidMessageFormat
            self.detail = f"{name}: {detail}"
        return ok


def verify_envelope(
    stream: BinaryIO,
    verifiers: Verifiers,
    now: dt.datetime,
    *,
    peer: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
    allow_sha1: bool = False,
    tsa_validator: CertificateValidator | None = None,
    tsa_valid_at: dt.datetime | None = None,
    envelope: ParsedEnvelope | None = None,
    evidence_read: xmlio.ReadEvidence | None = None,
) -> EnvelopeVerification:
    """Verify everything in an envelope. ``peer`` is the provider authenticated by TLS, if any.

    Time-stamps on the envelope signature, the evidence and the user's e-imza are verified
    with ``tsa_validator`` (``verifiers.tsa`` when None), the TSA's chain judged at
    ``tsa_valid_at`` (``now`` when None); each signature whose time-stamp verifies has its
    signer judged at the time-stamp's time (``proven_time`` of its result, profile §1).

    ``envelope`` is ``parse_envelope``'s reading of these very bytes, when the caller has it
    (read with the same ``limits``); the structure is then not read again. Only the caller can
    vouch that the bytes are still those it read: the spans that signatures and digests cover
    are hashed from ``stream`` either way, so a signed part changed since fails its check, but
    the unsigned header fields are taken from ``envelope``. ``evidence_read`` is
    ``xmlio.read`` of ``envelope.evidence_xml``, when the caller has it with ``envelope``: the
    evidence XML is then not parsed again, and its content is not read again when the
    signature covers all of it (``verify_evidence_tree``).

    Raises ``MalformedInput`` subclasses (and ``LimitExceeded``) only when the envelope cannot
    be read; every verification outcome is in the result.
    """
    tsa = tsa_validator if tsa_validator is not None else verifiers.tsa
    if envelope is None:
        envelope = parse_envelope(stream, limits)
        evidence_read = None  # a reading of other bytes than these, perhaps
    checks = _Checks()
    if evidence_read is None:
        evidence_root = xmlio.safe_parse(envelope.evidence_xml, limits)  # parsed once, read twice
        content = None
    else:
        evidence_root, content = evidence_read.root, evidence_read.evidence
    issuer = xmlio.issuer_of(evidence_root)
    issuer_domain = issuer.rsplit("@", 1)[-1].lower()
    entry = verifiers.trust.owner_of(issuer_domain)
    issuer_id = entry.id if entry is not None else None
    checks.add(
        "issuer",
        entry is not None and issuer.lower() == entry.provider.evidence_address,
        f"evidence issued by {issuer}" + ("" if entry else " (not a provider in the trust list)"),
        Reason.PolicyViolation,
    )
    if peer is not None:
        checks.add(
            "peer",
            issuer_id == peer,
            f"the connection is from {peer}; "
            f"the envelope is issued by {issuer_id or issuer_domain}",
            Reason.PolicyViolation,
        )

    user: SignedMessage | None = None
    user_problem: str | None = None
    if envelope.original is not None:  # a Dispatch (parse_envelope insists on it)
        try:
            user = locate_signed_message(stream, envelope.original, limits, "the original message")
        except (EnvelopeFormatError, CmsFormatError, LimitExceeded) as exc:
            user_problem = exc.detail  # reported after the envelope's own checks, which come first
    ranges = {"signed": (envelope.signed, hashable(envelope.signature.digest_algorithm))}
    if envelope.original is not None:
        ranges["original"] = (envelope.original, ("sha256",))
    if user is not None:
        ranges["user"] = (user.signed, hashable(user.signature.digest_algorithm))
    digests = hash_ranges(
        stream, {k: ((span.start, span.end), algs) for k, (span, algs) in ranges.items()}
    )

    envelope_signature = evidence = None
    if entry is not None:
        envelope_signature = verify_parsed(
            envelope.signature,
            digests.get(("signed", envelope.signature.digest_algorithm), b""),
            now,
            verifiers.process(entry.id),
            expected_names=[entry.process_san],
            tsa_validator=tsa,
            tsa_valid_at=tsa_valid_at,
            require_cades=True,
            limits=limits,
        )
        stamp = envelope_signature.timestamp
        checks.add(
            "envelope signature",
            envelope_signature.ok,
            f"signed by {envelope_signature.signer_name}"
            + (f", {stamp.detail}" if stamp else "")
            + ("" if envelope_signature.ok else f": {envelope_signature.detail}"),
            envelope_signature.reason,
        )
        evidence = verify_evidence_tree(
            evidence_root,
            now,
            verifiers.process(entry.id),
            tsa_validator=tsa,
            tsa_valid_at=tsa_valid_at,
            expected_issuer_domain=entry.provider.domain,
            limits=limits,
            content=content,
        )
        evidence_stamp = evidence.timestamp
        checks.add(
            "evidence signature",
            evidence.ok,
            f"XAdES by {subject_text(evidence.signer) if evidence.signer else '?'}"
            + (f", {evidence_stamp.detail}" if evidence_stamp else "")
            + ("" if evidence.ok else f": {evidence.detail}"),
            evidence.reason,
        )
    signed_evidence = evidence.evidence if evidence is not None else None
    if signed_evidence is not None:
        _check_fields(
            checks,
            envelope,
            signed_evidence.type,
            signed_evidence.event,
            signed_evidence.identifier,
            signed_evidence.message.remmd_message_id,
        )
    original_digest = digests.get(("original", "sha256"))
    if envelope.msg_type is F.MsgType.Dispatch and signed_evidence is not None:
        checks.add(
            "dispatch evidence",
            signed_evidence.type is EvidenceType.SubmissionAcceptanceRejection
            and signed_evidence.event is Event.Acceptance,
            f"{signed_evidence.type.value} {signed_evidence.event.value}",
        )
        checks.add(
            "original digest",
            original_digest is not None
            and hmac.compare_digest(original_digest, signed_evidence.message.digest),
            f"SHA-256 of ileti.eml {original_digest.hex() if original_digest else '?'}",
        )
        if entry is not None:
            sender_domain = signed_evidence.sender.rsplit("@", 1)[-1].lower()
            checks.add(
                "sender",
                entry.provider.owns(sender_domain),
                f"{signed_evidence.sender} belongs to {entry.id}"
                if entry.provider.owns(sender_domain)
                else f"{signed_evidence.sender} is not an address of {entry.id}",
                Reason.PolicyViolation,
            )
    user_signature = None
    if user_problem is not None:
        checks.add("user signature", False, user_problem, Reason.InvalidUserSignature)
    if user is not None:
        user_signature = verify_parsed(
            user.signature,
            digests.get(("user", user.signature.digest_algorithm), b""),
            now,
            verifiers.user,
            tsa_validator=tsa,
            tsa_valid_at=tsa_valid_at,
            allow_sha1=allow_sha1,
            limits=limits,
        )
        checks.add(
            "user signature",
            user_signature.ok,
            f"e-imza of {user_signature.signer_name}"
            + ("" if user_signature.ok else f": {user_signature.detail}"),
            user_signature.reason,
        )
    return EnvelopeVerification(
        envelope=envelope,
        issuer_id=issuer_id,
        envelope_signature=envelope_signature,
        evidence=evidence,
        user_signature=user_signature,
        user_message=user,
        original_digest=original_digest,
        checks=tuple(checks.items),
        reason=checks.reason,
        detail=checks.detail,
    )


def _check_fields(
    checks: _Checks,
    envelope: ParsedEnvelope,
    evidence_type: EvidenceType,
    event: Event,
    identifier: str,
    remmd_id: str,
) -> None:
    try:
        header_type = EvidenceType.from_element_name(envelope.evidence_type)
    except ValueError:
        header_type = None
    problems = []
    if header_type is not evidence_type:
        problems.append(f"{F.EVIDENCE_TYPE} {envelope.evidence_type} ≠ {evidence_type.value}")
    if envelope.event != event.value:
        problems.append(f"{F.EVENT} {envelope.event} ≠ {event.value}")
    if envelope.evidence_identifier != identifier:
        problems.append(f"{F.EVIDENCE_IDENTIFIER} ≠ EvidenceIdentifier")
    if envelope.message_identifier != remmd_id:
        problems.append(f"{F.MESSAGE_IDENTIFIER} ≠ MessageIdentifierByREMMD")
    checks.add(
        "header fields",
        not problems,
        "; ".join(problems) or "agree with delil.xml",
    )
