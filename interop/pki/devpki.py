"""The development PKI: every certificate a test or a dev gateway needs, made in memory.

``generate()`` returns a ``DevPki`` value; ``DevPki.files()`` gives the documented layout
(``certs/README.md``) as relative path → bytes, and ``DevPki.from_files()`` reads it back.
Writing and reading the folder is the caller's business (``relay.pkidir``). Private keys are
generated here and never committed. Everything here is for development and tests only.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from interop.errors import ConfigurationError
from interop.identity import certificate_number, make_number
from interop.pki.signer import Signer, SigningKey
from interop.providers import BUILTIN_PROVIDERS, KEP_ROOT_DOMAIN

ALGORITHMS = ("ec", "rsa")
# Local parts of the dev users each provider gets, and the state of each one's certificate.
DEV_USERS: tuple[tuple[str, str], ...] = (
    ("ali.yilmaz", "valid"),
    ("ayse.demir", "valid"),
    ("0123456789012345", "valid"),  # a legal person by MERSİS number
    ("suresi.dolmus", "expired"),
    ("iptal.edilmis", "revoked"),
)
CA_LIFETIME = dt.timedelta(days=3650)
LEAF_LIFETIME = dt.timedelta(days=730)
# A TSA's certificate outlives the certificates whose signatures it stamps (ETSI EN 319 421:
# a TSU's key is used for a shorter time than its certificate lasts), so evidence verifies
# after its signer's certificate expires (profile §1 "Signing time").
TSA_LIFETIME = dt.timedelta(days=6 * 365)
# A dev CRL lasts long enough not to fail closed during development; `pki init` makes new ones.
CRL_LIFETIME = dt.timedelta(days=365)
BACKDATE = dt.timedelta(hours=1)


def tls_host(provider_id: str) -> str:
    """The dev gateway host name of a provider, carried in its TLS certificate."""
    return f"gw.{provider_id}.{KEP_ROOT_DOMAIN}"


@dataclass(frozen=True, slots=True)
class DevUser:
    address: str
    provider_id: str
    state: str
    signer: Signer
    # The TC Kimlik No in the certificate's subject serialNumber (profile §1, "Account
    # holders"): the holder of a person's account, the operator of a legal person's.
    number: str = ""

    @property
    def legal_person(self) -> bool:
        """A MERSİS address: the user is an authorised operator, not the holder."""
        return self.address.split("@", 1)[0].isdigit()


def dev_number(provider_id: str, user_index: int, provider_index: int) -> str:
    """A valid TC Kimlik No for a dev user: hsNN's k-th user gets 9NN0000k plus check digits
    (providers beyond hs01-hs99 count from 100 by their place in the PKI)."""
    digits = provider_id[2:]
    provider_number = (
        int(digits) if provider_id[:2] == "hs" and digits.isdigit() else 100 + provider_index
    )
    return str(make_number(900_000_000 + provider_number * 1000 + user_index))


@dataclass(frozen=True, slots=True)
class DevCa:
    name: str
    signer: Signer
    crl: x509.CertificateRevocationList

    @property
    def certificate(self) -> x509.Certificate:
        return self.signer.certificate


@dataclass(frozen=True, slots=True)
class DevProvider:
    id: str
    domain: str
    process: Signer
    tls: Signer

    @property
    def tls_names(self) -> tuple[str, ...]:
        return (tls_host(self.id), "localhost")


@dataclass(frozen=True, slots=True)
class DevPki:
    algorithm: str
    created: dt.datetime
    process_ca: DevCa
    tls_ca: DevCa
    user_ca: DevCa
    tsa: Signer
    providers: Mapping[str, DevProvider]
    users: tuple[DevUser, ...] = field(default=())

    def user(self, address: str) -> DevUser:
        for user in self.users:
            if user.address == address:
                return user
        raise KeyError(f"no dev user {address!r}")

    def users_of(self, provider_id: str, state: str = "valid") -> list[DevUser]:
        return [u for u in self.users if u.provider_id == provider_id and u.state == state]

    @property
    def crls(self) -> tuple[x509.CertificateRevocationList, ...]:
        return (self.process_ca.crl, self.tls_ca.crl, self.user_ca.crl)

    def files(self) -> dict[str, bytes]:
        """The folder layout of ``certs/README.md``: relative path → content."""
        out: dict[str, bytes] = {}
        for ca in (self.process_ca, self.tls_ca, self.user_ca):
            out[f"ca/{ca.name}.crt"] = _pem_cert(ca.certificate)
            out[f"ca/{ca.name}.key"] = _pem_key(ca.signer.key)
            out[f"ca/{ca.name}.crl"] = ca.crl.public_bytes(serialization.Encoding.PEM)
        out["tsa/tsa.crt"] = _pem_cert(self.tsa.certificate)
        out["tsa/tsa.key"] = _pem_key(self.tsa.key)
        for p in self.providers.values():
            for kind, signer in (("process", p.process), ("tls", p.tls)):
                out[f"providers/{p.id}/{kind}.crt"] = _pem_cert(signer.certificate)
                out[f"providers/{p.id}/{kind}.key"] = _pem_key(signer.key)
        for u in self.users:
            out[f"users/{u.address}.crt"] = _pem_cert(u.signer.certificate)
            out[f"users/{u.address}.key"] = _pem_key(u.signer.key)
        manifest = {
            "kind": "kep-relay development PKI (not for production)",
            "algorithm": self.algorithm,
            "created": self.created.isoformat(),
            "providers": {
                p.id: {"domain": p.domain, "tls_names": list(p.tls_names)}
                for p in self.providers.values()
            },
            "users": [
                {
                    "address": u.address,
                    "provider": u.provider_id,
                    "state": u.state,
                    "number": u.number,
                }
                for u in self.users
            ],
        }
        out["pki.json"] = (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode()
        return out

    @classmethod
    def from_files(cls, files: Mapping[str, bytes]) -> DevPki:
        """Rebuild from ``files()`` output; raises ``ConfigurationError`` naming what is wrong."""
        try:
            manifest = json.loads(files["pki.json"])

            def signer(stem: str, chain: tuple[x509.Certificate, ...] = ()) -> Signer:
                cert = x509.load_pem_x509_certificate(files[f"{stem}.crt"])
                key = serialization.load_pem_private_key(files[f"{stem}.key"], None)
                if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
                    raise ConfigurationError(f"{stem}.key: not an RSA or EC key")
                return Signer(key, cert, chain)

            def ca(name: str) -> DevCa:
                crl = x509.load_pem_x509_crl(files[f"ca/{name}.crl"])
                return DevCa(name, signer(f"ca/{name}"), crl)

            process_ca, tls_ca, user_ca = ca("process-ca"), ca("tls-ca"), ca("user-ca")
            providers = {
                pid: DevProvider(
                    pid,
                    info["domain"],
                    signer(f"providers/{pid}/process", (process_ca.certificate,)),
                    signer(f"providers/{pid}/tls", (tls_ca.certificate,)),
                )
                for pid, info in manifest["providers"].items()
            }
            users = tuple(
                _dev_user(u, signer(f"users/{u['address']}", (user_ca.certificate,)))
                for u in manifest["users"]
            )
            return cls(
                manifest["algorithm"],
                dt.datetime.fromisoformat(manifest["created"]),
                process_ca,
                tls_ca,
                user_ca,
                signer("tsa/tsa", (process_ca.certificate,)),
                providers,
                users,
            )
        except KeyError as exc:
            raise ConfigurationError(f"development PKI: missing file or field {exc}") from exc
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(f"development PKI: unreadable content: {exc}") from exc


def _dev_user(entry: Mapping[str, str], signer: Signer) -> DevUser:
    # Folders made before numbers were recorded: the certificate says (or names none).
    number = entry.get("number") or str(certificate_number(signer.certificate) or "")
    return DevUser(entry["address"], entry["provider"], entry["state"], signer, number)


def generate(
    now: dt.datetime,
    providers: Iterable[str] = tuple(BUILTIN_PROVIDERS),
    algorithm: str = "ec",
) -> DevPki:
    """Make a complete development PKI valid from ``now`` (UTC)."""
    if algorithm not in ALGORITHMS:
        raise ConfigurationError(f"algorithm must be one of {', '.join(ALGORITHMS)}")
    ids = list(dict.fromkeys(providers))
    if not ids:
        raise ConfigurationError("at least one provider is needed")
    maker = _Maker(now, algorithm)
    process_ca = maker.ca("process-ca", "KEP Dev Process CA")
    tls_ca = maker.ca("tls-ca", "KEP Dev TLS CA")
    user_ca_signer = maker.root("KEP Dev ESHS (e-imza) CA")
    tsa = maker.leaf(
        process_ca.signer,
        "KEP Dev TSA",
        eku=[ExtendedKeyUsageOID.TIME_STAMPING],
        eku_critical=True,  # RFC 3161 §2.3: the TSA certificate's EKU must be critical
        lifetime=TSA_LIFETIME,
    )
    dev_providers: dict[str, DevProvider] = {}
    users: list[DevUser] = []
    revoked: list[x509.Certificate] = []
    for provider_index, pid in enumerate(ids):
        domain = f"{pid}.{KEP_ROOT_DOMAIN}"
        process = maker.leaf(
            process_ca.signer,
            f"{pid} KEP işlem sertifikası (dev)",
            eku=[ExtendedKeyUsageOID.EMAIL_PROTECTION],
            san=[x509.DNSName(domain)],
        )
        tls = maker.leaf(
            tls_ca.signer,
            tls_host(pid),
            eku=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
            san=[
                x509.DNSName(tls_host(pid)),
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            ],
            for_tls=True,
        )
        dev_providers[pid] = DevProvider(pid, domain, process, tls)
        for user_index, (local, state) in enumerate(DEV_USERS, start=1):
            address = f"{local}@{domain}"
            number = dev_number(pid, user_index, provider_index)
            user_signer = maker.leaf(
                user_ca_signer,
                address,
                eku=[ExtendedKeyUsageOID.EMAIL_PROTECTION],
                san=[x509.RFC822Name(address)],
                expired=state == "expired",
                serial_number=number,
            )
            users.append(DevUser(address, pid, state, user_signer, number))
            if state == "revoked":
                revoked.append(user_signer.certificate)
    user_ca = DevCa("user-ca", user_ca_signer, maker.crl(user_ca_signer, revoked))
    return DevPki(algorithm, now, process_ca, tls_ca, user_ca, tsa, dev_providers, tuple(users))


def renewed(pki: DevPki, now: dt.datetime, provider_id: str) -> tuple[Signer, Signer]:
    """A new process certificate for ``provider_id`` and a new TSA certificate, valid from
    ``now``, from the PKI's CAs: what a provider does before its certificates expire (tests of
    long-term verification use it to live through the years)."""
    maker = _Maker(now, pki.algorithm)
    domain = pki.providers[provider_id].domain
    process = maker.leaf(
        pki.process_ca.signer,
        f"{provider_id} KEP işlem sertifikası (dev, renewed)",
        eku=[ExtendedKeyUsageOID.EMAIL_PROTECTION],
        san=[x509.DNSName(domain)],
    )
    tsa = maker.leaf(
        pki.process_ca.signer,
        "KEP Dev TSA (renewed)",
        eku=[ExtendedKeyUsageOID.TIME_STAMPING],
        eku_critical=True,
        lifetime=TSA_LIFETIME,
    )
    return process, tsa


class _Maker:
    def __init__(self, now: dt.datetime, algorithm: str) -> None:
        if now.tzinfo is None:
            raise ConfigurationError("now must be timezone-aware")
        self.now = now
        self.algorithm = algorithm
        self._serial = 0x1000

    def key(self) -> SigningKey:
        if self.algorithm == "rsa":
            return rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return ec.generate_private_key(ec.SECP256R1())

    def serial(self) -> int:
        # Random serials (RFC 5280 §4.1.2.2 recommends unpredictable ones) with a unique prefix.
        self._serial += 1
        return (self._serial << 64) | x509.random_serial_number() >> 96

    def root(self, common_name: str) -> Signer:
        key = self.key()
        name = _name(common_name)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(self.serial())
            .not_valid_before(self.now - BACKDATE)
            .not_valid_after(self.now + CA_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return Signer(key, cert)

    def ca(self, file_name: str, common_name: str) -> DevCa:
        signer = self.root(common_name)
        return DevCa(file_name, signer, self.crl(signer, []))

    def leaf(
        self,
        issuer: Signer,
        common_name: str,
        *,
        eku: list[x509.ObjectIdentifier],
        san: list[x509.GeneralName] | None = None,
        eku_critical: bool = False,
        for_tls: bool = False,
        expired: bool = False,
        serial_number: str | None = None,
        lifetime: dt.timedelta = LEAF_LIFETIME,
    ) -> Signer:
        key = self.key()
        start, end = self.now - BACKDATE, self.now + lifetime
        if expired:
            start, end = self.now - dt.timedelta(days=400), self.now - dt.timedelta(days=30)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name, serial_number))
            .issuer_name(issuer.certificate.subject)
            .public_key(key.public_key())
            .serial_number(self.serial())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                _key_usage(
                    non_repudiation=not for_tls,
                    key_encipherment=for_tls and self.algorithm == "rsa",
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(eku), critical=eku_critical)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    issuer.certificate.public_key()  # type: ignore[arg-type]
                ),
                critical=False,
            )
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        cert = builder.sign(issuer.key, hashes.SHA256())
        return Signer(key, cert, issuer.certificates)

    def crl(
        self, issuer: Signer, revoked: list[x509.Certificate]
    ) -> x509.CertificateRevocationList:
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(issuer.certificate.subject)
            .last_update(self.now - BACKDATE)
            .next_update(self.now + CRL_LIFETIME)
            .add_extension(x509.CRLNumber(1), critical=False)
        )
        for cert in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(cert.serial_number)
                .revocation_date(self.now - BACKDATE)
                .add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), critical=False)
                .build()
            )
        return builder.sign(issuer.key, hashes.SHA256())


def _name(common_name: str, serial_number: str | None = None) -> x509.Name:
    attributes = [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "TR"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kep-relay development PKI"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ]
    if serial_number is not None:  # a user's TC Kimlik No, as Turkish qualified certificates
        attributes.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, serial_number))
    return x509.Name(attributes)


def _key_usage(
    *, cert_sign: bool = False, non_repudiation: bool = False, key_encipherment: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=non_repudiation,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _pem_key(key: SigningKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
