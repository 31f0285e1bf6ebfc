"""Node configuration: TOML in, frozen dataclasses out (config/README.md describes every key).

Unknown keys are refused, and every problem names the file, the key and what is wrong, so a
bad configuration stops start-up with one clear line (exit 2).
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interop.errors import ConfigurationError, IdentityNumberError
from interop.identity import NationalId
from interop.limits import DEFAULT_LIMITS, KNOWN_OWN_LIMITS, MiB
from interop.providers import BUILTIN_DIRECTORY, Provider
from relay.crl_fetch import CrlSettings, check_url
from relay.tsa import TsaClientConfig

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
MAX_PROCESSES = 64
LOG_LEVELS = ("debug", "info", "warning", "error")
_NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


@dataclass(frozen=True, slots=True)
class Listener:
    host: str
    port: int
    # Submission only: mutual TLS with the provider's own systems, or plain on loopback.
    require_tls: bool = True


@dataclass(frozen=True, slots=True)
class PeerConfig:
    id: str
    route: tuple[str, int] | None  # None: MX discovery
    mx_port: int = 465  # port on MX hosts (implicit TLS, like the peer listener)
    process_cas: tuple[Path, ...] = ()
    tls_cas: tuple[Path, ...] = ()
    tls_names: tuple[str, ...] = ()
    message_limit: int = DEFAULT_LIMITS.cross_provider_message
    domain: str = ""
    crl_urls: tuple[str, ...] = ()  # where its CAs' CRLs are published (relay.crls)


@dataclass(frozen=True, slots=True)
class Identity:
    process_cert: Path
    process_key: Path
    tls_cert: Path
    tls_key: Path
    tsa_cert: Path | None = None
    tsa_key: Path | None = None


@dataclass(frozen=True, slots=True)
class Timers:
    # INTEROP-PROFILE.md §4: relay and evidence timeouts default to 24 h (profile choice).
    relay_timeout: float = 24 * 3600.0
    evidence_timeout: float = 24 * 3600.0
    # §4: back-off from 1 min doubling to 30 min.
    retry_initial: float = 60.0
    retry_max: float = 1800.0
    # RFC 5321 §4.5.3.2: 5 min for commands, 10 min between DATA blocks; idle peers are cut.
    command_timeout: float = 300.0
    data_timeout: float = 600.0
    # How long a DATA transfer may run below limits.min_transfer_rate before it is cut with
    # 421 4.4.2 (a peer trickling bytes would otherwise hold a connection slot for ever).
    slow_transfer_limit: float = 60.0
    # An Evidence message a peer has not accepted by then is given up (state ``expired``,
    # kep_messages_expired_total): Postfix's maximal_queue_lifetime is 5 days too.
    evidence_lifetime: float = 5 * 86400.0
    # How often the queue manager looks for due work when nothing wakes it.
    queue_poll: float = 1.0


@dataclass(frozen=True, slots=True)
class Limits:
    max_connections: int = 200
    max_connections_per_peer: int = 40
    max_recipients: int = 1000
    # Same-provider limit of this provider (hs01: 100 MiB per KEP-DOMAIN.md); peers' in [peers].
    own_message_limit: int = DEFAULT_LIMITS.cross_provider_message
    default_quota: int = 100 * MiB  # KEP-DOMAIN.md: 100 MB free per account
    # Bytes per second below which a DATA transfer counts as slow (timers.slow_transfer_limit);
    # Postfix's smtpd_min_data_rate is 500. A 25 MiB envelope at the floor takes 15 hours.
    min_transfer_rate: int = 500
    # NOOP, RSET, HELP, VRFY, EXPN, HELO and EHLO since the last message accepted; beyond it the
    # session is cut with 421 4.4.2. A client needs one or two between transactions (Postfix
    # counts the same "junk" commands: smtpd_junk_command_limit).
    max_junk_commands: int = 20
    # Times processing a received message may fail on something in the message before it is put
    # aside (state ``quarantined``) and its sender gets evidence; trouble of the machine (disk,
    # database) retries without counting.
    max_processing_attempts: int = 5


@dataclass(frozen=True, slots=True)
class StoreConfig:
    # sqlite:///path (the embedded default: data_dir/state.sqlite3) or postgresql://…
    # (every node of the provider, on any machine; docs/deployment.md).
    url: str | None = None
    # SQLite's synchronous setting: FULL (the default) syncs every commit.
    sqlite_synchronous: str = "FULL"
    # How long a node process's claim on a message lasts unless renewed (every third of it):
    # a dead process's messages are taken up by the others this long after its last renewal.
    lease: float = 60.0
    # PostgreSQL connections per node process (one per processing slot and a few more).
    connections: int = 12

    def url_for(self, data_dir: Path) -> str:
        return self.url or f"sqlite:///{data_dir / 'state.sqlite3'}"


@dataclass(frozen=True, slots=True)
class Retention:
    # INTEROP-PROFILE.md §7: the gateway's copy of a message goes as soon as its obligations
    # are met; an operator may keep copies this many days longer (default: not at all).
    keep_content_days: float = 0.0


@dataclass(frozen=True, slots=True)
class AccountConfig:
    address: str
    type: str = "send-receive"  # or "receive-only"
    state: str = "active"  # or "pending", "closed"
    quota: int | None = None
    # Who may sign for it (profile §1): the holder's TC Kimlik No or YKN for a person, the
    # authorised operators' for a legal person.
    holder: str | None = None
    operators: tuple[str, ...] = ()
    etebligat: bool = False  # may send eTebligat (an authorised public body; §4)


@dataclass(frozen=True, slots=True)
class NodeConfig:
    provider: Provider
    data_dir: Path
    source: str  # the file it came from, or "embedded default"
    peer_listener: Listener
    submission_listener: Listener
    # /metrics, /healthz, /readyz (docs/operations.md); None: off.
    monitoring_listener: Listener | None = None
    dev_pki: Path | None = None
    identity: Identity | None = None
    user_cas: tuple[Path, ...] = ()
    tsa_cas: tuple[Path, ...] = ()
    crls: tuple[Path, ...] = ()
    require_crl: bool = True
    # Where the CRLs of user_cas and tsa_cas are published, and how CRLs are fetched.
    crl_urls: tuple[str, ...] = ()
    crl: CrlSettings = field(default_factory=CrlSettings)
    # [log] level: debug, info, warning or error (relay.logs).
    log_level: str = "info"
    peers: tuple[PeerConfig, ...] = ()
    timers: Timers = field(default_factory=Timers)
    limits: Limits = field(default_factory=Limits)
    retention: Retention = field(default_factory=Retention)
    # The provider's RFC 3161 TSA over HTTP ([tsa]); None: the development PKI's TSA, or the
    # [identity] TSA key. A production configuration must have one of the two (profile §5).
    tsa: TsaClientConfig | None = None
    accounts: tuple[AccountConfig, ...] = ()
    # KEP-DOMAIN.md: the default keeps receiving when full; a provider may refuse instead.
    refuse_when_full: bool = False
    store: StoreConfig = field(default_factory=StoreConfig)
    # This node's name, unique among the provider's nodes (default: the host's name); its
    # processes claim work as "name/1", "name/2", … (relay.store.messages).
    name: str = field(default_factory=socket.gethostname)
    # Node processes on this machine, sharing the listeners (SO_REUSEPORT) and the store.
    processes: int = field(default_factory=lambda: os.cpu_count() or 1)

    @property
    def store_url(self) -> str:
        return self.store.url_for(self.data_dir)

    def peer(self, provider_id: str) -> PeerConfig | None:
        for peer in self.peers:
            if peer.id == provider_id:
                return peer
        return None


def duration(value: object, where: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _UNITS[match.group(2)]
    raise ConfigurationError(f"{where}: {value!r} is not a duration (like 30s, 10m, 24h)")


def address(value: object, where: str) -> tuple[str, int]:
    if isinstance(value, str) and ":" in value:
        host, _, port = value.rpartition(":")
        if host and port.isdigit() and 0 < int(port) < 65536:
            return host.strip("[]"), int(port)
    raise ConfigurationError(f"{where}: {value!r} is not host:port")


class _Section:
    """Reads one table, remembering which keys were used so the rest can be refused."""

    def __init__(self, source: str, name: str, table: object) -> None:
        if not isinstance(table, Mapping):
            raise ConfigurationError(f"{source}: [{name}] must be a table")
        self.source, self.name, self.table = source, name, dict(table)
        self.used: set[str] = set()

    def where(self, key: str) -> str:
        return f"{self.source}: {self.name}.{key}"

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        self.used.add(key)
        if key not in self.table:
            return default
        value = self.table[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float)):
            expected = (
                kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            )
            raise ConfigurationError(f"{self.where(key)}: expected {expected}, got {value!r}")
        return value

    def paths(self, key: str, base: Path) -> tuple[Path, ...]:
        values = self.get(key, list, [])
        if not all(isinstance(v, str) for v in values):
            raise ConfigurationError(f"{self.where(key)}: expected a list of file names")
        return tuple(_path(v, base) for v in values)

    def urls(self, key: str) -> tuple[str, ...]:
        values = self.get(key, list, [])
        return tuple(check_url(v, self.where(key)) for v in values)

    def done(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            raise ConfigurationError(f"{self.where(unknown[0])}: unknown key")


def _tsa(section: _Section, source: str) -> TsaClientConfig:
    """The [tsa] table (relay/tsa.py names and explains each limit)."""
    url = section.get("url", str)
    if url is None:
        raise ConfigurationError(f"{section.where('url')}: required (the TSA's RFC 3161 URL)")
    defaults = TsaClientConfig.__dataclass_fields__
    number = (int, float)
    try:
        config = TsaClientConfig(
            url=url,
            policy=section.get("policy", str),
            timeout=float(section.get("timeout", number, defaults["timeout"].default)),
            retries=section.get("retries", int, defaults["retries"].default),
            max_in_flight=section.get("max_in_flight", int, defaults["max_in_flight"].default),
            max_reply=section.get("max_reply", int, defaults["max_reply"].default),
            backoff=float(section.get("backoff", number, defaults["backoff"].default)),
            max_skew=float(section.get("max_skew", number, defaults["max_skew"].default)),
        )
    except ConfigurationError as exc:
        raise ConfigurationError(f"{source}: {exc.detail}") from exc
    section.done()
    return config


def _crl(section: _Section, source: str) -> CrlSettings:
    """The [crl] table (relay/crl_fetch.py names and explains each limit)."""
    defaults = CrlSettings()
    number = (int, float)
    try:
        settings = CrlSettings(
            timeout=float(section.get("timeout", number, defaults.timeout)),
            max_size=section.get("max_size", int, defaults.max_size),
            refresh_fraction=float(
                section.get("refresh_fraction", number, defaults.refresh_fraction)
            ),
            **{
                key: duration(
                    section.get(key, (str, int, float), getattr(defaults, key)),
                    section.where(key),
                )
                for key in ("min_interval", "max_interval", "retry_initial", "retry_max")
            },
        )
    except ConfigurationError as exc:
        raise ConfigurationError(f"{source}: {exc.detail}") from exc
    section.done()
    return settings


def _identity_number(section: _Section, key: str) -> str | None:
    value = section.get(key, str)
    return None if value is None else _number(value, section.where(key))


def _number(value: object, where: str) -> str:
    """A TC Kimlik No or YKN, validated with its check digits (profile §1)."""
    try:
        return NationalId.parse(value if isinstance(value, str) else repr(value)).number
    except IdentityNumberError as exc:
        raise ConfigurationError(f"{where}: {exc.detail}") from exc


def _path(value: str, base: Path) -> Path:
    path = Path(value)
    return path if path.is_absolute() else base / path


def own_message_limit(provider_id: str) -> int:
    """The default limit on a message between two users of ``provider_id``: hs01's own is
    larger (KEP-DOMAIN.md), every other provider's is the cross-provider one (profile §2)."""
    return KNOWN_OWN_LIMITS.get(provider_id, DEFAULT_LIMITS.cross_provider_message)


def embedded_default(data_dir: Path = Path("var")) -> NodeConfig:
    """No file: hs01 on loopback, data under ./var, a dev PKI made on first run."""
    return NodeConfig(
        provider=BUILTIN_DIRECTORY["hs01"],
        data_dir=data_dir,
        source="embedded default",
        peer_listener=Listener("127.0.0.1", 2525),
        submission_listener=Listener("127.0.0.1", 2587, require_tls=False),
        monitoring_listener=Listener("127.0.0.1", 9465, require_tls=False),
        dev_pki=data_dir / "pki",
        limits=Limits(own_message_limit=own_message_limit("hs01")),
    )


def load(path: Path) -> NodeConfig:
    source = str(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"{source}: cannot be read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{source}: not valid TOML: {exc}") from exc
    return from_mapping(raw, source, path.parent)


def from_mapping(raw: Mapping[str, Any], source: str, base: Path) -> NodeConfig:
    top = _Section(source, "(top level)", raw)
    node = _Section(source, "node", top.get("node", dict, {}))
    provider_id = node.get("provider", str)
    if provider_id is None:
        raise ConfigurationError(f'{node.where("provider")}: required (like "hs01")')
    domain = node.get("domain", str)
    known = BUILTIN_DIRECTORY.get(provider_id)
    try:
        provider = Provider(provider_id, domain) if domain else known
    except ConfigurationError as exc:
        raise ConfigurationError(f"{node.where('domain')}: {exc.detail}") from exc
    if provider is None:
        raise ConfigurationError(
            f"{node.where('provider')}: {provider_id!r} is not hs01-hs08; give node.domain too"
        )
    data_dir = _path(node.get("data_dir", str, "var"), base)
    dev_pki = node.get("dev_pki", str)
    refuse_when_full = node.get("refuse_when_full", bool, False)
    name = node.get("name", str, socket.gethostname())
    if not _NODE_NAME.match(name):
        raise ConfigurationError(f"{node.where('name')}: letters, digits, '.', '-', '_' only")
    processes = node.get("processes", int, os.cpu_count() or 1)
    if not 1 <= processes <= MAX_PROCESSES:
        raise ConfigurationError(f"{node.where('processes')}: 1 to {MAX_PROCESSES}")
    # The older place of [store] sqlite_synchronous.
    old_synchronous = node.get("sqlite_synchronous", str, "FULL")
    node.done()
    store = _store(_Section(source, "store", top.get("store", dict, {})), old_synchronous, base)

    listen = _Section(source, "listen", top.get("listen", dict, {}))
    peer_l = _Section(source, "listen.peer", listen.get("peer", dict, {}))
    peer_listener = Listener(
        *address(peer_l.get("address", str, "127.0.0.1:2525"), peer_l.where("address"))
    )
    peer_l.done()
    sub_l = _Section(source, "listen.submission", listen.get("submission", dict, {}))
    host, port = address(sub_l.get("address", str, "127.0.0.1:2587"), sub_l.where("address"))
    require_tls = sub_l.get("require_tls", bool, host not in ("127.0.0.1", "::1", "localhost"))
    if not require_tls and host not in ("127.0.0.1", "::1", "localhost"):
        raise ConfigurationError(
            f"{sub_l.where('require_tls')}: a submission listener off loopback needs mutual TLS"
        )
    sub_l.done()
    mon_l = _Section(source, "listen.monitoring", listen.get("monitoring", dict, {}))
    mon_address = mon_l.get("address", str, "127.0.0.1:9465")
    monitoring = (
        None
        if mon_address == "off"
        else Listener(*address(mon_address, mon_l.where("address")), require_tls=False)
    )
    mon_l.done()
    listen.done()

    identity = None
    if "identity" in raw:
        ident = _Section(source, "identity", top.get("identity", dict))
        files = {}
        for key in ("process_cert", "process_key", "tls_cert", "tls_key"):
            value = ident.get(key, str)
            if value is None:
                raise ConfigurationError(f"{ident.where(key)}: required")
            files[key] = _path(value, base)
        tsa_files = {k: ident.get(k, str) for k in ("tsa_cert", "tsa_key")}
        identity = Identity(
            **files,
            tsa_cert=_path(tsa_files["tsa_cert"], base) if tsa_files["tsa_cert"] else None,
            tsa_key=_path(tsa_files["tsa_key"], base) if tsa_files["tsa_key"] else None,
        )
        ident.done()
    else:
        top.used.add("identity")
    if identity is None and dev_pki is None:
        raise ConfigurationError(f"{source}: give either [identity] files or node.dev_pki")

    trust = _Section(source, "trust", top.get("trust", dict, {}))
    user_cas, tsa_cas, crls = (
        trust.paths("user_cas", base),
        trust.paths("tsa_cas", base),
        trust.paths("crls", base),
    )
    require_crl = trust.get("require_crl", bool, True)
    crl_urls = trust.urls("crl_urls")
    trust.done()
    crl = _crl(_Section(source, "crl", top.get("crl", dict, {})), source)
    log_s = _Section(source, "log", top.get("log", dict, {}))
    log_level = log_s.get("level", str, "info")
    if log_level not in LOG_LEVELS:
        raise ConfigurationError(f"{log_s.where('level')}: {', '.join(LOG_LEVELS)}")
    log_s.done()

    peers = []
    for peer_id, table in top.get("peers", dict, {}).items():
        section = _Section(source, f"peers.{peer_id}", table)
        route_text = section.get("route", str, "mx")
        route = None if route_text == "mx" else address(route_text, section.where("route"))
        mx_port = section.get("mx_port", int, 465)
        if not 0 < mx_port < 65536:
            raise ConfigurationError(f"{section.where('mx_port')}: not a port number")
        limit = section.get(
            "message_limit_mib", (int, float), DEFAULT_LIMITS.cross_provider_message / MiB
        )
        peer_domain = section.get("domain", str, "")
        peers.append(
            PeerConfig(
                id=peer_id,
                route=route,
                mx_port=mx_port,
                process_cas=section.paths("process_cas", base),
                tls_cas=section.paths("tls_cas", base),
                tls_names=tuple(section.get("tls_names", list, [])),
                message_limit=int(limit * MiB),
                domain=peer_domain,
                crl_urls=section.urls("crl_urls"),
            )
        )
        section.done()

    timers_s = _Section(source, "timers", top.get("timers", dict, {}))
    defaults = Timers()
    timers = Timers(
        **{
            key: duration(
                timers_s.get(key, (str, int, float), getattr(defaults, key)), timers_s.where(key)
            )
            for key in Timers.__dataclass_fields__
        }
    )
    timers_s.done()
    if timers.retry_initial <= 0 or timers.retry_max < timers.retry_initial:
        raise ConfigurationError(
            f"{source}: timers.retry_max must be at least timers.retry_initial > 0"
        )

    limits_s = _Section(source, "limits", top.get("limits", dict, {}))
    if "crypto_workers" in limits_s.table:  # an older release's way to use the cores
        raise ConfigurationError(
            f"{limits_s.where('crypto_workers')}: no longer used; remove it: each of the "
            "[node] processes (default: one per core) verifies and signs for itself"
        )
    base_limits = Limits(own_message_limit=own_message_limit(provider.id))
    limits = Limits(
        max_connections=limits_s.get("max_connections", int, base_limits.max_connections),
        max_connections_per_peer=limits_s.get(
            "max_connections_per_peer", int, base_limits.max_connections_per_peer
        ),
        max_recipients=limits_s.get("max_recipients", int, base_limits.max_recipients),
        own_message_limit=int(
            limits_s.get("own_message_limit_mib", (int, float), base_limits.own_message_limit / MiB)
            * MiB
        ),
        default_quota=int(limits_s.get("default_quota_mib", (int, float), 100) * MiB),
        min_transfer_rate=limits_s.get("min_transfer_rate", int, base_limits.min_transfer_rate),
        max_junk_commands=limits_s.get("max_junk_commands", int, base_limits.max_junk_commands),
        max_processing_attempts=limits_s.get(
            "max_processing_attempts", int, base_limits.max_processing_attempts
        ),
    )
    limits_s.done()
    if limits.max_recipients > DEFAULT_LIMITS.recipients:
        # Evidence lists every recipient and refuses more than interop's limit (§5).
        raise ConfigurationError(
            f"{source}: limits.max_recipients: at most {DEFAULT_LIMITS.recipients}"
        )
    for key in (
        "max_connections",
        "max_connections_per_peer",
        "max_recipients",
        "min_transfer_rate",
        "max_junk_commands",
        "max_processing_attempts",
    ):
        if getattr(limits, key) <= 0:
            raise ConfigurationError(f"{source}: limits.{key}: must be positive")

    tsa = _tsa(_Section(source, "tsa", top.get("tsa", dict)), source) if "tsa" in raw else None
    top.used.add("tsa")
    if identity is not None and tsa is None and not (identity.tsa_cert and identity.tsa_key):
        # Profile §5 (1.1): evidence is XAdES-T with a time-stamp from the provider's TSA,
        # which a production configuration must have; nothing is issued unstamped.
        raise ConfigurationError(
            f"{source}: a production configuration needs a time-stamping authority:"
            " [tsa] url (or [identity] tsa_cert and tsa_key)"
        )

    retention_s = _Section(source, "retention", top.get("retention", dict, {}))
    retention = Retention(
        keep_content_days=float(retention_s.get("keep_content_days", (int, float), 0))
    )
    retention_s.done()
    if retention.keep_content_days < 0:
        raise ConfigurationError(f"{source}: retention.keep_content_days: 0 or more")

    accounts = []
    for index, table in enumerate(top.get("accounts", list, [])):
        section = _Section(source, f"accounts[{index}]", table)
        account = AccountConfig(
            address=section.get("address", str, ""),
            type=section.get("type", str, "send-receive"),
            state=section.get("state", str, "active"),
            quota=int(section.get("quota_mib", (int, float), limits.default_quota / MiB) * MiB),
            holder=_identity_number(section, "holder"),
            operators=tuple(
                _number(value, section.where("operators"))
                for value in section.get("operators", list, [])
            ),
            etebligat=section.get("etebligat", bool, False),
        )
        if account.type not in ("send-receive", "receive-only"):
            raise ConfigurationError(f"{section.where('type')}: send-receive or receive-only")
        if account.state not in ("active", "pending", "closed"):
            raise ConfigurationError(f"{section.where('state')}: active, pending or closed")
        if not account.address:
            raise ConfigurationError(f"{section.where('address')}: required")
        section.done()
        accounts.append(account)
    top.done()
    return NodeConfig(
        provider=provider,
        data_dir=data_dir,
        source=source,
        peer_listener=peer_listener,
        submission_listener=Listener(host, port, require_tls),
        monitoring_listener=monitoring,
        dev_pki=_path(dev_pki, base) if dev_pki else None,
        identity=identity,
        user_cas=user_cas,
        tsa_cas=tsa_cas,
        crls=crls,
        require_crl=require_crl,
        crl_urls=crl_urls,
        crl=crl,
        log_level=log_level,
        peers=tuple(peers),
        timers=timers,
        limits=limits,
        retention=retention,
        tsa=tsa,
        accounts=tuple(accounts),
        refuse_when_full=refuse_when_full,
        store=store,
        name=name,
        processes=processes,
    )


def _store(section: _Section, synchronous: str, base: Path) -> StoreConfig:
    url = section.get("url", str)
    if url is not None and url.startswith("sqlite:///"):  # a relative file: beside the config
        url = f"sqlite:///{_path(url.removeprefix('sqlite:///'), base)}"
    elif url is not None and not url.startswith(("postgresql://", "postgres://")):
        raise ConfigurationError(f"{section.where('url')}: sqlite:///… or postgresql://…")
    synchronous = section.get("sqlite_synchronous", str, synchronous).upper()
    if synchronous not in ("FULL", "EXTRA", "NORMAL"):
        raise ConfigurationError(f"{section.where('sqlite_synchronous')}: FULL, EXTRA or NORMAL")
    lease = duration(section.get("lease", (str, int, float), 60.0), section.where("lease"))
    if lease < 5:
        raise ConfigurationError(f"{section.where('lease')}: at least 5s")
    connections = section.get("connections", int, 12)
    if not 2 <= connections <= 200:
        raise ConfigurationError(f"{section.where('connections')}: 2 to 200")
    section.done()
    return StoreConfig(url, synchronous, lease, connections)
