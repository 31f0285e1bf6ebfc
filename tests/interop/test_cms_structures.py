"""How strictly CMS and RFC 3161 structures are read (docs/profile-choices.md, "As read").

The reading is cryptography's DER decoder over ``interop.cms.structures``; these tests build
their inputs with asn1crypto or by hand, so they check the reading against another encoder.
"""

from __future__ import annotations

import hashlib

import pytest
from asn1crypto import cms, core

from interop.cms import der
from interop.cms.parse import ParsedSignedData
from interop.cms.sign import sign_digest
from interop.cms.signer_info import check_signer
from interop.cms.timestamp import LocalTsa, token_carrying, token_gen_time, verify_token
from interop.errors import CmsFormatError
from interop.pki.devpki import DevPki
from interop.verifiers import Verifiers
from tests.helpers import LATER, NOW
from tests.interop import reference_cms

DIGEST = hashlib.sha256(b"content").digest()


def _swapped(data: bytes, first: bytes, second: bytes) -> bytes:
    """``data`` with the adjacent encodings ``first`` and ``second`` in the other order (the
    lengths around them stay right). asn1crypto sorts a SET OF when it writes one, so an
    order DER does not allow is made by hand."""
    assert data.count(first + second) == 1
    return data.replace(first + second, second + first)


def test_certificates_are_read_in_any_order(pki: DevPki) -> None:
    """Senders often leave a SignedData's certificates in chain order, not DER's: it reads."""
    signer = pki.providers["hs01"].process
    made = sign_digest(signer, DIGEST, NOW)
    first, second = ParsedSignedData.parse(made).certificate_ders
    assert first < second  # in DER order as made
    unordered = _swapped(made, first, second)
    parsed = ParsedSignedData.parse(unordered)
    assert parsed.certificate_ders == (second, first)
    check = check_signer(parsed, DIGEST)
    assert check.intact, check.detail
    assert check.signer == signer.certificate


def test_a_fractional_gen_time_is_read_to_the_microsecond(
    pki: DevPki, verifiers: Verifiers
) -> None:
    at = NOW.replace(microsecond=120)  # written 20261124120000.00012Z
    token = LocalTsa(pki.tsa).stamp(b"signature", at)
    assert b".00012Z" in token
    assert token_gen_time(token) == at
    assert verifiers.tsa is not None
    result = verify_token(token, b"signature", LATER, verifiers.tsa)
    assert result.ok, result.detail
    assert result.time == at


def _tst_info(*extra: bytes, gen_time: bytes | None = None) -> bytes:
    return der.sequence(
        core.Integer(1).dump(),
        core.ObjectIdentifier("1.2.3.4").dump(),
        der.sequence(
            der.sequence(core.ObjectIdentifier("2.16.840.1.101.3.4.2.1").dump()),
            core.OctetString(hashlib.sha256(b"signature").digest()).dump(),
        ),
        core.Integer(7).dump(),
        gen_time or core.GeneralizedTime(NOW).dump(),
        *extra,
    )


def test_a_tst_info_in_der_reads_and_one_with_its_default_written_out_does_not(
    pki: DevPki, verifiers: Verifiers
) -> None:
    assert verifiers.tsa is not None
    # The imprint's algorithm without parameters, as many TSAs write it, and an accuracy.
    accuracy = der.sequence(core.Integer(1).dump())
    good = token_carrying(pki.tsa, _tst_info(accuracy), NOW)
    result = verify_token(good, b"signature", LATER, verifiers.tsa)
    assert result.ok, result.detail
    # ordering FALSE is the DEFAULT: DER leaves it out (X.690 §11.5).
    written_out = token_carrying(pki.tsa, _tst_info(accuracy, core.Boolean(False).dump()), NOW)
    result = verify_token(written_out, b"signature", LATER, verifiers.tsa)
    assert not result.ok
    assert result.detail.startswith("time-stamp token: its TSTInfo cannot be read")


def test_tokens_of_one_attribute_must_be_in_der_order(pki: DevPki) -> None:
    """Two time-stamps in one attribute: in DER order they are both read; swapped, the
    signature cannot be read rather than being reordered."""
    tsa = LocalTsa(pki.tsa)
    tokens = sorted(tsa.stamp(b"x" * n, NOW) for n in (1, 2))
    info = cms.ContentInfo.load(
        reference_cms.signed_data(pki.providers["hs01"].process, DIGEST, NOW)
    )
    info["content"]["signer_infos"][0]["unsigned_attrs"] = cms.CMSAttributes(
        [
            {
                "type": "signature_time_stamp_token",
                "values": [cms.ContentInfo.load(t) for t in tokens],
            }
        ]
    )
    made = info.dump()
    check = check_signer(ParsedSignedData.parse(made), DIGEST)
    assert check.intact, check.detail
    assert check.timestamp_tokens == tuple(tokens)
    unordered = ParsedSignedData.parse(_swapped(made, *tokens))
    with pytest.raises(CmsFormatError, match="signer information cannot be read"):
        check_signer(unordered, DIGEST)


@pytest.mark.parametrize("text", [b"20261124120000.120Z", b"20261124120000"])
def test_a_gen_time_that_is_not_der_is_named(
    text: bytes, pki: DevPki, verifiers: Verifiers
) -> None:
    """A trailing zero in the fraction, or no Z: not DER (X.690 §11.7), and said so."""
    assert verifiers.tsa is not None
    gen_time = b"\x18" + bytes([len(text)]) + text
    token = token_carrying(pki.tsa, _tst_info(gen_time=gen_time), NOW)
    result = verify_token(token, b"signature", LATER, verifiers.tsa)
    assert not result.ok
    assert "the time-stamp's genTime is not a UTC time" in result.detail
