"""Verify a detached CMS signature: integrity, signer trust, and its time-stamp if any.

A valid signature time-stamp (CAdES-T) proves the signature existed at its genTime, and the
signer's chain is then judged at that time, not at ``now`` (profile §1 "Signing time"): a
signature stays valid after its certificate expires, or is revoked, for as long as the
time-stamp and the revocation data verify.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509

from interop.cms.hashing import LEGACY_DIGESTS, STRONG_DIGESTS
from interop.cms.parse import ParsedSignedData
from interop.cms.signer_info import check_signer
from interop.cms.timestamp import TimestampResult, verify_signature_timestamps
from interop.errors import CmsFormatError
from interop.limits import DEFAULT_LIMITS, Limits
from interop.pathval import CertificateValidator, ChainResult, Role, subject_text
from interop.reasons import Reason


@dataclass(frozen=True, slots=True)
class SignatureResult:
    """What a CMS verification found. ``ok`` only when intact, trusted and (if any) stamped."""

    intact: bool
    signer: x509.Certificate | None
    chain: ChainResult | None
    digest_algorithm: str
    signing_time: dt.datetime | None
    cades: bool
    timestamp: TimestampResult | None  # the earliest valid one, or the one that failed
    reason: Reason | None
    detail: str
    # The time the signer's chain was judged at: the time-stamp's genTime (None: at ``now``).
    proven_time: dt.datetime | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None

    @property
    def signer_name(self) -> str:
        """The signer's subject for people; never raises (see ``subject_text``)."""
        return subject_text(self.signer) if self.signer else "(unknown)"


def _integrity_reason(role: Role) -> Reason:
    # Profile choice (docs/profile-choices.md): a broken user signature is InvalidUserSignature;
    # a broken provider signature means the envelope is not what was signed: InvalidMessageFormat.
    return Reason.InvalidUserSignature if role is Role.USER else Reason.InvalidMessageFormat


def verify_parsed(
    parsed: ParsedSignedData,
    content_digest: bytes,
    now: dt.datetime,
    validator: CertificateValidator,
    *,
    expected_names: Sequence[str] = (),
    tsa_validator: CertificateValidator | None = None,
    tsa_valid_at: dt.datetime | None = None,
    allow_sha1: bool = False,
    require_cades: bool = False,
    limits: Limits = DEFAULT_LIMITS,
) -> SignatureResult:
    """Verify ``parsed`` over content whose ``parsed.digest_algorithm`` digest is given.

    Time-stamps are verified with ``tsa_validator`` (the TSA's chain judged at
    ``tsa_valid_at``, or at ``now`` when None; see ``verify_token``); with a valid one the
    signer's chain is judged at its genTime (``proven_time``), otherwise at ``now``.
    """
    role = validator.role
    algorithm = parsed.digest_algorithm

    def refuse(reason: Reason, detail: str, **found: object) -> SignatureResult:
        values: dict[str, object] = {
            "intact": False,
            "signer": None,
            "chain": None,
            "signing_time": None,
            "cades": False,
            "timestamp": None,
        }
        values.update(found)
        return SignatureResult(
            digest_algorithm=algorithm,
            reason=reason,
            detail=detail,
            **values,  # type: ignore[arg-type]
        )

    if algorithm in LEGACY_DIGESTS and not allow_sha1:
        return refuse(
            _integrity_reason(role) if role is Role.USER else Reason.PolicyViolation,
            f"{algorithm.upper()} signatures are refused; SHA-256 or stronger is required",
        )
    if algorithm not in STRONG_DIGESTS | LEGACY_DIGESTS:
        return refuse(_integrity_reason(role), f"digest algorithm {algorithm} is not supported")
    try:
        check = check_signer(parsed, content_digest)
    except CmsFormatError as exc:
        # Bytes that parse but cannot be read are a broken signature, reported as one, so the
        # gateway answers with Rejection evidence instead of failing on the message.
        return refuse(_integrity_reason(role), f"the signature is malformed: {exc.detail}")
    if not check.intact:
        return refuse(_integrity_reason(role), check.detail, signer=check.signer)
    signer = check.signer
    if signer is None:  # check_signer reports intact only with a signer; kept for the types
        return refuse(_integrity_reason(role), "the signer is unknown")
    found: dict[str, object] = {
        "intact": True,
        "signer": signer,
        "signing_time": check.signing_time,
        "cades": check.cades,
    }
    if require_cades and not check.cades:
        return refuse(
            Reason.InvalidMessageFormat,
            "the signature lacks the CAdES-BES signing-certificate-v2 attribute",
            **found,
        )
    if len(check.timestamp_tokens) > limits.timestamps_per_signature:
        return refuse(
            _integrity_reason(role),
            f"the signature carries more than {limits.timestamps_per_signature} time-stamps",
            **found,
        )
    stamp = verify_signature_timestamps(
        [(token, check.signature) for token in check.timestamp_tokens],
        now,
        tsa_validator,
        valid_at=tsa_valid_at,
    )
    # A valid time-stamp proves when the signature existed; without one (or with a broken
    # one, which proves nothing) the chain is judged now, and its failure is named first.
    proven = stamp.time if stamp is not None and stamp.ok else None
    chain = validator.validate(
        signer,
        [c for c in parsed.certificates if c is not signer],
        proven or now,
        expected_names,
        proven=proven is not None,
    )
    found.update(chain=chain, timestamp=stamp, proven_time=proven)
    if not chain.ok:
        detail = chain.detail
        if proven is not None:
            detail += f" (judged at {proven.isoformat()}, the time-stamp's time)"
        return refuse(chain.reason or Reason.PolicyViolation, detail, **found)
    if stamp is not None and not stamp.ok:
        return refuse(_integrity_reason(role), stamp.detail, **found)
    return SignatureResult(
        intact=True,
        signer=signer,
        chain=chain,
        digest_algorithm=algorithm,
        signing_time=check.signing_time,
        cades=check.cades,
        timestamp=stamp,
        reason=None,
        detail="valid",
        proven_time=proven,
    )
