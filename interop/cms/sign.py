"""Make detached CMS SignedData with CAdES-BES signed attributes (INTEROP-PROFILE.md §3)."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from asn1crypto import algos, cms, core, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from interop.cms import keys
from interop.pki.signer import Signer

# Given the signature value, return an RFC 3161 TimeStampToken (DER ContentInfo) over it.
TimestampFunction = Callable[[bytes], bytes]


def cert_to_asn1(cert: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(cert.public_bytes(Encoding.DER))


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


@dataclass(frozen=True, slots=True)
class _SignerParts:
    """What stays the same in every signature of one signer, encoded once.

    asn1crypto re-encodes values built from Python objects on every dump (an issuer name takes
    milliseconds); loading them from DER gives values it dumps as they are.
    """

    sid: bytes
    signing_certificate_v2: bytes
    certificates: bytes


@functools.lru_cache(maxsize=64)
def _parts(certificates: tuple[x509.Certificate, ...]) -> _SignerParts:
    certs = [cert_to_asn1(c) for c in certificates]
    leaf = certs[0]
    sid = cms.SignerIdentifier(
        {"issuer_and_serial_number": {"issuer": leaf.issuer, "serial_number": leaf.serial_number}}
    )
    certificate_set = cms.CertificateSet(
        [cms.CertificateChoices({"certificate": c}) for c in certs]
    )
    return _SignerParts(
        sid.dump(force=True),
        signing_certificate_v2(leaf).dump(force=True),
        certificate_set.dump(force=True),
    )


@functools.lru_cache(maxsize=8)
def _digest_algorithm(digest: str) -> bytes:
    der: bytes = algos.DigestAlgorithm({"algorithm": digest}).dump()
    return der


def signed_attributes(
    content_type: str, content_digest: bytes, signing_time: dt.datetime, scv2: bytes
) -> cms.CMSAttributes:
    """The CAdES-BES signed attributes, tagged [0] as they sit in SignerInfo.

    Each attribute is encoded once and read back (asn1crypto re-encodes a value it built on
    every access, one it read never), and the set is built with its field's tag, so it is not
    copied to be re-tagged.
    """
    attributes = [
        {"type": "content_type", "values": [content_type]},
        {"type": "message_digest", "values": [content_digest]},
        {"type": "signing_time", "values": [cms.Time({"utc_time": signing_time})]},
        {"type": "signing_certificate_v2", "values": [tsp.SigningCertificateV2.load(scv2)]},
    ]
    return cms.CMSAttributes(
        [cms.CMSAttribute.load(cms.CMSAttribute(a).dump()) for a in attributes], implicit=0
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
    # Each part is encoded once and embedded as read back (see signed_attributes).
    parts = _parts(signer.certificates)
    attrs = signed_attributes(content_type, content_digest, now, parts.signing_certificate_v2)
    attrs_der = attrs.dump()
    # RFC 5652 §5.4: the signature covers the DER of the attributes as an explicit SET OF.
    signature = keys.sign(signer.key, b"\x31" + attrs_der[1:], digest)
    signer_info: dict[str, object] = {
        "version": "v1",
        "sid": cms.SignerIdentifier.load(parts.sid),
        "digest_algorithm": algos.DigestAlgorithm.load(_digest_algorithm(digest)),
        "signed_attrs": cms.CMSAttributes.load(attrs_der, implicit=0),
        "signature_algorithm": keys.signature_algorithm(signer.key, digest),
        "signature": signature,
    }
    if timestamp is not None:
        token = cms.ContentInfo.load(timestamp(signature))
        signer_info["unsigned_attrs"] = cms.CMSAttributes(
            [{"type": "signature_time_stamp_token", "values": [token]}], implicit=1
        )
    encap: dict[str, object] = {"content_type": content_type}
    if encapsulated is not None:
        encap["content"] = core.ParsableOctetString(encapsulated)
    signed_data = cms.SignedData(
        {
            "version": "v3" if content_type != "data" else "v1",
            "digest_algorithms": [algos.DigestAlgorithm.load(_digest_algorithm(digest))],
            "encap_content_info": encap,
            "certificates": cms.CertificateSet.load(parts.certificates),
            "signer_infos": [cms.SignerInfo.load(cms.SignerInfo(signer_info).dump())],
        }
    )
    der: bytes = cms.ContentInfo({"content_type": "signed_data", "content": signed_data}).dump()
    return der
