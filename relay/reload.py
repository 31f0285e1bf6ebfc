"""SIGHUP: the configuration file read again, and what may change applied without a restart.

Takes: a node's context (a node process's, or the supervisor's: ``relay.processes``) and the
file it was started with (``config.source``). Promises:

* applied at once: the trust list (``[trust]`` and ``[peers.*]``: CA files, names, limits,
  routes, CRL locations; with a development PKI, the PKI folder's CAs and CRLs), the CRLs
  (``[trust] crls`` files, and those fetched and kept: ``relay.crls``), ``[crl]``, the
  accounts of the file (``[[accounts]]``) and ``[log] level``. Logged as ``config_reloaded``
  with the keys that changed;
* keys that changed but need a restart (``NEEDS_RESTART``: listeners, store, data folder,
  identity, processes, ...) are logged as ``config_needs_restart`` and not applied: the
  node goes on with the values it started with, and a node process started again later gets
  those too;
* a file that does not load, or whose trust does not (a CA file missing, a CRL unreadable),
  is refused whole: ``config_reload_refused`` with every problem, and the configuration in
  use stays;
* the embedded default (no file) has nothing to read again: ``config_reload_skipped``.

``prepare`` reads and checks (any thread); ``apply`` switches the context (the event loop's
thread, where TLS contexts and verifiers are used). Until a node handles SIGHUP itself,
``hold_hangups`` keeps one that comes early from ending the process: it is remembered and
handled once the node runs (``held_hangup``).
"""

from __future__ import annotations

import dataclasses
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import structlog
from cryptography.hazmat.primitives import hashes

from interop.errors import KepError
from interop.revocation import CRL, RevocationData
from interop.trust import TrustList
from interop.verifiers import Verifiers
from relay import logs
from relay.config import NodeConfig
from relay.config_file import load
from relay.context import NodeContext, config_accounts
from relay.crypto import configured_trust, dev_verifiers
from relay.keys import read_pki
from relay.mailbox import Account

log = structlog.get_logger("kep.node")

EMBEDDED = "embedded default"
# NodeConfig fields applied at a SIGHUP, with the key an operator knows them by.
RELOADED = {
    "user_cas": "trust.user_cas",
    "tsa_cas": "trust.tsa_cas",
    "crls": "trust.crls",
    "require_crl": "trust.require_crl",
    "crl_urls": "trust.crl_urls",
    "peers": "peers",
    "crl": "crl",
    "accounts": "accounts",
    "log_level": "log.level",
}
# Fields read once when the node starts (listeners bound, store opened, keys loaded, the
# limiter and timers built): a change is logged and waits for a restart.
NEEDS_RESTART = {
    "provider": "node.provider",
    "data_dir": "node.data_dir",
    "dev_pki": "node.dev_pki",
    "name": "node.name",
    "processes": "node.processes",
    "small_work": "node.small_work",
    "refuse_when_full": "node.refuse_when_full",
    "peer_listener": "listen.peer",
    "submission_listener": "listen.submission",
    "monitoring_listener": "listen.monitoring",
    "identity": "identity",
    "store": "store",
    "timers": "timers",
    "limits": "limits",
    "retention": "retention",
    "tsa": "tsa",
}
_SHA256 = hashes.SHA256()


@dataclass(frozen=True)
class Prepared:
    """A configuration read again, checked and built, not yet applied."""

    config: NodeConfig  # the one in use with the RELOADED fields of the file
    changed: list[str]  # keys of RELOADED that changed (peers one by one)
    needs_restart: list[str]  # keys of NEEDS_RESTART that changed: not applied
    trust: TrustList
    crls: tuple[CRL, ...]  # the configuration's (files, or the development PKI's)
    accounts: list[Account]


def prepare(context: NodeContext) -> Prepared | None:
    """The configuration file read again and everything it names loaded; None (logged) when
    there is nothing to read or it does not load."""
    current = context.config
    if current.source == EMBEDDED:
        log.info("config_reload_skipped", config=EMBEDDED, why="no configuration file to read")
        return None
    try:
        fresh = load(Path(current.source))
        config = dataclasses.replace(current, **{f: getattr(fresh, f) for f in RELOADED})
        if config.dev_pki is not None:
            pki = read_pki(config.dev_pki)
            verifiers = dev_verifiers(config, pki)
            accounts = config_accounts(config, pki)
        else:
            verifiers = Verifiers(*configured_trust(config))
            accounts = config_accounts(config, None)
    except Exception as exc:  # anything at all: the configuration in use stays
        log.error("config_reload_refused", config=current.source, problems=problems(exc))
        return None
    return Prepared(
        config=config,
        changed=_changed(current, fresh, context, verifiers),
        needs_restart=[key for f, key in NEEDS_RESTART.items() if _differs(current, fresh, f)],
        trust=verifiers.trust,
        crls=verifiers.revocation.crls,
        accounts=accounts,
    )


def apply(context: NodeContext, prepared: Prepared) -> None:
    """Switch ``context`` to ``prepared`` (the event loop's thread, or the supervisor's)."""
    config = prepared.config
    logs.set_level(config.log_level)
    context.config = config
    context.routes = {p.id: p.route for p in config.peers}
    context.mailboxes.use_accounts(prepared.accounts)
    context.crls.configure(prepared.crls)
    revocation = RevocationData.of(context.crls.current(), require=config.require_crl)
    context.use_verifiers(Verifiers(prepared.trust, revocation))
    context.trust_tls_cas(prepared.trust)
    log.info(
        "config_reloaded",
        config=config.source,
        changed=prepared.changed,
        cas=len(_fingerprints(prepared.trust)),
        crls=len(revocation.crls),
        accounts=len(prepared.accounts),
    )
    if prepared.needs_restart:
        log.warning("config_needs_restart", config=config.source, keys=prepared.needs_restart)


def reload(context: NodeContext) -> bool:
    """``prepare`` and ``apply`` on this thread; True when applied."""
    prepared = prepare(context)
    if prepared is None:
        return False
    apply(context, prepared)
    return True


def failed(source: str) -> None:
    """Called in an ``except`` block: applying a reload raised (a bug). Logged with its
    traceback; the caller goes on, and the next SIGHUP is heard."""
    log.exception("config_reload_failed", config=source)


def problems(exc: BaseException) -> list[str]:
    """Every problem an exception names, one per line of its text."""
    text = exc.detail if isinstance(exc, KepError) else f"{type(exc).__name__}: {exc}"
    return [line for line in (s.strip() for s in text.splitlines()) if line] or [text]


def _differs(current: NodeConfig, fresh: NodeConfig, name: str) -> bool:
    return bool(getattr(current, name) != getattr(fresh, name))


def _changed(
    current: NodeConfig, fresh: NodeConfig, context: NodeContext, verifiers: Verifiers
) -> list[str]:
    changed = [key for f, key in RELOADED.items() if f != "peers" and _differs(current, fresh, f)]
    before = {p.id: p for p in current.peers}
    after = {p.id: p for p in fresh.peers}
    changed += [
        f"peers.{pid}" for pid in sorted({*before, *after}) if before.get(pid) != after.get(pid)
    ]
    # Files replaced under the same names (or a development PKI's) count too.
    if _fingerprints(context.verifiers.trust) != _fingerprints(verifiers.trust):
        changed.append("trusted CAs")
    crls_then = {c.fingerprint(_SHA256) for c in context.crls.configured}
    if crls_then != {c.fingerprint(_SHA256) for c in verifiers.revocation.crls}:
        changed.append("configured CRLs")
    return changed


def _fingerprints(trust: TrustList) -> set[bytes]:
    cas = [*trust.user_cas, *trust.tsa_cas]
    for entry in trust:
        cas += [*entry.process_cas, *entry.tls_cas]
    return {ca.fingerprint(_SHA256) for ca in cas}


# -- SIGHUP before the node handles it -------------------------------------------------------

_held = threading.Event()


def hold_hangups() -> None:
    """From now until the node handles SIGHUP itself, one that comes is remembered instead
    of ending the process (Python's default)."""
    signal.signal(signal.SIGHUP, _remember)


def held_hangup() -> bool:
    """Whether a SIGHUP came while held (and forget it)."""
    came = _held.is_set()
    _held.clear()
    return came


def _remember(signum: int, frame: FrameType | None) -> None:
    _held.set()
