"""Read a CMS SignedData safely: anything that is not readable DER CMS becomes
``CmsFormatError``.

The structure is decoded here in one pass (``interop.cms.structures``, by cryptography's
DER decoder), the certificates by cryptography; the attributes are read by
``interop.cms.signer_info.check_signer``, the second half of this boundary.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass

from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat import asn1

from interop.cms import der as der_parts
from interop.cms import keys
from interop.cms import structures as s
from interop.errors import CmsFormatError, translated
from interop.limits import DEFAULT_LIMITS, Limits

_UNREADABLE = "the signature is not readable DER CMS"

# Certificates kept read, by their DER. A gateway sees the same ones again and again (each
# provider's process and TSA certificates and their CAs in every signature and token, a user's
# in each of her messages); a few hundred cover a busy hour, and 1,024 of a few KiB each stay
# within a few MiB.
CERTIFICATES_KEPT = 1024


@functools.lru_cache(maxsize=CERTIFICATES_KEPT)
def load_certificate(der: bytes) -> x509.Certificate:
    """The certificate encoded in ``der``: one object, read once, for the same bytes.

    What cryptography reads from bytes depends on nothing else, so every check made on the
    object gives the answer it gives on a fresh one; a certificate it cannot read raises each
    time (``lru_cache`` keeps no exception). The objects are immutable and shared by threads.
    """
    return x509.load_der_x509_certificate(der)


_UTC_TIME = b"\x17"
_GENERALIZED_TIME = b"\x18"


def read_time(tlv: asn1.TLV, what: str) -> dt.datetime:
    """A DER UTCTime or GeneralizedTime as an aware datetime; ``CmsFormatError`` naming
    ``what`` for anything else (a time without its Z, say: X.690 §11.7, §11.8)."""
    kind = {_UTC_TIME: asn1.UTCTime, _GENERALIZED_TIME: asn1.GeneralizedTime}.get(tlv.tag_bytes)
    if kind is None:
        raise CmsFormatError(f"{what} is not a time")
    with translated(CmsFormatError, f"{what} is not a UTC time"):
        value: dt.datetime = tlv.parse(kind).as_datetime()
    if value.tzinfo is None:
        raise CmsFormatError(f"{what} {value} is not a UTC time")
    return value


def whole(tlv: asn1.TLV, what: str) -> bytes:
    """The DER of a SEQUENCE the decoder handed back as a TLV, exactly as received.

    DER has one length encoding for each length (and the decoder refused any other), so the
    header put back around the contents is the one that was there.
    """
    if tlv.tag_bytes != s.SEQUENCE_TAG:
        raise CmsFormatError(f"{what} is not a SEQUENCE")
    return der_parts.sequence(bytes(tlv.data))


def content_type_name(oid: x509.ObjectIdentifier) -> str:
    """A content type as asn1crypto names it ("signed_data", "tst_info"; else the OID)."""
    return _content_type_name(oid.dotted_string)


@functools.lru_cache(maxsize=64)
def _content_type_name(dotted: str) -> str:
    name: str = cms.ContentType.map(dotted)
    return name


def content_info(der: bytes) -> s.ContentInfo:
    """The outer ContentInfo of ``der``, its content not read yet; raises ``ValueError``."""
    info: s.ContentInfo = asn1.decode_der(s.ContentInfo, der)
    return info


@dataclass(frozen=True, slots=True)
class ParsedSignedData:
    der: bytes  # the ContentInfo as received
    signer_info: s.SignerInfo
    certificates: tuple[x509.Certificate, ...]
    certificate_ders: tuple[bytes, ...]  # each certificate exactly as received, same order
    digest_algorithm: str
    content_type: str
    encapsulated: bytes | None  # eContent when the content travels inside (time-stamp tokens)
    # The signed attributes exactly as received (the signature covers these bytes), under
    # their [0] IMPLICIT tag; None when there are none.
    signed_attrs_der: bytes | None

    @property
    def signature(self) -> bytes:
        """The signature value."""
        return self.signer_info.signature

    @classmethod
    def parse(cls, der: bytes, limits: Limits = DEFAULT_LIMITS) -> ParsedSignedData:
        if len(der) > limits.signature_part:
            raise CmsFormatError(f"the signature is larger than {limits.signature_part} bytes")
        with translated(CmsFormatError, _UNREADABLE):
            return cls._parse(bytes(der), limits)

    @classmethod
    def _parse(cls, der: bytes, limits: Limits) -> ParsedSignedData:
        info = content_info(der)
        content_type = content_type_name(info.content_type)
        if content_type != "signed_data":
            raise CmsFormatError(f"expected CMS SignedData, found {content_type}")
        signed_data = info.content.parse(s.SignedData)
        signer_infos = signed_data.signer_infos.as_list()
        if len(signer_infos) != 1:
            raise CmsFormatError(f"expected one signer, found {len(signer_infos)}")
        signer_info = signer_infos[0]
        attrs = signer_info.signed_attrs
        signed_attrs_der = (
            None
            if attrs is None
            else der_parts.tagged(0, b"".join(whole(a, "a signed attribute") for a in attrs))
        )
        raw_certs = signed_data.certificates
        if not raw_certs:
            raise CmsFormatError("the signature carries no certificates")
        if len(raw_certs) > limits.certificates_per_signature:
            raise CmsFormatError(
                f"the signature carries more than {limits.certificates_per_signature} certificates"
            )
        ders = tuple(
            der_parts.sequence(bytes(choice.data))
            for choice in raw_certs
            # attribute/other certificates (tagged [1] to [3]) play no part in KEP
            if choice.tag_bytes == s.SEQUENCE_TAG
        )
        certificates = tuple(load_certificate(d) for d in ders)
        encap = signed_data.encap_content_info
        return cls(
            der,
            signer_info,
            certificates,
            ders,
            keys.digest_name(whole(signer_info.digest_algorithm, "the digest algorithm")),
            content_type_name(encap.e_content_type),
            encap.e_content,
            signed_attrs_der,
        )
