"""Revocation now and at a proven time (profile 1.1 §1 "Signing time"; interop/revocation.py)."""

from __future__ import annotations

import datetime as dt

import pytest
from asn1crypto import core
from cryptography import x509

from interop.pathval import CertificateValidator, Failure, Role
from interop.pki.devpki import DevPki
from interop.reasons import Reason
from interop.revocation import EXPIRED_CERTS_ON_CRL, RevocationData, RevocationStatus
from tests.helpers import LATER, NOW
from tests.interop.crls import make_crl

DAY = dt.timedelta(days=1)


def _process(pki: DevPki) -> tuple[x509.Certificate, x509.Certificate]:
    return pki.providers["hs01"].process.certificate, pki.process_ca.certificate


def test_a_crl_issued_after_the_time_proves_it(pki: DevPki) -> None:
    cert, ca = _process(pki)
    later_crl = make_crl(pki.process_ca, NOW + DAY, NOW + 8 * DAY)
    data = RevocationData.of([later_crl])
    proven = data.check(cert, ca, NOW, proven=True)
    assert proven.status is RevocationStatus.GOOD and proven.crls == (later_crl,)
    # Asked "now" at the same time, the same CRL is not current yet: today's rule, unchanged.
    now = data.check(cert, ca, NOW, proven=False)
    assert now.status is RevocationStatus.UNKNOWN and "no current CRL" in now.detail


def test_a_crl_current_at_the_time_proves_it(pki: DevPki) -> None:
    cert, ca = _process(pki)
    check = RevocationData.of([pki.process_ca.crl]).check(cert, ca, NOW, proven=True)
    assert check.status is RevocationStatus.GOOD and check.crls == (pki.process_ca.crl,)


def test_a_revocation_after_the_time_does_not_count(pki: DevPki) -> None:
    cert, ca = _process(pki)
    crl = make_crl(pki.process_ca, NOW + DAY, NOW + 8 * DAY, [(cert, NOW + DAY / 2)])
    data = RevocationData.of([crl])
    assert data.check(cert, ca, NOW, proven=True).status is RevocationStatus.GOOD
    revoked = data.check(cert, ca, NOW + DAY, proven=True)
    assert revoked.status is RevocationStatus.REVOKED and revoked.crls == (crl,)
    # Now (the CRL is current), the certificate is revoked.
    assert data.check(cert, ca, NOW + 2 * DAY).status is RevocationStatus.REVOKED


def test_a_revocation_before_the_time_counts_in_any_crl_that_knows_it(pki: DevPki) -> None:
    cert, ca = _process(pki)
    revoking = make_crl(pki.process_ca, NOW + DAY, NOW + 8 * DAY, [(cert, NOW - DAY / 48)])
    # A CRL current at the time that does not list it yet does not outweigh one that does.
    data = RevocationData.of([pki.process_ca.crl, revoking])
    check = data.check(cert, ca, NOW, proven=True)
    assert check.status is RevocationStatus.REVOKED and "revoked on" in check.detail


def test_a_crl_issued_and_expired_before_the_time_proves_nothing(pki: DevPki) -> None:
    cert, ca = _process(pki)
    old = make_crl(pki.process_ca, NOW, NOW + 7 * DAY)
    check = RevocationData.of([old]).check(cert, ca, NOW + 30 * DAY, proven=True)
    assert check.status is RevocationStatus.UNKNOWN and check.crls == ()
    assert "expired before it" in check.detail
    validator = CertificateValidator([ca], RevocationData.of([old]), Role.PROCESS)
    result = validator.validate(cert, [], NOW + 30 * DAY, proven=True)
    assert (result.failure, result.reason) == (Failure.REVOCATION_UNKNOWN, Reason.PolicyViolation)
    assert not RevocationData.of([]).check(cert, ca, NOW, proven=True).crls


def test_a_crl_signed_by_another_key_proves_nothing_at_a_past_time(pki: DevPki) -> None:
    from interop.pki.devpki import generate

    other = generate(NOW, ["hs01"])
    cert, ca = _process(pki)
    forged = make_crl(other.process_ca, NOW + DAY, NOW + 8 * DAY)
    assert forged.issuer == ca.subject
    check = RevocationData.of([forged]).check(cert, ca, NOW, proven=True)
    assert check.status is RevocationStatus.UNKNOWN


def test_a_crl_issued_after_expiry_may_omit_the_certificate(pki: DevPki) -> None:
    """RFC 5280 §3.3: a CA may drop a revoked certificate from CRLs once it has expired."""
    cert, ca = _process(pki)
    after_expiry = cert.not_valid_after_utc + DAY
    late = make_crl(pki.process_ca, after_expiry, after_expiry + 7 * DAY)
    check = RevocationData.of([late]).check(cert, ca, NOW, proven=True)
    assert check.status is RevocationStatus.UNKNOWN and "after the certificate expired" in (
        check.detail
    )
    # ExpiredCertsOnCRL at or before notAfter: the CA says it keeps such entries.
    keeps = x509.UnrecognizedExtension(
        EXPIRED_CERTS_ON_CRL, core.GeneralizedTime(NOW - 365 * DAY).dump()
    )
    kept = make_crl(pki.process_ca, after_expiry, after_expiry + 7 * DAY, extensions=[keeps])
    assert RevocationData.of([kept]).check(cert, ca, NOW, proven=True).status is (
        RevocationStatus.GOOD
    )


def test_now_is_unchanged_for_a_stale_crl(pki: DevPki) -> None:
    cert, ca = _process(pki)
    data = RevocationData.of([pki.process_ca.crl])
    next_update = pki.process_ca.crl.next_update_utc
    assert next_update is not None
    stale = next_update + DAY
    assert data.check(cert, ca, stale).status is RevocationStatus.UNKNOWN
    assert data.check(cert, ca, LATER).status is RevocationStatus.GOOD


def test_the_answer_says_when_it_holds(pki: DevPki) -> None:
    cert, ca = _process(pki)
    revoking = make_crl(pki.process_ca, NOW + DAY, NOW + 8 * DAY, [(cert, NOW + DAY / 2)])
    check = RevocationData.of([pki.process_ca.crl, revoking]).check(cert, ca, LATER)
    assert (check.valid_from, check.valid_until) == (
        pki.process_ca.crl.last_update_utc,
        NOW + DAY / 2,
    )


@pytest.mark.parametrize("proven", [False, True])
def test_the_cache_gives_no_answer_from_another_time(pki: DevPki, proven: bool) -> None:
    """A newer CRL or a revocation date between two calls changes the answer."""
    cert, ca = _process(pki)
    revoking = make_crl(pki.process_ca, NOW + DAY, NOW + 8 * DAY, [(cert, NOW + DAY / 2)])
    validator = CertificateValidator(
        [ca], RevocationData.of([pki.process_ca.crl, revoking]), Role.PROCESS
    )
    assert validator.validate(cert, [], LATER, proven=proven).ok
    later = validator.validate(cert, [], NOW + 2 * DAY, proven=proven)
    assert later.failure is Failure.REVOKED and "revoked on" in later.detail
    assert validator.validate(cert, [], LATER, proven=proven).ok  # and back in the past


def test_the_cache_keeps_now_and_proven_apart(pki: DevPki) -> None:
    cert, ca = _process(pki)
    later_crl = make_crl(pki.process_ca, NOW + DAY, NOW + 8 * DAY)
    validator = CertificateValidator([ca], RevocationData.of([later_crl]), Role.PROCESS)
    assert validator.validate(cert, [], NOW + 2 * DAY).ok  # cached for [NOW + 1 day, + 8 days)
    proven = validator.validate(cert, [], NOW, proven=True)
    assert proven.ok and proven.crls == (later_crl,)
    now = validator.validate(cert, [], NOW)
    assert now.failure is Failure.REVOCATION_UNKNOWN


def test_expiry_at_a_proven_time(pki: DevPki) -> None:
    cert, ca = _process(pki)
    validator = CertificateValidator([ca], RevocationData.of([pki.process_ca.crl]), Role.PROCESS)
    assert validator.validate(cert, [], NOW, proven=True).ok
    after = cert.not_valid_after_utc + DAY
    assert validator.validate(cert, [], after, proven=True).failure is Failure.EXPIRED
    before = cert.not_valid_before_utc - DAY
    assert validator.validate(cert, [], before, proven=True).failure is Failure.NOT_YET_VALID


def test_chain_result_carries_the_crls(pki: DevPki) -> None:
    cert, ca = _process(pki)
    validator = CertificateValidator([ca], RevocationData.of(pki.crls), Role.PROCESS)
    result = validator.validate(cert, [], LATER)
    assert result.ok and result.crls == (pki.process_ca.crl,)
    assert result.chain == (cert, ca)
