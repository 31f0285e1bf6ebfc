from __future__ import annotations

import datetime as dt
import hashlib
import io

import pytest
from asn1crypto import cms, core, tsp
from cryptography.hazmat.primitives.serialization import Encoding

from interop.cms.hashing import hash_ranges, hash_stream
from interop.cms.parse import ParsedSignedData
from interop.cms.sign import sign_digest
from interop.cms.signer_info import check_signer
from interop.cms.timestamp import DEV_TSA_POLICY, LocalTsa, token_carrying, verify_token
from interop.cms.verify import SignatureResult, verify_parsed
from interop.errors import CmsFormatError
from interop.pathval import UNREADABLE_NAME, subject_text
from interop.pki.devpki import DevPki, generate
from interop.pki.signer import Signer
from interop.reasons import Reason
from interop.verifiers import Verifiers
from tests.helpers import LATER, NOW
from tests.interop.malformed import break_signer_issuer, changed

CONTENT = b"Content-Type: text/plain\r\n\r\nKEP\r\n"


def _verify(
    verifiers: Verifiers,
    der: bytes,
    content: bytes = CONTENT,
    provider: str = "hs01",
    **kwargs: object,
) -> SignatureResult:
    parsed = ParsedSignedData.parse(der)
    digest = hashlib.new(parsed.digest_algorithm, content).digest()
    return verify_parsed(
        parsed,
        digest,
        LATER,
        verifiers.process(provider),
        expected_names=[f"{provider}.kep.tr"],
        tsa_validator=verifiers.tsa,
        **kwargs,  # type: ignore[arg-type]
    )


def _sign(signer: Signer, content: bytes = CONTENT, **kwargs: object) -> bytes:
    return sign_digest(signer, hashlib.sha256(content).digest(), NOW, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("algorithm", ["ec", "rsa"])
def test_sign_and_verify(
    algorithm: str, pki: DevPki, rsa_pki: DevPki, verifiers: Verifiers, rsa_verifiers: Verifiers
) -> None:
    chosen, chosen_verifiers = (pki, verifiers) if algorithm == "ec" else (rsa_pki, rsa_verifiers)
    der = _sign(chosen.providers["hs01"].process)
    result = _verify(chosen_verifiers, der, require_cades=True)
    assert result.ok, result.detail
    assert result.cades and result.intact
    assert result.signing_time == NOW
    assert result.signer == chosen.providers["hs01"].process.certificate


def test_changed_content_is_caught(pki: DevPki, verifiers: Verifiers) -> None:
    result = _verify(
        verifiers, _sign(pki.providers["hs01"].process), CONTENT.replace(b"KEP", b"KEQ")
    )
    assert not result.intact
    assert result.reason is Reason.InvalidMessageFormat
    assert "changed after signing" in result.detail


def test_changed_signature_value_is_caught(pki: DevPki, verifiers: Verifiers) -> None:
    info = cms.ContentInfo.load(_sign(pki.providers["hs01"].process))
    signer_info = info["content"]["signer_infos"][0]
    value = bytearray(signer_info["signature"].native)
    value[-5] ^= 0x01
    signer_info["signature"] = bytes(value)
    result = _verify(verifiers, info.dump(force=True))
    assert not result.intact
    assert "does not verify" in result.detail


def test_another_provider_cannot_sign_as_hs01(pki: DevPki, verifiers: Verifiers) -> None:
    result = _verify(verifiers, _sign(pki.providers["hs02"].process), provider="hs01")
    assert result.intact and not result.ok
    assert result.reason is Reason.PolicyViolation
    assert "hs02.kep.tr" in result.detail


def test_untrusted_signer(pki: DevPki, verifiers: Verifiers) -> None:
    stranger = generate(NOW, ["hs01"])
    result = _verify(verifiers, _sign(stranger.providers["hs01"].process))
    assert result.reason is Reason.PolicyViolation
    assert "trusted CA" in result.detail


def test_user_signature_reasons(pki: DevPki, verifiers: Verifiers) -> None:
    for local, reason in (
        ("ali.yilmaz", None),
        ("suresi.dolmus", Reason.UserCertExpiredOrRevoked),
        ("iptal.edilmis", Reason.UserCertExpiredOrRevoked),
    ):
        der = _sign(pki.user(f"{local}@hs01.kep.tr").signer)
        parsed = ParsedSignedData.parse(der)
        result = verify_parsed(parsed, hashlib.sha256(CONTENT).digest(), LATER, verifiers.user)
        assert result.reason is reason, result.detail
    tampered = verify_parsed(
        ParsedSignedData.parse(_sign(pki.user("ali.yilmaz@hs01.kep.tr").signer)),
        hashlib.sha256(b"other").digest(),
        LATER,
        verifiers.user,
    )
    assert tampered.reason is Reason.InvalidUserSignature


def test_sha1_refused_for_new_signatures_and_allowed_for_legacy(
    pki: DevPki, verifiers: Verifiers
) -> None:
    signer = pki.user("ali.yilmaz@hs01.kep.tr").signer
    der = sign_digest(signer, hashlib.sha1(CONTENT).digest(), NOW, digest="sha1")  # noqa: S324
    parsed = ParsedSignedData.parse(der)
    digest = hashlib.sha1(CONTENT).digest()  # noqa: S324
    refused = verify_parsed(parsed, digest, LATER, verifiers.user)
    assert refused.reason is Reason.InvalidUserSignature
    assert "SHA1 signatures are refused" in refused.detail
    assert verify_parsed(parsed, digest, LATER, verifiers.user, allow_sha1=True).ok


def test_time_stamp_token(pki: DevPki, verifiers: Verifiers) -> None:
    tsa = LocalTsa(pki.tsa)
    der = _sign(pki.providers["hs01"].process, timestamp=lambda s: tsa.stamp(s, NOW))
    result = _verify(verifiers, der)
    assert result.ok, result.detail
    assert result.timestamp is not None and result.timestamp.ok
    assert result.timestamp.time == NOW
    token = tsa.stamp(b"some signature", NOW)
    tsa_validator = verifiers.tsa
    assert tsa_validator is not None
    assert verify_token(token, b"some signature", LATER, tsa_validator).ok
    other = verify_token(token, b"another signature", LATER, tsa_validator)
    assert not other.ok and "other data" in other.detail
    stranger = LocalTsa(generate(NOW, ["hs01"]).tsa)
    foreign = verify_token(stranger.stamp(b"x", NOW), b"x", LATER, tsa_validator)
    assert not foreign.ok and "trusted CA" in foreign.detail


def test_time_stamp_serials_differ_between_instances_of_one_tsa(pki: DevPki) -> None:
    """Processes stamping with the same key at the same microsecond still differ (RFC 3161)."""
    serials = set()
    for instance in (1, 2):
        tsa = LocalTsa(pki.tsa, instance)
        for _ in range(3):
            token = cms.ContentInfo.load(tsa.stamp(b"signature", NOW))
            tst_info = tsp.TSTInfo.load(token["content"]["encap_content_info"]["content"].contents)
            serials.add(tst_info["serial_number"].native)
    assert len(serials) == 6


def test_time_stamp_over_another_signature_fails_the_signature(
    pki: DevPki, verifiers: Verifiers
) -> None:
    tsa = LocalTsa(pki.tsa)
    der = _sign(pki.providers["hs01"].process, timestamp=lambda s: tsa.stamp(b"not this", NOW))
    result = _verify(verifiers, der)
    assert not result.ok and "other data" in result.detail


@pytest.mark.parametrize(
    ("der", "fragment"),
    [
        (b"", "not readable"),
        (b"\x30\x03\x02\x01", "not readable"),
        (b"\x30\x80" + b"\x00" * 10, "not readable"),
        (
            cms.ContentInfo({"content_type": "data", "content": b"x"}).dump(),
            "expected CMS SignedData",
        ),
        (b"\x30" * 2_000_000, "larger than"),
    ],
)
def test_malformed_cms_is_refused(der: bytes, fragment: str) -> None:
    with pytest.raises(CmsFormatError, match=fragment):
        ParsedSignedData.parse(der)


def test_truncated_signature_is_refused(pki: DevPki) -> None:
    der = _sign(pki.providers["hs01"].process)
    for cut in (1, 10, len(der) // 2, len(der) - 1):
        with pytest.raises(CmsFormatError):
            ParsedSignedData.parse(der[:cut])


def test_signature_without_certificates_is_refused(pki: DevPki) -> None:
    info = cms.ContentInfo.load(_sign(pki.providers["hs01"].process))
    del info["content"]["certificates"]
    with pytest.raises(CmsFormatError, match="no certificates"):
        ParsedSignedData.parse(info.dump(force=True))


def test_hash_ranges_reads_once_and_matches_slices() -> None:
    data = bytes(range(256)) * 5000
    ranges = {
        "a": ((10, 1_000_000), ("sha256",)),
        "b": ((500, 600), ("sha256", "sha512")),
        "c": ((0, len(data)), ("sha384",)),
    }
    digests = hash_ranges(io.BytesIO(data), ranges, chunk=4096)
    assert digests["a", "sha256"] == hashlib.sha256(data[10:1_000_000]).digest()
    assert digests["b", "sha512"] == hashlib.sha512(data[500:600]).digest()
    assert digests["c", "sha384"] == hashlib.sha384(data).digest()
    assert hash_stream(io.BytesIO(data), "sha256") == hashlib.sha256(data).digest()
    with pytest.raises(CmsFormatError, match="ended before"):
        hash_ranges(io.BytesIO(data[:100]), {"x": ((0, 200), ("sha256",))})


def test_a_small_message_is_hashed_without_asking_for_the_cores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """os.cpu_count() reads a /sys file each time: a 4 KiB Dispatch, hashed serially, does
    not ask; a large span, hashed on several cores, does."""
    asked: list[int] = []

    def cpu_count() -> int:
        asked.append(1)
        return 2

    monkeypatch.setattr("interop.cms.hashing.os.cpu_count", cpu_count)
    data = bytes(range(256)) * 64
    ranges = {"a": ((0, len(data)), ("sha256",)), "b": ((5, 900), ("sha256",))}
    assert hash_ranges(io.BytesIO(data), ranges)["a", "sha256"] == hashlib.sha256(data).digest()
    assert asked == []
    large = bytes(8 * 1024 * 1024)
    hash_ranges(io.BytesIO(large), {"a": ((0, len(large)), ("sha256", "sha512"))})
    assert asked == [1]


# Found by fuzzing (fuzz/targets.py cms): 81 stack signatures of ValueError, KeyError, TypeError
# and UnicodeDecodeError from asn1crypto and cryptography, all after ``parse`` had succeeded.
@pytest.mark.parametrize("how", ["length", "utf8"])
def test_unreadable_signer_identifier_is_a_malformed_signature(
    how: str, pki: DevPki, verifiers: Verifiers
) -> None:
    der = break_signer_issuer(_sign(pki.providers["hs01"].process), how)
    parsed = ParsedSignedData.parse(der)  # lazily parsed: the sid is not read yet
    with pytest.raises(CmsFormatError, match="cannot be read") as caught:
        check_signer(parsed, hashlib.sha256(CONTENT).digest())
    assert caught.value.__cause__ is not None
    result = _verify(verifiers, der)
    assert not result.ok and not result.intact
    assert result.reason is Reason.InvalidMessageFormat
    assert result.detail.startswith("the signature is malformed")
    user_der = break_signer_issuer(_sign(pki.user("ali.yilmaz@hs01.kep.tr").signer), how)
    user = verify_parsed(
        ParsedSignedData.parse(user_der), hashlib.sha256(CONTENT).digest(), LATER, verifiers.user
    )
    assert user.reason is Reason.InvalidUserSignature
    assert user.detail.startswith("the signature is malformed")


def test_certificate_with_an_unknown_version_is_a_cms_format_error(pki: DevPki) -> None:
    """Fuzzing: cryptography's InvalidVersion escaped ``ParsedSignedData.parse``."""
    signer = pki.providers["hs01"].process
    der = _sign(signer)
    cert_at = der.index(signer.certificate.public_bytes(Encoding.DER))
    version_at = der.index(b"\xa0\x03\x02\x01\x02", cert_at) + 4  # [0] INTEGER v3 (2)
    with pytest.raises(CmsFormatError, match="not readable DER CMS") as caught:
        ParsedSignedData.parse(changed(der, version_at, 0x07))
    assert type(caught.value.__cause__).__name__ == "InvalidVersion"


def test_unreadable_signer_name_never_raises(pki: DevPki, verifiers: Verifiers) -> None:
    """Fuzzing: a wrong string tag in the signer's subject made ``signer_name`` raise KeyError."""
    signer = pki.providers["hs01"].process
    der = _sign(signer)
    subject = signer.certificate.subject.public_bytes()
    tag_at = der.index(subject) + subject.rindex(b"\x06\x03\x55\x04\x03") + 5
    result = _verify(verifiers, changed(der, tag_at, 0x0D))  # UTF8String → RELATIVE-OID
    assert not result.ok and result.signer is not None
    assert result.signer_name == UNREADABLE_NAME == subject_text(result.signer)


def test_unreadable_time_stamp_token_is_a_failed_stamp(pki: DevPki, verifiers: Verifiers) -> None:
    tsa_validator = verifiers.tsa
    assert tsa_validator is not None
    token = break_signer_issuer(LocalTsa(pki.tsa).stamp(b"signature", NOW), "utf8")
    result = verify_token(token, b"signature", LATER, tsa_validator)
    assert not result.ok and "cannot be read" in result.detail


def test_time_stamp_without_a_time_zone_is_a_failed_stamp(
    pki: DevPki, verifiers: Verifiers
) -> None:
    """A GeneralizedTime without Z read back naive: comparing it with ``now`` raised TypeError."""
    tst_info = tsp.TSTInfo(
        {
            "version": "v1",
            "policy": DEV_TSA_POLICY,
            "message_imprint": {
                "hash_algorithm": {"algorithm": "sha256"},
                "hashed_message": hashlib.sha256(b"signature").digest(),
            },
            "serial_number": 1,
            "gen_time": core.GeneralizedTime.load(b"\x18\x0e20261124120000"),
        }
    ).dump()
    token = token_carrying(pki.tsa, tst_info, NOW)
    tsa_validator = verifiers.tsa
    assert tsa_validator is not None
    result = verify_token(token, b"signature", LATER, tsa_validator)
    assert not result.ok and "not a UTC time" in result.detail


def _after_expiry(pki: DevPki) -> dt.datetime:
    return pki.providers["hs01"].process.certificate.not_valid_after_utc + dt.timedelta(days=1)


def test_cades_t_is_valid_after_the_signer_expires(pki: DevPki, verifiers: Verifiers) -> None:
    """Profile 1.1 §1 "Signing time": the chain is judged at the time-stamp's genTime."""
    tsa = LocalTsa(pki.tsa)
    signer = pki.providers["hs01"].process
    stamped = _sign(signer, timestamp=lambda s: tsa.stamp(s, NOW))
    parsed = ParsedSignedData.parse(stamped)
    digest = hashlib.sha256(CONTENT).digest()
    after = _after_expiry(pki)
    result = verify_parsed(
        parsed,
        digest,
        after,
        verifiers.process("hs01"),
        expected_names=["hs01.kep.tr"],
        tsa_validator=verifiers.tsa,
        tsa_valid_at=LATER,
        require_cades=True,
    )
    assert result.ok, result.detail
    assert result.proven_time == NOW and result.timestamp is not None
    assert result.timestamp.crls == (pki.process_ca.crl,)
    assert result.chain is not None and result.chain.crls == (pki.process_ca.crl,)
    # The same signature without its time-stamp is judged now: expired.
    bare = verify_parsed(
        ParsedSignedData.parse(_sign(signer)),
        digest,
        after,
        verifiers.process("hs01"),
        expected_names=["hs01.kep.tr"],
        tsa_validator=verifiers.tsa,
        tsa_valid_at=LATER,
    )
    assert bare.intact and bare.reason is Reason.PolicyViolation
    assert "expired on" in bare.detail and bare.proven_time is None
    # Without tsa_valid_at the TSA (expired too) is judged now, and proves nothing.
    judged_now = verify_parsed(
        parsed, digest, after, verifiers.process("hs01"), tsa_validator=verifiers.tsa
    )
    assert not judged_now.ok and judged_now.proven_time is None


def test_user_e_imza_with_a_time_stamp_is_checked_at_its_time(
    pki: DevPki, verifiers: Verifiers
) -> None:
    tsa = LocalTsa(pki.tsa)
    user = pki.user("ali.yilmaz@hs01.kep.tr").signer
    parsed = ParsedSignedData.parse(_sign(user, timestamp=lambda s: tsa.stamp(s, NOW)))
    digest = hashlib.sha256(CONTENT).digest()
    after = user.certificate.not_valid_after_utc + dt.timedelta(days=1)
    result = verify_parsed(
        parsed, digest, after, verifiers.user, tsa_validator=verifiers.tsa, tsa_valid_at=LATER
    )
    assert result.ok and result.proven_time == NOW
    bare = verify_parsed(ParsedSignedData.parse(_sign(user)), digest, after, verifiers.user)
    assert bare.reason is Reason.UserCertExpiredOrRevoked
    # A time-stamp over something else is a broken e-imza.
    other = ParsedSignedData.parse(_sign(user, timestamp=lambda s: tsa.stamp(b"x", NOW)))
    broken = verify_parsed(other, digest, LATER, verifiers.user, tsa_validator=verifiers.tsa)
    assert broken.reason is Reason.InvalidUserSignature and "other data" in broken.detail


def test_signer_revoked_after_the_time_stamp_stays_valid(pki: DevPki) -> None:
    from interop.pathval import CertificateValidator, Role
    from interop.revocation import RevocationData
    from tests.interop.crls import make_crl

    day = dt.timedelta(days=1)
    signer = pki.providers["hs01"].process
    tsa = LocalTsa(pki.tsa)
    parsed = ParsedSignedData.parse(_sign(signer, timestamp=lambda s: tsa.stamp(s, NOW)))
    digest = hashlib.sha256(CONTENT).digest()
    for revoked_at, ok in ((NOW + day / 2, True), (NOW - day / 48, False)):
        crl = make_crl(pki.process_ca, NOW + day, NOW + 8 * day, [(signer.certificate, revoked_at)])
        revocation = RevocationData.of([crl])
        anchors = [pki.process_ca.certificate]
        result = verify_parsed(
            parsed,
            digest,
            NOW + 2 * day,
            CertificateValidator(anchors, revocation, Role.PROCESS),
            tsa_validator=CertificateValidator(anchors, revocation, Role.TSA),
        )
        assert result.ok is ok, result.detail
        assert result.proven_time == NOW


def test_too_many_time_stamps_fail(pki: DevPki, verifiers: Verifiers) -> None:
    from interop.limits import Limits

    tsa = LocalTsa(pki.tsa)
    der = _sign(pki.providers["hs01"].process, timestamp=lambda s: tsa.stamp(s, NOW))
    result = _verify(verifiers, der, limits=Limits(timestamps_per_signature=0))
    assert not result.ok and "more than 0 time-stamps" in result.detail
