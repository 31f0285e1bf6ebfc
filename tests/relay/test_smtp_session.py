"""The SMTP server in process, with an intake whose storage fails on purpose (the seam that
stands in for a full disk where the machine cannot make one; tests/relay/test_storage_faults.py
makes the real ones): every failure inside DATA is read to the final dot and answered once,
temporary, and without internals; slow and idle sessions are cut with 421 4.4.2."""

from __future__ import annotations

import asyncio
import errno
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from aiosmtpd.smtp import Envelope

from interop.errors import EnvelopeFormatError, SmtpReply
from relay.smtp.data import stuff
from relay.smtp.server import Connection, KepSMTP, SessionLimits, Sink, TransferFloor

SECRET_PATH = "/srv/kep/data/spool/tmp/0123abcd.tmp"


class FailingSink:
    """Takes ``room`` bytes, then fails as a full disk does."""

    def __init__(self, room: int) -> None:
        self.size, self.room, self.discarded = 0, room, False

    def write(self, data: bytes) -> None:
        if self.size + len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device", SECRET_PATH)
        self.size += len(data)

    def discard(self) -> None:
        self.discarded = True


@dataclass
class Intake:
    room: int = 1 << 30
    open_fails: bool = False
    finish_raises: Exception | None = None
    sinks: list[FailingSink] = field(default_factory=list)
    cuts: list[str] = field(default_factory=list)
    done: list[SmtpReply] = field(default_factory=list)

    def size_limit(self, connection: Connection) -> int:
        return 50 * 1024 * 1024

    def identify(self, connection: Connection, peer_cert: bytes | None) -> None:
        pass

    def check_mail(
        self, connection: Connection, address: str, options: list[str]
    ) -> SmtpReply | None:
        if address == "boom@hs02.kep.tr":
            raise RuntimeError(f"a bug that names {SECRET_PATH}")
        return None

    def check_rcpt(
        self, connection: Connection, envelope: Envelope, address: str
    ) -> SmtpReply | None:
        return None

    def open_sink(self, connection: Connection, envelope: Envelope) -> Sink:
        if self.open_fails:
            raise PermissionError(errno.EPERM, "Operation not permitted", SECRET_PATH)
        sink = FailingSink(self.room)
        self.sinks.append(sink)
        return sink

    async def finish(self, connection: Connection, envelope: Envelope, sink: Sink) -> SmtpReply:
        if self.finish_raises is not None:
            raise self.finish_raises
        return SmtpReply(250, "2.0.0", "Queued as test")

    def refused(self, connection: Connection, reply: SmtpReply) -> None:
        pass

    def transaction_done(self, connection: Connection, reply: SmtpReply, seconds: float) -> None:
        self.done.append(reply)

    def session_cut(self, connection: Connection, why: str) -> None:
        self.cuts.append(why)


LIMITS = SessionLimits(
    command_timeout=30.0,
    data_timeout=30.0,
    min_transfer_rate=500.0,
    slow_transfer_limit=1.5,
    max_junk_commands=4,
)


@pytest.fixture
def server() -> Iterator[tuple[Intake, int]]:
    intake = Intake()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    port: list[int] = []

    async def serve() -> None:
        srv = await loop.create_server(
            lambda: KepSMTP(intake, limits=LIMITS, hostname="gw.hs01.kep.tr"), "127.0.0.1", 0
        )
        port.append(srv.sockets[0].getsockname()[1])
        started.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(serve(), loop)
    assert started.wait(10)
    yield intake, port[0]
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


class Client:
    """A raw SMTP client that reads every reply line, so extra replies cannot hide."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.buffer = b""
        assert self.reply().startswith("220")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> str:
        """One whole reply (the last line of a multiline one)."""
        while True:
            while b"\r\n" not in self.buffer:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError(f"closed; unread: {self.buffer!r}")
                self.buffer += chunk
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            text = line.decode()
            if text[3:4] != "-":
                return text

    def command(self, line: str) -> str:
        self.send(line.encode() + b"\r\n")
        return self.reply()

    def rest(self) -> bytes:
        """Everything the server still sends until it closes."""
        data = self.buffer
        while chunk := self.sock.recv(65536):
            data += chunk
        return data

    def transaction(self) -> None:
        assert self.command("EHLO gw.hs02.kep.tr").startswith("250")
        assert self.command("MAIL FROM:<ali.yilmaz@hs02.kep.tr>").startswith("250")
        assert self.command("RCPT TO:<ayse.demir@hs01.kep.tr>").startswith("250")
        assert self.command("DATA").startswith("354")


# A user's body: lines that are SMTP commands must stay data, whatever happens.
HOSTILE_BODY = b"Subject: x\r\n\r\n" + b"".join(
    line + b"\r\n"
    for line in [b"NOOP", b"RSET", b"MAIL FROM:<mallory@hs02.kep.tr>", b"HELP"] * 50
    + [b"y" * 900] * 3000
)


def _no_internals(reply: str) -> None:
    for leak in ("Errno", "OSError", "PermissionError", "RuntimeError", "/srv/", "spool"):
        assert leak not in reply, reply


@pytest.mark.parametrize("where", ["write", "open", "finish"])
def test_a_failure_inside_data_is_answered_once_and_temporarily(
    server: tuple[Intake, int], where: str
) -> None:
    intake, port = server
    intake.room = 200_000 if where == "write" else 1 << 30
    intake.open_fails = where == "open"
    intake.finish_raises = OSError(errno.EIO, "Input/output error") if where == "finish" else None
    client = Client(port)
    client.transaction()
    client.send(stuff(HOSTILE_BODY) + b"QUIT\r\n")
    # Exactly one reply to the DATA, then QUIT's: no body line was read as a command.
    assert client.reply().startswith("451 4.3.0"), where
    assert client.reply().startswith("221")
    assert client.rest() == b""
    assert [str(r)[:9] for r in intake.done] == ["451 4.3.0"]
    _no_internals(str(intake.done[0]))
    assert all(sink.discarded for sink in intake.sinks)


def test_an_unexpected_error_is_451_never_500(server: tuple[Intake, int]) -> None:
    intake, port = server
    intake.finish_raises = KeyError("a reader bug")
    client = Client(port)
    client.transaction()
    client.send(stuff(b"Subject: x\r\n\r\nhello\r\n"))
    reply = client.reply()
    assert reply.startswith("451 4.3.0"), reply
    _no_internals(reply)
    # The session goes on.
    assert client.command("RSET").startswith("250")


def test_a_malformed_message_is_refused_with_its_own_reason(server: tuple[Intake, int]) -> None:
    intake, port = server
    intake.finish_raises = EnvelopeFormatError("the envelope is text/plain, not multipart/signed")
    client = Client(port)
    client.transaction()
    client.send(stuff(b"Subject: x\r\n\r\nhello\r\n"))
    assert client.reply() == "550 5.6.0 the envelope is text/plain, not multipart/signed"


def test_a_failing_command_hook_gives_451_without_internals(server: tuple[Intake, int]) -> None:
    _intake, port = server
    client = Client(port)
    assert client.command("EHLO gw.hs02.kep.tr").startswith("250")
    reply = client.command("MAIL FROM:<boom@hs02.kep.tr>")
    assert reply.startswith("451 4.3.0"), reply
    _no_internals(reply)


def test_a_trickling_transfer_is_cut(server: tuple[Intake, int]) -> None:
    intake, port = server
    client = Client(port)
    client.transaction()
    started = time.monotonic()
    with pytest.raises(ConnectionError):
        for _ in range(40):  # one byte every 0.25 s: 4 bytes/s, below 500 bytes/s
            client.send(b"x")
            time.sleep(0.25)
    reply = client.rest().decode()
    assert reply.startswith("421 4.4.2"), reply
    # Cut after the 1.5 s allowed below the floor (not after data_timeout, 30 s).
    assert time.monotonic() - started < 10
    assert intake.cuts == ["slow_transfer"]
    assert all(sink.discarded for sink in intake.sinks)


def test_a_transfer_at_the_floor_is_not_cut(server: tuple[Intake, int]) -> None:
    intake, port = server
    client = Client(port)
    client.transaction()
    for _ in range(12):  # 400 bytes every 0.25 s: 1,600 bytes/s, above the floor
        client.send(b"z" * 398 + b"\r\n")
        time.sleep(0.25)
    client.send(b".\r\n")
    assert client.reply().startswith("250")
    assert intake.cuts == []


def test_commands_that_do_no_work_are_counted(server: tuple[Intake, int]) -> None:
    intake, port = server
    client = Client(port)
    assert client.command("EHLO gw.hs02.kep.tr").startswith("250")  # 1
    assert client.command("NOOP").startswith("250")  # 2
    assert client.command("RSET").startswith("250")  # 3
    assert client.command("HELP").startswith("250")  # 4: the limit
    reply = client.command("NOOP")
    assert reply.startswith("421 4.4.2"), reply
    assert client.rest() == b""
    assert intake.cuts == ["junk"]


def test_an_accepted_message_resets_the_count(server: tuple[Intake, int]) -> None:
    intake, port = server
    client = Client(port)
    for _ in range(3):
        client.transaction()  # EHLO counts; MAIL, RCPT and DATA do work
        client.send(stuff(b"Subject: x\r\n\r\nhello\r\n"))
        assert client.reply().startswith("250")
        assert client.command("NOOP").startswith("250")
        assert client.command("RSET").startswith("250")
    assert intake.cuts == []


def test_transfer_floor_budget() -> None:
    floor = TransferFloor(rate=100.0, allowance=10.0, now=0.0)
    floor.feed(1000, now=10.0)  # 10 s for 1,000 bytes: exactly the rate
    assert floor.remaining(10.0) == pytest.approx(10.0)
    floor.feed(10**9, now=11.0)  # a burst never buys more than the allowance
    assert floor.remaining(11.0) == pytest.approx(10.0)
    floor.feed(0, now=16.0)
    assert floor.remaining(21.0) == pytest.approx(0.0)


@pytest.mark.parametrize("pipelined", [True, False])
def test_a_client_gone_mid_data_ends_the_session(
    server: tuple[Intake, int], pipelined: bool
) -> None:
    """A client that sends part of a message and closes its side (a peer killed mid-DATA)
    ends the session: nothing is acknowledged, nothing stored, the server closes too. A
    regression: when the data and the end of the stream came in one read, the session lost
    the cancellation that ends it and answered the closed stream for ever, at full CPU."""
    intake, port = server
    client = Client(port)
    client.transaction()
    part = b"Subject: x\r\n\r\n" + b"y" * 5000
    if pipelined:
        client.sock.sendall(part)  # the part and the close arrive together
    else:
        client.sock.sendall(part)
        time.sleep(0.2)  # the part first, the close later
    client.sock.shutdown(socket.SHUT_WR)
    client.sock.settimeout(5)
    rest, deadline = b"", time.monotonic() + 5
    while time.monotonic() < deadline and len(rest) < 65536:
        chunk = client.sock.recv(65536)  # the server closes: b"", or a timeout if it hangs
        if not chunk:
            break
        rest += chunk
    else:
        raise AssertionError(f"the session goes on: {len(rest)} bytes, {rest[:120]!r}")
    assert rest == b"", rest[:200]  # no reply to a DATA that never ended
    assert intake.done == []
    assert all(sink.discarded for sink in intake.sinks)
