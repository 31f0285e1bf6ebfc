"""A TSA nobody here wrote, for tests: ``openssl ts -reply`` behind a small HTTP front.

``http.server`` on a thread of the test, on 127.0.0.1: each POSTed request is answered by
running OpenSSL with a development PKI's TSA certificate and key (``tsa_folder``), with
knobs (``Front``) for failures, delays and oversized answers. OpenSSL stamps with the wall
clock, so the PKI must be valid now.
"""

from __future__ import annotations

import contextlib
import http.server
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from interop.pki.devpki import DevPki
from relay.keys import write_pki
from relay.tsa import MAX_REPLY
from tests.helpers import need_tool

# The OpenSSL TSA's policy: an OID under the UUID arc 2.25 (X.667), free to use.
OPENSSL_POLICY = "2.25.218979034318226592385006232475339428451"

TS_CNF = """\
[ tsa ]
default_tsa = tsa_config1

[ tsa_config1 ]
dir = {folder}
serial = $dir/serial
signer_cert = $dir/tsa/tsa.crt
signer_key = $dir/tsa/tsa.key
signer_digest = sha256
default_policy = {policy}
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = no
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""


def openssl(*args: str | Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([need_tool("openssl"), *map(str, args)], capture_output=True, timeout=60)


@dataclass
class Front:
    """What the HTTP front does with the next requests; counts what it saw."""

    folder: Path
    failures: int = 0  # answer this many requests with HTTP 500 first
    delay: float = 0.0  # seconds before answering
    oversize: bool = False
    close_delimited: bool = False  # no Content-Length: the body ends when the connection does
    requests: int = 0
    in_flight: int = 0
    most_in_flight: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # openssl ts -reply reads and rewrites its serial file: one at a time, as a real TSA's
    # serial counter is.
    openssl_lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def answer(self, body: bytes) -> tuple[int, bytes]:
        with self.lock:
            self.requests += 1
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            number = self.requests
            failing = self.failures > 0
            self.failures -= failing
        try:
            if self.delay:
                self.stop.wait(self.delay)
            if failing:
                return 500, b"try later"
            if self.oversize:
                return 200, b"\x30" * (MAX_REPLY + 1)
            return self._openssl_reply(body, number)
        finally:
            with self.lock:
                self.in_flight -= 1

    def _openssl_reply(self, body: bytes, number: int) -> tuple[int, bytes]:
        query = self.folder / f"req-{number}.tsq"
        reply = self.folder / f"resp-{number}.tsr"
        query.write_bytes(body)
        with self.openssl_lock:
            done = openssl(
                "ts",
                "-reply",
                "-config",
                self.folder / "ts.cnf",
                "-queryfile",
                query,
                "-out",
                reply,
            )
        if done.returncode != 0:
            self.errors.append(done.stderr.decode(errors="replace"))
            return 500, b"openssl failed"
        return 200, reply.read_bytes()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    front: Front


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        length = min(int(self.headers.get("Content-Length", "0")), 1 << 16)
        body = self.rfile.read(length)
        if self.headers.get("Content-Type") != "application/timestamp-query":
            self.send_error(415)
            return
        code, payload = self.server.front.answer(body)
        self.send_response(code)
        self.send_header(
            "Content-Type", "application/timestamp-reply" if code == 200 else "text/plain"
        )
        if not self.server.front.close_delimited:
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test says what went wrong."""


def tsa_folder(pki: DevPki, folder: Path) -> Path:
    """The PKI, a serial file and an OpenSSL TSA configuration in ``folder``."""
    need_tool("openssl")
    write_pki(pki, folder)
    (folder / "serial").write_text("01\n")
    (folder / "ts.cnf").write_text(TS_CNF.format(folder=folder, policy=OPENSSL_POLICY))
    return folder


@contextlib.contextmanager
def serving(front: Front, port: int = 0) -> Iterator[str]:
    """The front listening on 127.0.0.1:``port`` (0: any free one); yields its URL."""
    server = _Server(("127.0.0.1", port), _Handler)
    server.front = front
    thread = threading.Thread(target=server.serve_forever, name="tsa-front", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/tsa"
    finally:
        front.stop.set()
        server.shutdown()
        server.server_close()
        thread.join(5)
