"""What ``kep-relay config check`` finds beyond parsing, offline and without creating anything.

Takes a configuration that parsed (``relay.config_file.load``) and the time to judge certificates
at; gives a list of ``Finding``: problems that would stop the node or make it refuse work, and
warnings (a certificate expiring within ``EXPIRY_WARNING``, a CRL past its nextUpdate, a port
that needs a privilege) that change nothing in the exit code. It looks at:

* the files named: identity certificates and keys, trust and peer CA files, CRLs: they exist
  and can be read, certificates parse and are in date, each key belongs to its certificate
  (through ``relay.keys``, the one module that reads private keys), and the trust list they
  make builds;
* the development PKI folder, when it exists: the node's provider and every peer are in it;
* the data folder, the SQLite store's file and the development PKI folder: writable, or
  creatable (the nearest folder that exists is looked at; nothing is made);
* the store URL's form (a PostgreSQL URL is parsed, never connected to);
* the listeners' ports (that they are distinct is refused when the file is read).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from cryptography import x509

from interop.errors import ConfigurationError
from relay.config import NodeConfig
from relay.crypto import configured_trust
from relay.keys import MANIFEST, load_signer, read_pki
from relay.startup import folder_problem, listeners
from relay.store.database import redact, sqlite_path

# A certificate expiring sooner than this is warned of: time to renew it and roll it out.
EXPIRY_WARNING = dt.timedelta(days=30)
# Ports below this need root or CAP_NET_BIND_SERVICE (Linux's ip_unprivileged_port_start).
PRIVILEGED_PORTS = 1024


@dataclass(frozen=True, slots=True)
class Finding:
    where: str  # the key, like "identity.process_cert"
    text: str
    warning: bool = False

    def line(self, source: str) -> str:
        """``FILE: section.key: what`` (``warning: what`` for a warning)."""
        return f"{source}: {self.where}: {'warning: ' if self.warning else ''}{self.text}"


@dataclass
class _Checker:
    config: NodeConfig
    now: dt.datetime
    findings: list[Finding] = field(default_factory=list)

    def problem(self, where: str, text: str) -> None:
        self.findings.append(Finding(where, text))

    def warn(self, where: str, text: str) -> None:
        self.findings.append(Finding(where, text, warning=True))

    def read(self, where: str, path: Path) -> bytes | None:
        if not path.exists():
            self.problem(where, f"{path}: no such file")
        elif path.is_dir():
            self.problem(where, f"{path}: a folder, not a file")
        else:
            try:
                return path.read_bytes()
            except OSError as exc:
                self.problem(where, f"{path}: cannot be read: {exc.strerror or exc}")
        return None

    def certificates(self, where: str, path: Path) -> list[x509.Certificate] | None:
        data = self.read(where, path)
        if data is None:
            return None
        try:
            certificates = x509.load_pem_x509_certificates(data)
        except ValueError as exc:
            self.problem(where, f"{path}: not a PEM certificate: {exc}")
            return None
        for certificate in certificates:
            self.in_date(where, path, certificate)
        return certificates

    def in_date(self, where: str, path: Path, certificate: x509.Certificate) -> None:
        subject = certificate.subject.rfc4514_string()
        until = certificate.not_valid_after_utc
        if self.now < certificate.not_valid_before_utc:
            since = certificate.not_valid_before_utc
            self.problem(where, f"{path}: {subject} is not valid before {since:%Y-%m-%d %H:%M} UTC")
        elif until < self.now:
            self.problem(where, f"{path}: {subject} expired on {until:%Y-%m-%d %H:%M} UTC")
        elif until - self.now < EXPIRY_WARNING:
            days = (until - self.now).days
            self.warn(
                where,
                f"{path}: {subject} expires on {until:%Y-%m-%d %H:%M} UTC, in {days} days;"
                " renew it",
            )

    def key_file(self, where: str, path: Path) -> bool:
        # Only looked at here: relay.keys reads it, when its certificate is checked against it.
        if not path.is_file():
            self.problem(where, f"{path}: no such file")
            return False
        if not os.access(path, os.R_OK):
            self.problem(where, f"{path}: cannot be read")
            return False
        return True

    def pair(self, cert_key: str, cert: Path, key_key: str, key: Path) -> None:
        """A certificate and its key: both there, the certificate in date, the key its own."""
        certificates = self.certificates(f"identity.{cert_key}", cert)
        if self.key_file(f"identity.{key_key}", key) and certificates:
            try:
                load_signer(cert, key)
            except ConfigurationError as exc:
                self.problem(f"identity.{key_key}", exc.detail)

    def identity(self) -> None:
        identity = self.config.identity
        if identity is None or self.config.dev_pki is not None:
            return
        self.pair("process_cert", identity.process_cert, "process_key", identity.process_key)
        self.pair("tls_cert", identity.tls_cert, "tls_key", identity.tls_key)
        if identity.tsa_cert and identity.tsa_key:
            self.pair("tsa_cert", identity.tsa_cert, "tsa_key", identity.tsa_key)

    def trust(self) -> None:
        if self.config.dev_pki is not None:
            return  # trust comes from the development PKI (dev_pki below)
        files_fine = True
        named = [("trust.user_cas", p) for p in self.config.user_cas]
        named += [("trust.tsa_cas", p) for p in self.config.tsa_cas]
        for peer in self.config.peers:
            named += [(f"peers.{peer.id}.process_cas", p) for p in peer.process_cas]
            named += [(f"peers.{peer.id}.tls_cas", p) for p in peer.tls_cas]
        for where, path in named:
            files_fine &= self.certificates(where, path) is not None
        for path in self.config.crls:
            files_fine &= self.crl(path)
        if files_fine:
            try:
                configured_trust(self.config)  # the trust list the node builds at start
            except ConfigurationError as exc:
                where, _, text = exc.detail.removeprefix(f"{self.config.source}: ").partition(": ")
                self.problem(where, text)

    def crl(self, path: Path) -> bool:
        data = self.read("trust.crls", path)
        if data is None:
            return False
        try:
            crl = (
                x509.load_pem_x509_crl(data)
                if b"-----BEGIN" in data
                else x509.load_der_x509_crl(data)
            )
        except ValueError as exc:
            self.problem("trust.crls", f"{path}: not a CRL: {exc}")
            return False
        next_update = crl.next_update_utc
        if next_update is not None and next_update < self.now:
            refused = (
                "; with trust.require_crl the signatures under its CA are refused until a"
                " fresh one is there"
                if self.config.require_crl
                else ""
            )
            self.warn(
                "trust.crls",
                f"{path}: past its nextUpdate ({next_update:%Y-%m-%d %H:%M} UTC){refused}",
            )
        return True

    def dev_pki(self) -> None:
        folder = self.config.dev_pki
        if folder is None:
            return
        problem = folder_problem(folder)
        if problem is not None:
            self.problem("node.dev_pki", problem)
            return
        if not (folder / MANIFEST).is_file():
            return  # made on first start
        try:
            pki = read_pki(folder)
        except (ConfigurationError, OSError, ValueError) as exc:
            text = exc.detail if isinstance(exc, ConfigurationError) else str(exc)
            self.problem("node.dev_pki", f"{folder}: not a readable development PKI: {text}")
            return
        own = pki.providers.get(self.config.provider.id)
        if own is None:
            self.problem(
                "node.dev_pki",
                f"{folder} has no certificates for {self.config.provider.id}; use a PKI made"
                " for it (kep-relay pki init --providers …)",
            )
        else:
            for name, certificate in (("process", own.process), ("tls", own.tls)):
                self.in_date(
                    "node.dev_pki",
                    folder / "providers" / own.id / f"{name}.crt",
                    certificate.certificate,
                )
        for peer in self.config.peers:
            if peer.id not in pki.providers:
                self.problem(
                    f"peers.{peer.id}",
                    f"the development PKI in {folder} has no certificates for {peer.id}:"
                    " its messages would not verify",
                )

    def folders(self) -> None:
        problem = folder_problem(self.config.data_dir)
        if problem is not None:
            self.problem("node.data_dir", problem)
        url = self.config.store_url
        if url.startswith("sqlite:///"):
            path = sqlite_path(url)
            if path.is_dir():
                self.problem("store.url", f"{path} is a folder, not a SQLite file")
            elif path.exists() and not os.access(path, os.R_OK | os.W_OK):
                self.problem("store.url", f"{path} cannot be written")
            elif path.parent.absolute() != self.config.data_dir.absolute():
                problem = folder_problem(path.parent)
                if problem is not None:
                    self.problem("store.url", problem)
        else:
            self.postgresql(url)

    def postgresql(self, url: str) -> None:
        try:
            parts = psycopg.conninfo.conninfo_to_dict(url)
        except psycopg.Error as exc:
            self.problem("store.url", f"{redact(url)} is not a PostgreSQL URL: {exc}")
            return
        for port in str(parts.get("port") or "").split(","):
            if port and not (port.isdigit() and 0 < int(port) < 65536):
                self.problem("store.url", f"{redact(url)}: {port!r} is not a port number")

    def ports(self) -> None:
        if os.geteuid() == 0:
            return
        for key, listener in listeners(self.config):
            if listener.port < PRIVILEGED_PORTS:
                self.warn(
                    key,
                    f"port {listener.port} needs root or CAP_NET_BIND_SERVICE (this user has"
                    " neither; a service unit may give the capability)",
                )


def check(config: NodeConfig, now: dt.datetime) -> list[Finding]:
    """Every finding about ``config`` that can be made offline, problems and warnings."""
    checker = _Checker(config, now)
    checker.identity()
    checker.trust()
    checker.dev_pki()
    checker.folders()
    checker.ports()
    return checker.findings
