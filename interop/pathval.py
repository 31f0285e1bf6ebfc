"""Certificate path validation for the roles of INTEROP-PROFILE.md §1, with CRL revocation.

Chain building and RFC 5280 checks are ``cryptography``'s X.509 verifier; this module adds the
per-role key usage rules, the expected names, revocation (``interop.revocation``) and the mapping
of failures to profile reasons. It returns a ``ChainResult``; it raises nothing for a bad chain.

Two times (profile §1 "Signing time"): ``validate(..., at)`` judges the chain at the
verification time, with a CRL current then (fail closed on stale CRLs); ``validate(..., at,
proven=True)`` judges it at a past time a trusted time-stamp proves: every certificate valid at
``at`` whatever the clock says now, and revocation by the rules for a past time in
``interop.revocation``.

Reasons (profile choice, see docs/profile-choices.md): a user certificate that is expired, not yet
valid or revoked gives ``UserCertExpiredOrRevoked``; any other user-certificate failure
``InvalidUserSignature``. A provider certificate (process, TLS, TSA) that fails gives
``PolicyViolation``: the sender is not who the trust list says may sign or connect.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import itertools
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    Policy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from interop.errors import cause_text
from interop.limits import DEFAULT_LIMITS
from interop.reasons import Reason
from interop.revocation import RevocationData, RevocationStatus

_SHA256 = hashes.SHA256()
_CACHE_SIZE = 4096


class Role(enum.Enum):
    PROCESS = "process certificate"
    TLS = "TLS certificate"
    USER = "user e-imza certificate"
    TSA = "time-stamping certificate"


class Failure(enum.Enum):
    EXPIRED = "expired"
    NOT_YET_VALID = "not yet valid"
    REVOKED = "revoked"
    REVOCATION_UNKNOWN = "revocation status unknown"
    UNTRUSTED = "untrusted"
    WRONG_USAGE = "wrong key usage"
    WRONG_NAME = "wrong name"
    UNREADABLE = "unreadable"  # names or extensions cryptography refuses when first read


@dataclass(frozen=True, slots=True)
class ChainResult:
    role: Role
    subject: str
    chain: tuple[x509.Certificate, ...]  # leaf to anchor when built, else just the leaf
    failure: Failure | None = None
    reason: Reason | None = None
    detail: str = ""
    # The same question at any time in [valid_from, valid_until) has this answer (caching).
    valid_from: dt.datetime | None = None
    valid_until: dt.datetime | None = None
    # The CRLs the revocation answers rest on, for keeping with the evidence (profile §7).
    crls: tuple[x509.CertificateRevocationList, ...] = ()

    @property
    def ok(self) -> bool:
        return self.failure is None

    def describe(self) -> str:
        names = " → ".join(subject_text(c) for c in self.chain)
        if self.ok:
            return f"{self.role.value} trusted: {names}"
        return f"{self.role.value} {self.subject}: {self.detail}"


UNREADABLE_NAME = "(unreadable name)"


@functools.lru_cache(maxsize=1024)
def sha256_print(cert: x509.Certificate) -> bytes:
    """The SHA-256 fingerprint of a certificate, kept: a gateway asks it of the same few
    certificates (read once each, ``interop.cms.parse.load_certificate``) for every
    signature, and hashing the DER again costs four times the look-up."""
    return cert.fingerprint(_SHA256)


@functools.lru_cache(maxsize=1024)
def subject_text(cert: x509.Certificate) -> str:
    """RFC 4514 subject of a certificate (cached: formatting names is slow, and repeats).

    Never raises: it names a signer in results and logs, and cryptography reads a name only
    now, raising KeyError, TypeError or ValueError for a string type or value it refuses.
    """
    try:
        return cert.subject.rfc4514_string()
    except Exception:
        return UNREADABLE_NAME


def reason_for(role: Role, failure: Failure) -> Reason:
    if role is Role.USER:
        if failure in (Failure.EXPIRED, Failure.NOT_YET_VALID, Failure.REVOKED):
            return Reason.UserCertExpiredOrRevoked
        return Reason.InvalidUserSignature
    return Reason.PolicyViolation


def _require_eku(
    *wanted: x509.ObjectIdentifier,
) -> Callable[[Policy, x509.Certificate, x509.ExtendedKeyUsage], None]:
    def check(policy: Policy, cert: x509.Certificate, ext: x509.ExtendedKeyUsage) -> None:
        missing = [o._name for o in wanted if o not in ext]
        if missing:
            raise ValueError(f"extendedKeyUsage lacks {', '.join(missing)}")

    return check


def _require_signing_key_usage(
    policy: Policy, cert: x509.Certificate, ext: x509.KeyUsage | None
) -> None:
    if ext is not None and not (ext.digital_signature or ext.content_commitment):
        raise ValueError("keyUsage allows neither digitalSignature nor nonRepudiation")


def _require_ca(policy: Policy, cert: x509.Certificate, ext: x509.BasicConstraints) -> None:
    if not ext.ca:
        raise ValueError("an issuer that is not a CA (basicConstraints cA false)")


def _ca_key_usage(policy: Policy, cert: x509.Certificate, ext: x509.KeyUsage | None) -> None:
    if ext is not None and not ext.key_cert_sign:
        raise ValueError("an issuer whose keyUsage lacks keyCertSign")


_CA_POLICY = (
    ExtensionPolicy.permit_all()
    .require_present(x509.BasicConstraints, Criticality.AGNOSTIC, _require_ca)
    .may_be_present(x509.KeyUsage, Criticality.AGNOSTIC, _ca_key_usage)
)


def _ee_policy(role: Role) -> ExtensionPolicy:
    eku = {
        Role.PROCESS: (ExtendedKeyUsageOID.EMAIL_PROTECTION,),
        Role.USER: (ExtendedKeyUsageOID.EMAIL_PROTECTION,),
        Role.TLS: (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
        Role.TSA: (ExtendedKeyUsageOID.TIME_STAMPING,),
    }[role]
    policy = ExtensionPolicy.permit_all().require_present(
        x509.ExtendedKeyUsage,
        # RFC 3161 §2.3: a TSA certificate's extendedKeyUsage must be critical.
        Criticality.CRITICAL if role is Role.TSA else Criticality.AGNOSTIC,
        _require_eku(*eku),
    )
    if role is not Role.TLS:
        policy = policy.may_be_present(
            x509.KeyUsage, Criticality.AGNOSTIC, _require_signing_key_usage
        )
    return policy


_EE_POLICIES = {role: _ee_policy(role) for role in Role}


def dns_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [n.lower() for n in san.get_values_for_type(x509.DNSName)]


class CertificateValidator:
    """Validates certificates against a set of anchors and revocation data.

    Results are cached per (leaf, intermediates, expected names, which time) and reused only
    for a time inside the window in which the answer cannot change: between the latest and the
    earliest of the chain's notBefore/notAfter and the thisUpdate, nextUpdate and revocation
    dates of the CRLs held, so a validation at a past time never reuses an answer it should
    not. A new ``RevocationData`` needs a new validator.
    """

    def __init__(
        self,
        anchors: Sequence[x509.Certificate],
        revocation: RevocationData,
        role: Role,
        *,
        max_depth: int = DEFAULT_LIMITS.chain_depth,
    ) -> None:
        self.role = role
        self.revocation = revocation
        self._anchors = list(anchors)
        self._anchor_prints = {sha256_print(a) for a in anchors}
        self._store = Store(self._anchors) if anchors else None
        self._max_depth = max_depth
        self._cache: OrderedDict[tuple[bytes, ...], ChainResult] = OrderedDict()

    def validate(
        self,
        leaf: x509.Certificate,
        intermediates: Sequence[x509.Certificate],
        at: dt.datetime,
        expected_names: Sequence[str] = (),
        *,
        proven: bool = False,
    ) -> ChainResult:
        """The chain of ``leaf`` judged at ``at``.

        ``proven=False``: ``at`` is the verification time; revocation needs a CRL current
        then. ``proven=True``: ``at`` is a time a trusted time-stamp proves (its genTime);
        revocation follows ``interop.revocation``'s rules for a past time.
        """
        key = (
            b"proven" if proven else b"now",
            sha256_print(leaf),
            *(sha256_print(c) for c in intermediates),
            "|".join(expected_names).encode(),
        )
        hit = self._cache.get(key)
        if (
            hit is not None
            and hit.valid_from is not None
            and hit.valid_until is not None
            and hit.valid_from <= at < hit.valid_until
        ):
            self._cache.move_to_end(key)
            return hit
        try:
            result = self._validate(leaf, intermediates, at, expected_names, proven)
        except Exception as exc:
            # cryptography parses names and extensions when first read, so a certificate that
            # loaded may still be refused here: a failed chain, with the role's reason.
            return self._fail(
                leaf,
                Failure.UNREADABLE,
                f"{self.role.value} cannot be read: {cause_text(exc)}",
            )
        if result.valid_from is not None:
            self._cache[key] = result
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return result

    def _fail(
        self,
        leaf: x509.Certificate,
        failure: Failure,
        detail: str,
        chain: tuple[x509.Certificate, ...] = (),
        crls: tuple[x509.CertificateRevocationList, ...] = (),
    ) -> ChainResult:
        return ChainResult(
            self.role,
            subject_text(leaf),
            chain or (leaf,),
            failure,
            reason_for(self.role, failure),
            detail,
            crls=crls,
        )

    def _validate(
        self,
        leaf: x509.Certificate,
        intermediates: Sequence[x509.Certificate],
        at: dt.datetime,
        expected_names: Sequence[str],
        proven: bool,
    ) -> ChainResult:
        what = self.role.value
        if at < leaf.not_valid_before_utc:
            return self._fail(
                leaf,
                Failure.NOT_YET_VALID,
                f"{what} is not valid before {leaf.not_valid_before_utc.isoformat()}",
            )
        if at >= leaf.not_valid_after_utc:
            return self._fail(
                leaf,
                Failure.EXPIRED,
                f"{what} expired on {leaf.not_valid_after_utc.isoformat()}",
            )
        if self._store is None:
            return self._fail(leaf, Failure.UNTRUSTED, f"no trusted CA is configured for {what}s")
        if expected_names:
            names = dns_names(leaf)
            if not any(n.lower() in names for n in expected_names):
                return self._fail(
                    leaf,
                    Failure.WRONG_NAME,
                    f"{what} names {names or 'no DNS name'}; expected {list(expected_names)}",
                )
        # Anchors handed in as "intermediates" (a chain sent with its root) would make the
        # verifier see a longer path than there is; they are dropped, the store has them.
        extra = [
            c
            for c in intermediates[: DEFAULT_LIMITS.certificates_per_signature]
            if sha256_print(c) not in self._anchor_prints
        ]
        verifier = (
            PolicyBuilder()
            .store(self._store)
            .time(at)
            .max_chain_depth(self._max_depth)
            .extension_policies(ca_policy=_CA_POLICY, ee_policy=_EE_POLICIES[self.role])
            .build_client_verifier()
        )
        try:
            chain = tuple(verifier.verify(leaf, extra).chain)
        except VerificationError as exc:
            text = str(exc)
            if "extension" in text.lower():  # a role rule (EKU, key usage, criticality) failed
                return self._fail(leaf, Failure.WRONG_USAGE, f"{what} is not usable as one: {text}")
            failure = (
                Failure.EXPIRED if "not valid at validation time" in text else Failure.UNTRUSTED
            )
            return self._fail(leaf, failure, f"{what} does not chain to a trusted CA: {text}")
        valid_from = max(c.not_valid_before_utc for c in chain)
        valid_until = min(c.not_valid_after_utc for c in chain)
        crls: dict[bytes, x509.CertificateRevocationList] = {}
        for cert, issuer in itertools.pairwise(chain):
            check = self.revocation.check(cert, issuer, at, proven=proven)
            for crl in check.crls:
                crls.setdefault(crl.fingerprint(_SHA256), crl)
            if check.status is RevocationStatus.REVOKED:
                return self._fail(
                    leaf, Failure.REVOKED, f"{what}: {check.detail}", chain, tuple(crls.values())
                )
            if check.status is RevocationStatus.UNKNOWN and self.revocation.require:
                return self._fail(
                    leaf,
                    Failure.REVOCATION_UNKNOWN,
                    f"{what}: {check.detail}",
                    chain,
                    tuple(crls.values()),
                )
            if check.valid_from is not None:
                valid_from = max(valid_from, check.valid_from)
            if check.valid_until is not None:
                valid_until = min(valid_until, check.valid_until)
        return ChainResult(
            self.role,
            subject_text(leaf),
            chain,
            valid_from=valid_from,
            valid_until=valid_until,
            crls=tuple(crls.values()),
        )
