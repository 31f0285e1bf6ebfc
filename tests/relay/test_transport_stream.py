"""SmtpTransport streams DATA from the spool file: the stuffing, the wire, the real gateway.

The stuffer is checked against ``relay.smtp.data`` (the receiving side's rules) for any message
cut anywhere; the transport against a scripted peer that keeps the raw DATA bytes, and against
a real hs02 that must spool exactly the file that was sent.
"""

from __future__ import annotations

import asyncio
import pathlib
import socket
import ssl
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from aiosmtplib.protocol import SMTPProtocol
from hypothesis import example, given
from hypothesis import strategies as st

from relay.config_file import from_mapping
from relay.context import NodeContext, build_context
from relay.smtp.data import DataDecoder, DotStuffer, stuff
from relay.transport.base import Entry, Outcome, Result
from relay.transport.smtp import DATA_CHUNK, SmtpTransport
from tests.helpers import make_dispatch
from tests.relay.gateways import Mesh, make_mesh, wait_for

SENDER = "ali.yilmaz@hs01.kep.tr"
RECIPIENT = "ayse.demir@hs02.kep.tr"

# -- the stuffer, without a network -------------------------------------------------------

# Bytes that matter to stuffing, so that short messages hit every case often.
_pieces = st.sampled_from([b".", b"..", b"\r", b"\n", b"\r\n", b"\r\n.", b"\r\n.\r\n", b"a"])
_messages = st.one_of(st.binary(max_size=200), st.lists(_pieces, max_size=60).map(b"".join))


def _cut(message: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(message) + 1) for c in cuts})
    return [message[a:b] for a, b in zip([0, *points], [*points, len(message)], strict=True)]


@given(message=_messages, cuts=st.lists(st.integers(min_value=0), max_size=20))
@example(message=b"", cuts=[])
@example(message=b".\r\n", cuts=[])
@example(message=b"a\r\n.b\r\n", cuts=[3])  # a "." first in a chunk, after a CRLF
@example(message=b"a\r\n.b\r\n", cuts=[2])  # a CRLF cut in two, a "." after it
@example(message=b"a\r\n.\r\n", cuts=[1, 2, 3, 4])
@example(message=b"a\r", cuts=[1])  # no CRLF at the end: one is added
def test_streamed_stuffing_is_stuff_of_the_whole(message: bytes, cuts: list[int]) -> None:
    stuffer = DotStuffer()
    pieces = [stuffer.feed(chunk) for chunk in _cut(message, cuts)] + [stuffer.end()]
    assert b"".join(pieces) == stuff(message)
    decoder = DataDecoder()
    decoded = b"".join(decoder.feed(piece) for piece in pieces)
    assert decoder.done and decoder.leftover == b""
    assert decoded == (message if not message or message.endswith(b"\r\n") else message + b"\r\n")


# -- shared setup ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    mesh = make_mesh(tmp_path_factory.mktemp("stream"), ["hs01", "hs02"])
    yield mesh
    mesh.stop()


def _hs01(mesh: Mesh, port: int, **tables: dict[str, Any]) -> NodeContext:
    """hs01's context, with hs02 routed to ``port`` on loopback; ``tables``: more of its
    configuration (``node`` added to what is given here)."""
    data_dir = mesh.root / f"hs01-{uuid.uuid4().hex[:8]}"
    node = {"provider": "hs01", "dev_pki": str(mesh.root / "pki"), "data_dir": str(data_dir)}
    config = from_mapping(
        {
            **tables,
            "node": {**node, **tables.get("node", {})},
            "peers": {"hs02": {"route": f"127.0.0.1:{port}"}},
        },
        "test",
        mesh.root,
    )
    return build_context(config)


def _entry(path: Path, in_memory: bool = False) -> Entry:
    """What the queue hands over for ``path``; ``in_memory``: read with the entry, as the queue
    does for a message up to ``READ_WITH_ENTRY``."""
    content = path.read_bytes() if in_memory else None
    return Entry(uuid.uuid4().hex, "hs02", SENDER, (RECIPIENT,), path, path.stat().st_size, content)


# -- against a scripted peer: the bytes on the wire -------------------------------------------


class _Peer:
    """A peer gateway cut down to SMTP, with hs02's TLS certificate. It keeps each DATA as sent
    (stuffed, end mark included) and answers ``reply`` to it; the first connection's DATA may
    be ``broken`` after ``after`` bytes: "cut" (connection reset) or "stall" (no more reading)."""

    def __init__(self, mesh: Mesh, reply: bytes = b"250 2.0.0 Ok: queued as 1") -> None:
        self.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        provider = mesh.root / "pki" / "providers" / "hs02"
        self.tls.load_cert_chain(provider / "tls.crt", provider / "tls.key")
        self.reply = reply
        self.broken: str | None = None
        self.after = 0
        self.connections = 0
        self.quits = 0
        self.mail: list[bytes] = []
        self.data: list[bytes] = []
        self.address = ""  # host:port, once listening

    async def start(self) -> tuple[asyncio.Server, int]:
        sock = socket.socket()
        # A small, fixed receive buffer (no autotuning) so that a stalled peer stalls the sender
        # soon; accepted sockets inherit it from the listening one.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        sock.bind(("127.0.0.1", 0))
        server = await asyncio.start_server(self._session, sock=sock, ssl=self.tls)
        self.address = f"127.0.0.1:{sock.getsockname()[1]}"
        return server, int(sock.getsockname()[1])

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        broken, self.broken = self.broken, None
        writer.write(b"220 hs02.kep.tr ESMTP\r\n")
        try:
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb == b"EHLO":
                    writer.write(b"250-hs02.kep.tr\r\n250-SIZE 104857600\r\n250 8BITMIME\r\n")
                elif verb == b"MAIL":
                    self.mail.append(line)
                    writer.write(b"250 2.1.0 Ok\r\n")
                elif verb == b"RCPT":
                    writer.write(b"250 2.1.5 Ok\r\n")
                elif verb == b"DATA":
                    writer.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    if not await self._data(reader, writer, broken):
                        return
                elif verb == b"QUIT":
                    self.quits += 1
                    writer.write(b"221 2.0.0 Bye\r\n")
                    return
                else:
                    writer.write(b"500 5.5.2 What?\r\n")
        finally:
            writer.close()

    async def _data(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, broken: str | None
    ) -> bool:
        decoder, raw = DataDecoder(), bytearray()
        while not decoder.done:
            block = await reader.read(65536)
            if not block:
                return False
            decoder.feed(block)
            raw += block
            if broken == "cut" and len(raw) >= self.after:
                writer.transport.abort()
                return False
            if broken == "stall" and len(raw) >= self.after:
                await asyncio.sleep(3600)  # until the test ends
        self.data.append(bytes(raw[: len(raw) - len(decoder.leftover)]))
        writer.write(self.reply + b"\r\n")
        return True


def _deliver_all(
    mesh: Mesh, peer: _Peer, paths: list[Path], in_memory: bool = False, **options: Any
) -> tuple[list[Result], list[bytes]]:
    async def go() -> list[Result]:
        server, port = await peer.start()
        context = _hs01(mesh, port)
        transport = SmtpTransport(context, timeout=10, **options)
        try:
            return [await transport.send(_entry(path, in_memory)) for path in paths]
        finally:
            await transport.close()
            server.close()
            context.store.close()

    results = asyncio.run(go())
    return results, [line.split(b" SIZE=")[1].strip() for line in peer.mail]


_TRICKY = [
    b"",
    b".",
    b".\r\n",
    b"..\r\n.\r\n\r\n.\r\n",
    b"Subject: x\r\n\r\n.\r\nline\r\n..two\r\n.\r\n",
    b"no CRLF at the end\r\n.",
    b"bare\rCR and\nLF.\n.\r.\r\n",
]


@pytest.mark.parametrize("in_memory", [False, True], ids=["from the file", "read with the entry"])
@pytest.mark.parametrize("chunk", [1, 2, 3, 7, DATA_CHUNK])
def test_the_wire_carries_stuff_of_the_file(
    mesh: Mesh, tmp_path: Path, chunk: int, in_memory: bool
) -> None:
    paths = []
    for number, message in enumerate(_TRICKY):
        paths.append(tmp_path / f"{number}.eml")
        paths[-1].write_bytes(message)
    peer = _Peer(mesh)
    results, sizes = _deliver_all(mesh, peer, paths, in_memory, chunk=chunk)
    sent = Result(Outcome.DELIVERED, "250 2.0.0 Ok: queued as 1", 250, host=peer.address)
    assert results == [sent] * len(_TRICKY)
    assert peer.data == [stuff(message) for message in _TRICKY]
    assert sizes == [str(len(message)).encode() for message in _TRICKY]
    # Every message went over the one pooled connection: after a streamed DATA, aiosmtplib's
    # side of the connection is ready for the next transaction.
    assert peer.connections == 1


def test_a_node_process_sends_to_a_peer_over_its_share_of_the_connections(
    mesh: Mesh, tmp_path: Path
) -> None:
    """Twelve messages at once, two node processes sharing ``sending_connections_per_peer =
    6``: this process opens three connections to the peer, and the messages beyond them go,
    in turn, over those three."""
    path = tmp_path / "m.eml"
    path.write_bytes(b"Subject: x\r\n\r\nMerhaba\r\n")
    peer = _Peer(mesh)

    async def go() -> list[Result]:
        server, port = await peer.start()
        context = _hs01(
            mesh, port, node={"processes": 2}, limits={"sending_connections_per_peer": 6}
        )
        transport = SmtpTransport(context, timeout=10)
        try:
            return await asyncio.gather(*(transport.send(_entry(path)) for _ in range(12)))
        finally:
            await transport.close()
            server.close()
            context.store.close()

    results = asyncio.run(go())
    assert [r.outcome for r in results] == [Outcome.DELIVERED] * 12
    assert len(peer.data) == 12 and peer.connections == 3


def test_an_idle_connection_carries_the_next_message_then_is_quit(
    mesh: Mesh, tmp_path: Path
) -> None:
    """A connection a message left idle carries the next message sent within ``idle_keep``;
    once that passes the transport says QUIT, so a burst's connections do not go on holding
    the peer's slots, and the next message opens a new one."""
    path = tmp_path / "m.eml"
    path.write_bytes(b"Subject: x\r\n\r\nMerhaba\r\n")
    peer = _Peer(mesh)

    async def go() -> tuple[list[Result], list[int]]:
        server, port = await peer.start()
        context = _hs01(mesh, port)
        transport = SmtpTransport(context, timeout=10, idle_keep=0.3)
        try:
            results = [await transport.send(_entry(path)) for _ in range(2)]
            seen = [peer.connections, peer.quits]
            for _ in range(100):  # idle_keep, then QUIT's round trip
                if peer.quits:
                    break
                await asyncio.sleep(0.05)
            results.append(await transport.send(_entry(path)))
            return results, [*seen, peer.connections, peer.quits]
        finally:
            await transport.close()
            server.close()
            context.store.close()

    results, counts = asyncio.run(go())
    assert [r.outcome for r in results] == [Outcome.DELIVERED] * 3
    # Two messages over one connection, not quit yet; QUIT after idle_keep; a new connection.
    assert counts == [1, 0, 2, 1]


@pytest.mark.parametrize(
    ("reply", "outcome"),
    [(b"554 5.6.0 Refused", Outcome.PERMANENT), (b"451 4.3.0 Try later", Outcome.TEMPORARY)],
)
def test_the_reply_to_the_data_is_the_result(
    mesh: Mesh, tmp_path: Path, reply: bytes, outcome: Outcome
) -> None:
    path = tmp_path / "m.eml"
    path.write_bytes(b"Subject: x\r\n\r\nMerhaba\r\n")
    peer = _Peer(mesh, reply)
    results, _ = _deliver_all(mesh, peer, [path])
    # The result names the gateway that answered (the attempts history shows it).
    assert results == [Result(outcome, reply.decode(), int(reply[:3]), host=peer.address)]


@pytest.mark.parametrize("broken", ["cut", "stall"])
def test_a_connection_broken_in_data_is_not_pooled(mesh: Mesh, tmp_path: Path, broken: str) -> None:
    big, small = tmp_path / "big.eml", tmp_path / "small.eml"
    # Larger than what the kernel and asyncio buffer between the two (a few MiB), so that a
    # stalled peer stops the sender mid-DATA.
    big.write_bytes((b"a" * 78 + b"\r\n") * (16 * 1024 * 1024 // 80))
    small.write_bytes(b"Subject: x\r\n\r\nMerhaba\r\n")
    peer = _Peer(mesh)
    peer.broken, peer.after = broken, 256 * 1024

    async def go() -> list[Result]:
        server, port = await peer.start()
        context = _hs01(mesh, port)
        transport = SmtpTransport(context, timeout=1)
        try:
            return [await transport.send(_entry(path)) for path in (big, small)]
        finally:
            await transport.close()
            server.close()
            context.store.close()

    first, second = asyncio.run(go())
    assert first.outcome is Outcome.TEMPORARY, first
    # The half-sent connection was closed: the next message came on a new one, whole.
    assert second.outcome is Outcome.DELIVERED, second
    assert peer.connections == 2
    assert peer.data == [stuff(small.read_bytes())]


# -- against a real gateway: byte for byte, in chunks -------------------------------------------


@dataclass(frozen=True)
class _Read:
    asked: int
    got: int
    on_main_thread: bool


class _Recording:
    """A spool file that remembers each read (its size, and on which thread)."""

    def __init__(self, stream: BinaryIO, log: list[_Read]) -> None:
        self._stream, self._log = stream, log

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        on_main = threading.current_thread() is threading.main_thread()
        self._log.append(_Read(size, len(data), on_main))
        return data

    def fileno(self) -> int:
        return self._stream.fileno()

    def close(self) -> None:
        self._stream.close()


class _WatchedPath(pathlib.PosixPath):
    log: list[_Read]

    def open(self, *args: Any, **kwargs: Any) -> Any:
        return _Recording(super().open(*args, **kwargs), self.log)


def _awkward_chunk(data: bytes) -> int:
    """A chunk size, at most ``DATA_CHUNK``, that cuts ``data`` both between a CRLF and a "."
    and inside a CRLF somewhere, so the real delivery meets both cases."""
    for chunk in range(DATA_CHUNK, DATA_CHUNK // 2, -1):
        cuts = range(chunk, len(data), chunk)
        if any(data[c - 2 : c + 1] == b"\r\n." for c in cuts) and any(
            data[c - 1 : c + 1] == b"\r\n" for c in cuts
        ):
            return chunk
    raise AssertionError("no chunk size cuts the message in both places")


def test_a_large_dispatch_reaches_the_peer_byte_for_byte(
    mesh: Mesh, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hs02 = mesh["hs02"]
    # Lines starting with "." all through the original (it is carried verbatim): over 3 MiB.
    lines = [b".", b"..", b".x", b"", b"a" * 37, b". .", b"b" * 61, b"...dots"]
    body = b"\r\n".join(lines * 60_000) + b"\r\n"
    original = f"From: {SENDER}\r\nTo: {RECIPIENT}\r\nSubject: Büyük\r\n\r\n".encode() + body
    remmd = f"{uuid.uuid4().hex}@hs01.kep.tr"
    exchange = make_dispatch(mesh.pki, original=original, now=mesh.pki.created, remmd_id=remmd)
    dispatch = exchange.dispatch
    assert len(dispatch) > 3 * 1024 * 1024
    (tmp_path / "dispatch.eml").write_bytes(dispatch)
    path = _WatchedPath(tmp_path / "dispatch.eml")
    path.log = []
    chunk = _awkward_chunk(dispatch)
    writes: list[int] = []
    write = SMTPProtocol.write

    def counted(self: SMTPProtocol, data: bytes) -> None:
        writes.append(len(data))
        write(self, data)

    monkeypatch.setattr(SMTPProtocol, "write", counted)
    hs02.start()
    try:

        async def go() -> Result:
            context = _hs01(mesh, hs02.peer_port)
            transport = SmtpTransport(context, timeout=30, chunk=chunk)
            try:
                return await transport.send(_entry(path))
            finally:
                await transport.close()
                context.store.close()

        result = asyncio.run(go())
        assert result.outcome is Outcome.DELIVERED, result

        def spooled() -> bool:
            return bool(hs02.query("SELECT id FROM messages WHERE remmd_id = ?", remmd))

        wait_for(spooled, what="the Dispatch at hs02")
        [(queue_id,)] = hs02.query(
            "SELECT id FROM messages WHERE kind = 'dispatch-in' AND remmd_id = ?", remmd
        )
        assert (hs02.data / "spool" / "msg" / f"{queue_id}.eml").read_bytes() == dispatch
    finally:
        hs02.stop()
    # The file was read a chunk at a time, never whole, and never on the event loop's thread;
    # nothing larger than a stuffed chunk was written to the connection.
    assert path.log and max(r.got for r in path.log) <= chunk <= DATA_CHUNK
    assert all(r.asked == chunk for r in path.log)
    assert sum(r.got for r in path.log) == len(dispatch)
    assert all(r.got for r in path.log)  # it stops at the file's size: no read to find the end
    assert not any(r.on_main_thread for r in path.log)
    assert max(writes) <= chunk * 4 // 3 + 2
