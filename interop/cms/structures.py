"""The CMS and RFC 3161 structures the library reads, declared for cryptography's DER decoder.

``cryptography.hazmat.asn1`` decodes DER in Rust into these classes in one pass: strict DER
(minimal lengths, no trailing data, SET OF in DER order, DEFAULT values not encoded), a
Python object only for each field declared here. asn1crypto, which read them before, built a
Python object for every node it touched; reading a time-stamp token cost 0.31 ms with it
against 0.025 ms here (see the commit that moved reading here).

What the decoder cannot express is kept as ``TLV`` (a tag and its contents) and read where it
is used:
- an AlgorithmIdentifier, whose parameters are an OPTIONAL ANY: ``interop.cms.keys`` reads
  it, once per distinct encoding;
- an attribute's values (their type depends on the attribute's OID);
- the members of a SET whose DER order a peer may not keep (the certificates and CRLs of a
  SignedData, its attributes): declared as a SEQUENCE OF under the same IMPLICIT tag, which
  reads the same bytes without asking for their order. Unsigned attributes may be BER in
  CMS; signed attributes must be DER, but the signature covers the bytes as received, and
  ``openssl cms`` refuses what is not in order anyway.

Field names follow RFC 5652 §5, RFC 3161 §2.4.2 and RFC 5035 in snake case.
"""

from __future__ import annotations

from typing import Annotated

from cryptography import x509
from cryptography.hazmat import asn1

# The content types and attribute types the profile reads (RFC 5652 §11, RFC 3161, RFC 5035).
SIGNED_DATA = "1.2.840.113549.1.7.2"
TST_INFO = "1.2.840.113549.1.9.16.1.4"
CONTENT_TYPE = "1.2.840.113549.1.9.3"
MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
SIGNING_TIME = "1.2.840.113549.1.9.5"
SIGNING_CERTIFICATE_V2 = "1.2.840.113549.1.9.16.2.47"
SIGNATURE_TIME_STAMP_TOKEN = "1.2.840.113549.1.9.16.2.14"  # noqa: S105 (an OID)

SEQUENCE_TAG = b"\x30"


@asn1.sequence
class ContentInfo:
    content_type: x509.ObjectIdentifier
    content: Annotated[asn1.TLV, asn1.Explicit(0)]


@asn1.sequence
class EncapsulatedContentInfo:
    e_content_type: x509.ObjectIdentifier
    e_content: Annotated[bytes | None, asn1.Explicit(0)]


@asn1.sequence
class IssuerAndSerialNumber:
    issuer: asn1.TLV  # a Name, compared by its bytes first
    serial_number: int


@asn1.sequence
class SignerInfo:
    version: int
    sid: IssuerAndSerialNumber | Annotated[bytes, asn1.Implicit(0)]
    digest_algorithm: asn1.TLV
    # Attribute SEQUENCEs, in the order received (the signature covers them so).
    signed_attrs: Annotated[list[asn1.TLV] | None, asn1.Implicit(0)]
    signature_algorithm: asn1.TLV
    signature: bytes
    unsigned_attrs: Annotated[list[asn1.TLV] | None, asn1.Implicit(1)]


@asn1.sequence
class SignedData:
    version: int
    digest_algorithms: asn1.SetOf[asn1.TLV]
    encap_content_info: EncapsulatedContentInfo
    certificates: Annotated[list[asn1.TLV] | None, asn1.Implicit(0)]
    crls: Annotated[list[asn1.TLV] | None, asn1.Implicit(1)]
    signer_infos: asn1.SetOf[SignerInfo]


@asn1.sequence
class Attribute:
    attr_type: x509.ObjectIdentifier
    attr_values: asn1.SetOf[asn1.TLV]


@asn1.sequence
class IssuerSerial:
    issuer: asn1.TLV  # GeneralNames
    serial_number: int


@asn1.sequence
class EssCertIdV2:
    hash_algorithm: asn1.TLV
    cert_hash: bytes
    issuer_serial: IssuerSerial | None


@asn1.sequence
class EssCertIdV2Sha256:
    """An ESSCertIDv2 without its hashAlgorithm: the DEFAULT, SHA-256, is not encoded."""

    cert_hash: bytes
    issuer_serial: IssuerSerial | None


@asn1.sequence
class SigningCertificateV2:
    certs: list[asn1.TLV]  # ESSCertIDv2, the signer's first
    policies: list[asn1.TLV] | None


@asn1.sequence
class MessageImprint:
    hash_algorithm: asn1.TLV
    hashed_message: bytes


@asn1.sequence
class Accuracy:
    seconds: int | None
    millis: Annotated[int | None, asn1.Implicit(0)]
    micros: Annotated[int | None, asn1.Implicit(1)]


@asn1.sequence
class TstInfo:
    version: int
    policy: x509.ObjectIdentifier
    message_imprint: MessageImprint
    serial_number: int
    gen_time: asn1.TLV  # a GeneralizedTime, read by itself to name it when it is wrong
    accuracy: Accuracy | None
    ordering: Annotated[bool, asn1.Default(False)]
    nonce: int | None
    # [0] EXPLICIT GeneralName: read as an IMPLICIT SEQUENCE OF its one member (the same bytes;
    # the decoder takes no OPTIONAL TLV).
    tsa: Annotated[list[asn1.TLV] | None, asn1.Implicit(0)]
    extensions: Annotated[list[asn1.TLV] | None, asn1.Implicit(1)]
