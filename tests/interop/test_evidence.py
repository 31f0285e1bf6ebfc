from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import io

import pytest
from lxml import etree

from interop.errors import EvidenceFormatError
from interop.evidence import xades, xmlio
from interop.evidence.codes import DELIL_TURU, DS_NS, EVENTS_OF_TYPE, Event, EvidenceType
from interop.evidence.issue import submission_evidence
from interop.evidence.model import EventReason, Evidence, MessageDetails
from interop.evidence.xades import sign_evidence, verify_evidence
from interop.pki.devpki import DevPki, generate
from interop.providers import BUILTIN_DIRECTORY
from interop.reasons import Reason
from interop.verifiers import Verifiers
from tests.helpers import LATER, NOW

RECIPIENTS = ("ayse.demir@hs02.kep.tr", "0123456789012345@hs02.kep.tr")


def evidence(
    kind: EvidenceType = EvidenceType.RelayREMMDAcceptanceRejection,
    event: Event = Event.Acceptance,
    **changes: object,
) -> Evidence:
    base: dict[str, object] = {
        "type": kind,
        "event": event,
        "identifier": "7d8e2c1a-1111-4c3e-9d6f-000000000001",
        "issuer": "delil@hs02.kep.tr",
        "event_time": NOW,
        "submission_time": NOW - dt.timedelta(seconds=3),
        "sender": "ali.yilmaz@hs01.kep.tr",
        "recipients": RECIPIENTS,
        "refers_to_recipient": 1,
        "message": MessageDetails(
            "Konu: çğıöşü",
            "<m1@hs01.kep.tr>",
            "rem-1@hs01.kep.tr",
            hashlib.sha256(b"original").digest(),
        ),
        "reasons": (EventReason(Reason.UnknownRecipient, "no such account"),)
        if event.is_negative
        else (),
    }
    base.update(changes)
    return Evidence(**base)  # type: ignore[arg-type]


ALL_KINDS = [
    (kind, event)
    for kind, events in EVENTS_OF_TYPE.items()
    for event in sorted(events, key=lambda e: e.value)
]


@pytest.mark.parametrize(("kind", "event"), ALL_KINDS)
def test_every_type_and_event_round_trips(kind: EvidenceType, event: Event) -> None:
    original = evidence(kind, event)
    parsed = xmlio.parse(xmlio.to_bytes(original))
    assert parsed == original
    assert parsed.delil_turu == DELIL_TURU.get((kind, event))


def test_teblig_zamani_round_trips() -> None:
    teblig = dt.datetime(2026, 11, 29, 20, 59, 59, tzinfo=dt.UTC)
    original = evidence(
        EvidenceType.DeliveryNonDeliveryToRecipient, Event.Delivery, teblig_zamani=teblig
    )
    assert xmlio.parse(xmlio.to_bytes(original)).teblig_zamani == teblig


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"event": Event.Delivery}, "cannot carry the event"),
        ({"event": Event.Rejection, "reasons": ()}, "needs at least one reason"),
        ({"identifier": "has space"}, "EvidenceIdentifier"),
        ({"recipients": ()}, "at least one recipient"),
        ({"refers_to_recipient": 3}, "not between 1 and 2"),
        ({"refers_to_recipient": None}, "needs EvidenceRefersToRecipient"),
        ({"event_time": dt.datetime(2026, 1, 1)}, "time zone"),
        ({"delil_turu": 40}, "does not match"),
        ({"sender": "a\x00b"}, "control characters"),
    ],
)
def test_invalid_evidence_cannot_be_built(changes: dict[str, object], fragment: str) -> None:
    with pytest.raises(EvidenceFormatError, match=fragment):
        evidence(**changes)  # type: ignore[arg-type]


def test_spelling_variants_are_accepted_on_input() -> None:
    data = xmlio.to_bytes(evidence(EvidenceType.RelayREMMDAcceptanceRejection))
    data = data.replace(b"RelayREMMDAcceptanceRejection", b"RelayToREMMDAcceptanceRejection")
    data = data.replace(b"http:uri.etsi.org/02640/Event#", b"http://uri.etsi.org/02640/Event#")
    parsed = xmlio.parse(data)
    assert parsed.type is EvidenceType.RelayREMMDAcceptanceRejection
    assert parsed.event is Event.Acceptance
    for alias, canonical in (
        ("REMMDAcceptanceRejection", EvidenceType.SubmissionAcceptanceRejection),
        ("RelayToREMMDFailure", EvidenceType.RelayREMMDFailure),
    ):
        assert EvidenceType.from_element_name(alias) is canonical
    negative = xmlio.to_bytes(evidence(event=Event.Rejection)).replace(
        b"http:uri.etsi.org/REM/EventReason#", b"http://uri.etsi.org/REM/EventReason#"
    )
    assert xmlio.parse(negative).reason is Reason.UnknownRecipient


def test_written_form_follows_the_profile() -> None:
    root = etree.fromstring(xmlio.to_bytes(evidence(event=Event.Rejection)))
    ns = {"rem": "http://uri.etsi.org/02640/v2#", "ds": "http://www.w3.org/2000/09/xmldsig#"}
    assert root.get("version") == "2"
    assert (
        root.findtext("rem:EventCode", namespaces=ns) == "http:uri.etsi.org/02640/Event#Rejection"
    )
    assert root.findtext("rem:EventReasons/rem:EventReason/rem:Code", namespaces=ns) == (
        "http:uri.etsi.org/REM/EventReason#UnknownRecipient"
    )
    assert root.findtext(
        "rem:EvidenceIssuerDetails/rem:AttributedElectronicAddress", namespaces=ns
    ) == ("mailto:delil@hs02.kep.tr")
    assert root.findtext("rem:EventTime", namespaces=ns) == "2026-11-24T12:00:00Z"
    assert root.find("rem:SenderMessageDetails", namespaces=ns).get("isNotification") == "false"  # type: ignore[union-attr]
    assert root.findtext("rem:EvidenceRefersToRecipient", namespaces=ns) == "1"


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>', "DTD"),
        (b'<!DOCTYPE x SYSTEM "http://example.invalid/x.dtd"><x/>', "DTD"),
        (
            b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
            b'<!ENTITY lol2 "&lol;&lol;&lol;">]>'
            b"<lolz>&lol2;</lolz>",
            "DTD",
        ),
        (b"<x>&ext;</x>", "not well-formed"),
        (b"<x><y><?pi inside?></y></x>", "processing instructions"),
        (b"<x", "not well-formed"),
        (b"", "not well-formed"),
        (b"<x>" + b" " * (1024 * 1024) + b"</x>", "larger than"),
        (b'<x xmlns="urn:other"/>', "namespace"),
        (
            b'<rem:Unknown xmlns:rem="http://uri.etsi.org/02640/v2#" version="2"/>',
            "not an ETSI REM evidence",
        ),
        (
            b'<rem:RelayREMMDFailure xmlns:rem="http://uri.etsi.org/02640/v2#" version="2"/>',
            "lacks EventCode",
        ),
    ],
)
def test_hostile_or_broken_xml_is_refused(document: bytes, fragment: str) -> None:
    with pytest.raises(EvidenceFormatError, match=fragment):
        xmlio.parse(document)


def test_missing_required_element_is_named() -> None:
    data = xmlio.to_bytes(evidence())
    root = etree.fromstring(data)
    ns = "{http://uri.etsi.org/02640/v2#}"
    root.remove(root.find(ns + "SenderDetails"))  # type: ignore[arg-type]
    with pytest.raises(EvidenceFormatError, match="lacks SenderDetails"):
        xmlio.from_element(root)
    bad_digest = data.replace(b"xmlenc#sha256", b"xmldsig#sha1")
    with pytest.raises(EvidenceFormatError, match="not SHA-256"):
        xmlio.parse(bad_digest)


@pytest.mark.parametrize("algorithm", ["ec", "rsa"])
def test_xades_sign_and_verify(
    algorithm: str, pki: DevPki, rsa_pki: DevPki, verifiers: Verifiers, rsa_verifiers: Verifiers
) -> None:
    chosen, chosen_verifiers = (pki, verifiers) if algorithm == "ec" else (rsa_pki, rsa_verifiers)
    data = sign_evidence(evidence(), chosen.providers["hs02"].process, NOW)
    result = verify_evidence(
        data, LATER, chosen_verifiers.process("hs02"), expected_issuer_domain="hs02.kep.tr"
    )
    assert result.ok, result.detail
    assert result.signing_time == NOW
    assert result.evidence is not None
    assert result.evidence.issuer_certificate is not None
    assert result.evidence == dataclasses.replace(
        evidence(), issuer_certificate=result.evidence.issuer_certificate
    )


def test_changed_evidence_fails(pki: DevPki, verifiers: Verifiers) -> None:
    data = sign_evidence(evidence(), pki.providers["hs02"].process, NOW)
    result = verify_evidence(data.replace(b"rem-1@", b"rem-2@"), LATER, verifiers.process("hs02"))
    assert not result.intact and result.reason is Reason.InvalidMessageFormat
    assert "does not verify" in result.detail


def test_unsigned_or_misplaced_signature_fails(pki: DevPki, verifiers: Verifiers) -> None:
    unsigned = verify_evidence(xmlio.to_bytes(evidence()), LATER, verifiers.process("hs02"))
    assert not unsigned.ok and "exactly one ds:Signature" in unsigned.detail
    root = etree.fromstring(sign_evidence(evidence(), pki.providers["hs02"].process, NOW))
    signature = root[-1]
    root.remove(signature)
    root.insert(0, signature)
    moved = verify_evidence(etree.tostring(root), LATER, verifiers.process("hs02"))
    assert not moved.ok and "last child" in moved.detail


def test_wrong_issuer_and_untrusted_signer(pki: DevPki, verifiers: Verifiers) -> None:
    # hs01 signs an evidence that claims to come from hs02.
    data = sign_evidence(evidence(), pki.providers["hs01"].process, NOW)
    result = verify_evidence(
        data, LATER, verifiers.process("hs02"), expected_issuer_domain="hs02.kep.tr"
    )
    assert result.intact and result.reason is Reason.PolicyViolation
    assert "hs02.kep.tr" in result.detail
    expected_other = verify_evidence(
        sign_evidence(evidence(), pki.providers["hs02"].process, NOW),
        LATER,
        verifiers.process("hs02"),
        expected_issuer_domain="hs03.kep.tr",
    )
    assert expected_other.reason is Reason.PolicyViolation
    stranger = generate(NOW, ["hs02"])
    foreign = verify_evidence(
        sign_evidence(evidence(), stranger.providers["hs02"].process, NOW),
        LATER,
        verifiers.process("hs02"),
    )
    assert foreign.intact and foreign.reason is Reason.PolicyViolation


def test_issuer_certificate_must_be_the_signing_one(pki: DevPki, verifiers: Verifiers) -> None:
    other = pki.providers["hs03"].process.certificate
    from cryptography.hazmat.primitives.serialization import Encoding

    forged = dataclasses.replace(evidence(), issuer_certificate=other.public_bytes(Encoding.DER))
    signer = pki.providers["hs02"].process
    # Sign the forged element directly (sign_evidence would correct the certificate).
    element = xmlio.to_element(forged)
    xades._sign_element(element, signer, "2026-11-24T12:00:00Z")
    data = etree.tostring(element)
    result = verify_evidence(data, LATER, verifiers.process("hs02"))
    assert result.intact and not result.ok
    assert "other than the one that signed" in result.detail


@pytest.mark.parametrize(
    ("written", "changed"),
    [
        # Found by fuzzing (fuzz/targets.py evidence_xml): OverflowError, and a traceback
        # from `kep-relay evidence verify`.
        (b">2026-11-24T12:00:00Z</rem:EventTime>", b">9999-12-31T23:59:59-01:00</rem:EventTime>"),
        (
            b">2026-11-24T11:59:57Z</rem:SubmissionTime>",
            b">0001-01-01T00:00:00+01:00</rem:SubmissionTime>",
        ),
    ],
)
def test_times_out_of_range_in_utc_are_evidence_format_errors(
    written: bytes, changed: bytes
) -> None:
    data = xmlio.to_bytes(evidence())
    assert written in data
    with pytest.raises(EvidenceFormatError, match="out of range in UTC"):
        xmlio.parse(data.replace(written, changed))


def test_expired_process_certificate_is_a_policy_violation(
    pki: DevPki, verifiers: Verifiers
) -> None:
    """The XML-signature library does only the mathematics; the profile says an expired
    provider certificate is PolicyViolation (docs/profile-choices.md)."""
    signer = pki.providers["hs02"].process
    data = sign_evidence(evidence(), signer, NOW)
    after = signer.certificate.not_valid_after_utc + dt.timedelta(days=1)
    result = verify_evidence(
        data, after, verifiers.process("hs02"), expected_issuer_domain="hs02.kep.tr"
    )
    assert result.intact and result.evidence is not None
    assert result.reason is Reason.PolicyViolation
    assert "expired on" in result.detail


def test_unreadable_signing_time_is_a_failed_signature(pki: DevPki, verifiers: Verifiers) -> None:
    """fromisoformat's ValueError on the (signed) SigningTime escaped verify_evidence."""
    signer = pki.providers["hs02"].process
    element = xmlio.to_element(evidence())
    xades._sign_element(element, signer, "yesterday")
    data = etree.tostring(element)
    result = verify_evidence(data, LATER, verifiers.process("hs02"))
    assert not result.ok and result.reason is Reason.InvalidMessageFormat
    assert "SigningTime" in result.detail


def test_unreadable_signature_certificate_is_a_failed_signature(
    pki: DevPki, verifiers: Verifiers
) -> None:
    """A signature problem is a result (the gateway answers it), not an unreadable evidence."""
    root = etree.fromstring(sign_evidence(evidence(), pki.providers["hs02"].process, NOW))
    node = root.find(f".//{{{DS_NS}}}X509Certificate")
    assert node is not None
    node.text = base64.b64encode(b"\x30\x03\x02\x01\x01").decode()
    result = verify_evidence(etree.tostring(root), LATER, verifiers.process("hs02"))
    assert not result.ok and result.reason is Reason.InvalidMessageFormat
    assert "certificate is unreadable" in result.detail


@pytest.mark.parametrize(
    "subject", [b"caf\xff\xfe", b"a\x01b", b"=?utf-8?q?a=00b?=", b"\xef\xbf\xbe", b"x" * 5000]
)
def test_submission_evidence_records_any_subject(subject: bytes) -> None:
    """A user's Subject: with bytes XML cannot hold made evidence that could not be written."""
    original = b"Subject: " + subject + b"\r\nMessage-ID: <a\x02b@x>\r\n\r\nbody\r\n"
    made = submission_evidence(
        io.BytesIO(original),
        BUILTIN_DIRECTORY["hs01"],
        "ali.yilmaz@hs01.kep.tr",
        RECIPIENTS,
        "rem-1@hs01.kep.tr",
        NOW,
    )
    assert xmlio.parse(xmlio.to_bytes(made)) == made


def test_submission_evidence_of_a_message_whose_headers_cannot_be_read() -> None:
    """The S-GW must still answer it (with Rejection): the evidence keeps only its digest."""
    original = b"Subject: no empty line ends these headers\r\nX-A: b"
    made = submission_evidence(
        io.BytesIO(original),
        BUILTIN_DIRECTORY["hs01"],
        "ali.yilmaz@hs01.kep.tr",
        RECIPIENTS,
        "rem-1@hs01.kep.tr",
        NOW,
        reasons=[EventReason(Reason.InvalidUserSignature, "an e-imza is required")],
    )
    assert made.message.subject == "" and made.message.digest == hashlib.sha256(original).digest()
    assert xmlio.parse(xmlio.to_bytes(made)) == made


def test_evidence_that_xml_cannot_hold_cannot_be_built() -> None:
    with pytest.raises(EvidenceFormatError, match="XML cannot carry"):
        MessageDetails("caf\udcff", "", "rem-1@hs01.kep.tr", hashlib.sha256(b"").digest())
