"""Certificates in a signature are read once per DER (``interop.cms.parse.load_certificate``).

A kept certificate must answer every check as a fresh one would: the same bytes give the same
object, other bytes never do, and a certificate that cannot be read fails every time.
"""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from interop.cms import signer_info
from interop.cms.parse import CERTIFICATES_KEPT, ParsedSignedData, load_certificate
from interop.cms.sign import sign_digest
from interop.cms.signer_info import check_signer
from interop.errors import CmsFormatError
from interop.pki.devpki import DevPki
from tests.helpers import NOW
from tests.interop.malformed import changed

DIGEST = hashlib.sha256(b"KEP").digest()


def test_the_same_bytes_give_the_same_certificate(pki: DevPki) -> None:
    signer = pki.providers["hs01"].process
    first = ParsedSignedData.parse(sign_digest(signer, DIGEST, NOW))
    second = ParsedSignedData.parse(sign_digest(signer, DIGEST, NOW))
    assert first.certificate_ders == second.certificate_ders
    assert all(a is b for a, b in zip(first.certificates, second.certificates, strict=True))
    assert set(first.certificate_ders) == {
        c.public_bytes(Encoding.DER) for c in signer.certificates
    }
    for cert, der in zip(first.certificates, first.certificate_ders, strict=True):
        assert cert.public_bytes(Encoding.DER) == der
    assert load_certificate.cache_info().maxsize == CERTIFICATES_KEPT


def test_each_signature_finds_its_own_signer(pki: DevPki) -> None:
    for provider in ("hs01", "hs02", "hs01", "hs03"):
        signer = pki.providers[provider].process
        check = check_signer(ParsedSignedData.parse(sign_digest(signer, DIGEST, NOW)), DIGEST)
        assert check.intact and check.cades, check.detail
        assert check.signer == signer.certificate


def _with_unreadable_issuer(pki: DevPki) -> bytes:
    """A signature whose signer certificate names its issuer with a tag no string has."""
    signer = pki.providers["hs02"].process
    der = sign_digest(signer, DIGEST, NOW)
    cert = signer.certificate.public_bytes(Encoding.DER)
    issuer = signer.certificate.issuer.public_bytes()
    issuer_at = der.index(cert) + cert.index(issuer)
    tag_at = issuer_at + issuer.rindex(b"\x06\x03\x55\x04\x03") + 5  # id-at-commonName
    return changed(der, tag_at, 0x0D)  # UTF8String → RELATIVE-OID


def test_a_certificate_that_cannot_be_read_fails_every_time(pki: DevPki) -> None:
    der = _with_unreadable_issuer(pki)
    for _ in range(3):
        parsed = ParsedSignedData.parse(der)  # cryptography reads names only when asked
        with pytest.raises(CmsFormatError, match="cannot be read"):
            check_signer(parsed, DIGEST)
    # Failures are not kept: the issuer cache holds only names that could be read.
    good = {c.public_bytes(Encoding.DER) for c in pki.providers["hs02"].process.certificates}
    (broken,) = set(ParsedSignedData.parse(der).certificate_ders) - good
    for _ in range(2):
        with pytest.raises(KeyError):  # cryptography's name reader: no string type 13
            signer_info._issuer(broken)
