"""Signature primitives over RSA and ECDSA keys, named as asn1crypto names them."""

from __future__ import annotations

import functools

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
    algorithm: algos.SignedDigestAlgorithm,
) -> bool:
    """True when ``signature`` is valid over ``data``; False for any mismatch."""
    h = hash_algorithm(digest)
    kind = algorithm.signature_algo
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            if kind == "rsassa_pkcs1v15":
                public_key.verify(signature, data, padding.PKCS1v15(), h)
                return True
            if kind == "rsassa_pss":
                params = algorithm["parameters"]
                pss_hash = hash_algorithm(params["hash_algorithm"]["algorithm"].native)
                public_key.verify(
                    signature,
                    data,
                    padding.PSS(padding.MGF1(pss_hash), params["salt_length"].native),
                    pss_hash,
                )
                return True
            return False
        if isinstance(public_key, ec.EllipticCurvePublicKey) and kind == "ecdsa":
            public_key.verify(signature, data, ec.ECDSA(h))
            return True
    except (InvalidSignature, ValueError, KeyError):
        return False
    return False
