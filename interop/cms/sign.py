"""Make detached CMS SignedData with CAdES-BES signed attributes (INTEROP-PROFILE.md §3).

A signature is put together from DER pieces (``interop.cms.der``). What is the same in every
signature of one signer (its certificates, its identifier, the signing-certificate-v2
attribute, the algorithm identifiers) is encoded by asn1crypto once and kept; what changes
(message digest, signing time, signature value, time-stamp token) is encoded on each call by
asn1crypto's own types. The bytes are those asn1crypto gives for the same SignedData built
from Python values (tests/interop/test_cms_der.py compares them), at a fifth of the cost.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from asn1crypto import cms, core, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from interop.cms import der, keys
from interop.pki.signer import Signer

# Given the signature value, return an RFC 3161 TimeStampToken (DER ContentInfo) over it.
TimestampFunction = Callable[[bytes], bytes]


def signing_certificate_v2(cert: asn1_x509.Certificate) -> tsp.SigningCertificateV2:
    """RFC 5035 ESSCertIDv2 with SHA-256 (the default algorithm, so it is left out)."""
    return tsp.SigningCertificateV2(
        {
            "certs": [
                {
                    "cert_hash": hashlib.sha256(cert.dump()).digest(),
                    "issuer_serial": {
                        "issuer": [asn1_x509.GeneralName({"directory_name": cert.issuer})],
                        "serial_number": cert.serial_number,
                    },
                }
            ]
        }
    )


def _encoded(value: core.Asn1Value) -> bytes:
    der: bytes = value.dump()
    return der


_SIGNED_DATA = _encoded(cms.ContentType("signed_data"))
_V1 = _encoded(cms.CMSVersion("v1"))
_V3 = _encoded(cms.CMSVersion("v3"))
_CONTENT_TYPE = _encoded(cms.CMSAttributeType("content_type"))
_MESSAGE_DIGEST = _encoded(cms.CMSAttributeType("message_digest"))
_SIGNING_TIME = _encoded(cms.CMSAttributeType("signing_time"))
_SIGNING_CERTIFICATE_V2 = _encoded(cms.CMSAttributeType("signing_certificate_v2"))
_SIGNATURE_TIME_STAMP_TOKEN = _encoded(cms.CMSAttributeType("signature_time_stamp_token"))


@dataclass(frozen=True, slots=True)
class _SignerParts:
    """What stays the same in every signature of one signer, as DER.

    Keyed on the certificates alone (``_parts``): they decide every byte here, and a cache
    of public certificates keeps no key material alive.
    """

    sid: bytes  # SignerIdentifier: issuerAndSerialNumber of the leaf
    signing_certificate_v2: bytes  # the whole signed attribute (RFC 5035)
    certificates: bytes  # [0] IMPLICIT CertificateSet, as it sits in SignedData


@functools.lru_cache(maxsize=64)
def _parts(certificates: tuple[x509.Certificate, ...]) -> _SignerParts:
    ders = [c.public_bytes(Encoding.DER) for c in certificates]
    leaf = asn1_x509.Certificate.load(ders[0])
    # Built from the leaf as read, so the issuer name is embedded in the certificate's own
    # bytes (RFC 5652 §10.2.4 compares it with the certificate's issuer).
    sid = cms.SignerIdentifier(
        {"issuer_and_serial_number": {"issuer": leaf.issuer, "serial_number": leaf.serial_number}}
    )
    return _SignerParts(
        sid.dump(),
        der.attribute(_SIGNING_CERTIFICATE_V2, signing_certificate_v2(leaf).dump()),
        der.tagged(0, der.set_of_contents(*ders)),
    )


@functools.lru_cache(maxsize=8)
def _content_type(name: str) -> bytes:
    return _encoded(cms.ContentType(name))


@functools.lru_cache(maxsize=8)
def _content_type_attribute(content_type: str) -> bytes:
    return der.attribute(_CONTENT_TYPE, _content_type(content_type))


def signed_attributes(
    content_type: str, content_digest: bytes, signing_time: dt.datetime, scv2: bytes
) -> bytes:
    """The CAdES-BES signed attributes, DER tagged [0] as they sit in SignerInfo.

    ``scv2`` is the encoded signing-certificate-v2 attribute. RFC 5652 §11.3: the signing time
    is a UTCTime (years 1950 to 2049).
    """
    return der.tagged(
        0,
        der.set_of_contents(
            _content_type_attribute(content_type),
            der.attribute(_MESSAGE_DIGEST, core.OctetString(content_digest).dump()),
            der.attribute(_SIGNING_TIME, core.UTCTime(signing_time).dump()),
            scv2,
        ),
    )


def sign_digest(
    signer: Signer,
    content_digest: bytes,
    now: dt.datetime,
    *,
    digest: str = "sha256",
    content_type: str = "data",
    encapsulated: bytes | None = None,
    timestamp: TimestampFunction | None = None,
) -> bytes:
    """DER ContentInfo holding SignedData over content whose ``digest`` is ``content_digest``.

    Detached unless ``encapsulated`` is given (time-stamp tokens carry their TSTInfo inside).
    When ``timestamp`` is given, its token is added as id-aa-signatureTimeStampToken (CAdES-T).
    """
    parts = _parts(signer.certificates)
    attrs = signed_attributes(content_type, content_digest, now, parts.signing_certificate_v2)
    # RFC 5652 §5.4: the signature covers the DER of the attributes as an explicit SET OF.
    signature = keys.sign(signer.key, b"\x31" + attrs[1:], digest)
    digest_algorithm = keys.digest_algorithm_der(digest)
    signer_info = [
        _V1,
        parts.sid,
        digest_algorithm,
        attrs,
        keys.signature_algorithm_der(signer.key, digest),
        core.OctetString(signature).dump(),
    ]
    if timestamp is not None:
        # Through asn1crypto: a token with definite lengths goes in as the TSA made it; one
        # with indefinite lengths (BER) is written with definite ones, as a DER SignedData needs.
        token = cms.ContentInfo.load(timestamp(signature)).dump()
        signer_info.append(der.tagged(1, der.attribute(_SIGNATURE_TIME_STAMP_TOKEN, token)))
    encap = [_content_type(content_type)]
    if encapsulated is not None:
        encap.append(der.tagged(0, core.OctetString(encapsulated).dump()))
    signed_data = der.sequence(
        # RFC 5652 §5.1: version 3 when the content is other than id-data.
        _V3 if content_type != "data" else _V1,
        der.set_of(digest_algorithm),
        der.sequence(*encap),
        parts.certificates,
        der.set_of(der.sequence(*signer_info)),
    )
    return der.sequence(_SIGNED_DATA, der.tagged(0, signed_data))
