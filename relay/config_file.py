"""Reading a node's configuration file: TOML in, ``relay.config`` dataclasses out.

Unknown keys are refused, and every problem names the file, the key and what is wrong; a bad
value is recorded and reading goes on with its default, so one pass finds every problem of a
file (``ConfigurationProblems``, one line each) and start-up stops with all of them (exit 2).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import socket
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from interop.errors import ConfigurationError, IdentityNumberError
from interop.identity import NationalId
from interop.limits import DEFAULT_LIMITS, MiB
from interop.providers import BUILTIN_DIRECTORY, Provider, provider_id_problem
from relay.config import (
    LOG_LEVELS,
    MAX_PROCESSES,
    SMALL_WORK,
    AccountConfig,
    ConfigurationProblems,
    Identity,
    Limits,
    Listener,
    NodeConfig,
    PeerConfig,
    Retention,
    StoreConfig,
    Timers,
    own_message_limit,
)
from relay.crl_fetch import CrlSettings, check_url
from relay.tsa import TsaClientConfig

T = TypeVar("T")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


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
    raise ConfigurationError(f"{where}: {value!r} is not host:port (a port from 1 to 65535)")


class _Section:
    """Reads one table, remembering which keys were used so the rest can be refused.

    A value of the wrong kind is recorded in ``problems`` and the default used instead, so
    reading goes on and every problem of the file is found in one pass.
    """

    def __init__(self, problems: list[str], source: str, name: str, table: object) -> None:
        self.problems, self.source, self.name = problems, source, name
        if not isinstance(table, Mapping):
            problems.append(f"{source}: [{name}] must be a table")
            table = {}
        self.table = dict(table)
        self.used: set[str] = set()

    def where(self, key: str) -> str:
        return f"{self.source}: {self.name}.{key}" if self.name else f"{self.source}: {key}"

    def problem(self, key: str, text: str) -> None:
        self.problems.append(f"{self.where(key)}: {text}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        self.used.add(key)
        if key not in self.table:
            return default
        value = self.table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            expected = (
                kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            )
            self.problem(key, f"expected {expected}, got {value!r}")
            return default
        return value

    def parsed(self, key: str, parse: Callable[[object, str], T], default: T) -> T:
        """``parse(value, where)`` of the key's value; on ``ConfigurationError`` the problem is
        recorded and ``default`` returned."""
        self.used.add(key)
        if key not in self.table:
            return default
        return self.convert(key, self.table[key], parse, default)

    def convert(self, key: str, value: object, parse: Callable[[object, str], T], default: T) -> T:
        """``parse(value, where)`` for a value read from ``key``, or ``default`` after a
        problem (recorded)."""
        try:
            return parse(value, self.where(key))
        except ConfigurationError as exc:
            self.problems.append(exc.detail)
            return default

    def paths(self, key: str, base: Path) -> tuple[Path, ...]:
        values = self.get(key, list, [])
        if not all(isinstance(v, str) for v in values):
            self.problem(key, "expected a list of file names")
            return ()
        return tuple(_path(v, base) for v in values)

    def urls(self, key: str) -> tuple[str, ...]:
        values = self.get(key, list, [])
        return tuple(u for v in values if (u := self.convert(key, v, check_url, "")))

    def strings(self, key: str) -> tuple[str, ...]:
        values = self.get(key, list, [])
        if not all(isinstance(v, str) for v in values):
            self.problem(key, "expected a list of strings")
            return ()
        return tuple(values)

    def done(self) -> None:
        for key in sorted(set(self.table) - self.used):
            self.problem(key, "unknown key")


def _identity_number(value: object, where: str) -> str:
    """A TC Kimlik No or YKN, validated with its check digits (profile §1)."""
    try:
        return NationalId.parse(value if isinstance(value, str) else repr(value)).number
    except IdentityNumberError as exc:
        raise ConfigurationError(f"{where}: {exc.detail}") from exc


def _path(value: str, base: Path) -> Path:
    path = Path(value)
    return path if path.is_absolute() else base / path


def _near_builtin(provider_id: str) -> str:
    """`` (did you mean hs02?)`` for an id like ``hs2`` or ``HS02``, else nothing."""
    match = re.fullmatch(r"hs0*(\d+)", provider_id.strip().lower())
    guess = f"hs{int(match.group(1)):02d}" if match else ""
    if not guess or guess == provider_id.strip().lower():  # lower case is advised already
        return ""
    return f" (did you mean {guess}?)" if BUILTIN_DIRECTORY.get(guess) else ""


def load(path: Path) -> NodeConfig:
    """The configuration in ``path``; ``ConfigurationProblems`` with every problem of it."""
    source = str(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"{source}: cannot be read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{source}: not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"{source}: not UTF-8 text: {exc.reason}") from exc
    return from_mapping(raw, source, path.parent)


def from_mapping(raw: Mapping[str, Any], source: str, base: Path) -> NodeConfig:
    """The configuration of a TOML mapping; relative paths are relative to ``base``.

    Raises ``ConfigurationProblems`` naming every problem at once: a bad value is recorded
    and reading goes on with its default.
    """
    reader = _Reader(raw, source, base)
    config = reader.read()
    if reader.problems:
        raise ConfigurationProblems(reader.problems)
    return config


_LOOPBACK = ("127.0.0.1", "::1", "localhost")
_WILDCARD = ("", "0.0.0.0", "::")  # noqa: S104 (recognised, not bound)


class _Reader:
    """One pass over a configuration's mapping, collecting its problems."""

    def __init__(self, raw: Mapping[str, Any], source: str, base: Path) -> None:
        self.raw, self.source, self.base = raw, source, base
        self.problems: list[str] = []
        self.top = self.section("", raw)

    def section(self, name: str, table: object) -> _Section:
        return _Section(self.problems, self.source, name, table)

    def table(self, name: str, parent: _Section | None = None) -> _Section:
        """The section ``name`` of ``parent`` (default: the top level); empty when absent."""
        parent = parent or self.top
        key = name.rpartition(".")[2]
        return self.section(name, parent.get(key, dict, {}))

    def problem(self, text: str) -> None:
        self.problems.append(f"{self.source}: {text}")

    def read(self) -> NodeConfig:
        node = self.table("node")
        provider = self.provider(node)
        data_dir = _path(node.get("data_dir", str, "var"), self.base)
        dev_pki = node.get("dev_pki", str)
        refuse_when_full = node.get("refuse_when_full", bool, False)
        name = node.get("name", str, socket.gethostname())
        if not _NODE_NAME.match(name):
            node.problem("name", f"{name!r}: letters, digits, '.', '-', '_' only")
        processes = node.get("processes", int, os.cpu_count() or 1)
        if not 1 <= processes <= MAX_PROCESSES:
            node.problem("processes", f"must be from 1 to {MAX_PROCESSES}, not {processes}")
            processes = 1
        small_work = node.get("small_work", str, "loop")
        if small_work not in SMALL_WORK:
            node.problem("small_work", f"{' or '.join(SMALL_WORK)}; not {small_work!r}")
            small_work = "loop"
        # The older place of [store] sqlite_synchronous.
        old_synchronous = node.get("sqlite_synchronous", str, "FULL")
        node.done()
        store = self.store(self.table("store"), old_synchronous)
        peer_listener, submission_listener, monitoring = self.listeners()
        identity = self.identity()
        if identity is None and dev_pki is None:
            self.problem("[identity]: give either [identity] files or node.dev_pki")
        trust = self.table("trust")
        user_cas, tsa_cas, crls = (
            trust.paths("user_cas", self.base),
            trust.paths("tsa_cas", self.base),
            trust.paths("crls", self.base),
        )
        require_crl = trust.get("require_crl", bool, True)
        crl_urls = trust.urls("crl_urls")
        trust.done()
        crl = self.crl()
        log = self.table("log")
        log_level = log.get("level", str, "info")
        if log_level not in LOG_LEVELS:
            log.problem("level", f"{', '.join(LOG_LEVELS)}; not {log_level!r}")
            log_level = "info"
        log.done()
        peers = self.peers(provider, production=dev_pki is None and identity is not None)
        timers = self.timers()
        limits = self.limits(provider)
        tsa = self.tsa() if "tsa" in self.raw else None
        self.top.used.add("tsa")
        if (
            identity is not None
            and "tsa" not in self.raw
            and not (identity.tsa_cert and identity.tsa_key)
        ):
            # Profile §5 (1.1): evidence is XAdES-T with a time-stamp from the provider's TSA,
            # which a production configuration must have; nothing is issued unstamped.
            self.problem(
                "[tsa]: a production configuration needs a time-stamping authority:"
                " [tsa] url (or [identity] tsa_cert and tsa_key)"
            )
        retention = self.table("retention")
        keep_days = float(retention.get("keep_content_days", (int, float), 0))
        if keep_days < 0:
            retention.problem("keep_content_days", f"must be 0 or more, not {keep_days:g}")
            keep_days = 0.0
        retention.done()
        accounts = self.accounts(limits)
        self.top.done()
        return NodeConfig(
            provider=provider,
            data_dir=data_dir,
            source=self.source,
            peer_listener=peer_listener,
            submission_listener=submission_listener,
            monitoring_listener=monitoring,
            dev_pki=_path(dev_pki, self.base) if dev_pki else None,
            identity=identity,
            user_cas=user_cas,
            tsa_cas=tsa_cas,
            crls=crls,
            require_crl=require_crl,
            crl_urls=crl_urls,
            crl=crl,
            log_level=log_level,
            peers=peers,
            timers=timers,
            limits=limits,
            retention=Retention(keep_content_days=keep_days),
            tsa=tsa,
            accounts=accounts,
            refuse_when_full=refuse_when_full,
            store=store,
            name=name,
            processes=processes,
            small_work=small_work,
        )

    def provider(self, node: _Section) -> Provider:
        """``node.provider`` (and ``node.domain``); hs01 stands in after a problem, so the
        rest of the file is still read."""
        provider_id = node.get("provider", str)
        domain = node.get("domain", str) or None
        if provider_id is None:
            node.problem("provider", 'required (like "hs01")')
            return BUILTIN_DIRECTORY["hs01"]
        known = BUILTIN_DIRECTORY.get(provider_id)
        if known is not None and domain in (None, known.domain):
            return known
        problem = provider_id_problem(provider_id)
        if problem is not None:
            node.problem("provider", problem + _near_builtin(provider_id))
            return BUILTIN_DIRECTORY["hs01"]
        if not domain:
            node.problem(
                "provider",
                f"{provider_id!r} is not hs01-hs08{_near_builtin(provider_id)};"
                " give node.domain too for another provider",
            )
            return BUILTIN_DIRECTORY["hs01"]
        try:
            return Provider(provider_id, domain)
        except ConfigurationError as exc:
            node.problem("domain", exc.detail)
            return BUILTIN_DIRECTORY["hs01"]

    def store(self, section: _Section, synchronous: str) -> StoreConfig:
        url = section.get("url", str)
        if url is not None and url.startswith("sqlite:///"):  # a relative file: beside the config
            url = f"sqlite:///{_path(url.removeprefix('sqlite:///'), self.base)}"
        elif url is not None and not url.startswith(("postgresql://", "postgres://")):
            section.problem("url", "sqlite:///… or postgresql://…")
            url = None
        synchronous = section.get("sqlite_synchronous", str, synchronous).upper()
        if synchronous not in ("FULL", "EXTRA", "NORMAL"):
            section.problem("sqlite_synchronous", f"{synchronous!r}: FULL, EXTRA or NORMAL")
            synchronous = "FULL"
        lease = section.parsed("lease", duration, 60.0)
        if lease < 5:
            section.problem("lease", f"must be at least 5s, not {lease:g}s")
            lease = 60.0
        connections = section.get("connections", int, 12)
        if not 2 <= connections <= 200:
            section.problem("connections", f"must be from 2 to 200, not {connections}")
            connections = 12
        section.done()
        return StoreConfig(url, synchronous, lease, connections)

    def listeners(self) -> tuple[Listener, Listener, Listener | None]:
        listen = self.table("listen")
        peer_s = self.table("listen.peer", listen)
        peer = Listener(*peer_s.parsed("address", address, ("127.0.0.1", 2525)))
        peer_s.done()
        sub_s = self.table("listen.submission", listen)
        host, port = sub_s.parsed("address", address, ("127.0.0.1", 2587))
        require_tls = sub_s.get("require_tls", bool, host not in _LOOPBACK)
        if not require_tls and host not in _LOOPBACK:
            sub_s.problem("require_tls", "a submission listener off loopback needs mutual TLS")
        sub_s.done()
        mon_s = self.table("listen.monitoring", listen)
        monitoring = None
        mon_text = mon_s.get("address", str, "127.0.0.1:9465")
        if mon_text != "off":
            mon = mon_s.convert("address", mon_text, address, ("127.0.0.1", 9465))
            monitoring = Listener(*mon, require_tls=False)
        mon_s.done()
        listen.done()
        named = [("peer", peer), ("submission", Listener(host, port)), ("monitoring", monitoring)]
        for index, (name, one) in enumerate(named):
            for other_name, other in named[:index]:
                if one and other and one.port == other.port and _overlap(one.host, other.host):
                    self.problem(
                        f"listen.{name}.address: port {one.port} is listen.{other_name}.address's"
                        " too; give each listener its own port"
                    )
        return peer, Listener(host, port, require_tls), monitoring

    def identity(self) -> Identity | None:
        if "identity" not in self.raw:
            self.top.used.add("identity")
            return None
        ident = self.table("identity")
        files = {}
        for key in ("process_cert", "process_key", "tls_cert", "tls_key"):
            value = ident.get(key, str)
            if value is None:
                ident.problem(key, "required")
            files[key] = _path(value or "", self.base)
        tsa_cert, tsa_key = (ident.get(k, str) for k in ("tsa_cert", "tsa_key"))
        if bool(tsa_cert) != bool(tsa_key):
            ident.problem("tsa_key" if tsa_cert else "tsa_cert", "give tsa_cert and tsa_key both")
        ident.done()
        return Identity(
            **files,
            tsa_cert=_path(tsa_cert, self.base) if tsa_cert else None,
            tsa_key=_path(tsa_key, self.base) if tsa_key else None,
        )

    def peers(self, own: Provider, *, production: bool) -> tuple[PeerConfig, ...]:
        peers = []
        for peer_id, table in self.top.get("peers", dict, {}).items():
            section = self.section(f"peers.{peer_id}", table)
            route_text = section.get("route", str, "mx")
            route = (
                None if route_text == "mx" else section.convert("route", route_text, address, None)
            )
            mx_port = section.get("mx_port", int, 465)
            if not 0 < mx_port < 65536:
                section.problem("mx_port", f"{mx_port} is not a port number (1 to 65535)")
                mx_port = 465
            default_mib = DEFAULT_LIMITS.cross_provider_message / MiB
            limit = section.get("message_limit_mib", (int, float), default_mib)
            if not 0 < limit < float("inf"):
                section.problem("message_limit_mib", f"must be more than 0 (MiB), not {limit!r}")
                limit = default_mib
            peer_domain = section.get("domain", str, "")
            self.peer_id(section, peer_id, peer_domain, own, production)
            peers.append(
                PeerConfig(
                    id=peer_id,
                    route=route,
                    mx_port=mx_port,
                    process_cas=section.paths("process_cas", self.base),
                    tls_cas=section.paths("tls_cas", self.base),
                    tls_names=section.strings("tls_names"),
                    message_limit=int(limit * MiB),
                    domain=peer_domain,
                    crl_urls=section.urls("crl_urls"),
                )
            )
            section.done()
        if production and not any(p.id == own.id for p in peers):
            self.problem(
                f"[peers.{own.id}]: missing; a production configuration describes this node"
                " too (its process and TLS CAs and names)"
            )
        return tuple(peers)

    def peer_id(
        self, section: _Section, peer_id: str, domain: str, own: Provider, production: bool
    ) -> None:
        """A peer is a known provider or one with a domain; never a typo (``hs2``)."""
        where = f"{self.source}: peers.{peer_id}"
        problem = provider_id_problem(peer_id)
        if problem is not None:
            self.problems.append(f"{where}: {problem}{_near_builtin(peer_id)}")
        elif BUILTIN_DIRECTORY.get(peer_id) is None and not domain:
            self.problems.append(
                f"{where}: {peer_id!r} is not one of hs01-hs08{_near_builtin(peer_id)}; for"
                f" another provider give peers.{peer_id}.domain, its KEP domain"
            )
        elif domain:
            try:
                Provider(peer_id, domain)
            except ConfigurationError as exc:
                section.problem("domain", exc.detail)
        if peer_id == own.id and not production:
            self.problems.append(
                f"{where}: this node's own provider; with node.dev_pki its trust comes from the"
                " development PKI and its own mail never leaves it: remove the table"
            )

    def timers(self) -> Timers:
        section = self.table("timers")
        defaults = Timers()
        values = {
            key: section.parsed(key, duration, getattr(defaults, key))
            for key in Timers.__dataclass_fields__
        }
        section.done()
        timers = Timers(**values)
        if timers.retry_initial <= 0 or timers.retry_max < timers.retry_initial:
            section.problem("retry_max", "must be at least timers.retry_initial > 0")
            timers = dataclasses.replace(
                timers, retry_initial=defaults.retry_initial, retry_max=defaults.retry_max
            )
        return timers

    def limits(self, provider: Provider) -> Limits:
        section = self.table("limits")
        if "crypto_workers" in section.table:  # an older release's way to use the cores
            section.used.add("crypto_workers")
            section.problem(
                "crypto_workers",
                "no longer used; remove it: each of the [node] processes (default: one per"
                " core) verifies and signs for itself",
            )
        base = Limits(own_message_limit=own_message_limit(provider.id))
        counts = {}
        for key in (
            "max_connections",
            "max_connections_per_peer",
            "sending_connections_per_peer",
            "max_recipients",
            "min_transfer_rate",
            "max_junk_commands",
            "max_processing_attempts",
        ):
            counts[key] = section.get(key, int, getattr(base, key))
            if counts[key] <= 0:
                section.problem(key, f"must be positive, not {counts[key]}")
                counts[key] = getattr(base, key)
        if counts["max_recipients"] > DEFAULT_LIMITS.recipients:
            # Evidence lists every recipient and refuses more than interop's limit (§5).
            section.problem("max_recipients", f"at most {DEFAULT_LIMITS.recipients}")
            counts["max_recipients"] = base.max_recipients
        sizes = {}
        for key, default in (
            ("own_message_limit_mib", base.own_message_limit / MiB),
            ("default_quota_mib", base.default_quota / MiB),
        ):
            sizes[key] = section.get(key, (int, float), default)
            if not 0 < sizes[key] < float("inf"):
                section.problem(key, f"must be more than 0 (MiB), not {sizes[key]!r}")
                sizes[key] = default
        section.done()
        return Limits(
            **counts,
            own_message_limit=int(sizes["own_message_limit_mib"] * MiB),
            default_quota=int(sizes["default_quota_mib"] * MiB),
        )

    def crl(self) -> CrlSettings:
        """The [crl] table (relay/crl_fetch.py names and explains each limit)."""
        section = self.table("crl")
        defaults = CrlSettings()
        number = (int, float)
        values: dict[str, Any] = {
            "timeout": float(section.get("timeout", number, defaults.timeout)),
            "max_size": section.get("max_size", int, defaults.max_size),
            "refresh_fraction": float(
                section.get("refresh_fraction", number, defaults.refresh_fraction)
            ),
        }
        for key in ("min_interval", "max_interval", "retry_initial", "retry_max"):
            values[key] = section.parsed(key, duration, getattr(defaults, key))
        section.done()
        try:
            return CrlSettings(**values)
        except ConfigurationError as exc:
            self.problem(exc.detail)
            return defaults

    def tsa(self) -> TsaClientConfig | None:
        """The [tsa] table (relay/tsa.py names and explains each limit); None after a problem."""
        section = self.table("tsa")
        url = section.get("url", str)
        if url is None:
            section.problem("url", "required (the TSA's RFC 3161 URL)")
        fields = TsaClientConfig.__dataclass_fields__
        number = (int, float)
        values: dict[str, Any] = {"policy": section.get("policy", str)}
        for key, kind in (
            ("timeout", number),
            ("retries", int),
            ("max_in_flight", int),
            ("max_reply", int),
            ("backoff", number),
            ("max_skew", number),
        ):
            value = section.get(key, kind, fields[key].default)
            values[key] = float(value) if isinstance(kind, tuple) else value
        section.done()
        if url is None:
            return None
        try:
            return TsaClientConfig(url=url, **values)
        except ConfigurationError:
            pass
        # TsaClientConfig refuses its first bad value: try each alone, beside a URL of the
        # right form, so that every bad one is named.
        for key, value in {"url": url, **values}.items():
            try:
                TsaClientConfig(**{"url": "http://tsa.invalid/", key: value})
            except ConfigurationError as exc:
                self.problem(exc.detail)
        return None

    def accounts(self, limits: Limits) -> tuple[AccountConfig, ...]:
        accounts = []
        for index, table in enumerate(self.top.get("accounts", list, [])):
            section = self.section(f"accounts[{index}]", table)
            quota_mib = section.get("quota_mib", (int, float), limits.default_quota / MiB)
            if not 0 < quota_mib < float("inf"):
                section.problem("quota_mib", f"must be more than 0 (MiB), not {quota_mib!r}")
                quota_mib = limits.default_quota / MiB
            operators = []
            for value in section.get("operators", list, []):
                try:
                    operators.append(_identity_number(value, section.where("operators")))
                except ConfigurationError as exc:
                    self.problems.append(exc.detail)
            account = AccountConfig(
                address=section.get("address", str, ""),
                type=section.get("type", str, "send-receive"),
                state=section.get("state", str, "active"),
                quota=int(quota_mib * MiB),
                holder=section.parsed("holder", _identity_number, None),
                operators=tuple(operators),
                etebligat=section.get("etebligat", bool, False),
            )
            if account.type not in ("send-receive", "receive-only"):
                section.problem("type", "send-receive or receive-only")
            if account.state not in ("active", "pending", "closed"):
                section.problem("state", "active, pending or closed")
            if not account.address:
                section.problem("address", "required")
            section.done()
            accounts.append(account)
        return tuple(accounts)


def _overlap(host: str, other: str) -> bool:
    """Two listeners' hosts may share a socket address: the same, a wildcard, or a name."""
    if host == other or host in _WILDCARD or other in _WILDCARD:
        return True
    try:
        return ipaddress.ip_address(host) == ipaddress.ip_address(other)
    except ValueError:  # a host name: it may be either address
        return True
