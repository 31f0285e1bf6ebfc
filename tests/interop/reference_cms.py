"""SignedData and TimeStampToken built the plain asn1crypto way, from Python values, no cache.

``interop.cms.sign`` and ``interop.cms.timestamp`` put their output together from DER pieces
encoded once per signer; these builders say what that output must be. With an RSA key
(PKCS #1 v1.5 signatures are deterministic) the two must agree byte for byte; with ECDSA, once
the reference is given the same signature value.
"""

from __future__ import annotations

import datetime as dt
import hashlib

from asn1crypto import cms, core, tsp
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding

from interop.cms import keys
from interop.cms.timestamp import DEV_TSA_POLICY
from interop.pki.signer import Signer


def signed_data(
    signer: Signer,
    content_digest: bytes,
    now: dt.datetime,
    *,
    digest: str = "sha256",
    content_type: str = "data",
    encapsulated: bytes | None = None,
    token: bytes | None = None,
    signature: bytes | None = None,
) -> bytes:
    """``signature``: the value to embed instead of signing (ECDSA values differ each time)."""
    certs = [asn1_x509.Certificate.load(c.public_bytes(Encoding.DER)) for c in signer.certificates]
    leaf = certs[0]
    scv2 = tsp.SigningCertificateV2(
        {
            "certs": [
                {
                    "cert_hash": hashlib.sha256(leaf.dump()).digest(),
                    "issuer_serial": {
                        "issuer": [asn1_x509.GeneralName({"directory_name": leaf.issuer})],
                        "serial_number": leaf.serial_number,
                    },
                }
            ]
        }
    )
    attrs = cms.CMSAttributes(
        [
            {"type": "content_type", "values": [content_type]},
            {"type": "message_digest", "values": [content_digest]},
            {"type": "signing_time", "values": [cms.Time({"utc_time": now})]},
            {"type": "signing_certificate_v2", "values": [scv2]},
        ]
    )
    if signature is None:
        signature = keys.sign(signer.key, attrs.dump(), digest)
    kind = "rsa" if isinstance(signer.key, rsa.RSAPrivateKey) else "ecdsa"
    signer_info: dict[str, object] = {
        "version": "v1",
        "sid": {
            "issuer_and_serial_number": {
                "issuer": leaf.issuer,
                "serial_number": leaf.serial_number,
            }
        },
        "digest_algorithm": {"algorithm": digest},
        "signed_attrs": attrs,
        "signature_algorithm": {"algorithm": f"{digest}_{kind}"},
        "signature": signature,
    }
    if token is not None:
        signer_info["unsigned_attrs"] = [
            {"type": "signature_time_stamp_token", "values": [cms.ContentInfo.load(token)]}
        ]
    encap: dict[str, object] = {"content_type": content_type}
    if encapsulated is not None:
        encap["content"] = core.ParsableOctetString(encapsulated)
    info = cms.ContentInfo(
        {
            "content_type": "signed_data",
            "content": {
                "version": "v3" if content_type != "data" else "v1",
                "digest_algorithms": [{"algorithm": digest}],
                "encap_content_info": encap,
                "certificates": [cms.CertificateChoices({"certificate": c}) for c in certs],
                "signer_infos": [signer_info],
            },
        }
    )
    der: bytes = info.dump()
    return der


def time_stamp_token(
    tsa: Signer,
    digest: str,
    hashed: bytes,
    now: dt.datetime,
    serial: int,
    *,
    nonce: int | None = None,
    policy: str = DEV_TSA_POLICY,
    signature: bytes | None = None,
) -> bytes:
    fields: dict[str, object] = {
        "version": "v1",
        "policy": policy,
        "message_imprint": {"hash_algorithm": {"algorithm": digest}, "hashed_message": hashed},
        "serial_number": serial,
        "gen_time": now.astimezone(dt.UTC),
    }
    if nonce is not None:
        fields["nonce"] = nonce
    tst_info = tsp.TSTInfo(fields).dump()
    return signed_data(
        tsa,
        hashlib.sha256(tst_info).digest(),
        now,
        content_type="tst_info",
        encapsulated=tst_info,
        signature=signature,
    )
