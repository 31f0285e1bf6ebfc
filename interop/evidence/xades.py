"""Enveloped XAdES-BES and XAdES-T signatures on evidence (INTEROP-PROFILE.md §5), with signxml.

Verification takes the evidence from what the signature covers (the ``URI=""`` reference after
the enveloped transform), never from the bytes around it, so nothing unsigned can slip in. The
signature time-stamps (``interop.evidence.xades_t``) are unsigned, and need no signature: each
is a TSA's signature over the signature value. A valid one proves when the evidence was signed,
and the signer's certificate is judged at that time (profile §1 "Signing time").
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

from interop.cms.sign import TimestampFunction
from interop.cms.timestamp import TimestampResult, verify_signature_timestamps
from interop.errors import EvidenceFormatError, cause_text, translated
from interop.evidence.codes import DS_NS
from interop.evidence.model import Evidence
from interop.evidence.xades_t import XADES_NS, add_signature_timestamp, signature_timestamps
from interop.evidence.xmlio import (
    evidence_type_of,
    from_element,
    safe_parse,
    to_element,
    xs_datetime,
)
from interop.limits import DEFAULT_LIMITS, Limits
from interop.pathval import CertificateValidator, ChainResult
from interop.pki.signer import Signer
from interop.reasons import Reason

_XADES_NS = XADES_NS
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


def sign_evidence(
    evidence: Evidence,
    signer: Signer,
    now: dt.datetime,
    *,
    timestamp: TimestampFunction | None = None,
) -> bytes:
    """The signed ``delil.xml`` bytes; the issuer certificate is set from ``signer``.

    XAdES-BES; with ``timestamp`` XAdES-T: it is called once, with the canonical
    ``ds:SignatureValue`` (the bytes to imprint), and returns a DER TimeStampToken.
    """
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
    if timestamp is not None:
        add_signature_timestamp(signed[-1], timestamp)  # enveloped: the root's last child
    return bytes(etree.tostring(signed, xml_declaration=True, encoding="UTF-8"))


@dataclass(frozen=True, slots=True)
class EvidenceResult:
    evidence: Evidence | None  # as covered by the signature (None when that could not be had)
    intact: bool
    signer: x509.Certificate | None
    chain: ChainResult | None
    signing_time: dt.datetime | None  # as the signer claims it (SigningTime)
    reason: Reason | None
    detail: str
    timestamp: TimestampResult | None = None  # the earliest valid one, or the one that failed
    # The time the signer's chain was judged at: the time-stamp's genTime (None: at ``now``).
    proven_time: dt.datetime | None = None

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
    with translated(EvidenceFormatError, "an evidence signature certificate is unreadable"):
        return [
            x509.load_der_x509_certificate(
                base64.b64decode("".join((node.text or "").split()), validate=True)
            )
            for node in nodes
        ]


def _leaf(certs: list[x509.Certificate]) -> x509.Certificate:
    """The certificate that issued none of the others (names compared as DER: fast)."""
    with translated(EvidenceFormatError, "an evidence signature certificate name is unreadable"):
        issuers = {c.issuer.public_bytes() for c in certs if c.issuer != c.subject}
        leaves = [c for c in certs if c.subject.public_bytes() not in issuers]
    return leaves[0] if leaves else certs[0]


def _mathematics_time(leaf: x509.Certificate, now: dt.datetime) -> dt.datetime:
    """The time signxml is given: ``now``, moved into the leaf's validity period.

    signxml refuses a certificate outside its dates before it checks anything else, as
    InvalidCertificate, which would make an expired provider certificate look like a broken
    signature. Dates are judged by ``CertificateValidator.validate`` at ``now`` (an expired
    provider certificate is PolicyViolation, docs/profile-choices.md); signxml does only the
    mathematics.
    """
    return min(max(now, leaf.not_valid_before_utc), leaf.not_valid_after_utc)


def _signing_time(results: Any) -> dt.datetime | None:
    for r in results:
        props = getattr(r, "signed_properties", None)
        if props is not None:
            node = props.find(f"{{{_XADES_NS}}}SigningTime")
            if node is not None and node.text:
                return xs_datetime(node.text.strip(), "SigningTime")
    return None


def verify_evidence(
    data: bytes,
    now: dt.datetime,
    validator: CertificateValidator,
    *,
    tsa_validator: CertificateValidator | None = None,
    tsa_valid_at: dt.datetime | None = None,
    expected_issuer_domain: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> EvidenceResult:
    """Verify signed evidence bytes; raises ``EvidenceFormatError`` only for unreadable XML.

    Signature time-stamps are verified with ``tsa_validator`` (the TSA's chain judged at
    ``tsa_valid_at``, or at ``now`` when None; see ``verify_token``). With a valid one the
    signer's chain is judged at its genTime (``proven_time``), otherwise at ``now``. A
    time-stamp that does not verify, or one present with no TSA trusted, fails the evidence.

    Whatever concerns the signature (its certificates, their names, its mathematics, its
    properties) is reported in the result: a signature that cannot be read does not verify.
    """
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
    try:
        certs = _certificates(signatures[0], limits)
        if not certs:
            return refuse(
                Reason.InvalidMessageFormat, "the evidence signature carries no certificate"
            )
        leaf = _leaf(certs)
    except EvidenceFormatError as exc:
        return refuse(Reason.InvalidMessageFormat, exc.detail)
    try:
        results = XAdESVerifier().verify(
            root,
            x509_cert=leaf,
            expect_config=XAdESSignatureConfiguration(
                expect_references=True, verification_time=_mathematics_time(leaf, now)
            ),
        )
    except (InvalidSignature, InvalidDigest, InvalidInput, InvalidCertificate) as exc:
        return refuse(
            Reason.InvalidMessageFormat,
            f"the evidence signature does not verify: {cause_text(exc)}",
            signer=leaf,
        )
    except Exception as exc:  # signxml and lxml on a signature that cannot be read
        return refuse(
            Reason.InvalidMessageFormat,
            f"the evidence signature is malformed: {cause_text(exc)}",
            signer=leaf,
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
    try:
        signing_time = _signing_time(results)
    except EvidenceFormatError as exc:
        return refuse(Reason.InvalidMessageFormat, exc.detail, signer=leaf, evidence=evidence)
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
    try:
        tokens = signature_timestamps(signatures[0], limits)
    except EvidenceFormatError as exc:
        return refuse(Reason.InvalidMessageFormat, exc.detail, **found)
    stamp = verify_signature_timestamps(tokens, now, tsa_validator, valid_at=tsa_valid_at)
    # A broken time-stamp proves nothing: the chain is then judged now, and named first.
    proven = stamp.time if stamp is not None and stamp.ok else None
    found.update(timestamp=stamp, proven_time=proven)
    chain = validator.validate(
        leaf,
        [c for c in certs if c is not leaf],
        proven or now,
        [domain],
        proven=proven is not None,
    )
    if not chain.ok:
        detail = f"evidence signer: {chain.detail}"
        if proven is not None:
            detail += f" (judged at {proven.isoformat()}, the time-stamp's time)"
        return refuse(chain.reason or Reason.PolicyViolation, detail, chain=chain, **found)
    if stamp is not None and not stamp.ok:
        return refuse(
            Reason.InvalidMessageFormat,
            f"the evidence signature's time-stamp: {stamp.detail}",
            chain=chain,
            **found,
        )
    return EvidenceResult(evidence, True, leaf, chain, signing_time, None, "valid", stamp, proven)
