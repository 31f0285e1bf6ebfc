"""A CRL distribution point for tests: ``http.server`` on a thread, on 127.0.0.1.

It serves whatever bytes the test puts under a path (``CrlServer.files``), with an HTTP
status the test may change, and counts the requests it saw. ``serving`` runs it, and can run
it again on the same port (a server that was down and is back).
"""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding


@dataclass
class CrlServer:
    files: dict[str, bytes] = field(default_factory=dict)
    status: int = 200
    requests: list[str] = field(default_factory=list)
    port: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def put(self, path: str, crl: x509.CertificateRevocationList) -> None:
        with self.lock:
            self.files[path] = crl.public_bytes(Encoding.DER)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def seen(self, path: str) -> int:
        with self.lock:
            return self.requests.count(path)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    crls: CrlServer


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        crls = self.server.crls
        with crls.lock:
            crls.requests.append(self.path)
            body = crls.files.get(self.path)
            status = crls.status if body is not None else 404
        self.send_response(status)
        self.send_header("Content-Type", "application/pkix-crl")
        payload = body if status == 200 and body is not None else b"no"
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test says what went wrong."""


@contextlib.contextmanager
def serving(crls: CrlServer) -> Iterator[CrlServer]:
    """``crls`` listening on 127.0.0.1 (on ``crls.port`` when it was set before)."""
    server = _Server(("127.0.0.1", crls.port), _Handler)
    server.crls = crls
    crls.port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, name="crl-server", daemon=True)
    thread.start()
    try:
        yield crls
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
