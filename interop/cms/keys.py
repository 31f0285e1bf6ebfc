"""Signature primitives over RSA and ECDSA keys, and the algorithm identifiers that name them.

Algorithms are named as asn1crypto names them ("sha256", "sha256_ecdsa", "rsassa_pss"). An
AlgorithmIdentifier received is read by asn1crypto once per distinct encoding: a gateway sees
the same few again and again, and its parameters (an OPTIONAL ANY, RSASSA-PSS's a SEQUENCE)
are what ``interop.cms.structures`` leaves as bytes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from asn1crypto import algos
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from interop.pki.signer import SigningKey

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


def hash_algorithm(name: str) -> hashes.HashAlgorithm:
    return _HASHES[name]()


def signature_algorithm_der(key: SigningKey, digest: str) -> bytes:
    """DER AlgorithmIdentifier of the signature ``key`` makes over a ``digest`` digest."""
    # RFC 5754 §3.2 / §3.3: sha256WithRSAEncryption and ecdsa-with-SHA256 identifiers.
    kind = "rsa" if isinstance(key, rsa.RSAPrivateKey) else "ecdsa"
    return _signature_algorithm_der(f"{digest}_{kind}")


# Encoded once each: asn1crypto re-encodes a value it built each time it is embedded.
@functools.lru_cache(maxsize=16)
def _signature_algorithm_der(name: str) -> bytes:
    der: bytes = algos.SignedDigestAlgorithm({"algorithm": name}).dump()
    return der


@functools.lru_cache(maxsize=8)
def digest_algorithm_der(digest: str) -> bytes:
    """DER AlgorithmIdentifier of a digest, as asn1crypto encodes it (with NULL parameters)."""
    der: bytes = algos.DigestAlgorithm({"algorithm": digest}).dump()
    return der


@dataclass(frozen=True, slots=True)
class SignatureAlgorithm:
    """What a received signature AlgorithmIdentifier asks of the verifier."""

    kind: str  # asn1crypto's signature_algo: "rsassa_pkcs1v15", "rsassa_pss", "ecdsa", ...
    pss_digest: str | None = None  # RSASSA-PSS: the hash of the padding and its MGF1
    pss_salt: int = 0


@functools.lru_cache(maxsize=64)
def digest_name(der: bytes) -> str:
    """The name of the digest a DER AlgorithmIdentifier names ("sha256"; its OID if unknown).

    Raises ``ValueError`` (and what else asn1crypto raises) for one it cannot read.
    """
    name: str = algos.DigestAlgorithm.load(der, strict=True)["algorithm"].native
    return name


@functools.lru_cache(maxsize=64)
def signature_algorithm(der: bytes) -> SignatureAlgorithm:
    """What the DER signature AlgorithmIdentifier ``der`` names; raises for one unreadable."""
    algorithm = algos.SignedDigestAlgorithm.load(der, strict=True)
    kind: str = algorithm.signature_algo
    if kind != "rsassa_pss":
        return SignatureAlgorithm(kind)
    params = algorithm["parameters"]
    return SignatureAlgorithm(
        kind, params["hash_algorithm"]["algorithm"].native, params["salt_length"].native
    )


def sign(key: SigningKey, data: bytes, digest: str) -> bytes:
    h = hash_algorithm(digest)
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), h)
    return key.sign(data, ec.ECDSA(h))


def verify(
    public_key: object,
    signature: bytes,
    data: bytes,
    digest: str,
    algorithm: SignatureAlgorithm,
) -> bool:
    """True when ``signature`` is valid over ``data``; False for any mismatch."""
    h = hash_algorithm(digest)
    kind = algorithm.kind
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            if kind == "rsassa_pkcs1v15":
                public_key.verify(signature, data, padding.PKCS1v15(), h)
                return True
            if kind == "rsassa_pss" and algorithm.pss_digest is not None:
                pss_hash = hash_algorithm(algorithm.pss_digest)
                pss = padding.PSS(padding.MGF1(pss_hash), algorithm.pss_salt)
                public_key.verify(signature, data, pss, pss_hash)
                return True
            return False
        if isinstance(public_key, ec.EllipticCurvePublicKey) and kind == "ecdsa":
            public_key.verify(signature, data, ec.ECDSA(h))
            return True
    except (InvalidSignature, ValueError, KeyError):
        return False
    return False
