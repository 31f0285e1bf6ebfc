"""The TSA client against a TSA nobody here wrote, and OpenSSL against our tokens.

The TSA is ``openssl ts -reply`` behind a small HTTP front (``http.server`` on a thread of the
test, on 127.0.0.1): each POSTed request is answered by running OpenSSL with the development
PKI's TSA certificate and key. OpenSSL stamps with the wall clock, which no option freezes, so
these tests use a dev PKI made now rather than the frozen one of the other tests.

The other direction: ``openssl ts -verify`` accepts every token the project makes (the dev
TSA's, over data, over a CAdES-T signature value, and as a reply to our request).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import http.server
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from asn1crypto import cms
from cryptography.hazmat.primitives import serialization

from interop.cms.parse import ParsedSignedData
from interop.cms.sign import sign_digest
from interop.cms.timestamp import DEV_TSA_POLICY, LocalTsa, verify_token
from interop.cms.tsp import TimeStampRequest, respond
from interop.pki.devpki import DevPki, generate
from interop.verifiers import Verifiers
from relay.pkidir import verifiers_from_pki, write_pki
from relay.tsa import MAX_REPLY, HttpStamper, TsaClientConfig, TsaUnavailable
from tests.helpers import LATER, NOW, need_tool

pytestmark = pytest.mark.tool

# The OpenSSL TSA's policy: an OID under the UUID arc 2.25 (X.667), free to use.
OPENSSL_POLICY = "2.25.218979034318226592385006232475339428451"
DATA = b"the signature value being stamped"

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


def _openssl(*args: str | Path) -> subprocess.CompletedProcess[bytes]:
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
            done = _openssl(
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


@pytest.fixture(scope="module")
def live_pki() -> DevPki:
    return generate(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1), ["hs01"])


@pytest.fixture(scope="module")
def live_verifiers(live_pki: DevPki) -> Verifiers:
    return verifiers_from_pki(live_pki)


@pytest.fixture(scope="module")
def tsa_folder(live_pki: DevPki, tmp_path_factory: pytest.TempPathFactory) -> Path:
    need_tool("openssl")
    folder = tmp_path_factory.mktemp("openssl-tsa")
    write_pki(live_pki, folder)
    (folder / "serial").write_text("01\n")
    (folder / "ts.cnf").write_text(TS_CNF.format(folder=folder, policy=OPENSSL_POLICY))
    return folder


@pytest.fixture
def front(tsa_folder: Path) -> Iterator[tuple[Front, str]]:
    state = Front(tsa_folder)
    server = _Server(("127.0.0.1", 0), _Handler)
    server.front = state
    thread = threading.Thread(target=server.serve_forever, name="tsa-front", daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}/tsa"
    finally:
        state.stop.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def _config(url: str, **changes: object) -> TsaClientConfig:
    fields: dict[str, object] = {"url": url, "policy": OPENSSL_POLICY, "timeout": 10.0}
    fields["backoff"] = 0.05
    fields.update(changes)
    return TsaClientConfig(**fields)  # type: ignore[arg-type]


def _stamp_all(config: TsaClientConfig, verifiers: Verifiers, *data: bytes) -> list[bytes]:
    async def go() -> list[bytes]:
        async with HttpStamper(config, validator=verifiers.tsa) as stamper:
            return list(await asyncio.gather(*(stamper.stamp(d) for d in data)))

    return asyncio.run(go())


def _unavailable(config: TsaClientConfig, verifiers: Verifiers) -> TsaUnavailable:
    with pytest.raises(TsaUnavailable) as caught:
        _stamp_all(config, verifiers, DATA)
    return caught.value


def test_tokens_from_openssl_tsa_are_checked_and_verified(
    front: tuple[Front, str], live_verifiers: Verifiers
) -> None:
    state, url = front
    (token,) = _stamp_all(_config(url), live_verifiers, DATA)
    assert state.requests == 1 and not state.errors
    assert live_verifiers.tsa is not None
    checked = verify_token(
        cms.ContentInfo.load(token),
        DATA,
        dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5),
        live_verifiers.tsa,
    )
    assert checked.ok, checked.detail


def test_several_requests_in_flight(front: tuple[Front, str], live_verifiers: Verifiers) -> None:
    state, url = front
    state.delay = 0.3
    data = [f"signature {i}".encode() for i in range(8)]
    tokens = _stamp_all(_config(url, max_in_flight=4), live_verifiers, *data)
    assert len(set(tokens)) == 8 and state.requests == 8 and not state.errors
    assert 2 <= state.most_in_flight <= 4


def test_500_then_success(front: tuple[Front, str], live_verifiers: Verifiers) -> None:
    state, url = front
    state.failures = 2
    assert _stamp_all(_config(url, retries=2), live_verifiers, DATA)
    assert state.requests == 3


def test_always_500_gives_up(front: tuple[Front, str], live_verifiers: Verifiers) -> None:
    state, url = front
    state.failures = 10
    failure = _unavailable(_config(url, retries=2), live_verifiers)
    assert failure.why == "http_status" and failure.passes_on_retry and state.requests == 3


def test_refused_policy_from_openssl(front: tuple[Front, str], live_verifiers: Verifiers) -> None:
    state, url = front
    failure = _unavailable(_config(url, policy=DEV_TSA_POLICY), live_verifiers)
    assert failure.why == "refused" and not failure.passes_on_retry, failure.detail
    assert "unaccepted_policy" in failure.detail and state.requests == 1


def test_front_down_is_unavailable_after_retries(live_verifiers: Verifiers) -> None:
    with socket.socket() as sock:  # a port nobody listens on once it is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    failure = _unavailable(_config(f"http://127.0.0.1:{port}/", retries=2), live_verifiers)
    assert failure.why == "unreachable" and failure.passes_on_retry


def test_slow_front_is_cut_at_the_timeout(
    front: tuple[Front, str], live_verifiers: Verifiers
) -> None:
    state, url = front
    state.delay = 5.0
    failure = _unavailable(_config(url, timeout=0.3, retries=1), live_verifiers)
    assert failure.why == "timeout" and state.requests == 2


@pytest.mark.parametrize("close_delimited", [False, True])
def test_oversized_body_is_refused(
    front: tuple[Front, str], live_verifiers: Verifiers, close_delimited: bool
) -> None:
    state, url = front
    state.oversize, state.close_delimited = True, close_delimited
    failure = _unavailable(_config(url), live_verifiers)
    assert failure.why == "too_big" and state.requests == 1


# -- openssl ts -verify accepts every token the project makes -------------------------------


def _ca_file(pki: DevPki, folder: Path) -> Path:
    path = folder / "process-ca.pem"
    path.write_bytes(pki.process_ca.certificate.public_bytes(serialization.Encoding.PEM))
    return path


def _verify(pki: DevPki, folder: Path, *args: str | Path) -> None:
    done = _openssl(
        "ts",
        "-verify",
        *args,
        "-CAfile",
        _ca_file(pki, folder),
        "-attime",
        str(int(LATER.timestamp())),
    )
    out = (done.stdout + done.stderr).decode(errors="replace")
    assert done.returncode == 0 and "Verification: OK" in out, out


@pytest.mark.parametrize("algorithm", ["ec", "rsa"])
def test_openssl_verifies_dev_tsa_tokens_over_data(
    algorithm: str, pki: DevPki, rsa_pki: DevPki, tmp_path: Path
) -> None:
    chosen = pki if algorithm == "ec" else rsa_pki
    (tmp_path / "data").write_bytes(DATA)
    (tmp_path / "token.der").write_bytes(LocalTsa(chosen.tsa).stamp(DATA, NOW))
    _verify(
        chosen, tmp_path, "-data", tmp_path / "data", "-in", tmp_path / "token.der", "-token_in"
    )
    _verify(
        chosen,
        tmp_path,
        "-digest",
        hashlib.sha256(DATA).hexdigest(),
        "-in",
        tmp_path / "token.der",
        "-token_in",
    )
    # And refuses it over other data.
    (tmp_path / "data").write_bytes(DATA + b"!")
    done = _openssl(
        "ts",
        "-verify",
        "-data",
        tmp_path / "data",
        "-in",
        tmp_path / "token.der",
        "-token_in",
        "-CAfile",
        _ca_file(chosen, tmp_path),
        "-attime",
        str(int(LATER.timestamp())),
    )
    assert done.returncode != 0


def test_openssl_verifies_the_cades_t_signature_time_stamp(pki: DevPki, tmp_path: Path) -> None:
    tsa = LocalTsa(pki.tsa)
    der = sign_digest(
        pki.providers["hs01"].process,
        hashlib.sha256(b"content").digest(),
        NOW,
        timestamp=lambda signature: tsa.stamp(signature, NOW),
    )
    signer_info = ParsedSignedData.parse(der).signer_info
    (attribute,) = [
        a for a in signer_info["unsigned_attrs"] if a["type"].native == "signature_time_stamp_token"
    ]
    (tmp_path / "token.der").write_bytes(attribute["values"][0].dump())
    # CAdES-T (ETSI EN 319 122-1 §5.3): the token is over the SignerInfo's signature value.
    (tmp_path / "signature").write_bytes(bytes(signer_info["signature"].native))
    _verify(
        pki, tmp_path, "-data", tmp_path / "signature", "-in", tmp_path / "token.der", "-token_in"
    )


def test_openssl_verifies_dev_tsa_reply_to_our_request(pki: DevPki, tmp_path: Path) -> None:
    # -queryfile: OpenSSL checks the imprint, the nonce and the policy against our request.
    request = TimeStampRequest.build(DATA, 0xC0FFEE_0DDBA11, policy=DEV_TSA_POLICY)
    (tmp_path / "req.tsq").write_bytes(request.der)
    (tmp_path / "resp.tsr").write_bytes(respond(LocalTsa(pki.tsa), request.der, NOW))
    _verify(pki, tmp_path, "-queryfile", tmp_path / "req.tsq", "-in", tmp_path / "resp.tsr")


def test_openssl_reads_dev_tsa_refusal(pki: DevPki, tmp_path: Path) -> None:
    request = TimeStampRequest.build(DATA, 7, policy="1.2.3.4")
    (tmp_path / "resp.tsr").write_bytes(respond(LocalTsa(pki.tsa), request.der, NOW))
    done = _openssl("ts", "-reply", "-in", tmp_path / "resp.tsr", "-text")
    out = done.stdout.decode(errors="replace")
    assert done.returncode == 0, done.stderr
    assert "Status: Rejected" in out and "policy is not supported by the TSA" in out, out
