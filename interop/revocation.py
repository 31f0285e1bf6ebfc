"""Revocation status from CRLs handed in by the caller (INTEROP-PROFILE.md §1).

Two questions, told apart by the caller (``check(..., proven=...)``):

* **Now** (``proven=False``): the status at the verification time. It needs a CRL current at
  that time (thisUpdate ≤ now < nextUpdate); the newest such CRL decides. Fail closed: a
  certificate whose issuer's CRL is missing, badly signed, or past its ``nextUpdate`` has
  unknown status, and unknown status fails verification unless the caller built
  ``RevocationData(require=False)`` (the "unless configured otherwise" of §1).
* **At a proven time T** (``proven=True``; T is a trusted time-stamp's genTime, profile §1
  "Signing time"), as ETSI EN 319 102-1 validates at a past time. A CRL of the issuer, signed
  by it, is evidence of the status at T when it was issued at or after T (thisUpdate ≥ T: it
  knows every revocation up to T) or was current at T (thisUpdate ≤ T < nextUpdate). A CRL
  that was issued and expired before T proves nothing. The certificate is revoked at T when
  any such CRL lists it with a revocationDate ≤ T (a revocation after T does not touch what
  was signed before it). It is good at T when none does and at least one of them could still
  list it: one issued while the certificate was within its validity (thisUpdate ≤ notAfter),
  or carrying ExpiredCertsOnCRL at or before notAfter, because RFC 5280 §3.3 lets a CA drop a
  revoked certificate from its CRLs once it has expired. Otherwise the status is unknown, and
  unknown fails closed as above.

Every answer says over which times it holds (``valid_from``/``valid_until``: between two
consecutive thisUpdate, nextUpdate or revocation dates nothing changes), so path validation
can cache it, and which CRLs it rests on (``crls``), so a gateway can keep them with the
evidence for verification later (profile §7).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa

_SHA256 = hashes.SHA256()
# ITU-T X.509 (10/2012) §8.5.2.12 id-ce-expiredCertsOnCRL: the CRL keeps revoked certificates
# that expired at or after this time (cryptography does not know the extension).
EXPIRED_CERTS_ON_CRL = x509.ObjectIdentifier("2.5.29.60")

CRL = x509.CertificateRevocationList


class RevocationStatus(enum.Enum):
    GOOD = "good"
    REVOKED = "revoked"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class RevocationCheck:
    status: RevocationStatus
    detail: str
    # The same question at any time in [valid_from, valid_until) has the same answer, from the
    # same CRLs; None means unbounded on that side.
    valid_until: dt.datetime | None = None
    valid_from: dt.datetime | None = None
    # The CRLs the answer rests on (empty when none could be used).
    crls: tuple[CRL, ...] = ()


@dataclass(frozen=True, slots=True)
class RevocationData:
    crls: tuple[CRL, ...] = ()
    require: bool = True
    _by_issuer: dict[x509.Name, list[CRL]] = field(init=False, repr=False, compare=False)
    # (CRL fingerprint, issuer fingerprint) → signature valid; filled lazily, bounded by crls.
    _signature_ok: dict[tuple[bytes, bytes], bool] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_issuer: dict[x509.Name, list[CRL]] = {}
        for crl in self.crls:
            by_issuer.setdefault(crl.issuer, []).append(crl)
        object.__setattr__(self, "_by_issuer", by_issuer)
        object.__setattr__(self, "_signature_ok", {})

    @classmethod
    def of(cls, crls: Iterable[CRL], *, require: bool = True) -> RevocationData:
        return cls(tuple(crls), require)

    def check(
        self,
        cert: x509.Certificate,
        issuer: x509.Certificate,
        at: dt.datetime,
        *,
        proven: bool = False,
    ) -> RevocationCheck:
        """Status of ``cert`` at ``at`` from CRLs signed by ``issuer``.

        ``proven=False``: ``at`` is the verification time (a current CRL is needed).
        ``proven=True``: ``at`` is a time a trusted time-stamp proves (the module's rules).
        """
        held = [c for c in self._by_issuer.get(issuer.subject, []) if self._signed_by(c, issuer)]
        answer = (
            self._at_proven_time(cert, issuer, held, at)
            if proven
            else self._now(cert, issuer, held, at)
        )
        valid_from, valid_until = _window(cert, held, at)
        return RevocationCheck(answer.status, answer.detail, valid_until, valid_from, answer.crls)

    def _now(
        self, cert: x509.Certificate, issuer: x509.Certificate, held: list[CRL], now: dt.datetime
    ) -> RevocationCheck:
        candidates = [c for c in held if c.last_update_utc <= now and _before_next(c, now)]
        if not candidates:
            stale = self._by_issuer.get(issuer.subject)
            why = (
                "no current CRL (the ones held are outside their validity or badly signed)"
                if stale
                else "no CRL"
            )
            return RevocationCheck(
                RevocationStatus.UNKNOWN,
                f"revocation status unknown: {why} from {issuer.subject.rfc4514_string()}",
            )
        crl = max(candidates, key=lambda c: c.last_update_utc)
        entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
        if entry is not None and entry.revocation_date_utc <= now:
            return _revoked(cert, entry, crl)
        return RevocationCheck(RevocationStatus.GOOD, "not revoked", crls=(crl,))

    def _at_proven_time(
        self, cert: x509.Certificate, issuer: x509.Certificate, held: list[CRL], at: dt.datetime
    ) -> RevocationCheck:
        # Issued at or after T, or current at T (oldest first, as the answer names them).
        usable = sorted(
            (c for c in held if c.last_update_utc >= at or _before_next(c, at)),
            key=lambda c: c.last_update_utc,
        )
        for crl in usable:
            entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
            if entry is not None and entry.revocation_date_utc <= at:
                return _revoked(cert, entry, crl)
        if not any(_keeps_expired(crl, cert) for crl in usable):
            if not self._by_issuer.get(issuer.subject):
                why = "no CRL"
            elif usable:
                why = "only CRLs issued after the certificate expired, which may omit it"
            else:
                why = (
                    "no CRL issued at or after that time or current at it (the ones held "
                    "expired before it, or are badly signed)"
                )
            return RevocationCheck(
                RevocationStatus.UNKNOWN,
                f"revocation status at {at.isoformat()} unknown: {why} from "
                f"{issuer.subject.rfc4514_string()}",
            )
        return RevocationCheck(
            RevocationStatus.GOOD, f"not revoked at {at.isoformat()}", crls=tuple(usable)
        )

    def _signed_by(self, crl: CRL, issuer: x509.Certificate) -> bool:
        key = (crl.fingerprint(_SHA256), issuer.fingerprint(_SHA256))
        ok = self._signature_ok.get(key)
        if ok is None:
            public_key = issuer.public_key()
            ok = isinstance(public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey) and (
                crl.is_signature_valid(public_key)
            )
            self._signature_ok[key] = ok
        return ok


def _before_next(crl: CRL, at: dt.datetime) -> bool:
    return crl.next_update_utc is None or at < crl.next_update_utc


def _revoked(cert: x509.Certificate, entry: x509.RevokedCertificate, crl: CRL) -> RevocationCheck:
    reason = ""
    with contextlib.suppress(x509.ExtensionNotFound):
        code = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        reason = f" ({code.value})"
    return RevocationCheck(
        RevocationStatus.REVOKED,
        f"certificate {cert.serial_number:x} was revoked on "
        f"{entry.revocation_date_utc.isoformat()}{reason}",
        crls=(crl,),
    )


def _keeps_expired(crl: CRL, cert: x509.Certificate) -> bool:
    """Whether ``crl`` would still list ``cert`` if it were revoked (RFC 5280 §3.3)."""
    not_after = cert.not_valid_after_utc
    if crl.last_update_utc <= not_after:
        return True
    try:
        value = crl.extensions.get_extension_for_oid(EXPIRED_CERTS_ON_CRL).value
    except x509.ExtensionNotFound:
        return False
    if not isinstance(value, x509.UnrecognizedExtension):
        return False
    try:
        since = core.GeneralizedTime.load(value.value, strict=True).native
    except Exception:  # an extension we cannot read proves nothing
        return False
    return isinstance(since, dt.datetime) and since.tzinfo is not None and since <= not_after


def _window(
    cert: x509.Certificate, held: list[CRL], at: dt.datetime
) -> tuple[dt.datetime | None, dt.datetime | None]:
    """The times around ``at`` between which no CRL starts, ends or revokes ``cert``."""
    events: set[dt.datetime] = set()
    for crl in held:
        events.add(crl.last_update_utc)
        if crl.next_update_utc is not None:
            events.add(crl.next_update_utc)
        entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
        if entry is not None:
            events.add(entry.revocation_date_utc)
    before = [e for e in events if e <= at]
    after = [e for e in events if e > at]
    return (max(before) if before else None, min(after) if after else None)
