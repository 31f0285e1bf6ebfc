"""Revocation status from CRLs handed in by the caller (INTEROP-PROFILE.md §1).

Fail closed: a certificate whose issuer's CRL is missing, badly signed, or past its
``nextUpdate`` has unknown status, and unknown status fails verification unless the caller built
``RevocationData(require=False)`` (the "unless configured otherwise" of §1).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa

_SHA256 = hashes.SHA256()


class RevocationStatus(enum.Enum):
    GOOD = "good"
    REVOKED = "revoked"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class RevocationCheck:
    status: RevocationStatus
    detail: str
    # Until when this answer holds (the CRL's nextUpdate); None when unknown.
    valid_until: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class RevocationData:
    crls: tuple[x509.CertificateRevocationList, ...] = ()
    require: bool = True
    _by_issuer: dict[x509.Name, list[x509.CertificateRevocationList]] = field(
        init=False, repr=False, compare=False
    )
    # (CRL fingerprint, issuer fingerprint) → signature valid; filled lazily, bounded by crls.
    _signature_ok: dict[tuple[bytes, bytes], bool] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_issuer: dict[x509.Name, list[x509.CertificateRevocationList]] = {}
        for crl in self.crls:
            by_issuer.setdefault(crl.issuer, []).append(crl)
        object.__setattr__(self, "_by_issuer", by_issuer)
        object.__setattr__(self, "_signature_ok", {})

    @classmethod
    def of(
        cls, crls: Iterable[x509.CertificateRevocationList], *, require: bool = True
    ) -> RevocationData:
        return cls(tuple(crls), require)

    def check(
        self, cert: x509.Certificate, issuer: x509.Certificate, now: dt.datetime
    ) -> RevocationCheck:
        """Status of ``cert`` at ``now`` from a current CRL signed by ``issuer``."""
        candidates = [
            crl
            for crl in self._by_issuer.get(issuer.subject, [])
            if self._signed_by(crl, issuer)
            and crl.last_update_utc <= now
            and (crl.next_update_utc is None or now < crl.next_update_utc)
        ]
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
            reason = ""
            with contextlib.suppress(x509.ExtensionNotFound):
                code = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
                reason = f" ({code.value})"
            return RevocationCheck(
                RevocationStatus.REVOKED,
                f"certificate {cert.serial_number:x} was revoked on "
                f"{entry.revocation_date_utc.isoformat()}{reason}",
            )
        return RevocationCheck(RevocationStatus.GOOD, "not revoked", crl.next_update_utc)

    def _signed_by(self, crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
        key = (crl.fingerprint(_SHA256), issuer.fingerprint(_SHA256))
        ok = self._signature_ok.get(key)
        if ok is None:
            public_key = issuer.public_key()
            ok = isinstance(public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey) and (
                crl.is_signature_valid(public_key)
            )
            self._signature_ok[key] = ok
        return ok
