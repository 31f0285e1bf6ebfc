from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from interop.pathval import UNREADABLE_NAME, CertificateValidator, Failure, Role
from interop.pki.devpki import DevPki, generate
from interop.pki.signer import Signer
from interop.reasons import Reason
from interop.revocation import RevocationData
from tests.helpers import LATER, NOW


def _user(pki: DevPki, local: str) -> tuple[object, ...]:
    signer = pki.user(f"{local}@hs01.kep.tr").signer
    return signer.certificate, signer.chain


def test_valid_user_certificate(pki: DevPki) -> None:
    validator = CertificateValidator(
        [pki.user_ca.certificate], RevocationData.of(pki.crls), Role.USER
    )
    cert, chain = _user(pki, "ali.yilmaz")
    result = validator.validate(cert, chain, LATER)  # type: ignore[arg-type]
    assert result.ok
    assert [c.subject for c in result.chain] == [cert.subject, pki.user_ca.certificate.subject]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("local", "failure", "reason", "fragment"),
    [
        ("suresi.dolmus", Failure.EXPIRED, Reason.UserCertExpiredOrRevoked, "expired on"),
        ("iptal.edilmis", Failure.REVOKED, Reason.UserCertExpiredOrRevoked, "revoked on"),
    ],
)
def test_expired_and_revoked_user_certificates(
    pki: DevPki, local: str, failure: Failure, reason: Reason, fragment: str
) -> None:
    validator = CertificateValidator(
        [pki.user_ca.certificate], RevocationData.of(pki.crls), Role.USER
    )
    cert, chain = _user(pki, local)
    result = validator.validate(cert, chain, LATER)  # type: ignore[arg-type]
    assert (result.ok, result.failure, result.reason) == (False, failure, reason)
    assert fragment in result.detail


def test_missing_crl_fails_closed_unless_configured_otherwise(pki: DevPki) -> None:
    cert, chain = _user(pki, "ali.yilmaz")
    closed = CertificateValidator([pki.user_ca.certificate], RevocationData(), Role.USER)
    result = closed.validate(cert, chain, LATER)  # type: ignore[arg-type]
    assert result.failure is Failure.REVOCATION_UNKNOWN
    assert result.reason is Reason.InvalidUserSignature
    assert "no CRL" in result.detail
    lenient = CertificateValidator(
        [pki.user_ca.certificate], RevocationData(require=False), Role.USER
    )
    assert lenient.validate(cert, chain, LATER).ok  # type: ignore[arg-type]


def test_stale_crl_fails_closed(pki: DevPki) -> None:
    cert, chain = _user(pki, "ali.yilmaz")
    validator = CertificateValidator(
        [pki.user_ca.certificate], RevocationData.of(pki.crls), Role.USER
    )
    after_next_update = pki.user_ca.crl.next_update_utc + dt.timedelta(days=1)  # type: ignore[operator]
    result = validator.validate(cert, chain, after_next_update)  # type: ignore[arg-type]
    assert result.failure is Failure.REVOCATION_UNKNOWN
    assert "outside their validity" in result.detail


def test_crl_signed_by_another_key_is_ignored(pki: DevPki) -> None:
    other = generate(NOW, ["hs01"])
    # A CRL with the right issuer name but a foreign signature must not count.
    forged = RevocationData.of([other.user_ca.crl])
    cert, chain = _user(pki, "ali.yilmaz")
    validator = CertificateValidator([pki.user_ca.certificate], forged, Role.USER)
    assert validator.validate(cert, chain, LATER).failure is Failure.REVOCATION_UNKNOWN  # type: ignore[arg-type]


def test_process_certificate_name_and_usage(pki: DevPki) -> None:
    validator = CertificateValidator(
        [pki.process_ca.certificate], RevocationData.of(pki.crls), Role.PROCESS
    )
    process = pki.providers["hs01"].process
    assert validator.validate(process.certificate, process.chain, LATER, ["hs01.kep.tr"]).ok
    wrong_name = validator.validate(process.certificate, process.chain, LATER, ["hs02.kep.tr"])
    assert (wrong_name.failure, wrong_name.reason) == (Failure.WRONG_NAME, Reason.PolicyViolation)
    tls = pki.providers["hs01"].tls
    tls_as_process = CertificateValidator(
        [pki.tls_ca.certificate], RevocationData.of(pki.crls), Role.PROCESS
    ).validate(tls.certificate, tls.chain, LATER)
    assert tls_as_process.failure is Failure.WRONG_USAGE
    assert "emailProtection" in tls_as_process.detail


def test_tls_and_tsa_roles(pki: DevPki) -> None:
    revocation = RevocationData.of(pki.crls)
    tls = pki.providers["hs02"].tls
    tls_validator = CertificateValidator([pki.tls_ca.certificate], revocation, Role.TLS)
    assert tls_validator.validate(tls.certificate, tls.chain, LATER, ["gw.hs02.kep.tr"]).ok
    assert not tls_validator.validate(tls.certificate, tls.chain, LATER, ["gw.hs01.kep.tr"]).ok
    tsa_validator = CertificateValidator([pki.process_ca.certificate], revocation, Role.TSA)
    assert tsa_validator.validate(pki.tsa.certificate, pki.tsa.chain, LATER).ok
    process = pki.providers["hs01"].process
    assert (
        tsa_validator.validate(process.certificate, process.chain, LATER).failure
        is Failure.WRONG_USAGE
    )


def test_untrusted_ca(pki: DevPki) -> None:
    stranger = generate(NOW, ["hs01"])
    validator = CertificateValidator(
        [pki.process_ca.certificate], RevocationData.of(pki.crls), Role.PROCESS
    )
    process = stranger.providers["hs01"].process
    result = validator.validate(process.certificate, process.chain, LATER, ["hs01.kep.tr"])
    assert (result.failure, result.reason) == (Failure.UNTRUSTED, Reason.PolicyViolation)
    user = stranger.user("ali.yilmaz@hs01.kep.tr").signer
    user_result = CertificateValidator(
        [pki.user_ca.certificate], RevocationData.of(pki.crls), Role.USER
    ).validate(user.certificate, user.chain, LATER)
    assert user_result.reason is Reason.InvalidUserSignature


def test_not_yet_valid(pki: DevPki) -> None:
    validator = CertificateValidator(
        [pki.user_ca.certificate], RevocationData.of(pki.crls), Role.USER
    )
    cert, chain = _user(pki, "ali.yilmaz")
    result = validator.validate(cert, chain, NOW - dt.timedelta(days=1))  # type: ignore[arg-type]
    assert result.failure is Failure.NOT_YET_VALID
    assert result.reason is Reason.UserCertExpiredOrRevoked


def test_cached_answer_expires_with_the_certificate(pki: DevPki) -> None:
    validator = CertificateValidator(
        [pki.user_ca.certificate], RevocationData.of(pki.crls), Role.USER
    )
    cert, chain = _user(pki, "ali.yilmaz")
    assert validator.validate(cert, chain, LATER).ok  # type: ignore[arg-type]
    assert validator.validate(cert, chain, LATER + dt.timedelta(hours=1)).ok  # type: ignore[arg-type]
    after = cert.not_valid_after_utc + dt.timedelta(seconds=1)  # type: ignore[attr-defined]
    assert validator.validate(cert, chain, after).failure is Failure.EXPIRED  # type: ignore[arg-type]


def _with_garbage_san(ca: Signer) -> x509.Certificate:
    """Signed by ``ca``, with a subjectAltName cryptography loads but refuses when read."""
    key = ec.generate_private_key(ec.SECP256R1())
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "garbage SAN")]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(hours=1))
        .not_valid_after(NOW + dt.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
        .add_extension(
            x509.UnrecognizedExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, b"\x30\x03\x82\x05a"),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )


@pytest.mark.parametrize(
    ("role", "reason"),
    [(Role.PROCESS, Reason.PolicyViolation), (Role.USER, Reason.InvalidUserSignature)],
)
def test_certificate_refused_when_read_is_a_failed_chain(
    pki: DevPki, role: Role, reason: Reason
) -> None:
    """cryptography parses extensions lazily: reading the SAN raised ValueError from validate."""
    ca = pki.process_ca if role is Role.PROCESS else pki.user_ca
    validator = CertificateValidator([ca.certificate], RevocationData.of(pki.crls), role)
    result = validator.validate(_with_garbage_san(ca.signer), [], LATER, ["hs01.kep.tr"])
    assert (result.failure, result.reason) == (Failure.UNREADABLE, reason)
    assert "cannot be read" in result.detail


def test_unreadable_subject_is_named_as_such(pki: DevPki) -> None:
    """A wrong string tag in the subject made ``subject_text`` (and so ``validate``) raise."""
    process = pki.providers["hs01"].process
    der = process.certificate.public_bytes(Encoding.DER)
    subject = process.certificate.subject.public_bytes()
    tag_at = der.index(subject) + subject.rindex(b"\x06\x03\x55\x04\x03") + 5
    broken = x509.load_der_x509_certificate(der[:tag_at] + b"\x0d" + der[tag_at + 1 :])
    validator = CertificateValidator(
        [pki.process_ca.certificate], RevocationData.of(pki.crls), Role.PROCESS
    )
    result = validator.validate(broken, process.chain, LATER, ["hs01.kep.tr"])
    assert not result.ok and result.reason is Reason.PolicyViolation
    assert result.subject == UNREADABLE_NAME
    assert UNREADABLE_NAME in result.describe()
