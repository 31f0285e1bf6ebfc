"""Values whose length ends in 0x80 are kept as read (asn1crypto mistakes them for BER).

See ``interop/cms/asn1_lengths.py``. Work is counted in re-encodings (``_set_contents``
calls), not timed: the same signature must cost the same whatever its lengths.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import ClassVar

import pytest
from asn1crypto import cms, core

from interop.cms.asn1_lengths import indefinite
from interop.cms.parse import ParsedSignedData
from interop.cms.sign import sign_digest
from interop.cms.timestamp import LocalTsa
from interop.cms.verify import verify_parsed
from interop.pki.devpki import DevPki
from interop.verifiers import Verifiers
from tests.helpers import LATER, NOW


class _Octets(core.SetOf):  # type: ignore[misc]
    _child_spec = core.OctetString


class _Wrapped(core.Sequence):  # type: ignore[misc]
    _fields: ClassVar[list[tuple[str, type, dict[str, int]]]] = [
        ("inner", _Octets, {"explicit": 3})
    ]


@pytest.fixture
def re_encodings(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Names of the classes asn1crypto re-encodes from parsed children while the test runs."""
    calls: list[str] = []
    for cls in (core.Sequence, core.SequenceOf, core.SetOf):
        original = cls.__dict__["_set_contents"]

        def counting(self: object, force: bool = False, _original: object = original) -> None:
            calls.append(type(self).__name__)
            _original(self, force)  # type: ignore[operator]

        monkeypatch.setattr(cls, "_set_contents", counting)
    yield calls


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (b"\x30\x80", True),
        (b"\xa0\x80", True),
        (b"\x30\x81\x80", False),  # 128 bytes
        (b"\x30\x82\x01\x80", False),  # 384 bytes
        (b"\x04\x7f", False),
        (b"\xa3\x82\x01\x84\x31\x82\x01\x80", False),  # explicit [3] around a SET of 384
        (b"\xa3\x80\x31\x82\x01\x80", True),  # the explicit tag is the indefinite one
        (b"\x9f\x81\x00\x80", True),  # high tag number (128), indefinite
        (b"\x9f\x81\x00\x81\x80", False),
    ],
)
def test_indefinite_is_read_from_the_length_octets(header: bytes, expected: bool) -> None:
    assert indefinite(header) is expected


def _unsorted_set(length: int) -> bytes:
    """A SET OF two OCTET STRINGs, larger one first (BER order, not DER), ``length`` long."""
    big = b"\x04\x82" + (length - 8).to_bytes(2, "big") + b"\xff" * (length - 8)
    small = b"\x04\x02\x00\x00"
    contents = big + small
    assert len(contents) == length
    return _header(0x31, length) + contents


def _header(tag: int, length: int) -> bytes:
    if length < 0x80:
        return bytes([tag, length])
    size = (length.bit_length() + 7) // 8
    return bytes([tag, 0x80 | size]) + length.to_bytes(size, "big")


@pytest.mark.parametrize("length", [0x17F, 0x180, 0x181, 0x280, 0x380, 0x1080])
def test_a_read_value_dumps_as_it_was_read(length: int, re_encodings: list[str]) -> None:
    der = _unsorted_set(length)
    assert _Octets.load(der).dump() == der  # not re-sorted into DER order
    wrapped = _header(0x30, len(der) + 4) + _header(0xA3, len(der)) + der
    assert _Wrapped.load(wrapped).dump() == wrapped
    assert re_encodings == []


def _token_of(length: int) -> bytes:
    """A stand-in time-stamp token (any ContentInfo) whose encoding is ``length`` bytes long."""
    for size in range(length, 0, -1):
        der: bytes = cms.ContentInfo({"content_type": "data", "content": b"\x00" * size}).dump()
        if len(der) == length:
            return der
    raise AssertionError(length)


def test_signing_work_does_not_depend_on_the_token_length(
    pki: DevPki, re_encodings: list[str]
) -> None:
    signer = pki.providers["hs01"].process
    digest = hashlib.sha256(b"KEP").digest()
    sign_digest(signer, digest, NOW)  # the signer's fixed parts are encoded once, here
    work = {}
    # The [1] unsigned attributes are the token plus 21 bytes: 0x680 long for a 0x66B token.
    for length in range(0x660, 0x680):
        token = _token_of(length)

        def stamp(_signature: bytes, token: bytes = token) -> bytes:
            return token

        re_encodings.clear()
        der = sign_digest(signer, digest, NOW, timestamp=stamp)
        assert token in der
        work[length] = len(re_encodings)
    assert len(set(work.values())) == 1, work


def test_verifying_re_encodes_nothing(
    pki: DevPki, verifiers: Verifiers, re_encodings: list[str]
) -> None:
    tsa = LocalTsa(pki.tsa)
    content = b"Content-Type: text/plain\r\n\r\nKEP\r\n"
    digest = hashlib.sha256(content).digest()
    der = sign_digest(
        pki.providers["hs01"].process,
        digest,
        NOW,
        timestamp=lambda signature: tsa.stamp(signature, NOW),
    )
    re_encodings.clear()
    result = verify_parsed(
        ParsedSignedData.parse(der),
        digest,
        LATER,
        verifiers.process("hs01"),
        expected_names=["hs01.kep.tr"],
        tsa_validator=verifiers.tsa,
    )
    assert result.ok, result.detail
    assert result.timestamp is not None and result.timestamp.ok
    assert re_encodings == []
