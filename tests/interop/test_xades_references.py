"""What an evidence signature may point at, and the other XAdES implementation.

The signature is checked by libxmlsec1 (python-xmlsec); what it covers is checked here first.
Evidence signed by signxml, the library the project signed with before, must keep verifying
(evidence is relied on for 20 years), and signxml must verify ours.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import hashlib

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from lxml import etree
from signxml import methods
from signxml.xades.xades import XAdESSignatureConfiguration, XAdESSigner, XAdESVerifier

from interop.evidence import xades, xmlio
from interop.evidence.codes import DS_NS
from interop.evidence.xades import ENVELOPED, EvidenceResult, sign_evidence, verify_evidence
from interop.evidence.xades_t import C14N_11, EXC_C14N, XADES_NS
from interop.pki.devpki import DevPki
from interop.reasons import Reason
from interop.verifiers import Verifiers
from tests.helpers import LATER, NOW
from tests.interop.test_evidence import evidence

_D = f"{{{DS_NS}}}"
_X = f"{{{XADES_NS}}}"
XPATH = "http://www.w3.org/TR/1999/REC-xpath-19991116"


def _signed_root(pki: DevPki) -> etree._Element:
    return etree.fromstring(sign_evidence(evidence(), pki.providers["hs02"].process, NOW))


def _verify(root: etree._Element, verifiers: Verifiers) -> EvidenceResult:
    return verify_evidence(etree.tostring(root), LATER, verifiers.process("hs02"))


def _references(root: etree._Element) -> list[etree._Element]:
    return root.findall(f"{_D}Signature/{_D}SignedInfo/{_D}Reference")


def test_evidence_signed_by_signxml_still_verifies(pki: DevPki, verifiers: Verifiers) -> None:
    signer = pki.providers["hs02"].process
    element = xmlio.to_element(
        dataclasses.replace(
            evidence(), issuer_certificate=signer.certificate.public_bytes(Encoding.DER)
        )
    )
    signed = XAdESSigner(
        method=methods.enveloped, signature_algorithm="ecdsa-sha256", digest_algorithm="sha256"
    ).sign(element, key=signer.key, cert=list(signer.certificates))
    result = verify_evidence(etree.tostring(signed), LATER, verifiers.process("hs02"))
    assert result.ok, result.detail
    assert result.evidence is not None and result.evidence.identifier == evidence().identifier
    assert result.signing_time is not None


def test_evidence_is_signed_with_exclusive_c14n_throughout(pki: DevPki) -> None:
    """SignedInfo and each of the three references (the evidence, SignedProperties, KeyInfo)
    are canonicalized with exclusive C14N, as the EU's DSS writes XAdES."""
    signed_info = _signed_root(pki).find(f"{_D}Signature/{_D}SignedInfo")
    assert signed_info is not None
    methods_used = [
        node.get("Algorithm")
        for node in signed_info.iter(f"{_D}CanonicalizationMethod", f"{_D}Transform")
    ]
    assert methods_used == [EXC_C14N, ENVELOPED, EXC_C14N, EXC_C14N, EXC_C14N]


def test_evidence_signed_with_c14n_11_still_verifies(
    pki: DevPki, verifiers: Verifiers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Evidence this project signed before 2026-12 (inclusive C14N 1.1 throughout) verifies,
    and says what it said."""
    monkeypatch.setattr(xades, "SIGNING_C14N", C14N_11)
    root = _signed_root(pki)
    assert {t.get("Algorithm") for t in root.iter(f"{_D}Transform")} == {ENVELOPED, C14N_11}
    result = _verify(root, verifiers)
    assert result.ok, result.detail
    assert result.evidence is not None and result.evidence.identifier == evidence().identifier


@pytest.mark.parametrize("algorithm", ["ec", "rsa"])
def test_signxml_verifies_our_evidence(algorithm: str, pki: DevPki, rsa_pki: DevPki) -> None:
    chosen = pki if algorithm == "ec" else rsa_pki
    signer = chosen.providers["hs02"].process
    root = etree.fromstring(sign_evidence(evidence(), signer, NOW))
    results = XAdESVerifier().verify(
        root,
        x509_cert=signer.certificate,
        expect_config=XAdESSignatureConfiguration(expect_references=3, verification_time=NOW),
    )
    covered = [r.signed_xml for r in results if r.signed_xml is not None]
    assert covered[0].tag == root.tag
    assert xmlio.from_element(covered[0]).identifier == evidence().identifier


def test_a_comment_cannot_shorten_what_is_read(pki: DevPki, verifiers: Verifiers) -> None:
    """Comments are not covered by the canonical form: one inserted into a signed text must
    not make the reader see only the text before it (lxml's .text ends at a comment)."""
    root = _signed_root(pki)
    node = root.find(".//{http://uri.etsi.org/02640/v2#}MessageIdentifierByREMMD")
    assert node is not None and node.text == "rem-1@hs01.kep.tr"
    node.text = "rem-"
    comment = etree.Comment("inserted")
    comment.tail = "1@hs01.kep.tr"
    node.append(comment)
    result = _verify(root, verifiers)
    assert result.ok, result.detail
    assert result.evidence is not None
    assert result.evidence.message.remmd_message_id == "rem-1@hs01.kep.tr"


def test_content_read_before_is_taken_only_when_the_signature_covers_it_all(
    pki: DevPki, verifiers: Verifiers
) -> None:
    """A verifier handed ``xmlio.read``'s content of the same tree (intake read it) does not
    read it again, unless a comment makes what is signed differ from what was read."""
    plain = xmlio.read(etree.tostring(_signed_root(pki)))
    result = xades.verify_evidence_tree(
        plain.root, LATER, verifiers.process("hs02"), content=plain.evidence
    )
    assert result.ok, result.detail
    assert result.evidence is plain.evidence
    root = _signed_root(pki)
    node = root.find(".//{http://uri.etsi.org/02640/v2#}MessageIdentifierByREMMD")
    assert node is not None
    node.text = "rem-"
    comment = etree.Comment("inserted")
    comment.tail = "1@hs01.kep.tr"
    node.append(comment)
    commented = xmlio.read(etree.tostring(root))
    assert commented.evidence.message.remmd_message_id == "rem-"  # what lxml's .text shows
    result = xades.verify_evidence_tree(
        commented.root, LATER, verifiers.process("hs02"), content=commented.evidence
    )
    assert result.ok, result.detail
    assert result.evidence is not None
    assert result.evidence.message.remmd_message_id == "rem-1@hs01.kep.tr"


def test_a_reference_with_another_transform_is_refused(pki: DevPki, verifiers: Verifiers) -> None:
    root = _signed_root(pki)
    transforms = _references(root)[0].find(_D + "Transforms")
    assert transforms is not None
    xpath = etree.SubElement(transforms, _D + "Transform", Algorithm=XPATH)
    etree.SubElement(xpath, _D + "XPath").text = "not(ancestor-or-self::*[local-name()='X'])"
    result = _verify(root, verifiers)
    assert not result.ok and result.reason is Reason.InvalidMessageFormat
    assert "only the enveloped-signature transform" in result.detail


def test_a_reference_outside_the_document_is_refused_unread(
    pki: DevPki, verifiers: Verifiers
) -> None:
    root = _signed_root(pki)
    _references(root)[2].set("URI", "file:///etc/passwd")
    result = _verify(root, verifiers)
    assert not result.ok and "outside the evidence" in result.detail


def test_a_second_element_with_the_signed_properties_id_is_refused(
    pki: DevPki, verifiers: Verifiers
) -> None:
    """Signature wrapping: a copy with the same Id could stand in for what was signed."""
    root = _signed_root(pki)
    properties = root.find(f".//{_X}SignedProperties")
    assert properties is not None
    extensions = root.find("{http://uri.etsi.org/02640/v2#}Extensions")
    assert extensions is not None
    extensions.append(copy.deepcopy(properties))
    result = _verify(root, verifiers)
    assert not result.ok and "names 2 elements, not one" in result.detail


def test_a_missing_evidence_reference_is_refused(pki: DevPki, verifiers: Verifiers) -> None:
    root = _signed_root(pki)
    reference = _references(root)[0]
    reference.getparent().remove(reference)  # type: ignore[union-attr]
    result = _verify(root, verifiers)
    assert not result.ok and "does not cover the whole evidence" in result.detail


def test_signing_certificate_must_name_the_signer(
    pki: DevPki, verifiers: Verifiers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signature whose (signed) SigningCertificateV2 names another certificate."""
    signer = pki.providers["hs02"].process
    element = xmlio.to_element(
        dataclasses.replace(
            evidence(), issuer_certificate=signer.certificate.public_bytes(Encoding.DER)
        )
    )
    other = pki.providers["hs03"].process.certificate.public_bytes(Encoding.DER)
    forged = dataclasses.replace(
        xades._signer_parts(signer),
        digests=(base64.b64encode(hashlib.sha256(other).digest()).decode(),),
    )
    monkeypatch.setattr(xades, "_signer_parts", lambda _signer: forged)
    xades._sign_element(element, signer, "2026-11-24T12:00:00Z")
    result = _verify(element, verifiers)
    assert not result.ok and result.reason is Reason.InvalidMessageFormat
    assert "does not name the signing certificate" in result.detail


def test_changed_signed_properties_fail(pki: DevPki, verifiers: Verifiers) -> None:
    root = _signed_root(pki)
    time = root.find(f".//{_X}SigningTime")
    assert time is not None
    time.text = "2020-01-01T00:00:00Z"
    result = _verify(root, verifiers)
    assert not result.ok and "does not verify" in result.detail


def test_a_signer_certificate_whose_key_cannot_be_loaded_is_a_failed_signature(
    pki: DevPki, verifiers: Verifiers
) -> None:
    """Found by fuzzing (fuzz/targets.py evidence_verify): a certificate that parses, with a
    public key that is not a point of its curve, raised libxmlsec1's error out of
    verify_evidence."""
    root = _signed_root(pki)
    leaf = pki.providers["hs02"].process.certificate
    der = leaf.public_bytes(Encoding.DER)
    point = leaf.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    assert der.count(point) == 1
    broken = der.replace(point, point[:-1] + bytes([point[-1] ^ 1]))
    node = root.find(f"{_D}Signature/{_D}KeyInfo/{_D}X509Data/{_D}X509Certificate")
    assert node is not None
    node.text = base64.b64encode(broken).decode()
    result = _verify(root, verifiers)
    assert not result.ok and result.reason is Reason.InvalidMessageFormat
    assert "no usable key" in result.detail


def test_signed_properties_must_be_this_signatures_own(pki: DevPki, verifiers: Verifiers) -> None:
    """The SignedProperties referenced must sit in this signature's ds:Object, not in another
    ds:Signature carried inside it."""
    root = _signed_root(pki)
    signature = root[-1]
    obj = signature.find(_D + "Object")
    assert obj is not None
    inner = etree.SubElement(etree.SubElement(signature, _D + "Object"), _D + "Signature")
    signature.remove(obj)
    inner.append(obj)
    result = _verify(root, verifiers)
    assert not result.ok and "its one xades:SignedProperties" in result.detail
