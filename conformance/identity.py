"""The PKI folder the suite plays its providers from (the layout ``kep-relay pki init``
writes, docs/conformance.md), and what it implies: TLS contexts, signers and trust.

Takes a folder path and provider ids; promises a ``Pki`` value with every file checked once
(``ConfigurationError`` naming the file otherwise). It reads no file of the target: the
target's certificates are judged against the CAs in this folder, which the target must use
too (or trust, for the suite's providers). A provider may be in the folder with its
certificates alone (no ``.key``), and so may users: the suite never signs as them, so only the
target may be such a provider (``main.check_setting`` says so).
"""

from __future__ import annotations

import datetime as dt
import json
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from interop.errors import ConfigurationError
from interop.limits import DEFAULT_LIMITS
from interop.pathval import ChainResult
from interop.pki.devpki import DevPki, DevProvider, DevUser, tls_host
from interop.pki.signer import Signer
from interop.providers import BUILTIN_DIRECTORY, Provider
from interop.revocation import RevocationData
from interop.trust import ProviderTrust, TrustList
from interop.verifiers import Verifiers

MANIFEST = "pki.json"


@dataclass(frozen=True, slots=True)
class Member:
    """A provider of the folder: its domain and certificates; ``keys`` (its process and TLS
    signers) only where the folder holds its private keys."""

    id: str
    domain: str
    process_certificate: x509.Certificate
    tls_certificate: x509.Certificate
    keys: DevProvider | None


@dataclass(frozen=True, slots=True)
class Pki:
    folder: Path
    dev: DevPki  # what the suite can sign with: the providers and users with their keys
    members: Mapping[str, Member]  # every provider of the manifest
    addresses: Mapping[str, tuple[str, ...]]  # provider → its valid users' addresses
    verifiers: Verifiers

    @classmethod
    def load(cls, folder: Path) -> Pki:
        if not (folder / MANIFEST).is_file():
            raise ConfigurationError(f"{folder}: not a PKI folder (no {MANIFEST}); see --pki")
        files = {
            str(path.relative_to(folder)): path.read_bytes()
            for path in folder.rglob("*")
            if path.is_file() and not path.name.endswith(".tmp")
        }
        try:
            manifest = json.loads(files[MANIFEST])
            providers: dict[str, dict[str, str]] = dict(manifest["providers"])
            users: list[dict[str, str]] = list(manifest["users"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigurationError(f"{folder / MANIFEST}: unreadable manifest: {exc}") from exc
        # Those whose keys the folder lacks are left out of what the suite signs with.
        signing = {
            pid: info
            for pid, info in providers.items()
            if all(f"providers/{pid}/{n}.key" in files for n in ("process", "tls"))
        }
        keyed = [u for u in users if f"users/{u.get('address')}.key" in files]
        files[MANIFEST] = json.dumps({**manifest, "providers": signing, "users": keyed}).encode()
        dev = DevPki.from_files(files)
        members = {
            pid: _member(folder, files, pid, info["domain"], dev.providers.get(pid))
            for pid, info in providers.items()
        }
        addresses = {
            pid: tuple(
                u["address"]
                for u in users
                if u.get("provider") == pid and u.get("state") == "valid"
            )
            for pid in providers
        }
        trust = _trust(members.values(), dev)
        return cls(folder, dev, members, addresses, Verifiers(trust, RevocationData.of(dev.crls)))

    def provider(self, provider_id: str) -> Member:
        try:
            return self.members[provider_id]
        except KeyError:
            raise ConfigurationError(
                f"{self.folder}: no certificates for provider {provider_id} "
                f"(it holds {', '.join(sorted(self.members))})"
            ) from None

    @property
    def keyless(self) -> tuple[str, ...]:
        """The providers of the folder without their private keys."""
        return tuple(p for p, m in self.members.items() if m.keys is None)

    def keys(self, provider_id: str) -> DevProvider:
        """The signers of a provider the suite plays; ``ConfigurationError`` naming the
        missing key file when the folder holds only its certificates."""
        keys = self.provider(provider_id).keys
        if keys is None:
            raise ConfigurationError(
                f"{self.folder}: providers/{provider_id}/process.key and tls.key are needed: "
                f"the suite plays {provider_id} (only the target's keys may be left out)"
            )
        return keys

    def directory_entry(self, provider_id: str) -> Provider:
        known = BUILTIN_DIRECTORY.get(provider_id)
        return known if known else Provider(provider_id, self.provider(provider_id).domain)

    def user(self, provider_id: str, state: str = "valid", index: int = 0) -> DevUser:
        users = self.dev.users_of(provider_id, state)
        if len(users) <= index:
            raise ConfigurationError(
                f"{self.folder}: provider {provider_id} has no {state} user number {index + 1}"
            )
        return users[index]

    def process(self, provider_id: str) -> Signer:
        return self.keys(provider_id).process

    def tsa(self) -> Signer:
        return self.dev.tsa

    def pem(self, relative: str) -> Path:
        path = self.folder / relative
        if not path.is_file():
            raise ConfigurationError(f"{path}: missing from the PKI folder")
        return path

    def client_tls(self, provider_id: str) -> ssl.SSLContext:
        """Mutual TLS as ``provider_id``'s gateway (§2); the server's name is checked by
        ``check_peer``, against the trust list, not against the address dialled."""
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(self.pem("ca/tls-ca.crt"))
        )
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.check_hostname = False
        self.keys(provider_id)
        context.load_cert_chain(
            str(self.pem(f"providers/{provider_id}/tls.crt")),
            str(self.pem(f"providers/{provider_id}/tls.key")),
        )
        return context

    def anonymous_tls(self) -> ssl.SSLContext:
        """TLS with no client certificate (what §2 says must be refused)."""
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(self.pem("ca/tls-ca.crt"))
        )
        context.check_hostname = False
        return context

    def server_tls(self, provider_id: str) -> ssl.SSLContext:
        """The suite's listener: a client certificate is required (§2)."""
        context = ssl.create_default_context(
            ssl.Purpose.CLIENT_AUTH, cafile=str(self.pem("ca/tls-ca.crt"))
        )
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.verify_mode = ssl.CERT_REQUIRED
        self.keys(provider_id)
        context.load_cert_chain(
            str(self.pem(f"providers/{provider_id}/tls.crt")),
            str(self.pem(f"providers/{provider_id}/tls.key")),
        )
        return context

    def check_peer(
        self, provider_id: str, der: bytes | None, now: dt.datetime
    ) -> ChainResult | str:
        """Does the TLS certificate ``der`` map to ``provider_id`` (§1)? The chain result, or
        why it could not be judged."""
        if der is None:
            return "no TLS certificate"
        try:
            certificate = x509.load_der_x509_certificate(der)
        except ValueError as exc:
            return f"unreadable TLS certificate: {exc}"
        entry = self.verifiers.trust[provider_id]
        return self.verifiers.tls(provider_id).validate(certificate, [], now, entry.tls_names)


def _member(
    folder: Path, files: Mapping[str, bytes], pid: str, domain: str, keys: DevProvider | None
) -> Member:
    if keys is not None:
        return Member(pid, domain, keys.process.certificate, keys.tls.certificate, keys)
    certificates = []
    for name in ("process", "tls"):
        relative = f"providers/{pid}/{name}.crt"
        if relative not in files:
            raise ConfigurationError(f"{folder / relative}: missing from the PKI folder")
        try:
            certificates.append(x509.load_pem_x509_certificate(files[relative]))
        except ValueError as exc:
            raise ConfigurationError(f"{folder / relative}: unreadable: {exc}") from exc
    return Member(pid, domain, certificates[0], certificates[1], None)


def _trust(members: Iterable[Member], dev: DevPki) -> TrustList:
    """What a gateway of this PKI trusts: each provider's process and TLS CA, its gateway
    name, the user and TSA roots (the same trust ``kep-relay`` derives from such a folder)."""
    entries = []
    for provider in members:
        known = BUILTIN_DIRECTORY.get(provider.id)
        entries.append(
            ProviderTrust(
                provider=known if known else Provider(provider.id, provider.domain),
                process_cas=(dev.process_ca.certificate,),
                tls_cas=(dev.tls_ca.certificate,),
                tls_names=(tls_host(provider.id),),
                message_limit=DEFAULT_LIMITS.cross_provider_message,
            )
        )
    return TrustList.build(entries, [dev.user_ca.certificate], [dev.process_ca.certificate])
