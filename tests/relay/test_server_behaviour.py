"""One gateway process: draining on SIGTERM, connection limits, smuggling, idle peers."""

from __future__ import annotations

import signal
import smtplib
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.relay.gateways import Mesh, make_mesh


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Mesh]:
    mesh = make_mesh(
        tmp_path, ["hs01", "hs02"], accounts={"hs01": ""}, timers={"command_timeout": "2s"}
    )
    config = mesh["hs01"].config
    config.write_text(config.read_text() + "\n[limits]\nmax_connections_per_peer = 1\n")
    mesh["hs01"].start()
    yield mesh
    mesh.stop()


def _peer(mesh: Mesh, port: int) -> smtplib.SMTP_SSL:
    folder = mesh.root / "pki"
    context = ssl.create_default_context(cafile=str(folder / "ca" / "tls-ca.crt"))
    context.check_hostname = False
    context.load_cert_chain(
        str(folder / "providers/hs02/tls.crt"), str(folder / "providers/hs02/tls.key")
    )
    return smtplib.SMTP_SSL("127.0.0.1", port, context=context, timeout=30)


def test_sigterm_lets_a_transaction_in_flight_finish(node: Mesh) -> None:
    hs01 = node["hs01"]
    client = smtplib.SMTP("127.0.0.1", hs01.submission_port, timeout=30)
    client.ehlo()
    assert client.mail("ali.yilmaz@hs01.kep.tr")[0] == 250
    assert client.rcpt("ayse.demir@hs01.kep.tr")[0] == 250
    assert client.docmd("DATA")[0] == 354
    assert hs01.process is not None
    hs01.process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    # The listener is closed to newcomers while this transaction completes.
    with (
        pytest.raises(OSError),
        socket.create_connection(("127.0.0.1", hs01.submission_port), timeout=2),
    ):
        pass
    client.send(b"Subject: late\r\n\r\nstill accepted\r\n.\r\n")
    code, text = client.getreply()
    assert code == 250, text
    client.close()
    assert hs01.process.wait(timeout=30) == 0
    hs01.process = None
    assert '"event": "stopped"' in hs01.log.read_text()
    queued = hs01.query("SELECT COUNT(*) FROM messages WHERE kind = 'submission'")
    assert queued == [(1,)]


def test_connection_limit_per_peer(node: Mesh) -> None:
    hs01 = node["hs01"]
    with _peer(node, hs01.peer_port) as first:
        assert first.ehlo("gw.hs02.kep.tr")[0] == 250
        with pytest.raises(smtplib.SMTPConnectError) as caught:
            _peer(node, hs01.peer_port)
        assert caught.value.smtp_code == 421


def test_bare_line_feed_in_data_is_refused(node: Mesh) -> None:
    hs01 = node["hs01"]
    with smtplib.SMTP("127.0.0.1", hs01.submission_port, timeout=30) as client:
        client.ehlo()
        client.mail("ali.yilmaz@hs01.kep.tr")
        client.rcpt("ayse.demir@hs01.kep.tr")
        client.docmd("DATA")
        client.send(b"Subject: x\r\n\r\nline one\nMAIL FROM:<other@hs01.kep.tr>\r\n.\r\n")
        code, text = client.getreply()
        assert code == 550 and text.startswith(b"5.6.11")
    assert hs01.query("SELECT COUNT(*) FROM messages") == [(0,)]


def test_idle_peer_is_cut(node: Mesh) -> None:
    hs01 = node["hs01"]
    with socket.create_connection(("127.0.0.1", hs01.submission_port), timeout=10) as raw:
        assert raw.recv(512).startswith(b"220")
        time.sleep(3)  # command_timeout is 2 s here
        assert raw.recv(512) == b""
