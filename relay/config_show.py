"""``kep-relay config show``: the effective configuration as TOML, every key with its value.

Takes a ``NodeConfig`` (as ``relay.config_file.load`` made it, defaults filled in); gives TOML in
the order of config/README.md, grouped by section. A key that is not set and has no value of
its own (``node.dev_pki`` beside ``[identity]``, ``tsa.policy``, an account's ``holder``) is a
comment saying so, so every key appears and the text still loads: loaded back, it gives the
same configuration, paths made absolute. Secrets are redacted: a password in the store's or
the TSA's URL (key files are named by their paths, never read).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from interop.limits import MiB
from relay.config import Listener, NodeConfig, PeerConfig
from relay.config_file import duration
from relay.store.database import redact

# Units tried for a duration, largest first; a value none of them gives exactly stays seconds.
_UNITS = (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0), ("ms", 0.001))


def value(item: object) -> str:
    """A TOML value: a string, a path, a number, a boolean or a list of them."""
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, Path):
        return value(str(item.resolve()))  # absolute, without ".." (links followed)
    if isinstance(item, str):
        return json.dumps(item, ensure_ascii=False)  # JSON's escapes are TOML's
    if isinstance(item, int | float):
        return repr(item)
    if isinstance(item, tuple | list):
        return "[" + ", ".join(value(i) for i in item) + "]"
    raise TypeError(f"no TOML for {item!r}")


def seconds(amount: float) -> str:
    """A duration as the largest unit that gives it back exactly (``"24h"``), else seconds."""
    for unit, size in _UNITS:
        count = amount / size
        # Days from two on: a day reads as 24h (config/README.md writes it so).
        if count >= (2 if unit == "d" else 1) and count == int(count):
            text = f"{int(count)}{unit}"
            if duration(text, "") == amount:
                return value(text)
    return value(amount) if amount else value("0s")


def mib(size: int) -> str:
    return value(size // MiB if size % MiB == 0 else size / MiB)


def _address(listener: Listener) -> str:
    host = f"[{listener.host}]" if ":" in listener.host else listener.host
    return value(f"{host}:{listener.port}")


class _Toml:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def table(self, name: str, note: str = "") -> None:
        self.lines += ["", f"[{name}]" + (f"  # {note}" if note else "")]

    def key(self, key: str, text: str | None, unset: str = "") -> None:
        """``key = text``, or the comment ``# key: not set (unset)`` when ``text`` is None."""
        self.lines.append(f"{key} = {text}" if text is not None else f"# {key}: not set ({unset})")

    def comment(self, text: str) -> None:
        self.lines += ["", f"# {text}"]


def show(config: NodeConfig) -> str:
    """The effective configuration ``config`` as TOML text."""
    out = _Toml()
    out.lines.append(
        f"# The effective configuration of {config.source}, defaults included"
        " (kep-relay config show); secrets redacted."
    )
    out.table("node")
    out.key("provider", value(config.provider.id))
    out.key("domain", value(config.provider.domain))
    out.key("data_dir", value(config.data_dir))
    out.key(
        "dev_pki",
        value(config.dev_pki) if config.dev_pki else None,
        "the [identity] files sign",
    )
    out.key("refuse_when_full", value(config.refuse_when_full))
    out.key("name", value(config.name))
    out.key("processes", value(config.processes))
    out.key("small_work", value(config.small_work))

    store = config.store
    out.table("store")
    out.key(
        "url",
        value(redact(store.url)) if store.url else None,
        f"the default, sqlite:///{(config.data_dir / 'state.sqlite3').resolve()}",
    )
    out.key("lease", seconds(store.lease))
    out.key("connections", value(store.connections))
    out.key("sqlite_synchronous", value(store.sqlite_synchronous))

    out.table("listen.peer")
    out.key("address", _address(config.peer_listener))
    out.table("listen.submission")
    out.key("address", _address(config.submission_listener))
    out.key("require_tls", value(config.submission_listener.require_tls))
    out.table("listen.monitoring")
    monitoring = config.monitoring_listener
    out.key("address", _address(monitoring) if monitoring else value("off"))

    identity = config.identity
    if identity is None:
        out.comment("[identity]: not set (the development PKI's keys sign)")
    else:
        out.table("identity")
        for key, path in (
            ("process_cert", identity.process_cert),
            ("process_key", identity.process_key),
            ("tls_cert", identity.tls_cert),
            ("tls_key", identity.tls_key),
            ("tsa_cert", identity.tsa_cert),
            ("tsa_key", identity.tsa_key),
        ):
            out.key(key, value(path) if path else None, "no TSA key in the node")

    out.table("trust")
    out.key("user_cas", value(config.user_cas))
    out.key("tsa_cas", value(config.tsa_cas))
    out.key("crls", value(config.crls))
    out.key("require_crl", value(config.require_crl))
    out.key("crl_urls", value(config.crl_urls))

    out.table("crl")
    crl = config.crl
    out.key("refresh_fraction", value(crl.refresh_fraction))
    for key in ("max_interval", "min_interval", "retry_initial", "retry_max"):
        out.key(key, seconds(getattr(crl, key)))
    out.key("timeout", value(crl.timeout))
    out.key("max_size", value(crl.max_size))

    out.table("log")
    out.key("level", value(config.log_level))

    _tsa(out, config)
    _peers(out, config.peers)

    out.table("timers")
    for key in type(config.timers).__dataclass_fields__:
        out.key(key, seconds(getattr(config.timers, key)))

    limits = config.limits
    out.table("limits")
    out.key("max_connections", value(limits.max_connections))
    out.key("max_connections_per_peer", value(limits.max_connections_per_peer))
    out.key("sending_connections_per_peer", value(limits.sending_connections_per_peer))
    out.key("max_recipients", value(limits.max_recipients))
    out.key("own_message_limit_mib", mib(limits.own_message_limit))
    out.key("default_quota_mib", mib(limits.default_quota))
    out.key("min_transfer_rate", value(limits.min_transfer_rate))
    out.key("max_junk_commands", value(limits.max_junk_commands))
    out.key("max_processing_attempts", value(limits.max_processing_attempts))

    out.table("retention")
    out.key("keep_content_days", value(config.retention.keep_content_days))

    if not config.accounts:
        out.comment("[[accounts]]: none in the file (the store's, or the development PKI's users)")
    for account in config.accounts:
        out.lines += ["", "[[accounts]]"]
        out.key("address", value(account.address))
        out.key("type", value(account.type))
        out.key("state", value(account.state))
        out.key("quota_mib", mib(account.quota or config.limits.default_quota))
        out.key("holder", value(account.holder) if account.holder else None, "no holder")
        out.key("operators", value(account.operators))
        out.key("etebligat", value(account.etebligat))
    return "\n".join(out.lines) + "\n"


def _tsa(out: _Toml, config: NodeConfig) -> None:
    tsa = config.tsa
    if tsa is None:
        by = "the development PKI's TSA" if config.dev_pki is not None else "the [identity] TSA key"
        out.comment(f"[tsa]: not set ({by} stamps in the node)")
        return
    out.table("tsa")
    out.key("url", value(redact(tsa.url)))
    out.key("policy", value(tsa.policy) if tsa.policy else None, "the TSA's default")
    out.key("timeout", value(tsa.timeout))
    out.key("retries", value(tsa.retries))
    out.key("max_in_flight", value(tsa.max_in_flight))
    out.key("max_reply", value(tsa.max_reply))
    out.key("backoff", value(tsa.backoff))
    out.key("max_skew", value(tsa.max_skew))


def _peers(out: _Toml, peers: Iterable[PeerConfig]) -> None:
    listed = False
    for peer in peers:
        listed = True
        out.table(f"peers.{peer.id}")
        route = value("mx") if peer.route is None else _address(Listener(*peer.route))
        out.key("route", route)
        out.key("mx_port", value(peer.mx_port))
        out.key("domain", value(peer.domain) if peer.domain else None, "the built-in one")
        out.key("process_cas", value(peer.process_cas))
        out.key("tls_cas", value(peer.tls_cas))
        out.key("tls_names", value(peer.tls_names))
        out.key("message_limit_mib", mib(peer.message_limit))
        out.key("crl_urls", value(peer.crl_urls))
    if not listed:
        out.comment("[peers.<id>]: none")
