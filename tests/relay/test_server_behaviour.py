"""One gateway process: draining on SIGTERM, connection limits, smuggling, idle, slow and
junk-sending peers."""

from __future__ import annotations

import signal
import smtplib
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.relay.gateways import Mesh, make_mesh, scrape, value


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Mesh]:
    mesh = make_mesh(
        tmp_path,
        ["hs01", "hs02"],
        extra={"hs01": ""},
        timers={"command_timeout": "2s", "slow_transfer_limit": "2s"},
    )
    config = mesh["hs01"].config
    config.write_text(
        config.read_text()
        + "\n[limits]\nmax_connections_per_peer = 1\nmax_junk_commands = 6\n"
        + "min_transfer_rate = 500\n"
    )
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


def test_sigterm_with_an_idle_tls_peer_that_does_not_close_drains_cleanly(node: Mesh) -> None:
    """An idle peer on TLS that does not answer the node's close (it reads nothing while the
    node stops) keeps its connection open until TLS shutdown gives up; the drain, which looks
    at open connections every 50 ms, must not write to one it is already closing (it did, and
    the node ended with an exception and exit status 1)."""
    hs01 = node["hs01"]
    peer = _peer(node, hs01.peer_port)
    assert peer.ehlo("gw.hs02.kep.tr")[0] == 250
    assert hs01.process is not None
    try:
        hs01.process.send_signal(signal.SIGTERM)
        assert hs01.process.wait(timeout=60) == 0, hs01.log.read_text()[-2000:]
    finally:
        peer.close()  # the socket only: no QUIT
    hs01.process = None
    assert "Traceback" not in hs01.log.read_text()


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
    with socket.create_connection(("127.0.0.1", hs01.submission_port), timeout=30) as raw:
        assert raw.recv(512).startswith(b"220")
        started = time.monotonic()
        assert raw.recv(512) == b""  # closed by the node, not by our timeout
        # command_timeout is 2 s here (the upper bound leaves room for a loaded machine).
        assert 1.5 < time.monotonic() - started < 25


def _start_data(port: int) -> socket.socket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=30)
    reader = raw.makefile("rb")
    assert reader.readline().startswith(b"220")
    for command, code in (
        (b"HELO gw\r\n", b"250"),
        (b"MAIL FROM:<ali.yilmaz@hs01.kep.tr>\r\n", b"250"),
        (b"RCPT TO:<ayse.demir@hs01.kep.tr>\r\n", b"250"),
        (b"DATA\r\n", b"354"),
    ):
        raw.sendall(command)
        assert reader.readline().startswith(code), command
    return raw


def test_a_trickling_peer_is_cut_while_others_are_served(node: Mesh) -> None:
    hs01 = node["hs01"]
    slow = _start_data(hs01.submission_port)
    started = time.monotonic()
    answer = b""
    try:
        for index in range(60):  # a byte every 0.5 s, far below 500 bytes/s
            slow.sendall(b"x")
            if index == 2:  # meanwhile another client is served as usual
                with smtplib.SMTP("127.0.0.1", hs01.submission_port, timeout=30) as other:
                    other.ehlo()
                    other.mail("ali.yilmaz@hs01.kep.tr")
                    other.rcpt("ayse.demir@hs01.kep.tr")
                    assert other.data(b"Subject: x\r\n\r\nhello\r\n")[0] == 250
            time.sleep(0.5)
    except OSError:
        answer = slow.recv(4096)
    finally:
        slow.close()
    # Cut with 421 4.4.2 once 2 s below the floor are spent, not after the 10 min data_timeout.
    assert answer.startswith(b"421 4.4.2"), answer
    assert time.monotonic() - started < 15
    cut = value(scrape(hs01), "kep_smtp_sessions_cut_total", why="slow_transfer")
    assert cut == 1
    assert hs01.query("SELECT COUNT(*) FROM messages") == [(1,)]  # the other client's


def test_a_peer_sending_only_noop_is_cut(node: Mesh) -> None:
    hs01 = node["hs01"]
    with socket.create_connection(("127.0.0.1", hs01.submission_port), timeout=30) as raw:
        reader = raw.makefile("rb")
        assert reader.readline().startswith(b"220")
        replies = []
        for _ in range(10):
            # NOOP one byte at a time, each line well inside command_timeout (2 s here).
            for byte in b"NOOP\r\n":
                raw.sendall(bytes([byte]))
                time.sleep(0.05)
            line = reader.readline()
            replies.append(line)
            if not line.startswith(b"250"):
                break
        assert reader.read() == b""  # closed
    assert [r[:3] for r in replies] == [b"250"] * 6 + [b"421"], replies
    assert replies[-1].startswith(b"421 4.4.2")
    assert value(scrape(hs01), "kep_smtp_sessions_cut_total", why="junk") == 1
