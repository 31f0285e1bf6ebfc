"""A signing identity: private key, its certificate and the chain to hand out with it."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from interop.errors import ConfigurationError

SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

# INTEROP-PROFILE.md §1: RSA 2048+ and ECDSA P-256 must be accepted; we sign with nothing weaker.
MIN_RSA_BITS = 2048


@dataclass(frozen=True, slots=True)
class Signer:
    key: SigningKey
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()  # intermediates (and optionally the root), leaf first

    def __post_init__(self) -> None:
        if not isinstance(self.key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise ConfigurationError("signing keys must be RSA or ECDSA")
        if isinstance(self.key, rsa.RSAPrivateKey) and self.key.key_size < MIN_RSA_BITS:
            raise ConfigurationError(f"RSA signing keys must have at least {MIN_RSA_BITS} bits")
        if self.key.public_key() != self.certificate.public_key():
            raise ConfigurationError(
                "the private key does not belong to certificate "
                f"{self.certificate.subject.rfc4514_string()}"
            )

    @property
    def certificates(self) -> tuple[x509.Certificate, ...]:
        """Leaf first, then the chain, as included in a signature."""
        return (self.certificate, *self.chain)
