"""The development PKI on disk (layout in certs/README.md), and the trust it implies.

This is the only module that reads private keys from files.
"""

from __future__ import annotations

import os
from pathlib import Path

from interop.errors import ConfigurationError
from interop.pki.devpki import DevPki
from interop.providers import BUILTIN_DIRECTORY, Provider
from interop.revocation import RevocationData
from interop.trust import ProviderTrust, TrustList
from interop.verifiers import Verifiers

MANIFEST = "pki.json"


def write_pki(pki: DevPki, out: Path) -> list[Path]:
    """Write every file of ``pki`` under ``out``; keys readable by the owner only."""
    written = []
    for relative, content in sorted(pki.files().items()):
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


def read_pki(folder: Path) -> DevPki:
    if not (folder / MANIFEST).is_file():
        raise ConfigurationError(f"{folder}: not a development PKI folder (no {MANIFEST})")
    files = {
        str(path.relative_to(folder)): path.read_bytes()
        for path in folder.rglob("*")
        if path.is_file() and not path.name.endswith(".tmp")
    }
    return DevPki.from_files(files)


def trust_from_pki(pki: DevPki) -> TrustList:
    entries = []
    for provider in pki.providers.values():
        known = BUILTIN_DIRECTORY.get(provider.id)
        entries.append(
            ProviderTrust(
                provider=known if known else Provider(provider.id, provider.domain),
                process_cas=(pki.process_ca.certificate,),
                tls_cas=(pki.tls_ca.certificate,),
                tls_names=provider.tls_names,
            )
        )
    return TrustList.build(entries, [pki.user_ca.certificate], [pki.process_ca.certificate])


def verifiers_from_pki(pki: DevPki) -> Verifiers:
    return Verifiers(trust_from_pki(pki), RevocationData.of(pki.crls))
