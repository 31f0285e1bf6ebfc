"""A harness of real gateway processes on loopback, with a dev PKI made for the test."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import email
import email.errors
import email.header
import os
import re
import signal
import smtplib
import socket
import sqlite3
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from prometheus_client.parser import text_string_to_metric_families

from interop.pki.devpki import DevPki, generate
from relay import mesh
from relay.keys import write_pki

ROOT = Path(__file__).resolve().parents[2]


_GIVEN: set[int] = set()


def free_port() -> int:
    """A port free now and never given before by this process: the kernel may hand out a port
    again once the probing socket is closed, and two listeners of one test given the same
    port made a node refuse its configuration (a flaky failure, seen in CI)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


def run_cli(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``kep-relay ARGS`` as a process of its own (exit codes, stdout and stderr as a user
    sees them), from this checkout."""
    return subprocess.run(
        [sys.executable, "-m", "relay.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=cwd,
    )


def wait_for(condition: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Gateway:
    provider: str
    root: Path
    peer_port: int
    submission_port: int
    monitoring_port: int
    process: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)
    # One of several nodes of the provider ([node] name), and their shared store's URL.
    name: str | None = None
    store_url: str | None = None

    def __post_init__(self) -> None:
        self.log = self.root / f"{self.name or self.provider}.log"

    @property
    def config(self) -> Path:
        return self.root / f"{self.name or self.provider}.toml"

    @property
    def data(self) -> Path:
        return self.root / self.provider

    def start(self, prefix: tuple[str, ...] = ()) -> None:
        """Start the node (``prefix``: a program to run it under, such as ``prlimit``)."""
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    *prefix,
                    sys.executable,
                    "-m",
                    "relay.cli",
                    "serve",
                    "--config",
                    str(self.config),
                    "--log-format",
                    "json",
                ],
                stdout=log,
                stderr=log,
                env=env,
                cwd=self.root,
            )
        wait_for(self.listening, what=f"{self.provider} to listen")

    def listening(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"{self.provider} exited:\n{self.log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", self.submission_port), timeout=0.2):
                return True
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        code = self.process.wait(timeout=30)
        self.process = None
        return code

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.data / "state.sqlite3", timeout=10)

    def query(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        if self.store_url is not None:
            with psycopg.connect(self.store_url, autocommit=True) as connection:
                return list(connection.execute(sql.replace("?", "%s"), args or None))
        with self.db() as db:
            return list(db.execute(sql, args))

    def node_processes(self) -> list[int]:
        """The pids of the node processes under this gateway's supervisor ([node] processes)."""
        assert self.process is not None
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rpartition(")")[2].split()
            except OSError:
                continue  # ended meanwhile
            if int(fields[1]) != self.process.pid or fields[0] == "Z":
                continue
            with contextlib.suppress(OSError):  # not multiprocessing's resource tracker
                if b"spawn_main" in (stat.parent / "cmdline").read_bytes():
                    found.append(int(stat.parent.name))
        return sorted(found)

    def mail(self, address: str, folder: str = "INBOX") -> list[Path]:
        base = (
            self.data / "mail" / address / {"INBOX": "", "Delil": ".Delil", "Sent": ".Sent"}[folder]
        )
        return sorted(
            p for sub in ("new", "cur") if (base / sub).is_dir() for p in (base / sub).iterdir()
        )

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, "--config", self.config, cwd=self.root)


@dataclass
class Mesh:
    root: Path
    pki: DevPki
    gateways: dict[str, Gateway]
    layout: mesh.Mesh
    timers: dict[str, str]

    def __getitem__(self, provider: str) -> Gateway:
        return self.gateways[provider]

    def stop(self) -> None:
        for gateway in self.gateways.values():
            if gateway.process is not None:
                gateway.stop()


def make_mesh(
    root: Path,
    providers: list[str],
    *,
    extra: dict[str, str] | None = None,
    timers: dict[str, str] | None = None,
    dead_routes: tuple[str, ...] = (),
    processes: dict[str, int] | None = None,
) -> Mesh:
    """Configurations for ``providers`` on loopback (``relay.mesh``'s, on free ports);
    ``dead_routes`` point at closed ports."""
    pki = generate(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5), providers)
    write_pki(pki, root / "pki")
    layout = mesh.Mesh(
        root, tuple(mesh.MeshNode(p, free_port(), free_port(), free_port()) for p in providers)
    )
    routes = mesh.Mesh(
        root,
        tuple(
            dataclasses.replace(n, peer_port=free_port()) if n.provider in dead_routes else n
            for n in layout.nodes
        ),
    )
    quick = {"retry_initial": "0.2s", "retry_max": "1s", "queue_poll": "0.1s", **(timers or {})}
    gateways = {}
    for node in layout.nodes:
        layout.config(node.provider).write_text(
            mesh.node_toml(
                routes,
                node,
                timers=quick,
                extra=(extra or {}).get(node.provider, ""),
                processes=(processes or {}).get(node.provider, 1),
            )
        )
        gateways[node.provider] = Gateway(
            node.provider, root, node.peer_port, node.submission_port, node.monitoring_port
        )
    return Mesh(root, pki, gateways, routes, quick)


def peer_client(
    mesh: Mesh, as_provider: str, to: Gateway, *, pki_root: Path | None = None
) -> smtplib.SMTP_SSL:
    """Python's smtplib connected to ``to``'s peer listener with ``as_provider``'s TLS
    certificate (mutual TLS, as a peer gateway)."""
    folder = pki_root or (mesh.root / "pki")
    context = ssl.create_default_context(cafile=str(mesh.root / "pki" / "ca" / "tls-ca.crt"))
    context.check_hostname = False
    context.load_cert_chain(
        str(folder / "providers" / as_provider / "tls.crt"),
        str(folder / "providers" / as_provider / "tls.key"),
    )
    return smtplib.SMTP_SSL("127.0.0.1", to.peer_port, context=context, timeout=30)


# -- the monitoring listener ------------------------------------------------------------

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def get(gateway: Gateway, path: str) -> tuple[int, bytes]:
    url = f"http://127.0.0.1:{gateway.monitoring_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def scrape(gateway: Gateway) -> Samples:
    status, body = get(gateway, "/metrics")
    assert status == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


# -- helpers for tests that send and watch evidence ----------------------------------------


def send(
    gateway: Gateway, sender: str, *to: str, subject: str = "Deneme", extra: tuple[str, ...] = ()
) -> None:
    # Tests wait for the evidence they expect themselves (a rejection is one of them).
    args = ["send", "--from", sender, "--subject", subject, "--body", "Merhaba", "--no-wait"]
    args += extra
    for recipient in to:
        args += ["--to", recipient]
    done = gateway.cli(*args)
    assert done.returncode == 0, done.stderr


def evidence(
    gateway: Gateway, subject_marker: str | None = None
) -> list[tuple[str, str, str, str]]:
    """(type, event, recipient, direction) of the evidence at ``gateway`` (for one message)."""
    rows = gateway.query(
        "SELECT type, event, COALESCE(recipient, ''), direction, remmd_id FROM evidence"
    )
    return [
        (str(t), str(e), str(r), str(d))
        for t, e, r, d, m in rows
        if subject_marker is None or m == subject_marker
    ]


def subject_of(path: Path) -> str:
    """The Subject of a filed message, unfolded (RFC 5322 §2.2.3) and decoded."""
    message = email.message_from_bytes(path.read_bytes())
    raw = re.sub(r"\r?\n(?=[ \t])", "", message["Subject"] or "")
    try:
        return str(email.header.make_header(email.header.decode_header(raw)))
    except (email.errors.HeaderParseError, LookupError, UnicodeDecodeError):
        return raw  # a test sent a broken encoded word on purpose


def remmd_of_subject(gateway: Gateway, sender: str, subject: str) -> str:
    """The REMMD id of the message ``sender`` submitted with ``subject``, read from the
    SubmissionAcceptanceRejection filed in the sender's Delil folder (accepted or not)."""
    found: list[str] = []

    def filed() -> bool:
        for path in gateway.mail(sender, "Delil"):
            message = email.message_from_bytes(path.read_bytes())
            if subject_of(path).endswith(f": {subject}") and "SubmissionAcceptanceRejection" in (
                message["X-REM-Evidence-Type"] or ""
            ):
                found.append(str(message["X-REM-Message-Identifier"]))
                return True
        return False

    wait_for(filed, what=f"submission evidence of {subject!r}")
    return found[0]


def wait_evidence(
    gateway: Gateway, remmd: str, expected: set[tuple[str, str, str]], timeout: float = 20
) -> None:
    def have() -> bool:
        got = {(t, e, r) for t, e, r, _d in evidence(gateway, remmd)}
        return expected <= got

    wait_for(have, timeout, f"evidence {expected} at {gateway.provider}")


def subject() -> str:
    return f"Konu {uuid.uuid4().hex[:8]} ğüş"


def add_nodes(
    mesh_: Mesh,
    provider: str,
    names: list[str],
    store_url: str,
    *,
    lease: str = "5s",
    small_work: dict[str, str] | None = None,
) -> list[Gateway]:
    """Nodes of ``provider`` as on separate machines: their own ports and names, one
    PostgreSQL store and one shared data folder (spool, mailboxes, PKI). The provider's
    gateway in the mesh becomes the first of them, the one the other providers route to.
    ``small_work``: a node's ``[node] small_work``, by name (else the default)."""
    first = next(n for n in mesh_.layout.nodes if n.provider == provider)
    nodes = []
    for i, name in enumerate(names):
        # The first keeps the ports the other providers' routes point at.
        node = first if i == 0 else mesh.MeshNode(provider, free_port(), free_port(), free_port())
        toml = mesh.node_toml(
            mesh_.layout,
            node,
            timers=mesh_.timers,
            name=name,
            extra=f'[store]\nurl = "{store_url}"\nlease = "{lease}"\n',
        )
        gateway = Gateway(
            provider,
            mesh_.root,
            node.peer_port,
            node.submission_port,
            node.monitoring_port,
            name=name,
            store_url=store_url,
        )
        work = (small_work or {}).get(name)
        if work:  # into [node], which ends where [listen.peer] begins
            toml = toml.replace("\n[listen.peer]", f'small_work = "{work}"\n\n[listen.peer]', 1)
        gateway.config.write_text(toml)
        nodes.append(gateway)
    mesh_.gateways[provider] = nodes[0]
    for extra in nodes[1:]:
        mesh_.gateways[extra.name or extra.provider] = extra
    return nodes
