"""A mesh of gateways on one machine: every provider's node on loopback (``kep-relay mesh``).

For demonstrations, dashboards and conformance runs: ``up`` makes a development PKI and one
configuration per provider in a folder and starts the nodes, ``traffic`` sends a signed
message from each provider to each provider and waits for the Delivery evidence, ``status``
shows the nodes and ``down`` stops them with SIGTERM (they drain).

Layout of the folder: ``mesh.json`` (providers and ports), ``pki/`` (the development PKI),
``<id>.toml``, ``<id>/`` (data), ``<id>.log`` (JSON log lines), ``<id>.pid`` while running, and
``prometheus.yml`` (a scrape configuration for every node, with the alert rules of deploy/).
Ports: peer listener ``base + n``, submission ``base + 100 + n``, monitoring ``base + 200 + n``
for provider number ``n`` in the order given.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from interop.errors import ConfigurationError
from interop.pki.devpki import DevPki, generate
from interop.providers import BUILTIN_DIRECTORY
from relay.config import Listener
from relay.keys import MANIFEST, read_pki, write_pki
from relay.store.database import is_database_error
from relay.store.reader import StoreReader
from relay.submission import submit

LAYOUT = "mesh.json"
RULES = Path(__file__).resolve().parents[1] / "deploy" / "prometheus" / "kep-relay-rules.yml"


@dataclass(frozen=True, slots=True)
class MeshNode:
    provider: str
    peer_port: int
    submission_port: int
    monitoring_port: int


@dataclass(frozen=True, slots=True)
class Mesh:
    folder: Path
    nodes: tuple[MeshNode, ...]

    def config(self, provider: str) -> Path:
        return self.folder / f"{provider}.toml"

    def log(self, provider: str) -> Path:
        return self.folder / f"{provider}.log"

    def pidfile(self, provider: str) -> Path:
        return self.folder / f"{provider}.pid"

    def database(self, provider: str) -> str:
        """The URL of ``provider``'s store (each mesh node keeps SQLite in its data folder)."""
        return f"sqlite:///{self.folder / provider / 'state.sqlite3'}"

    def node(self, provider: str) -> MeshNode:
        for node in self.nodes:
            if node.provider == provider:
                return node
        raise KeyError(provider)


def plan(folder: Path, providers: Sequence[str], base_port: int) -> Mesh:
    unknown = [p for p in providers if BUILTIN_DIRECTORY.get(p) is None]
    if unknown:
        raise ConfigurationError(f"mesh: {', '.join(unknown)} not among hs01-hs08")
    if len(set(providers)) != len(providers) or not providers:
        raise ConfigurationError("mesh: give each provider once")
    if not 1024 <= base_port <= 65535 - 200 - len(providers):
        raise ConfigurationError(f"mesh: base port {base_port} leaves no room for the nodes")
    nodes = tuple(
        MeshNode(p, base_port + n, base_port + 100 + n, base_port + 200 + n)
        for n, p in enumerate(providers, start=1)
    )
    return Mesh(folder.resolve(), nodes)  # absolute: nodes run from inside the folder


def load(folder: Path) -> Mesh:
    path = folder / LAYOUT
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"{path}: no mesh here ({exc.strerror}); run mesh up") from exc
    return Mesh(folder.resolve(), tuple(MeshNode(**node) for node in raw["nodes"]))


TIMERS = {"retry_initial": "2s", "retry_max": "30s", "queue_poll": "0.2s"}


# Eight nodes share one machine's cores: one node process each is plenty.
def node_toml(
    mesh: Mesh,
    node: MeshNode,
    *,
    timers: dict[str, str] | None = None,
    extra: str = "",
    processes: int = 1,
    name: str | None = None,
) -> str:
    """The configuration of one node: dev PKI, loopback listeners, routes to every other.

    ``timers`` override the mesh's (quick retries, for a demonstration); ``extra`` is
    appended (``[[accounts]]`` tables, say).
    """
    timer_lines = "".join(f'{k} = "{v}"\n' for k, v in {**TIMERS, **(timers or {})}.items())
    peers = "".join(
        f'\n[peers.{other.provider}]\nroute = "127.0.0.1:{other.peer_port}"\n'
        for other in mesh.nodes
        if other.provider != node.provider
    )
    named = f'name = "{name}"\n' if name else ""
    return (
        f"# {node.provider} in a kep-relay mesh (relay/mesh.py); development PKI only.\n"
        f'[node]\nprovider = "{node.provider}"\ndata_dir = "{node.provider}"\ndev_pki = "pki"\n'
        f"processes = {processes}\n{named}\n"
        f'[listen.peer]\naddress = "127.0.0.1:{node.peer_port}"\n\n'
        f'[listen.submission]\naddress = "127.0.0.1:{node.submission_port}"\n\n'
        f'[listen.monitoring]\naddress = "127.0.0.1:{node.monitoring_port}"\n'
        f"{peers}\n[timers]\n{timer_lines}\n{extra}"
    )


def prometheus_yml(mesh: Mesh) -> str:
    targets = "".join(
        f'      - targets: ["127.0.0.1:{n.monitoring_port}"]\n'
        f"        labels:\n          provider: {n.provider}\n"
        for n in mesh.nodes
    )
    rules = f"rule_files:\n  - {RULES}\n" if RULES.exists() else ""  # in a source checkout
    return (
        "# Scrapes every node of the mesh: prometheus --config.file=prometheus.yml\n"
        "global:\n  scrape_interval: 5s\n  evaluation_interval: 5s\n"
        f"{rules}"
        f"scrape_configs:\n  - job_name: kep-relay\n    static_configs:\n{targets}"
    )


def write(mesh: Mesh, now: dt.datetime | None = None) -> DevPki:
    """The PKI (kept if it covers every provider), configurations and ``prometheus.yml``."""
    mesh.folder.mkdir(parents=True, exist_ok=True)
    providers = [n.provider for n in mesh.nodes]
    pki_folder = mesh.folder / "pki"
    if (pki_folder / MANIFEST).exists():
        pki = read_pki(pki_folder)
        missing = [p for p in providers if p not in pki.providers]
        if missing:
            raise ConfigurationError(
                f"{pki_folder}: made for other providers (no {', '.join(missing)}); "
                "use a new folder"
            )
    else:
        pki = generate((now or dt.datetime.now(dt.UTC)) - dt.timedelta(minutes=5), providers)
        write_pki(pki, pki_folder)
    for node in mesh.nodes:
        mesh.config(node.provider).write_text(node_toml(mesh, node), encoding="utf-8")
    (mesh.folder / "prometheus.yml").write_text(prometheus_yml(mesh), encoding="utf-8")
    (mesh.folder / LAYOUT).write_text(
        json.dumps({"nodes": [asdict(n) for n in mesh.nodes]}, indent=2) + "\n", encoding="utf-8"
    )
    return pki


# -- processes ---------------------------------------------------------------------------------


def running_pid(mesh: Mesh, provider: str) -> int | None:
    """The pid of the provider's node if it runs (the pid file's process serves its config)."""
    try:
        pid = int(mesh.pidfile(provider).read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if str(mesh.config(provider)).encode() in cmdline else None


def ready(node: MeshNode) -> bool:
    url = f"http://127.0.0.1:{node.monitoring_port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


class StartFailed(RuntimeError):
    """A node of the mesh did not start (or not in time); the nodes this start had started
    are stopped again. ``str()`` is one line: which, why, and what was stopped."""


def start(mesh: Mesh, timeout: float = 120.0) -> list[str]:
    """Start every node not running; wait until all are ready. Returns those started.

    When one stops during start-up or is not ready in ``timeout`` seconds, the nodes started
    here are stopped (those running before are left alone) and ``StartFailed`` says which
    failed and why: the lines ``kep-relay:`` its log ends with, else its log's last line.
    """
    started: dict[str, subprocess.Popen[bytes]] = {}
    logged_from: dict[str, int] = {}
    for node in mesh.nodes:
        if running_pid(mesh, node.provider) is not None:
            continue
        with mesh.log(node.provider).open("ab") as log:
            logged_from[node.provider] = log.tell()
            process = subprocess.Popen(  # the node outlives this command: its own session
                [
                    sys.executable,
                    "-m",
                    "relay.cli",
                    "serve",
                    "--config",
                    str(mesh.config(node.provider)),
                    "--log-format",
                    "json",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=mesh.folder,
                start_new_session=True,
            )
        mesh.pidfile(node.provider).write_text(f"{process.pid}\n")
        started[node.provider] = process
    deadline = time.monotonic() + timeout
    waiting = list(mesh.nodes)
    while waiting:
        for node in list(waiting):
            if ready(node):
                waiting.remove(node)
            elif _exited(mesh, node.provider, started.get(node.provider)):
                why = _why(mesh.log(node.provider), logged_from.get(node.provider, 0))
                stopped = _stop_started(mesh, started)
                raise StartFailed(
                    f"{node.provider} did not start: {why}; stopped again:"
                    f" {', '.join(stopped) or 'none'} (log: {mesh.log(node.provider)})"
                )
        if waiting and time.monotonic() > deadline:
            names = ", ".join(n.provider for n in waiting)
            stopped = _stop_started(mesh, started)
            raise StartFailed(
                f"not ready after {timeout:.0f} s: {names}; stopped again:"
                f" {', '.join(stopped) or 'none'} (logs: {mesh.folder}/<id>.log)"
            )
        if waiting:
            time.sleep(0.2)
    return list(started)


def _why(log: Path, offset: int) -> str:
    """Why a node stopped, from what it logged since ``offset``: its ``kep-relay:`` lines
    (what the command line says of a problem), else its last line."""
    with log.open("rb") as handle:
        handle.seek(offset)
        lines = [x.strip() for x in handle.read().decode(errors="replace").splitlines()]
    said = [x.removeprefix("kep-relay: ") for x in lines if x.startswith("kep-relay: ")]
    last = next((x for x in reversed(lines) if x), "it logged nothing")
    return " / ".join(said) if said else last[:300]


def _stop_started(mesh: Mesh, started: dict[str, subprocess.Popen[bytes]]) -> list[str]:
    """SIGTERM the nodes this start began that still run, wait for them; their names."""
    stopped = [p for p, process in started.items() if process.poll() is None]
    for provider in stopped:
        started[provider].terminate()
    for provider, process in started.items():
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        mesh.pidfile(provider).unlink(missing_ok=True)
    return stopped


def _exited(mesh: Mesh, provider: str, child: subprocess.Popen[bytes] | None) -> bool:
    # A child just started may not have exec'd yet: ask it, not /proc's command line.
    return child.poll() is not None if child else running_pid(mesh, provider) is None


def stop(mesh: Mesh, timeout: float = 60.0) -> list[str]:
    """SIGTERM every running node (they drain), SIGKILL what is left after ``timeout``."""
    pids = {}
    for node in mesh.nodes:
        pid = running_pid(mesh, node.provider)
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            pids[node.provider] = pid
    deadline = time.monotonic() + timeout
    while any(running_pid(mesh, p) is not None for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for provider, pid in pids.items():
        if running_pid(mesh, provider) is not None:
            os.kill(pid, signal.SIGKILL)
    for node in mesh.nodes:
        mesh.pidfile(node.provider).unlink(missing_ok=True)
    return sorted(pids)


# -- traffic -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sent:
    sender: str
    recipient: str
    remmd_id: str
    sender_provider: str


def delivered(mesh: Mesh, sent: Sent) -> bool:
    """The sender's node holds Delivery evidence for the message and its recipient."""
    try:
        with StoreReader(mesh.database(sent.sender_provider)) as store:
            return store.delivered(sent.remmd_id, sent.recipient)
    except Exception as exc:  # a store being made, or locked: not yet
        if is_database_error(exc):
            return False
        raise


def send_all(mesh: Mesh, pki: DevPki) -> list[Sent]:
    """One signed message from a user of each provider to a user of each provider."""
    sent = []
    for origin in mesh.nodes:
        sender = pki.users_of(origin.provider)[0]
        listener = Listener("127.0.0.1", origin.submission_port, require_tls=False)
        for target in mesh.nodes:
            recipient = pki.users_of(target.provider)[1].address
            queue_id, _size = submit(
                listener,
                sender,
                [recipient],
                subject=f"mesh {origin.provider} -> {target.provider}",
                body="A message of kep-relay mesh traffic.\n",
            )
            domain = BUILTIN_DIRECTORY[origin.provider].domain
            sent.append(Sent(sender.address, recipient, f"{queue_id}@{domain}", origin.provider))
    return sent


def wait_delivered(mesh: Mesh, sent: Sequence[Sent], timeout: float) -> list[Sent]:
    """Waits for every Delivery evidence; returns the messages still without one."""
    deadline = time.monotonic() + timeout
    missing = list(sent)
    while missing:
        missing = [s for s in missing if not delivered(mesh, s)]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    return missing
