"""Enveloped XAdES-BES signatures on evidence (INTEROP-PROFILE.md §5), made with signxml.

Verification takes the evidence from what the signature covers (the ``URI=""`` reference after
the enveloped transform), never from the bytes around it, so nothing unsigned can slip in.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree
from signxml import methods
from signxml.exceptions import InvalidCertificate, InvalidDigest, InvalidInput, InvalidSignature
from signxml.xades.xades import XAdESSignatureConfiguration, XAdESSigner, XAdESVerifier

from interop.errors import EvidenceFormatError
from interop.evidence.codes import DS_NS
from interop.evidence.model import Evidence
from interop.evidence.xmlio import evidence_type_of, from_element, safe_parse, to_element
from interop.limits import DEFAULT_LIMITS, Limits
from interop.pathval import CertificateValidator, ChainResult
from interop.pki.signer import Signer
from interop.reasons import Reason

_XADES_NS = "http://uri.etsi.org/01903/v1.3.2#"
_SIGNATURE = f"{{{DS_NS}}}Signature"


class _XAdESSigner(XAdESSigner):
    """signxml's signer with the signing time handed in (interop never reads the clock)."""

    def __init__(self, signing_time: dt.datetime, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._signing_time = signing_time

    def add_signing_time(
        self, signed_signature_properties: Any, sig_root: Any, signing_settings: Any
    ) -> None:
        node = etree.SubElement(signed_signature_properties, f"{{{_XADES_NS}}}SigningTime")
        node.text = self._signing_time.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sign_evidence(evidence: Evidence, signer: Signer, now: dt.datetime) -> bytes:
    """The signed ``delil.xml`` bytes; the issuer certificate is set from ``signer``."""
    evidence = dataclasses.replace(
        evidence, issuer_certificate=signer.certificate.public_bytes(Encoding.DER)
    )
    algorithm = "rsa-sha256" if isinstance(signer.key, rsa.RSAPrivateKey) else "ecdsa-sha256"
    xades = _XAdESSigner(
        now,
        method=methods.enveloped,
        signature_algorithm=algorithm,
        digest_algorithm="sha256",
    )
    signed = xades.sign(to_element(evidence), key=signer.key, cert=list(signer.certificates))
    return bytes(etree.tostring(signed, xml_declaration=True, encoding="UTF-8"))


@dataclass(frozen=True, slots=True)
class EvidenceResult:
    evidence: Evidence | None  # as covered by the signature (None when that could not be had)
    intact: bool
    signer: x509.Certificate | None
    chain: ChainResult | None
    signing_time: dt.datetime | None
    reason: Reason | None
    detail: str

    @property
    def ok(self) -> bool:
        return self.reason is None

    @property
    def issuer_domain(self) -> str | None:
        if self.evidence is None or "@" not in self.evidence.issuer:
            return None
        return self.evidence.issuer.rsplit("@", 1)[1].lower()


def _certificates(signature: etree._Element, limits: Limits) -> list[x509.Certificate]:
    nodes = signature.findall(f"{{{DS_NS}}}KeyInfo/{{{DS_NS}}}X509Data/{{{DS_NS}}}X509Certificate")
    if len(nodes) > limits.certificates_per_signature:
        raise EvidenceFormatError("the evidence signature carries too many certificates")
    certs = []
    for node in nodes:
        try:
            der = base64.b64decode("".join((node.text or "").split()), validate=True)
            certs.append(x509.load_der_x509_certificate(der))
        except ValueError as exc:
            raise EvidenceFormatError(
                f"an evidence signature certificate is unreadable: {exc}"
            ) from exc
    return certs


def _leaf(certs: list[x509.Certificate]) -> x509.Certificate:
    """The certificate that issued none of the others (names compared as DER: fast)."""
    issuers = {c.issuer.public_bytes() for c in certs if c.issuer != c.subject}
    leaves = [c for c in certs if c.subject.public_bytes() not in issuers]
    return leaves[0] if leaves else certs[0]


def verify_evidence(
    data: bytes,
    now: dt.datetime,
    validator: CertificateValidator,
    *,
    expected_issuer_domain: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> EvidenceResult:
    """Verify signed evidence bytes; raises ``EvidenceFormatError`` only for unreadable XML."""
    root = safe_parse(data, limits)
    evidence_type_of(root)

    def refuse(reason: Reason, detail: str, **found: Any) -> EvidenceResult:
        values: dict[str, Any] = {
            "evidence": None,
            "intact": False,
            "signer": None,
            "chain": None,
            "signing_time": None,
        }
        values.update(found)
        return EvidenceResult(reason=reason, detail=detail, **values)

    signatures = root.findall(_SIGNATURE)
    if len(signatures) != 1 or root[-1] is not signatures[0]:
        return refuse(
            Reason.InvalidMessageFormat,
            "the evidence must carry exactly one ds:Signature, as its last child",
        )
    certs = _certificates(signatures[0], limits)
    if not certs:
        return refuse(Reason.InvalidMessageFormat, "the evidence signature carries no certificate")
    leaf = _leaf(certs)
    try:
        results = XAdESVerifier().verify(
            root,
            x509_cert=leaf,
            # signxml checks the certificate dates against this time; interop reads no clock.
            expect_config=XAdESSignatureConfiguration(
                expect_references=True, verification_time=now
            ),
        )
    except (InvalidSignature, InvalidDigest, InvalidInput, InvalidCertificate) as exc:
        return refuse(
            Reason.InvalidMessageFormat,
            f"the evidence signature does not verify: {exc}",
            signer=leaf,
        )
    except (ValueError, TypeError, KeyError) as exc:
        return refuse(
            Reason.InvalidMessageFormat, f"the evidence signature is malformed: {exc}", signer=leaf
        )
    covered = [
        r.signed_xml for r in results if r.signed_xml is not None and r.signed_xml.tag == root.tag
    ]
    if len(covered) != 1:
        return refuse(
            Reason.InvalidMessageFormat,
            'the evidence signature does not cover the whole evidence (no URI="" reference)',
            signer=leaf,
        )
    evidence = from_element(covered[0])
    signing_time = None
    for r in results:
        props = getattr(r, "signed_properties", None)
        if props is not None:
            node = props.find(f"{{{_XADES_NS}}}SigningTime")
            if node is not None and node.text:
                signing_time = dt.datetime.fromisoformat(node.text.strip().replace("Z", "+00:00"))
    found: dict[str, Any] = {
        "evidence": evidence,
        "intact": True,
        "signer": leaf,
        "signing_time": signing_time,
    }
    leaf_der = leaf.public_bytes(Encoding.DER)
    if evidence.issuer_certificate is not None and evidence.issuer_certificate != leaf_der:
        return refuse(
            Reason.InvalidMessageFormat,
            "EvidenceIssuerDetails names a certificate other than the one that signed",
            **found,
        )
    domain = evidence.issuer.rsplit("@", 1)[-1].lower()
    if expected_issuer_domain is not None and domain != expected_issuer_domain.lower():
        return refuse(
            Reason.PolicyViolation,
            f"the evidence is issued by {domain}, expected {expected_issuer_domain}",
            **found,
        )
    chain = validator.validate(leaf, [c for c in certs if c is not leaf], now, [domain])
    if not chain.ok:
        return refuse(
            chain.reason or Reason.PolicyViolation,
            f"evidence signer: {chain.detail}",
            chain=chain,
            **found,
        )
    return EvidenceResult(evidence, True, leaf, chain, signing_time, None, "valid")
