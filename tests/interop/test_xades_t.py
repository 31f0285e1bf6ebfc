"""XAdES-T evidence, and its signer judged at the time-stamp's time (profile 1.1 §1, §5)."""

from __future__ import annotations

import base64
import copy
import datetime as dt
from collections.abc import Callable

import pytest
from asn1crypto import cms
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from interop.cms.timestamp import LocalTsa
from interop.evidence.codes import DS_NS
from interop.evidence.xades import EvidenceResult, sign_evidence, verify_evidence
from interop.evidence.xades_t import C14N_10, XADES_NS, add_signature_timestamp, canonical
from interop.limits import Limits
from interop.pathval import CertificateValidator, Role
from interop.pki.devpki import DevPki, generate
from interop.reasons import Reason
from interop.revocation import RevocationData
from interop.verifiers import Verifiers
from tests.helpers import LATER, NOW
from tests.interop.crls import make_crl
from tests.interop.malformed import changed
from tests.interop.test_evidence import evidence

DAY = dt.timedelta(days=1)
_X = f"{{{XADES_NS}}}"
_D = f"{{{DS_NS}}}"


def _stamper(pki: DevPki, at: dt.datetime = NOW) -> Callable[[bytes], bytes]:
    tsa = LocalTsa(pki.tsa)
    return lambda data: tsa.stamp(data, at)


def _signed(pki: DevPki, **kwargs: object) -> bytes:
    return sign_evidence(
        evidence(),
        pki.providers["hs02"].process,
        NOW,
        timestamp=kwargs.pop("timestamp", _stamper(pki)),  # type: ignore[arg-type]
    )


def _verify(
    verifiers: Verifiers,
    data: bytes,
    now: dt.datetime = LATER,
    validator: CertificateValidator | None = None,
    **kwargs: object,
) -> EvidenceResult:
    kwargs.setdefault("tsa_validator", verifiers.tsa)
    return verify_evidence(
        data,
        now,
        validator or verifiers.process("hs02"),
        expected_issuer_domain="hs02.kep.tr",
        **kwargs,  # type: ignore[arg-type]
    )


def _without_timestamps(data: bytes) -> bytes:
    root = etree.fromstring(data)
    for unsigned in root.iter(_X + "UnsignedProperties"):
        unsigned.getparent().remove(unsigned)  # type: ignore[union-attr]
    return bytes(etree.tostring(root))


def _after_expiry(pki: DevPki) -> dt.datetime:
    return pki.providers["hs02"].process.certificate.not_valid_after_utc + DAY


def test_xades_t_is_stamped_over_the_canonical_signature_value(
    pki: DevPki, verifiers: Verifiers
) -> None:
    stamped: list[bytes] = []
    tsa = _stamper(pki)

    def timestamp(data: bytes) -> bytes:
        stamped.append(data)
        return tsa(data)

    data = _signed(pki, timestamp=timestamp)
    root = etree.fromstring(data)
    value = root.find(f"{_D}Signature/{_D}SignatureValue")
    assert value is not None
    # Exclusive canonicalization, written out by hand: only the namespace it uses, and the
    # text as it is (line breaks of the base64 included: they are character data).
    text = value.text or ""
    assert stamped == [f'<ds:SignatureValue xmlns:ds="{DS_NS}">{text}</ds:SignatureValue>'.encode()]
    stamp = root.find(
        f"{_D}Signature/{_D}Object/{_X}QualifyingProperties/{_X}UnsignedProperties/"
        f"{_X}UnsignedSignatureProperties/{_X}SignatureTimeStamp"
    )
    assert stamp is not None and stamp.get("Id")
    assert [etree.QName(c).localname for c in stamp] == [
        "CanonicalizationMethod",
        "EncapsulatedTimeStamp",
    ]
    result = _verify(verifiers, data)
    assert result.ok, result.detail
    assert result.proven_time == NOW
    assert result.timestamp is not None and result.timestamp.ok and result.timestamp.time == NOW
    # What a gateway keeps for verifying later (§7): both chains and their CRLs.
    assert result.timestamp.certificates == (pki.tsa.certificate, pki.process_ca.certificate)
    assert result.timestamp.crls == (pki.process_ca.crl,)
    assert result.chain is not None and result.chain.crls == (pki.process_ca.crl,)


def test_without_a_timestamp_function_the_evidence_is_xades_bes(pki: DevPki) -> None:
    data = sign_evidence(evidence(), pki.providers["hs02"].process, NOW)
    assert b"UnsignedProperties" not in data


def test_xades_t_is_valid_after_the_signer_expires(pki: DevPki, verifiers: Verifiers) -> None:
    data = _signed(pki)
    after = _after_expiry(pki)
    result = _verify(verifiers, data, after, tsa_valid_at=LATER)
    assert result.ok, result.detail
    assert result.proven_time == NOW
    # The same evidence without its time-stamp is judged now: expired.
    bare = _verify(verifiers, _without_timestamps(data), after, tsa_valid_at=LATER)
    assert bare.intact and bare.reason is Reason.PolicyViolation
    assert "expired on" in bare.detail and bare.proven_time is None


def test_the_tsa_is_judged_at_tsa_valid_at(pki: DevPki, verifiers: Verifiers) -> None:
    data = _signed(pki)
    after = pki.tsa.certificate.not_valid_after_utc + DAY
    assert _verify(verifiers, data, after, tsa_valid_at=LATER).ok
    judged_now = _verify(verifiers, data, after)
    assert not judged_now.ok and judged_now.proven_time is None
    assert judged_now.timestamp is not None and not judged_now.timestamp.ok
    assert "expired" in judged_now.timestamp.detail
    too_early = _verify(verifiers, data, after, tsa_valid_at=NOW - DAY)
    assert not too_early.ok and too_early.timestamp is not None
    assert "before the time-stamp's genTime" in too_early.timestamp.detail
    too_late = _verify(verifiers, data, LATER, tsa_valid_at=LATER + DAY)
    assert not too_late.ok and "after the verification time" in too_late.detail


def test_changed_evidence_fails(pki: DevPki, verifiers: Verifiers) -> None:
    data = _signed(pki).replace(b"rem-1@", b"rem-2@")
    result = _verify(verifiers, data)
    assert not result.intact and result.reason is Reason.InvalidMessageFormat
    assert "does not verify" in result.detail


def _change_token(data: bytes, change: Callable[[bytes], bytes]) -> bytes:
    root = etree.fromstring(data)
    node = root.find(f".//{_X}EncapsulatedTimeStamp")
    assert node is not None
    node.text = base64.b64encode(change(base64.b64decode(node.text or ""))).decode()
    return bytes(etree.tostring(root))


def _imprint_at(token: bytes) -> int:
    content = cms.ContentInfo.load(token)["content"]["encap_content_info"]["content"].parsed
    return token.index(bytes(content["message_imprint"]["hashed_message"].native))


@pytest.mark.parametrize(
    ("where", "fragment"),
    [
        (lambda token: len(token) - 3, "does not verify"),  # in the TSA's signature value
        (_imprint_at, "other data"),  # in the imprint it stamped
    ],
)
def test_a_changed_token_fails(
    pki: DevPki, verifiers: Verifiers, where: Callable[[bytes], int], fragment: str
) -> None:
    data = _change_token(
        _signed(pki), lambda token: changed(token, where(token), token[where(token)] ^ 1)
    )
    result = _verify(verifiers, data)
    assert result.intact and result.reason is Reason.InvalidMessageFormat
    assert fragment in result.detail and result.proven_time is None


def test_a_token_over_other_data_fails(pki: DevPki, verifiers: Verifiers) -> None:
    tsa = LocalTsa(pki.tsa)
    data = _signed(pki, timestamp=lambda _data: tsa.stamp(b"another signature", NOW))
    result = _verify(verifiers, data)
    assert result.reason is Reason.InvalidMessageFormat and "other data" in result.detail


def test_a_token_of_an_untrusted_tsa_fails(pki: DevPki, verifiers: Verifiers) -> None:
    data = _signed(pki, timestamp=_stamper(generate(NOW, ["hs01"])))
    result = _verify(verifiers, data)
    assert result.reason is Reason.InvalidMessageFormat and "trusted CA" in result.detail


def test_a_token_with_no_tsa_trusted_fails(pki: DevPki, verifiers: Verifiers) -> None:
    result = _verify(verifiers, _signed(pki), tsa_validator=None)
    assert result.reason is Reason.InvalidMessageFormat
    assert "no TSA is trusted" in result.detail


def test_an_unreadable_token_fails(pki: DevPki, verifiers: Verifiers) -> None:
    result = _verify(verifiers, _change_token(_signed(pki), lambda _token: b"\x30\x03\x02\x01"))
    assert result.reason is Reason.InvalidMessageFormat
    assert "time-stamp cannot be read" in result.detail


def test_a_misplaced_or_unknown_time_stamp_fails(pki: DevPki, verifiers: Verifiers) -> None:
    root = etree.fromstring(_signed(pki))
    stamp = root.find(f".//{_X}SignatureTimeStamp")
    assert stamp is not None
    signature = root[-1]
    signature.append(etree.Element(_D + "Object"))
    # A copy outside UnsignedSignatureProperties (where the XSD lets it be): not what §5.3 says.
    misplaced = copy.deepcopy(stamp)
    del misplaced.attrib["Id"]
    signature[-1].append(misplaced)
    result = _verify(verifiers, etree.tostring(root))
    assert result.reason is Reason.InvalidMessageFormat and "not in the signature's" in (
        result.detail
    )
    root = etree.fromstring(_signed(pki))
    stamp = root.find(f".//{_X}SignatureTimeStamp")
    assert stamp is not None
    etree.SubElement(stamp, _X + "XMLTimeStamp")
    unknown = _verify(verifiers, etree.tostring(root))
    assert unknown.reason is Reason.InvalidMessageFormat and "XMLTimeStamp" in unknown.detail


def test_the_default_canonicalization_is_inclusive(pki: DevPki, verifiers: Verifiers) -> None:
    """A peer may leave ds:CanonicalizationMethod out: Canonical XML 1.0 (XAdES §7.1.4.3)."""
    root = etree.fromstring(sign_evidence(evidence(), pki.providers["hs02"].process, NOW))
    signature = root[-1]
    value = signature.find(_D + "SignatureValue")
    assert value is not None
    inclusive = canonical(value, C14N_10)
    assert b"xmlns:rem=" in inclusive  # the namespaces in scope, unlike exclusive
    stamp = add_signature_timestamp(signature, _stamper(pki))
    method = stamp.find(_D + "CanonicalizationMethod")
    assert method is not None
    stamp.remove(method)
    token = stamp.find(_X + "EncapsulatedTimeStamp")
    assert token is not None
    assert not _verify(verifiers, etree.tostring(root)).ok  # stamped exclusive, read inclusive
    token.text = base64.b64encode(LocalTsa(pki.tsa).stamp(inclusive, NOW)).decode()
    result = _verify(verifiers, etree.tostring(root))
    assert result.ok, result.detail


def test_the_earliest_of_several_time_stamps_is_the_proven_time(
    pki: DevPki, verifiers: Verifiers
) -> None:
    root = etree.fromstring(_signed(pki, timestamp=_stamper(pki, NOW + dt.timedelta(minutes=2))))
    add_signature_timestamp(root[-1], _stamper(pki, NOW))
    data = bytes(etree.tostring(root))
    assert len(root.findall(f".//{_X}SignatureTimeStamp")) == 2
    result = _verify(verifiers, data)
    assert result.ok and result.proven_time == NOW
    assert result.timestamp is not None and result.timestamp.time == NOW
    too_many = _verify(verifiers, data, limits=Limits(timestamps_per_signature=1))
    assert too_many.reason is Reason.InvalidMessageFormat and "more than 1" in too_many.detail


def test_one_bad_time_stamp_of_several_fails(pki: DevPki, verifiers: Verifiers) -> None:
    root = etree.fromstring(_signed(pki))
    tsa = LocalTsa(pki.tsa)
    add_signature_timestamp(root[-1], lambda _data: tsa.stamp(b"something else", NOW))
    result = _verify(verifiers, etree.tostring(root))
    assert result.reason is Reason.InvalidMessageFormat and "other data" in result.detail


def _validator(pki: DevPki, *crls: object) -> CertificateValidator:
    return CertificateValidator(
        [pki.process_ca.certificate],
        RevocationData.of(crls),  # type: ignore[arg-type]
        Role.PROCESS,
    )


def test_revoked_after_the_signing_time_is_valid_at_it(pki: DevPki, verifiers: Verifiers) -> None:
    process = pki.providers["hs02"].process.certificate
    crl = make_crl(pki.process_ca, NOW + DAY, NOW + 8 * DAY, [(process, NOW + DAY / 2)])
    validator = _validator(pki, crl)
    tsa = CertificateValidator([pki.process_ca.certificate], RevocationData.of([crl]), Role.TSA)
    data = _signed(pki)
    later = NOW + 10 * DAY  # the CRL has expired too: the time-stamp and the CRL kept suffice
    result = _verify(verifiers, data, later, validator, tsa_validator=tsa, tsa_valid_at=NOW + DAY)
    assert result.ok, result.detail
    assert result.proven_time == NOW and result.chain is not None
    assert result.chain.crls == (crl,)
    # Without its time-stamp it is judged now, after the revocation.
    bare = _verify(verifiers, _without_timestamps(data), NOW + 2 * DAY, validator)
    assert bare.reason is Reason.PolicyViolation and "revoked on" in bare.detail


def test_revoked_before_the_signing_time_is_invalid(pki: DevPki, verifiers: Verifiers) -> None:
    process = pki.providers["hs02"].process.certificate
    crl = make_crl(pki.process_ca, NOW + DAY, NOW + 8 * DAY, [(process, NOW - DAY / 48)])
    validator = _validator(pki, crl)
    tsa = CertificateValidator([pki.process_ca.certificate], RevocationData.of([crl]), Role.TSA)
    result = _verify(
        verifiers, _signed(pki), NOW + 2 * DAY, validator, tsa_validator=tsa, tsa_valid_at=NOW + DAY
    )
    assert result.intact and result.reason is Reason.PolicyViolation
    assert "revoked on" in result.detail and "the time-stamp's time" in result.detail
    assert result.proven_time == NOW


def test_only_an_expired_crl_from_before_the_signing_time_fails_closed(
    pki: DevPki, verifiers: Verifiers
) -> None:
    signed_at = NOW + 30 * DAY
    data = sign_evidence(
        evidence(), pki.providers["hs02"].process, signed_at, timestamp=_stamper(pki, signed_at)
    )
    old = make_crl(pki.process_ca, NOW, NOW + 7 * DAY)
    validator = _validator(pki, old)
    result = _verify(
        verifiers,
        data,
        signed_at + DAY,
        validator,
        tsa_validator=verifiers.tsa,
        tsa_valid_at=signed_at + DAY,
    )
    assert result.intact and result.reason is Reason.PolicyViolation
    assert "revocation status at" in result.detail and "unknown" in result.detail
    assert result.proven_time == signed_at


def test_the_evidence_signature_still_binds_the_token(pki: DevPki, verifiers: Verifiers) -> None:
    """A token from one evidence moved onto another does not stamp its signature."""
    first = etree.fromstring(_signed(pki))
    other = etree.fromstring(
        sign_evidence(
            evidence(identifier="7d8e2c1a-1111-4c3e-9d6f-000000000002"),
            pki.providers["hs02"].process,
            NOW,
        )
    )
    stolen = first.find(f".//{_X}UnsignedProperties")
    qualifying = other.find(f".//{_X}QualifyingProperties")
    assert stolen is not None and qualifying is not None
    qualifying.append(stolen)
    result = _verify(verifiers, etree.tostring(other))
    assert result.reason is Reason.InvalidMessageFormat and "other data" in result.detail


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    token=st.binary(max_size=300)
    | st.sampled_from([b"\x30\x80\x00\x00", b"\x30\x03\x06\x01\x00", b"\x30\x00"])
)
def test_any_token_bytes_are_a_result_never_an_exception(
    pki: DevPki, verifiers: Verifiers, token: bytes
) -> None:
    """Whatever a peer puts in EncapsulatedTimeStamp, verification answers with a result."""
    result = _verify(verifiers, _change_token(_signed(pki), lambda _token: token))
    assert not result.ok and result.reason is Reason.InvalidMessageFormat
