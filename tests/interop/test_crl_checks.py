"""The checks a fetched CRL passes before it is held (interop/revocation.py), and which CRL
decides now when several of one issuer are held."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from interop.errors import MalformedInput
from interop.pki.devpki import DevPki, generate
from interop.revocation import (
    RevocationData,
    RevocationStatus,
    crl_number,
    incomplete,
    issued_by,
    newest_by_issuer,
    read_crl,
    supersedes,
)
from tests.helpers import NOW
from tests.interop.crls import make_crl

DAY = dt.timedelta(days=1)


def test_read_crl_takes_der_and_pem_and_refuses_the_rest(pki: DevPki) -> None:
    crl = make_crl(pki.tls_ca, NOW, NOW + DAY, [(pki.providers["hs01"].tls.certificate, NOW)])
    assert read_crl(crl.public_bytes(Encoding.DER)) == crl
    assert read_crl(crl.public_bytes(Encoding.PEM)) == crl
    der = crl.public_bytes(Encoding.DER)
    for broken in (
        b"",
        b"-----BEGIN X509 CRL-----\nxx\n",
        der[:-40],
        der[:40] + b"\xff" + der[41:],
    ):
        with pytest.raises(MalformedInput, match="not a CRL"):
            read_crl(broken)


def test_only_complete_crls_are_held(pki: DevPki) -> None:
    assert incomplete(pki.tls_ca.crl) is None
    delta = make_crl(pki.tls_ca, NOW, NOW + DAY, extensions=[x509.DeltaCRLIndicator(1)])
    assert "delta" in (incomplete(delta) or "")
    point = x509.IssuingDistributionPoint(
        full_name=None,
        relative_name=None,
        only_contains_user_certs=False,
        only_contains_ca_certs=False,
        only_some_reasons=frozenset({x509.ReasonFlags.key_compromise}),
        indirect_crl=False,
        only_contains_attribute_certs=False,
    )
    some = make_crl(pki.tls_ca, NOW, NOW + DAY, extensions=[point])
    assert "some revocation reasons" in (incomplete(some) or "")
    users_only = x509.IssuingDistributionPoint(None, None, True, False, None, False, False)
    assert incomplete(make_crl(pki.tls_ca, NOW, NOW + DAY, extensions=[users_only])) is None


def test_issued_by_needs_the_name_and_the_signature(pki: DevPki) -> None:
    cas = [pki.process_ca.certificate, pki.tls_ca.certificate]
    assert issued_by(pki.tls_ca.crl, cas) == pki.tls_ca.certificate
    assert issued_by(pki.user_ca.crl, cas) is None  # a CA not among them
    other = generate(NOW, ["hs01"])  # same names, other keys
    assert other.tls_ca.crl.issuer == pki.tls_ca.crl.issuer
    assert issued_by(other.tls_ca.crl, cas) is None


def test_later_means_a_higher_number_or_else_a_later_this_update(pki: DevPki) -> None:
    two = make_crl(pki.tls_ca, NOW, NOW + DAY, number=2)
    three = make_crl(pki.tls_ca, NOW - DAY, NOW + DAY, number=3)  # numbers decide
    assert supersedes(three, two) and not supersedes(two, three)
    assert not supersedes(two, make_crl(pki.tls_ca, NOW, NOW + DAY, number=2))
    assert not supersedes(three, pki.process_ca.crl)  # another issuer's
    unnumbered = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(pki.tls_ca.certificate.subject)
        .last_update(NOW + DAY)
        .next_update(NOW + 2 * DAY)
        .sign(pki.tls_ca.signer.key, three.signature_hash_algorithm)  # type: ignore[arg-type]
    )
    assert crl_number(unnumbered) is None and supersedes(unnumbered, three)
    newest = newest_by_issuer([two, three, pki.tls_ca.crl, pki.user_ca.crl])
    assert newest == {
        pki.tls_ca.certificate.subject: three,
        pki.user_ca.certificate.subject: pki.user_ca.crl,
    }


def test_an_earlier_crl_does_not_stand_in_for_a_later_one_that_ran_out(pki: DevPki) -> None:
    """A regression of fetching CRLs: a configuration's CRL valid for a year, and a fetched
    one of a day that revokes a certificate. Once the day is over, the year-long one (which
    does not list it) must not make the certificate good again: the node fails closed."""
    cert, ca = pki.providers["hs02"].tls.certificate, pki.tls_ca.certificate
    revoking = make_crl(pki.tls_ca, NOW + DAY, NOW + 2 * DAY, [(cert, NOW + DAY)], number=2)
    data = RevocationData.of([pki.tls_ca.crl, revoking])
    assert data.check(cert, ca, NOW + DAY / 2).status is RevocationStatus.GOOD
    assert data.check(cert, ca, NOW + 1.5 * DAY).status is RevocationStatus.REVOKED
    stale = data.check(cert, ca, NOW + 3 * DAY)
    assert stale.status is RevocationStatus.UNKNOWN and "past its nextUpdate" in stale.detail
