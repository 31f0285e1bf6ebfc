"""The mathematics of one SignerInfo: is it intact, and who made it (RFC 5652 §5.4, §5.6)."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
from dataclasses import dataclass

from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat import asn1

from interop.cms import keys
from interop.cms import structures as s
from interop.cms.parse import (
    CERTIFICATES_KEPT,
    ParsedSignedData,
    content_type_name,
    load_certificate,
    read_time,
    whole,
)
from interop.errors import CmsFormatError, translated


@dataclass(frozen=True, slots=True)
class SignerCheck:
    intact: bool
    signer: x509.Certificate | None
    signing_time: dt.datetime | None
    cades: bool  # carries a matching signing-certificate-v2 attribute
    detail: str
    # Every id-aa-signatureTimeStampToken value (DER ContentInfo), in order (CAdES allows
    # several).
    timestamp_tokens: tuple[bytes, ...] = ()
    signature: bytes = b""


@functools.lru_cache(maxsize=CERTIFICATES_KEPT)
def _issuer(der: bytes) -> bytes:
    """The issuer name of the certificate encoded in ``der``, as cryptography encodes it.

    Kept, like the certificate itself (``load_certificate``): building the name and encoding
    it again costs more than the rest of finding the signer. Raises for a name cryptography
    cannot read, each time.
    """
    return load_certificate(der).issuer.public_bytes()


def _same_name(ours: bytes, theirs: bytes) -> bool:
    """Byte equality first; RFC 5280 §7.1 name comparison only when the encodings differ."""
    return ours == theirs or asn1_x509.Name.load(ours) == asn1_x509.Name.load(theirs)


def _find_signer(parsed: ParsedSignedData) -> int | None:
    """The index in ``parsed.certificates`` of the one ``sid`` names, or None."""
    sid = parsed.signer_info.sid
    if isinstance(sid, s.IssuerAndSerialNumber):
        issuer = whole(sid.issuer, "the signer's issuer")
        for i, cert in enumerate(parsed.certificates):
            if cert.serial_number == sid.serial_number and _same_name(
                _issuer(parsed.certificate_ders[i]), issuer
            ):
                return i
        return None
    for i, cert in enumerate(parsed.certificates):
        try:
            ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        except x509.ExtensionNotFound:
            continue
        if ski.value.digest == sid:
            return i
    return None


@functools.lru_cache(maxsize=64)
def _attribute_name(dotted: str) -> str:
    name: str = cms.CMSAttributeType.map(dotted)
    return name


def _attribute(tlv: asn1.TLV) -> s.Attribute:
    """An Attribute the decoder handed back as a TLV."""
    if tlv.tag_bytes != s.SEQUENCE_TAG:
        raise CmsFormatError("an attribute is not a SEQUENCE")
    attribute: s.Attribute = tlv.parse(s.Attribute)
    return attribute


def _attributes(tlvs: list[asn1.TLV]) -> dict[str, list[asn1.TLV]] | str:
    """The values of each signed attribute by asn1crypto's name for it, or what is wrong."""
    values: dict[str, list[asn1.TLV]] = {}
    for tlv in tlvs:
        attr = _attribute(tlv)
        name = _attribute_name(attr.attr_type.dotted_string)
        if name in values:
            return f"signed attribute {name} is repeated"
        values[name] = attr.attr_values.as_list()
    return values


def _primitive(tlv: asn1.TLV, tag: int, what: str) -> bytes:
    """The contents of a primitive value of universal ``tag`` (OCTET STRING: 4)."""
    if tlv.tag_bytes != bytes([tag]):
        raise CmsFormatError(f"{what} is not of its type")
    return bytes(tlv.data)


def _first_cert_id(tlv: asn1.TLV) -> tuple[str, bytes]:
    """(hash algorithm, certificate hash) of the first ESSCertIDv2 of signing-certificate-v2."""
    certs = tlv.parse(s.SigningCertificateV2).certs
    if not certs:
        raise CmsFormatError("signing-certificate-v2 names no certificate")
    first = certs[0]
    try:
        cert_id = first.parse(s.EssCertIdV2)
    except ValueError:  # RFC 5035: the hashAlgorithm is left out when it is the DEFAULT
        return "sha256", first.parse(s.EssCertIdV2Sha256).cert_hash
    return keys.digest_name(whole(cert_id.hash_algorithm, "a hash algorithm")), cert_id.cert_hash


def check_signer(parsed: ParsedSignedData, content_digest: bytes) -> SignerCheck:
    """Check message-digest, content-type and the signature value; never raises for bad math.

    The second half of the CMS boundary (``ParsedSignedData.parse`` is the first): the
    signer's identifier, the attributes and the algorithms are read only now, and
    cryptography reads a certificate's names and extensions only when asked, so whatever
    they raise on bytes that parsed but cannot be read becomes ``CmsFormatError``.
    """
    with translated(CmsFormatError, "the signer information cannot be read"):
        return _check_signer(parsed, content_digest)


def _check_signer(parsed: ParsedSignedData, content_digest: bytes) -> SignerCheck:
    info = parsed.signer_info
    found = _find_signer(parsed)
    signature = info.signature
    if found is None:
        return SignerCheck(False, None, None, False, "the signer's certificate is not included")
    signer = parsed.certificates[found]
    if parsed.signed_attrs_der is None or not info.signed_attrs:
        # Without signed attributes neither CAdES nor our streaming hashing applies.
        return SignerCheck(False, signer, None, False, "the signature has no signed attributes")
    values = _attributes(info.signed_attrs)
    if isinstance(values, str):
        return SignerCheck(False, signer, None, False, values)
    content_type = values.get("content_type")
    if (
        not content_type
        or content_type_name(content_type[0].parse(x509.ObjectIdentifier)) != parsed.content_type
    ):
        return SignerCheck(
            False, signer, None, False, "the content-type attribute does not match the content"
        )
    digest_attr = values.get("message_digest")
    if not digest_attr or not hmac.compare_digest(
        _primitive(digest_attr[0], 0x04, "the message-digest attribute"),
        content_digest,
    ):
        return SignerCheck(
            False,
            signer,
            None,
            False,
            "the content does not match the signed message-digest (it was changed after signing)",
        )
    signing_time = None
    if values.get("signing_time"):
        signing_time = read_time(values["signing_time"][0], "signing-time")
    cades = False
    if values.get("signing_certificate_v2"):
        algorithm, cert_hash = _first_cert_id(values["signing_certificate_v2"][0])
        der = parsed.certificate_ders[found]  # as received: the hash is over these bytes
        if algorithm not in ("sha256", "sha384", "sha512") or not hmac.compare_digest(
            hashlib.new(algorithm, der).digest(), cert_hash
        ):
            return SignerCheck(
                False,
                signer,
                signing_time,
                False,
                "signing-certificate-v2 does not name the certificate that signed",
            )
        cades = True
    # RFC 5652 §5.4: the signature is over the DER of the attributes with an explicit SET OF tag.
    data = b"\x31" + parsed.signed_attrs_der[1:]
    if parsed.digest_algorithm not in ("sha1", "sha256", "sha384", "sha512"):
        return SignerCheck(
            False,
            signer,
            signing_time,
            cades,
            f"digest algorithm {parsed.digest_algorithm} is not supported",
        )
    algorithm_der = whole(info.signature_algorithm, "the signature algorithm")
    if not keys.verify(
        signer.public_key(),
        signature,
        data,
        parsed.digest_algorithm,
        keys.signature_algorithm(algorithm_der),
    ):
        return SignerCheck(
            False,
            signer,
            signing_time,
            cades,
            "the signature value does not verify with the signer's public key",
        )
    tokens: list[bytes] = []
    if info.unsigned_attrs:
        for tlv in info.unsigned_attrs:
            attr = _attribute(tlv)
            if attr.attr_type.dotted_string == s.SIGNATURE_TIME_STAMP_TOKEN:
                tokens.extend(whole(v, "a time-stamp token") for v in attr.attr_values.as_list())
    return SignerCheck(True, signer, signing_time, cades, "intact", tuple(tokens), signature)
