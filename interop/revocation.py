"""Revocation status from CRLs handed in by the caller (INTEROP-PROFILE.md §1).

Two questions, told apart by the caller (``check(..., proven=...)``):

* **Now** (``proven=False``): the status at the verification time. The latest CRL of the
  issuer issued by then decides, and it must be current (thisUpdate ≤ now < nextUpdate): an
  earlier CRL still within its validity does not stand in for a later one that ran out, since
  it misses what the later one revoked. Fail closed: a certificate whose issuer's CRL is
  missing, badly signed, or past its ``nextUpdate`` has unknown status, and unknown status
  fails verification unless the caller built ``RevocationData(require=False)`` (the "unless
  configured otherwise" of §1).
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

CRLs a gateway fetches (``relay.crls``) pass three checks here before they are held:
``read_crl`` (DER or PEM, every field readable now rather than at the first verification),
``incomplete`` (every CRL held stands for its issuer's complete list: a delta CRL or a
partitioned one would make a revoked certificate look good) and ``issued_by`` (the name and
signature of one of the CAs it is fetched for). ``supersedes`` orders two CRLs of one issuer.
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

from interop.errors import MalformedInput, translated

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
        issued = [c for c in held if c.last_update_utc <= now]
        crl = max(issued, key=_issue_order) if issued else None
        if crl is None or not _before_next(crl, now):
            if crl is not None:
                why = (
                    "no current CRL (the ones held are outside their validity: the latest, of "
                    f"{crl.last_update_utc.isoformat()}, is past its nextUpdate)"
                )
            elif self._by_issuer.get(issuer.subject):
                why = "no current CRL (the ones held are outside their validity or badly signed)"
            else:
                why = "no CRL"
            return RevocationCheck(
                RevocationStatus.UNKNOWN,
                f"revocation status unknown: {why} from {issuer.subject.rfc4514_string()}",
            )
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


def _issue_order(crl: CRL) -> tuple[dt.datetime, int]:
    """Later thisUpdate first; a higher cRLNumber among CRLs of the same second."""
    number = crl_number(crl)
    return crl.last_update_utc, -1 if number is None else number


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


# -- CRLs from outside (fetched by the caller) ------------------------------------------------


def read_crl(data: bytes) -> CRL:
    """A CRL from DER or PEM bytes. ``MalformedInput`` when it is not one, or when any field
    (issuer, dates, extensions, each entry) cannot be read: cryptography parses lazily, so
    everything a verification will touch is touched here, once."""
    with translated(MalformedInput, "not a CRL"):
        crl = (
            x509.load_pem_x509_crl(data)
            if data.lstrip().startswith(b"-----BEGIN")
            else x509.load_der_x509_crl(data)
        )
        crl.issuer.rfc4514_string()
        crl.last_update_utc  # noqa: B018  (read for its exception)
        crl.next_update_utc  # noqa: B018
        for extension in crl.extensions:
            extension.value  # noqa: B018
        for entry in crl:
            entry.serial_number  # noqa: B018
            entry.revocation_date_utc  # noqa: B018
            for extension in entry.extensions:
                extension.value  # noqa: B018
    return crl


def incomplete(crl: CRL) -> str | None:
    """Why ``crl`` cannot stand for its issuer's complete CRL (None when it can).

    ``RevocationData`` reads every CRL as the whole list of its issuer's revocations (RFC 5280
    §5: a complete CRL for all certificates and reasons). A delta CRL (§5.2.4) lists only what
    changed since a base CRL, and an issuing distribution point (§5.2.5) may narrow a CRL to
    some reasons or to another issuer's certificates: held as complete, either would call a
    revoked certificate good.
    """
    try:
        crl.extensions.get_extension_for_class(x509.DeltaCRLIndicator)
        return "a delta CRL (only changes since a base CRL)"
    except x509.ExtensionNotFound:
        pass
    try:
        point = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint).value
    except x509.ExtensionNotFound:
        return None
    if point.indirect_crl:
        return "an indirect CRL (it may list certificates of other issuers)"
    if point.only_some_reasons is not None:
        return "a CRL for some revocation reasons only"
    if point.only_contains_attribute_certs:
        return "a CRL of attribute certificates"
    return None


def issued_by(crl: CRL, cas: Iterable[x509.Certificate]) -> x509.Certificate | None:
    """The CA among ``cas`` that issued ``crl``: its subject is the CRL's issuer and its key
    verifies the CRL's signature. None when no CA does."""
    for ca in cas:
        if ca.subject != crl.issuer:
            continue
        public_key = ca.public_key()
        if isinstance(public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey) and (
            crl.is_signature_valid(public_key)
        ):
            return ca
    return None


def crl_number(crl: CRL) -> int | None:
    """The CRL's cRLNumber (RFC 5280 §5.2.3: increases with each CRL of its issuer)."""
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return None


def supersedes(new: CRL, held: CRL) -> bool:
    """Whether ``new`` is a later CRL than ``held`` of the same issuer: a higher cRLNumber
    when both carry one (RFC 5280 §5.2.3 makes it the order of issue), else a later
    thisUpdate. The same CRL, or an earlier one, does not."""
    if new.issuer != held.issuer:
        return False
    new_number, held_number = crl_number(new), crl_number(held)
    if new_number is not None and held_number is not None:
        return new_number > held_number
    return new.last_update_utc > held.last_update_utc


def newest_by_issuer(crls: Iterable[CRL]) -> dict[x509.Name, CRL]:
    """The latest CRL of each issuer among ``crls`` (``supersedes``'s order)."""
    newest: dict[x509.Name, CRL] = {}
    for crl in crls:
        held = newest.get(crl.issuer)
        if held is None or supersedes(crl, held):
            newest[crl.issuer] = crl
    return newest
