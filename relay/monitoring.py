"""The monitoring listener: ``/metrics``, ``/healthz`` and ``/readyz`` (docs/operations.md).

It is the standard library's WSGI server with a thread per request, apart from the SMTP
listeners and their event loop: Prometheus can scrape and a supervisor can probe even when the
node is busy, and a stuck event loop shows as ``/healthz`` failing instead of as silence.

``/healthz``: the process is alive and its event loop turns. ``/readyz``: the node can take
mail: storage is writable, the PKI is loaded and in date, the listeners are up, it is not
draining. Both answer JSON with each check, 200 when all pass, 503 otherwise.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from relay.store.reader import writable

Check = Callable[[], str | None]  # None when fine, else what is wrong
StartResponse = Callable[[str, list[tuple[str, str]]], Any]

# Probe files are named for the machine and process too: the data folder may be shared.
_HOST = socket.gethostname()


@dataclass(frozen=True, slots=True)
class Probes:
    alive: dict[str, Check]
    ready: dict[str, Check]


def run_checks(checks: dict[str, Check]) -> tuple[bool, dict[str, str]]:
    results = {}
    for name, check in checks.items():
        try:
            problem = check()
        except Exception as exc:  # a failing check is an answer, not a crash of the listener
            problem = f"{type(exc).__name__}: {exc}"
        results[name] = problem or "ok"
    return all(v == "ok" for v in results.values()), results


def storage_writable(data_dir: os.PathLike[str], store_url: str) -> Check:
    """A file can be written and synced in the data folder, and the store takes a write lock."""

    def check() -> str | None:
        probe = os.path.join(
            data_dir, f".ready-probe-{_HOST}-{os.getpid()}-{threading.get_ident()}"
        )
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, b"ok")
                os.fsync(fd)
            finally:
                os.close(fd)
                os.unlink(probe)
        except OSError as exc:
            return f"data folder not writable: {exc.strerror}"
        problem = writable(store_url)
        if problem is not None:
            return problem
        return None

    return check


def _app(registry: CollectorRegistry, probes: Probes) -> Callable[..., Iterable[bytes]]:
    metrics = make_wsgi_app(registry)

    def probe(checks: dict[str, Check], start_response: StartResponse) -> list[bytes]:
        ok, results = run_checks(checks)
        body = json.dumps({"status": "ok" if ok else "failing", "checks": results}).encode()
        start_response(
            "200 OK" if ok else "503 Service Unavailable",
            [("Content-Type", "application/json"), ("Cache-Control", "no-store")],
        )
        return [body]

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD")])
            return [b""]
        if path == "/metrics":
            result: Iterable[bytes] = metrics(environ, start_response)
            return result
        if path == "/healthz":
            return probe(probes.alive, start_response)
        if path == "/readyz":
            return probe(probes.ready, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"/metrics, /healthz or /readyz\n"]

    return app


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow scraper never holds up shutdown


class _QuietHandler(WSGIRequestHandler):
    timeout = 10.0  # seconds a client may take to send its request (no slow-loris)

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would drown the node's own log lines."""


class MonitoringListener:
    def __init__(self, host: str, port: int, registry: CollectorRegistry, probes: Probes) -> None:
        self.server = make_server(
            host, port, _app(registry, probes), server_class=_Server, handler_class=_QuietHandler
        )
        self.server.timeout = 5.0
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="monitoring", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def heartbeat_check(last_beat: Callable[[], float], limit: float = 30.0) -> Check:
    """Alive while the event loop has turned within ``limit`` seconds."""

    def check() -> str | None:
        age = time.monotonic() - last_beat()
        return None if age < limit else f"event loop silent for {age:.0f} s"

    return check
