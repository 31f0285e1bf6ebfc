"""The gateway benchmark's hs01 (benchmarks.postfix_peer, benchmarks.lean_peer) against a
stand-in for hs02: messages arrive byte for byte as built, over TLS with hs01's client
certificate, and the evidence sinks take mail only from a client with a certificate.

Postfix needs root (it starts as root and drops to the postfix user): skipped without either,
failing under KEP_REQUIRE_TOOLS=1. TLS is checked against the wall clock here, so the dev PKI
is made now, not at the frozen time of the other tests.
"""

from __future__ import annotations

import datetime as dt
import os
import smtplib
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from benchmarks.lean_peer import lean_peer
from benchmarks.postfix_peer import Hs01Tls, bench_plain, crlf, free_port, hs01_peer
from interop.pki.devpki import generate
from relay.keys import write_pki
from tests.helpers import need_privilege, need_tool

pytestmark = pytest.mark.tool

# Like a Dispatch where it matters: 8-bit bytes, a line that starts with a dot, a long line.
MESSAGES = [
    (
        "ayse.demir@hs02.kep.tr",
        (
            f"From: ali.yilmaz@hs01.kep.tr\r\nTo: ayse.demir@hs02.kep.tr\r\n"
            f"Message-ID: <peer-{n}@hs01.kep.tr>\r\nSubject: =?utf-8?q?Y=C3=BCk?=\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Transfer-Encoding: 8bit\r\n\r\n"
            f"Yük {n}: çğıöşü\r\n.a line with a leading dot\r\n{'x' * 900}\r\n"
        ).encode(),
    )
    for n in range(3)
]


class Hs02:
    """aiosmtpd over implicit TLS, hs02's certificate, a client certificate required."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.clients: list[str] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.original_content, bytes)
        self.received.append(envelope.original_content)
        assert server.transport is not None
        cert = server.transport.get_extra_info("peercert")
        self.clients.append(str(cert.get("subject")) if cert else "")
        return "250 2.0.0 Ok"


@pytest.fixture
def pki_now(tmp_path: Path) -> Path:
    pki = generate(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5), ["hs01", "hs02"])
    write_pki(pki, tmp_path / "pki")
    return tmp_path / "pki"


def _tls(pki: Path, provider: str, purpose: ssl.Purpose) -> ssl.SSLContext:
    context = ssl.create_default_context(purpose, cafile=str(pki / "ca" / "tls-ca.crt"))
    providers = pki / "providers" / provider
    context.load_cert_chain(str(providers / "tls.crt"), str(providers / "tls.key"))
    context.check_hostname = False
    return context


@pytest.fixture
def hs02(pki_now: Path) -> Iterator[tuple[Hs02, int]]:
    handler, port = Hs02(), free_port()
    context = _tls(pki_now, "hs02", ssl.Purpose.CLIENT_AUTH)
    context.verify_mode = ssl.CERT_REQUIRED
    controller = Controller(
        handler, hostname="127.0.0.1", port=port, ssl_context=context, decode_data=False
    )
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def _need_postfix() -> None:
    for tool in ("postfix", "postsuper", "sendmail", "smtp-source", "smtp-sink"):
        need_tool(tool)  # benchmarks/install-postfix.sh
    need_privilege("starting Postfix (root)", os.geteuid() == 0)


def _wait(condition: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _sink_takes_only_certified_clients(pki: Path, port: int, count: Callable[[], int]) -> None:
    with smtplib.SMTP_SSL(
        "127.0.0.1", port, context=_tls(pki, "hs02", ssl.Purpose.SERVER_AUTH), timeout=30
    ) as client:
        client.sendmail("delil@hs02.kep.tr", ["ali.yilmaz@hs01.kep.tr"], b"Subject: e\r\n\r\nx\r\n")
    _wait(lambda: count() == 1)
    anonymous = ssl.create_default_context(cafile=str(pki / "ca" / "tls-ca.crt"))
    anonymous.check_hostname = False
    with (
        pytest.raises((smtplib.SMTPException, OSError)),
        smtplib.SMTP_SSL("127.0.0.1", port, context=anonymous, timeout=30) as client,
    ):
        client.sendmail("x@hs02.kep.tr", ["ali.yilmaz@hs01.kep.tr"], b"Subject: e\r\n\r\nx\r\n")
    assert count() == 1


def test_postfix_relays_byte_for_byte_with_hs01s_certificate(
    pki_now: Path, hs02: tuple[Hs02, int]
) -> None:
    _need_postfix()
    handler, port = hs02
    with hs01_peer(Hs01Tls.from_pki(pki_now), port, connections=2) as peer:
        peer.load(MESSAGES)
        time.sleep(1)
        assert handler.received == [], "held until released"
        peer.release()
        _wait(lambda: len(handler.received) == len(MESSAGES))
        assert sorted(handler.received) == sorted(crlf(m) for _, m in MESSAGES)
        assert all("gw.hs01.kep.tr" in client for client in handler.clients)
        _wait(lambda: peer.left() == 0)
        assert peer.failed() is None
        _sink_takes_only_certified_clients(pki_now, peer.sink_port, lambda: peer.count)


def test_lean_peer_sends_byte_for_byte_with_hs01s_certificate(
    pki_now: Path, hs02: tuple[Hs02, int]
) -> None:
    handler, port = hs02
    with lean_peer(Hs01Tls.from_pki(pki_now), port, connections=2) as peer:
        peer.load(MESSAGES)
        assert handler.received == [], "connected, waiting to be released"
        peer.release()
        _wait(lambda: len(handler.received) == len(MESSAGES))
        assert sorted(handler.received) == sorted(crlf(m) for _, m in MESSAGES)
        assert all("gw.hs01.kep.tr" in client for client in handler.clients)
        assert peer.failed() is None
        _sink_takes_only_certified_clients(pki_now, peer.sink_port, lambda: peer.count)


def test_postfix_plain_relay_reports_rate_and_cpu() -> None:
    _need_postfix()
    # Enough messages that Postfix's CPU shows in /proc's 10 ms ticks, which each of its
    # processes rounds down: on a fast machine 40 messages took under a tick per process.
    run = bench_plain(400, 4)
    assert run.count == 400
    assert run.per_second > 0
    assert run.postfix_ms > 0
