"""Signatures and tokens put together from cached DER pieces are the ones asn1crypto builds.

``interop.cms.sign`` keeps each signer's constant parts encoded (``_parts``) and assembles
SignedData with ``interop.cms.der``; ``tests/interop/reference_cms.py`` builds the same
structures from Python values with nothing cached. RSA PKCS #1 v1.5 is deterministic, so with
RSA keys the two must be equal byte for byte; ECDSA output is checked for canonical DER.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from concurrent.futures import ThreadPoolExecutor

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from interop.cms import der, sign
from interop.cms.parse import ParsedSignedData
from interop.cms.sign import sign_digest
from interop.cms.signer_info import check_signer
from interop.cms.timestamp import LocalTsa, token_for_imprint, verify_token
from interop.pki.devpki import DevPki
from interop.pki.signer import Signer
from interop.verifiers import Verifiers
from tests.helpers import LATER, NOW
from tests.interop import reference_cms

DIGEST = hashlib.sha256(b"KEP").digest()


@pytest.mark.parametrize("digest", ["sha256", "sha384", "sha512"])
@pytest.mark.parametrize("stamped", [False, True])
def test_signature_equals_the_one_asn1crypto_builds(
    rsa_pki: DevPki, digest: str, stamped: bool
) -> None:
    signer = rsa_pki.providers["hs01"].process
    content_digest = hashlib.new(digest, b"KEP").digest()
    token = (
        reference_cms.time_stamp_token(rsa_pki.tsa, "sha256", DIGEST, NOW, 5) if stamped else None
    )

    def stamp(_signature: bytes) -> bytes:
        assert token is not None
        return token

    sign._parts.cache_clear()
    # Twice: the first call fills the signer's cache, the second uses it.
    for _ in range(2):
        made = sign_digest(
            signer, content_digest, NOW, digest=digest, timestamp=stamp if stamped else None
        )
        assert made == reference_cms.signed_data(
            signer, content_digest, NOW, digest=digest, token=token
        )


@pytest.mark.parametrize("nonce", [None, 1, 2**64 - 1])
@pytest.mark.parametrize(
    "now",
    [NOW, NOW.replace(microsecond=120_000), NOW.astimezone(dt.timezone(dt.timedelta(hours=3)))],
)
def test_token_equals_the_one_asn1crypto_builds(
    rsa_pki: DevPki, nonce: int | None, now: dt.datetime
) -> None:
    for digest in ("sha256", "sha512"):
        hashed = hashlib.new(digest, b"signature").digest()
        for serial in (1, 127, 128, 2**100):
            made = token_for_imprint(rsa_pki.tsa, digest, hashed, now, serial, nonce=nonce)
            assert made == reference_cms.time_stamp_token(
                rsa_pki.tsa, digest, hashed, now, serial, nonce=nonce
            )


def test_token_under_another_policy(rsa_pki: DevPki) -> None:
    policy = "1.2.3.4.5"
    made = token_for_imprint(rsa_pki.tsa, "sha256", DIGEST, NOW, 9, policy=policy)
    assert made == reference_cms.time_stamp_token(
        rsa_pki.tsa, "sha256", DIGEST, NOW, 9, policy=policy
    )


def _signature_value(made: bytes) -> bytes:
    return ParsedSignedData.parse(made).signature


def test_ecdsa_signatures_and_tokens_equal_the_ones_asn1crypto_builds(pki: DevPki) -> None:
    signer = pki.providers["hs01"].process
    tsa = LocalTsa(pki.tsa)
    token = tsa.stamp_imprint("sha256", DIGEST, NOW, nonce=77)
    made = sign_digest(signer, DIGEST, NOW, timestamp=lambda _signature: token)
    assert made == reference_cms.signed_data(
        signer, DIGEST, NOW, token=token, signature=_signature_value(made)
    )
    made = token_for_imprint(pki.tsa, "sha256", DIGEST, NOW, 12345, nonce=77)
    assert made == reference_cms.time_stamp_token(
        pki.tsa, "sha256", DIGEST, NOW, 12345, nonce=77, signature=_signature_value(made)
    )


def test_set_of_is_sorted_as_der_asks() -> None:
    assert (
        der.set_of(b"\x04\x02\x00\x01", b"\x04\x01\x00") == b"\x31\x07\x04\x01\x00\x04\x02\x00\x01"
    )
    assert der.tagged(1, b"\x05\x00") == b"\xa1\x02\x05\x00"
    assert der.sequence() == b"\x30\x00"


def _signer_certificate(der_bytes: bytes) -> bytes:
    parsed = ParsedSignedData.parse(der_bytes)
    check = check_signer(parsed, DIGEST)
    assert check.intact and check.signer is not None, check.detail
    return check.signer.public_bytes(Encoding.DER)


def test_two_signers_do_not_share_cached_parts(pki: DevPki) -> None:
    one, two = pki.providers["hs01"].process, pki.providers["hs02"].process
    sign._parts.cache_clear()
    for signer in (one, two, one, two):
        made = sign_digest(signer, DIGEST, NOW)
        assert _signer_certificate(made) == signer.certificate.public_bytes(Encoding.DER)
        carried = ParsedSignedData.parse(made).certificates
        assert set(carried) == set(signer.certificates)
    assert sign._parts.cache_info().currsize == 2
    first, second = sign._parts(one.certificates), sign._parts(two.certificates)
    assert first.sid != second.sid
    assert first.signing_certificate_v2 != second.signing_certificate_v2
    assert first.certificates != second.certificates


def test_the_tsa_and_a_signer_do_not_share_cached_parts(pki: DevPki, verifiers: Verifiers) -> None:
    signer = pki.providers["hs01"].process
    tsa = LocalTsa(pki.tsa)
    made = sign_digest(signer, DIGEST, NOW, timestamp=lambda s: tsa.stamp(s, NOW))
    assert _signer_certificate(made) == signer.certificate.public_bytes(Encoding.DER)
    check = check_signer(ParsedSignedData.parse(made), DIGEST)
    (token,) = check.timestamp_tokens
    assert verifiers.tsa is not None
    result = verify_token(token, check.signature, LATER, verifiers.tsa)
    assert result.ok, result.detail
    assert result.certificates[0] == pki.tsa.certificate


def test_signing_from_several_threads_at_once(pki: DevPki) -> None:
    """The caches fill while other threads sign; every signature names its own signer."""
    signers = [pki.providers[p].process for p in ("hs01", "hs02", "hs03")] + [pki.tsa]
    sign._parts.cache_clear()

    def one(i: int) -> tuple[Signer, bytes]:
        signer = signers[i % len(signers)]
        return signer, sign_digest(signer, DIGEST, NOW)

    with ThreadPoolExecutor(max_workers=8) as pool:
        done = list(pool.map(one, range(200)))
    for signer, made in done:
        assert _signer_certificate(made) == signer.certificate.public_bytes(Encoding.DER)
