"""What would keep ``kep-relay serve`` from starting, found once and said in one line.

``check(config)`` runs in the process that serves or supervises (``relay.processes.serve``),
before any node process starts: every listener's address can be bound (the peer, submission
and monitoring listeners), the data folder and the SQLite store's folder can be made and
written in, and the store opens (a PostgreSQL server gets the wait a node gives it at start,
``relay.context.STORE_WAIT``). Each failure becomes a ``ConfigurationError`` of one line
naming the address, folder or URL, the key of the configuration file it comes from, and what
to do, so ``kep-relay`` exits 2 with that line instead of N node processes each printing a
traceback. It makes what serving would make anyway (the data folder, the SQLite file) and
nothing else.

``folder_problem`` and ``running_user`` serve ``kep-relay config check`` too, which creates
nothing.
"""

from __future__ import annotations

import errno
import os
import pwd
import socket
from collections.abc import Callable
from pathlib import Path

from interop.errors import ConfigurationError, cause_text
from relay.config import Listener, NodeConfig
from relay.context import STORE_WAIT
from relay.store.database import is_database_error, open_database, redact, sqlite_path

# What to do about the usual reasons a listener cannot bind.
_BIND_ADVICE = {
    errno.EADDRINUSE: "address already in use; stop what uses it or change the port",
    errno.EACCES: "permission denied; ports below 1024 need root or CAP_NET_BIND_SERVICE:"
    " give the service that capability or use a port above 1023",
    errno.EADDRNOTAVAIL: "not an address of this machine; use one of its addresses",
}


# os.access as the effective user (the one that will write), where the system can.
_EFFECTIVE = os.access in os.supports_effective_ids


def check(config: NodeConfig, store_wait: float = STORE_WAIT) -> None:
    """Raise ``ConfigurationError`` (a line for each problem) when the node cannot start;
    the listeners are tried first, so a node that cannot listen has made nothing."""
    steps: tuple[Callable[[], list[str]], ...] = (
        lambda: [p for key, one in listeners(config) if (p := bind_problem(config, key, one))],
        lambda: writable_problems(config),
        lambda: [p for p in (open_problem(config, store_wait),) if p],
    )
    for step in steps:  # in turn: a later step makes what an earlier failure should not
        problems = step()
        if problems:
            raise ConfigurationError("\n".join(problems))


def running_user() -> str:
    """The name of the user this process runs as (its number when it has no name)."""
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def source_of(config: NodeConfig, key: str) -> str:
    """``key in FILE``, or ``key of the embedded default``."""
    if config.source == "embedded default":
        return f"{key} of the embedded default"
    return f"{key} in {config.source}"


def listeners(config: NodeConfig) -> list[tuple[str, Listener]]:
    """Each listener the node opens, with the key that sets its address."""
    named = [
        ("listen.peer.address", config.peer_listener),
        ("listen.submission.address", config.submission_listener),
    ]
    if config.monitoring_listener is not None:
        named.append(("listen.monitoring.address", config.monitoring_listener))
    return named


def bind_problem(config: NodeConfig, key: str, listener: Listener) -> str | None:
    """Why ``listener`` cannot be bound now, or None: bound and let go at once, with the
    options the node's servers use (``SO_REUSEADDR``; IPv6 sockets IPv6 only)."""
    host, port = listener.host, listener.port
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    where = f"cannot listen on {shown} ({source_of(config, key)})"
    try:
        addresses = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        return f"{where}: {host!r} is not an address of this machine ({exc.strerror})"
    for family, kind, proto, _name, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                return f"{where}: {_BIND_ADVICE.get(exc.errno or 0, exc.strerror or str(exc))}"
    return None


def folder_problem(folder: Path) -> str | None:
    """Why the node could not make ``folder`` (when missing) or write in it, or None; looks
    only (the nearest folder that exists, when it is missing) and creates nothing."""
    path = folder.absolute()
    existing = _nearest(path)
    if not existing.is_dir():
        if existing == path:
            return f"{path} is not a folder"
        return f"{path} cannot be made: {existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK, effective_ids=_EFFECTIVE):
        if existing == path:
            return f"{path} is not writable by user {running_user()}"
        return f"{path} cannot be made: {existing} is not writable by user {running_user()}"
    return None


def writable_problems(config: NodeConfig) -> list[str]:
    """The data folder (and the SQLite store's, when elsewhere) made if missing and written
    in, as the node does at start, and the development PKI's folder writable; a line for each
    that fails."""
    user = running_user()
    folders = [("node.data_dir", config.data_dir)]
    store = sqlite_path(config.store_url) if config.store_url.startswith("sqlite:///") else None
    if store is not None and store.parent.absolute() != config.data_dir.absolute():
        folders.append(("store.url", store.parent))
    problems = []
    for key, folder in folders:
        what = "the data folder" if key == "node.data_dir" else "the store's folder"
        shown, source = folder.absolute(), source_of(config, key)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            existing = _nearest(shown)
            if existing.exists() and not existing.is_dir():
                problems.append(
                    f"cannot make {what} {shown} ({source}): {existing} is a file, not a"
                    f" folder; change {key}"
                )
            else:
                problems.append(
                    f"cannot make {what} {shown} ({source}) as user {user}:"
                    f" {exc.strerror or exc}; make {existing} writable for {user} or change {key}"
                )
            continue
        holds = store is not None and store.parent.absolute() == shown
        try:
            _write_probe(folder)
            if holds and store is not None and store.exists():
                os.close(os.open(store, os.O_RDWR))
        except OSError as exc:
            problems.append(
                f"cannot write in {what} {shown} ({source})"
                + (f", which holds the store {store}," if holds and store else "")
                + f" as user {user}: {exc.strerror or exc}; make it writable for {user}"
                f" or change {key}"
            )
    if config.dev_pki is not None:
        # Nodes sharing it take a lock file in it at every start (relay.keys.ensure_dev_pki);
        # looked at, not written in: another node may be reading the folder's files.
        problem = folder_problem(config.dev_pki)
        if problem is not None:
            problems.append(
                f"cannot use the development PKI's folder ({source_of(config, 'node.dev_pki')}):"
                f" {problem}; change node.dev_pki"
            )
    return problems


def _nearest(path: Path) -> Path:
    """``path`` or the nearest of its parents that exists."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _write_probe(folder: Path) -> None:
    probe = folder / f".start-probe-{socket.gethostname()}-{os.getpid()}"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, b"ok")
        os.fsync(fd)
    finally:
        os.close(fd)
        probe.unlink()


def open_problem(config: NodeConfig, wait: float) -> str | None:
    """Why the store does not open, or None; a PostgreSQL server not there yet is waited
    for ``wait`` seconds, as a node process waits at start."""
    url = config.store_url
    try:
        open_database(
            url, synchronous=config.store.sqlite_synchronous, connections=2, retry_for=wait
        ).close()
    except Exception as exc:
        if not is_database_error(exc):
            raise
        if url.startswith("sqlite:///"):
            return (
                f"cannot open the store {sqlite_path(url)} ({source_of(config, 'store.url')}):"
                f" {cause_text(exc)}; check that it is a SQLite database the user"
                f" {running_user()} may write, or change store.url"
            )
        return (
            f"cannot reach the store at {redact(url)} ({source_of(config, 'store.url')})"
            f" after {wait:.0f} s: {cause_text(exc)}; start the database or correct store.url"
        )
    return None
