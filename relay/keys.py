"""Keys, certificates and CRLs from files: the production identity and trust of
``[identity]`` and ``[trust]``, and the development PKI's folder (layout in certs/README.md)
with the trust it implies.

This is the only module that reads private keys from files.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from interop.errors import ConfigurationError
from interop.limits import DEFAULT_LIMITS
from interop.pki.devpki import DevPki, tls_host
from interop.pki.signer import Signer
from interop.providers import BUILTIN_DIRECTORY, Provider
from interop.revocation import RevocationData
from interop.trust import ProviderTrust, TrustList
from interop.verifiers import Verifiers

MANIFEST = "pki.json"
DEV_WARNING = (
    "This PKI is for development and tests only: its private keys sit unencrypted on disk "
    "and its CAs are trusted by nobody else."
)


def write_pki(pki: DevPki, out: Path) -> list[Path]:
    """Write every file of ``pki`` under ``out``; keys readable by the owner only.

    The manifest goes last: a folder with a manifest holds a whole PKI.
    """
    written = []
    files = sorted(pki.files().items(), key=lambda item: (item[0] == MANIFEST, item[0]))
    for relative, content in files:
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(
            tmp,
            os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
            0o600 if relative.endswith(".key") else 0o644,
        )
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
        written.append(path)
    return written


def ensure_dev_pki(folder: Path, make: Callable[[], DevPki]) -> bool:
    """Make a development PKI in ``folder`` unless one is there; True when it was made.

    Nodes sharing a folder may start together (the README's walk-through does): an exclusive
    lock on ``folder/.lock`` lets one make it while the others wait and then read it.
    """
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (folder / MANIFEST).exists():
            return False
        write_pki(make(), folder)
        return True


def read_pki(folder: Path) -> DevPki:
    if not (folder / MANIFEST).is_file():
        raise ConfigurationError(f"{folder}: not a development PKI folder (no {MANIFEST})")
    files = {
        str(path.relative_to(folder)): path.read_bytes()
        for path in folder.rglob("*")
        if path.is_file() and not path.name.endswith(".tmp")
    }
    return DevPki.from_files(files)


def trust_from_pki(
    pki: DevPki,
    message_limits: Mapping[str, int] | None = None,
    crl_locations: Mapping[str, tuple[str, ...]] | None = None,
    own_crl_locations: tuple[str, ...] = (),
) -> TrustList:
    """Trust list of a dev PKI; ``message_limits`` (from [peers]) override the 25 MiB default,
    ``crl_locations`` (by provider, from [peers]) and ``own_crl_locations`` (of the user and
    TSA roots, from [trust]) say where CRLs are fetched (``relay.crls``)."""
    entries = []
    for provider in pki.providers.values():
        known = BUILTIN_DIRECTORY.get(provider.id)
        entries.append(
            ProviderTrust(
                provider=known if known else Provider(provider.id, provider.domain),
                process_cas=(pki.process_ca.certificate,),
                tls_cas=(pki.tls_ca.certificate,),
                # Only the gateway's own name: "localhost" is in every dev TLS certificate and
                # must not tell providers apart.
                tls_names=(tls_host(provider.id),),
                message_limit=(message_limits or {}).get(
                    provider.id, DEFAULT_LIMITS.cross_provider_message
                ),
                crl_locations=(crl_locations or {}).get(provider.id, ()),
            )
        )
    return TrustList.build(
        entries, [pki.user_ca.certificate], [pki.process_ca.certificate], own_crl_locations
    )


def verifiers_from_pki(pki: DevPki) -> Verifiers:
    return Verifiers(trust_from_pki(pki), RevocationData.of(pki.crls))


def load_signer(cert: Path, key: Path, chain: tuple[Path, ...] = ()) -> Signer:
    """A signing identity from PEM files (production configuration)."""
    try:
        certificate = x509.load_pem_x509_certificate(cert.read_bytes())
        private_key = serialization.load_pem_private_key(key.read_bytes(), None)
        intermediates = tuple(
            c for path in chain for c in x509.load_pem_x509_certificates(path.read_bytes())
        )
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"{cert} / {key}: cannot be loaded: {exc}") from exc
    if not isinstance(private_key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ConfigurationError(f"{key}: not an RSA or EC private key")
    return Signer(private_key, certificate, intermediates)


def load_certificates(paths: tuple[Path, ...]) -> tuple[x509.Certificate, ...]:
    try:
        return tuple(c for p in paths for c in x509.load_pem_x509_certificates(p.read_bytes()))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"certificates {', '.join(map(str, paths))}: {exc}") from exc


def load_crls(paths: tuple[Path, ...]) -> tuple[x509.CertificateRevocationList, ...]:
    crls = []
    for path in paths:
        data = path.read_bytes()
        try:
            crls.append(
                x509.load_pem_x509_crl(data)
                if b"-----BEGIN" in data
                else x509.load_der_x509_crl(data)
            )
        except ValueError as exc:
            raise ConfigurationError(f"{path}: not a CRL: {exc}") from exc
    return tuple(crls)
