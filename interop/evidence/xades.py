"""Enveloped XAdES-BES and XAdES-T signatures on evidence (INTEROP-PROFILE.md §5), with
python-xmlsec (libxmlsec1).

The signature is written here as lxml elements (``ds:SignedInfo`` with three references: the
evidence, ``URI=""`` after the enveloped transform; the ``SignedProperties``; the ``KeyInfo``)
and libxmlsec1 fills in the digests and the signature value. Verification first checks what the
references may point at (the ``URI=""`` reference with only the enveloped transform and a
canonicalization, the others at elements inside the signature, no transform that could leave
content out, no outside URI), then has libxmlsec1 check the mathematics with the key of the
signer's certificate, then checks the XAdES signed properties (``SigningCertificate(V2)``
names the signer). The evidence is read from what the ``URI=""`` reference covers: the
document without the signature, comments and processing instructions, which the canonical form
leaves out, never from text around them. The signature time-stamps
(``interop.evidence.xades_t``) are unsigned, and need no signature: each is a TSA's signature
over the signature value. A valid one proves when the evidence was signed, and the signer's
certificate is judged at that time (profile §1 "Signing time").
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import datetime as dt
import functools
import hashlib
import itertools
from dataclasses import dataclass
from typing import Any

import xmlsec
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from lxml import etree
from xmlsec import constants as _C

from interop.cms.sign import TimestampFunction
from interop.cms.timestamp import TimestampResult, verify_signature_timestamps
from interop.errors import EvidenceFormatError, cause_text, translated
from interop.evidence.codes import DS_NS, REM_NS, SHA256_URI
from interop.evidence.model import Evidence
from interop.evidence.xades_t import (
    CANONICALIZATION_METHODS,
    EXC_C14N,
    XADES_NS,
    add_signature_timestamp,
    signature_timestamps,
)
from interop.evidence.xmlio import (
    evidence_type_of,
    from_element,
    safe_parse,
    to_element,
    xs_datetime,
)
from interop.limits import DEFAULT_LIMITS, Limits
from interop.pathval import CertificateValidator, ChainResult, sha256_print
from interop.pki.signer import Signer
from interop.reasons import Reason

_D = f"{{{DS_NS}}}"
_X = f"{{{XADES_NS}}}"
_SIGNATURE = _D + "Signature"
ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
SIGNED_PROPERTIES_TYPE = "http://uri.etsi.org/01903#SignedProperties"
_ECDSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
_RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"

# The canonicalization this project signs with, of SignedInfo and of each reference: exclusive
# C14N, as the EU's DSS writes XAdES. Inclusive C14N 1.1 (before 2026-12) renders every
# namespace in scope at each element of a signed subtree, and libxmlsec1 looks each one up:
# measured, a signature took 1.12 ms with it and 0.94 ms with this, and verifying one 0.99 and
# 0.78 ms. Evidence XML carries no prefixes in its content (no QNames in text or attributes),
# so leaving unused namespace declarations out of the canonical form changes nothing it means.
# Evidence signed either way verifies (``_CANONICALIZATIONS``).
SIGNING_C14N = EXC_C14N

# What a verified evidence signature may use (profile §5: SHA-256 or stronger, RSA or ECDSA).
# libxmlsec1 refuses any other transform, so XPath, XSLT and XPointer never run.
_CANONICALIZATIONS = (
    _C.TransformInclC14N,
    _C.TransformInclC14NWithComments,
    _C.TransformInclC14N11,
    _C.TransformInclC14N11WithComments,
    _C.TransformExclC14N,
    _C.TransformExclC14NWithComments,
)
_DIGESTS = (_C.TransformSha256, _C.TransformSha384, _C.TransformSha512)
_SIGNATURE_ALGORITHMS = (
    _C.TransformRsaSha256,
    _C.TransformRsaSha384,
    _C.TransformRsaSha512,
    _C.TransformEcdsaSha256,
    _C.TransformEcdsaSha384,
    _C.TransformEcdsaSha512,
)
# SigningCertificate(V2) CertDigest algorithms accepted (SHA-2 only).
_CERT_DIGESTS: dict[str, hashes.HashAlgorithm] = {
    SHA256_URI: hashes.SHA256(),
    "http://www.w3.org/2001/04/xmldsig-more#sha384": hashes.SHA384(),
    "http://www.w3.org/2001/04/xmlenc#sha512": hashes.SHA512(),
}


def _print(cert: x509.Certificate, algorithm: hashes.HashAlgorithm) -> bytes:
    """A certificate's digest; SHA-256, which nearly every signature names, kept."""
    return (
        sha256_print(cert) if isinstance(algorithm, hashes.SHA256) else cert.fingerprint(algorithm)
    )


@dataclass(frozen=True, slots=True)
class _SignerParts:
    """What every signature by one signer repeats, made once per signer."""

    key: xmlsec.Key
    method: str  # the SignatureMethod URI
    certificates: tuple[str, ...]  # base64 DER, leaf first
    digests: tuple[str, ...]  # base64 SHA-256 of each, for SigningCertificateV2


@functools.lru_cache(maxsize=32)
def _signer_parts(signer: Signer) -> _SignerParts:
    pem = signer.key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    ders = [c.public_bytes(Encoding.DER) for c in signer.certificates]
    return _SignerParts(
        key=xmlsec.Key.from_memory(pem, _C.KeyDataFormatPem),
        method=_RSA_SHA256 if isinstance(signer.key, rsa.RSAPrivateKey) else _ECDSA_SHA256,
        certificates=tuple(base64.b64encode(d).decode() for d in ders),
        digests=tuple(base64.b64encode(hashlib.sha256(d).digest()).decode() for d in ders),
    )


def _add(parent: etree._Element, tag: str, text: str | None = None, **attributes: str) -> Any:
    node = etree.SubElement(parent, tag, attributes)
    if text is not None:
        node.text = text
    return node


def _reference(signed_info: etree._Element, uri: str, *transforms: str, **attributes: str) -> None:
    reference = _add(signed_info, _D + "Reference", URI=uri, **attributes)
    if transforms:
        listed = _add(reference, _D + "Transforms")
        for algorithm in transforms:
            _add(listed, _D + "Transform", Algorithm=algorithm)
    _add(reference, _D + "DigestMethod", Algorithm=SHA256_URI)
    _add(reference, _D + "DigestValue")


def _sign_element(root: etree._Element, signer: Signer, signing_time: str) -> etree._Element:
    """Append the XAdES-BES ``ds:Signature`` to ``root`` and sign; returns the signature.
    ``signing_time`` is the ``xades:SigningTime`` text as written."""
    parts = _signer_parts(signer)
    # Ids are made from the evidence's identifier (unique), so signing is repeatable.
    identifier = root.findtext(f"{{{REM_NS}}}EvidenceIdentifier") or ""
    identity = hashlib.sha256(identifier.encode()).hexdigest()[:16]
    sid = f"Signature-{identity}"
    signature = etree.SubElement(root, _SIGNATURE, {"Id": sid}, nsmap={"xades": XADES_NS})
    signed_info = _add(signature, _D + "SignedInfo")
    _add(signed_info, _D + "CanonicalizationMethod", Algorithm=SIGNING_C14N)
    _add(signed_info, _D + "SignatureMethod", Algorithm=parts.method)
    _reference(signed_info, "", ENVELOPED, SIGNING_C14N, Id=f"{sid}-Reference")
    _reference(signed_info, f"#{sid}-SignedProperties", SIGNING_C14N, Type=SIGNED_PROPERTIES_TYPE)
    _reference(signed_info, f"#{sid}-KeyInfo", SIGNING_C14N)
    _add(signature, _D + "SignatureValue")
    key_info = _add(signature, _D + "KeyInfo", Id=f"{sid}-KeyInfo")
    x509_data = _add(key_info, _D + "X509Data")
    for certificate in parts.certificates:
        _add(x509_data, _D + "X509Certificate", certificate)
    qualifying = _add(_add(signature, _D + "Object"), _X + "QualifyingProperties", Target=f"#{sid}")
    signed_properties = _add(qualifying, _X + "SignedProperties", Id=f"{sid}-SignedProperties")
    properties = _add(signed_properties, _X + "SignedSignatureProperties")
    _add(properties, _X + "SigningTime", signing_time)
    certificates = _add(properties, _X + "SigningCertificateV2")
    for digest in parts.digests:
        cert_digest = _add(_add(certificates, _X + "Cert"), _X + "CertDigest")
        _add(cert_digest, _D + "DigestMethod", Algorithm=SHA256_URI)
        _add(cert_digest, _D + "DigestValue", digest)
    data_object = _add(
        _add(signed_properties, _X + "SignedDataObjectProperties"),
        _X + "DataObjectFormat",
        ObjectReference=f"#{sid}-Reference",
    )
    _add(data_object, _X + "MimeType", "text/xml")
    context = xmlsec.SignatureContext()
    context.key = parts.key
    context.register_id(signed_properties, "Id")
    context.register_id(key_info, "Id")
    context.sign(signature)
    return signature


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
    root = to_element(evidence)
    signing_time = now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    signature = _sign_element(root, signer, signing_time)
    if timestamp is not None:
        add_signature_timestamp(signature, timestamp)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


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


class _Refused(Exception):
    """The signature is not one we verify, or does not verify (its detail is the reason)."""


def _certificates(signature: etree._Element, limits: Limits) -> list[x509.Certificate]:
    nodes = signature.findall(f"{_D}KeyInfo/{_D}X509Data/{_D}X509Certificate")
    if len(nodes) > limits.certificates_per_signature:
        raise EvidenceFormatError("the evidence signature carries too many certificates")
    with translated(EvidenceFormatError, "an evidence signature certificate is unreadable"):
        return [_certificate(_base64(node)) for node in nodes]


@functools.lru_cache(maxsize=64)
def _certificate(der: bytes) -> x509.Certificate:
    """A certificate read once: a provider signs all its evidence with the same few, and a
    certificate's names are made into Python objects on first use (reading a chain of two
    and finding its leaf: 44 µs anew, 12 µs from here)."""
    return x509.load_der_x509_certificate(der)


def _base64(node: etree._Element) -> bytes:
    return base64.b64decode("".join((node.text or "").split()), validate=True)


def _leaf(certs: list[x509.Certificate]) -> x509.Certificate:
    """The certificate that issued none of the others (names compared as DER: fast)."""
    with translated(EvidenceFormatError, "an evidence signature certificate name is unreadable"):
        issuers = {c.issuer.public_bytes() for c in certs if c.issuer != c.subject}
        leaves = [c for c in certs if c.subject.public_bytes() not in issuers]
    return leaves[0] if leaves else certs[0]


def _transforms(reference: etree._Element) -> list[str]:
    return [t.get("Algorithm", "") for t in reference.iterfind(f"{_D}Transforms/{_D}Transform")]


def _by_id(
    signature: etree._Element, ids: dict[str, list[etree._Element]], uri: str
) -> etree._Element:
    """The element a ``#id`` reference names: one element in the document has that Id, and it
    is inside the signature (a second element with the same Id could stand in for it)."""
    if not uri.startswith("#") or len(uri) == 1:
        raise _Refused(f"a reference to {uri[:80]!r}, outside the evidence, is not verified")
    named = ids.get(uri[1:], [])
    if len(named) != 1:
        raise _Refused(f"reference {uri[:80]!r} names {len(named)} elements, not one")
    if not any(a is signature for a in named[0].iterancestors()):
        raise _Refused(f"reference {uri[:80]!r} names an element outside the signature")
    return named[0]


def _checked_references(
    root: etree._Element, signature: etree._Element
) -> tuple[list[etree._Element], etree._Element]:
    """The elements the ``#id`` references name, and the SignedProperties among them, after
    checking that the signature covers the whole evidence and nothing outside itself."""
    references = signature.findall(f"{_D}SignedInfo/{_D}Reference")
    whole = [r for r in references if r.get("URI") == ""]
    if len(whole) != 1:
        raise _Refused(
            'the evidence signature does not cover the whole evidence (no URI="" reference)'
        )
    transforms = _transforms(whole[0])
    if (
        not transforms
        or transforms[0] != ENVELOPED
        or len(transforms) > 2
        or any(t not in CANONICALIZATION_METHODS for t in transforms[1:])
    ):
        raise _Refused(
            'the URI="" reference may use only the enveloped-signature transform and one '
            "canonicalization"
        )
    ids: dict[str, list[etree._Element]] = {}
    for element in root.iterfind(".//*[@Id]"):
        ids.setdefault(element.get("Id", ""), []).append(element)
    named: list[etree._Element] = []
    signed_properties: list[etree._Element] = []
    for reference in references:
        if reference is whole[0]:
            continue
        if any(t not in CANONICALIZATION_METHODS for t in _transforms(reference)):
            raise _Refused("a reference inside the signature may use only a canonicalization")
        target = _by_id(signature, ids, reference.get("URI", ""))
        named.append(target)
        if reference.get("Type") == SIGNED_PROPERTIES_TYPE:
            signed_properties.append(target)
    where = (
        list(itertools.islice(signed_properties[0].iterancestors(), 3)) if signed_properties else []
    )
    if (
        len(signed_properties) != 1
        or signed_properties[0].tag != _X + "SignedProperties"
        or [a.tag for a in where[:2]] != [_X + "QualifyingProperties", _D + "Object"]
        or where[2:] != [signature]
    ):
        raise _Refused("the signature must reference its one xades:SignedProperties")
    return named, signed_properties[0]


@functools.lru_cache(maxsize=64)
def _public_key(certificate_der: bytes) -> xmlsec.Key:
    """The certificate's public key alone (its SubjectPublicKeyInfo), as libxmlsec1 takes it.
    Not the certificate as a key (``KeyDataFormatCertDer``): a signature context copies the
    key it is given, certificate data and all, which took 108 us per verification, this 0.6.
    Raises ``ValueError`` (cryptography) or ``xmlsec.Error`` for a key that cannot be used."""
    spki = (
        x509.load_der_x509_certificate(certificate_der)
        .public_key()
        .public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    )
    return xmlsec.Key.from_memory(spki, _C.KeyDataFormatDer)


def _verify_mathematics(
    signature: etree._Element, named: list[etree._Element], leaf_der: bytes
) -> None:
    """libxmlsec1 checks every reference's digest and the signature value with the leaf's key
    (never a key the document offers), with only the transforms and algorithms listed above."""
    context = xmlsec.SignatureContext()
    for transform in (_C.TransformEnveloped, *_CANONICALIZATIONS, *_DIGESTS):
        context.enable_reference_transform(transform)
    for transform in (*_CANONICALIZATIONS, *_SIGNATURE_ALGORITHMS):
        context.enable_signature_transform(transform)
    try:
        context.key = _public_key(leaf_der)
    except (xmlsec.Error, ValueError, UnsupportedAlgorithm) as exc:
        # A certificate that parses, with a key that does not.
        raise _Refused(
            f"the evidence signer's certificate holds no usable key: {cause_text(exc)}"
        ) from exc
    for element in named:
        context.register_id(element, "Id")
    try:
        context.verify(signature)
    except xmlsec.VerificationError as exc:
        raise _Refused(f"the evidence signature does not verify: {cause_text(exc)}") from exc
    except xmlsec.Error as exc:
        raise _Refused(f"the evidence signature is malformed: {cause_text(exc)}") from exc


def _signed_signature_properties(
    signed_properties: etree._Element, leaf: x509.Certificate, certs: list[x509.Certificate]
) -> dt.datetime | None:
    """Check that SigningCertificate(V2) names the signer; the SigningTime, if any."""
    properties = signed_properties.findall(_X + "SignedSignatureProperties")
    if len(properties) != 1:
        raise _Refused("the signed properties hold no single SignedSignatureProperties")
    named = properties[0].findall(_X + "SigningCertificateV2") + properties[0].findall(
        _X + "SigningCertificate"
    )
    if len(named) != 1:
        raise _Refused("the signed properties must hold one SigningCertificate(V2)")
    digests = named[0].findall(f"{_X}Cert/{_X}CertDigest")
    if not digests:
        raise _Refused("SigningCertificate(V2) names no certificate")
    for index, digest in enumerate(digests):
        method = digest.find(_D + "DigestMethod")
        value = digest.find(_D + "DigestValue")
        algorithm = _CERT_DIGESTS.get("" if method is None else method.get("Algorithm", ""))
        if algorithm is None or value is None:
            raise _Refused("a SigningCertificate(V2) digest that is not SHA-2")
        with translated(EvidenceFormatError, "a SigningCertificate(V2) digest is unreadable"):
            wanted = _base64(value)
        candidates = [leaf] if index == 0 else certs
        if not any(_print(c, algorithm) == wanted for c in candidates):
            raise _Refused(
                "SigningCertificate(V2) does not name the signing certificate"
                if index == 0
                else "SigningCertificate(V2) names a certificate the signature does not carry"
            )
    time = properties[0].find(_X + "SigningTime")
    if time is None or not time.text:
        return None
    return xs_datetime(time.text.strip(), "SigningTime")


def _covered(root: etree._Element) -> etree._Element:
    """The evidence as the ``URI=""`` reference covers it: without the signature, comments and
    processing instructions (lxml would end an element's text at a comment)."""
    if next(root.iter(etree.Comment, etree.ProcessingInstruction), None) is None:
        return root  # from_element reads no ds:Signature
    covered = copy.deepcopy(root)
    covered.remove(covered[-1])
    etree.strip_tags(covered, etree.Comment, etree.ProcessingInstruction)
    return covered


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
    See ``verify_evidence_tree``."""
    return verify_evidence_tree(
        safe_parse(data, limits),
        now,
        validator,
        tsa_validator=tsa_validator,
        tsa_valid_at=tsa_valid_at,
        expected_issuer_domain=expected_issuer_domain,
        limits=limits,
    )


def verify_evidence_tree(
    root: etree._Element,
    now: dt.datetime,
    validator: CertificateValidator,
    *,
    tsa_validator: CertificateValidator | None = None,
    tsa_valid_at: dt.datetime | None = None,
    expected_issuer_domain: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
    content: Evidence | None = None,
) -> EvidenceResult:
    """``verify_evidence`` of evidence parsed already with ``xmlio.safe_parse`` (the tree is
    read, not changed); raises ``EvidenceFormatError`` only for an unreadable evidence root.

    ``content``: ``from_element(root)`` of this very tree when the caller has read it
    (``xmlio.read``). It is taken only when the signature covers all of the tree but itself
    (no comment or processing instruction, which the signature does not cover); otherwise the
    content is read again from what the signature covers.

    Signature time-stamps are verified with ``tsa_validator`` (the TSA's chain judged at
    ``tsa_valid_at``, or at ``now`` when None; see ``verify_token``). With a valid one the
    signer's chain is judged at its genTime (``proven_time``), otherwise at ``now``. A
    time-stamp that does not verify, or one present with no TSA trusted, fails the evidence.

    Whatever concerns the signature (its certificates, their names, its mathematics, its
    properties) is reported in the result: a signature that cannot be read does not verify.
    The certificates' dates are judged by ``validator`` alone (an expired provider certificate
    is PolicyViolation, docs/profile-choices.md); libxmlsec1 does only the mathematics.
    """
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
    signature = signatures[0]
    try:
        certs = _certificates(signature, limits)
        if not certs:
            return refuse(
                Reason.InvalidMessageFormat, "the evidence signature carries no certificate"
            )
        leaf = _leaf(certs)
    except EvidenceFormatError as exc:
        return refuse(Reason.InvalidMessageFormat, exc.detail)
    try:
        named, signed_properties = _checked_references(root, signature)
        _verify_mathematics(signature, named, leaf.public_bytes(Encoding.DER))
        signing_time = _signed_signature_properties(signed_properties, leaf, certs)
    except _Refused as exc:
        return refuse(Reason.InvalidMessageFormat, str(exc), signer=leaf)
    except EvidenceFormatError as exc:
        return refuse(Reason.InvalidMessageFormat, exc.detail, signer=leaf)
    covered = _covered(root)
    evidence = content if content is not None and covered is root else from_element(covered)
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
        tokens = signature_timestamps(signature, limits)
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
