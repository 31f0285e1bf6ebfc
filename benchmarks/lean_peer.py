"""hs01 as a few lean processes for ``benchmarks.bench_relay`` (``--sender lean``).

The cheapest load generator measured that still speaks SMTP over mutual TLS as a peer
gateway does: Postfix as hs01 (``benchmarks.postfix_peer``) costs several ms of CPU per
Dispatch, on the same cores as hs02.

- Senders: one process per connection, forked before the timed window, connected, TLS done
  and EHLO said; each a blocking TLS socket presenting hs01's client certificate and checking
  hs02's against the dev TLS CA and its name. Each Dispatch is prepared before the window
  (dot-stuffed, the commands formatted) and sent with pipelining (RFC 2920): MAIL, RCPT and
  DATA in one write, the content and its end in another. They start together when released;
  each sends its share of the Dispatches, one after the other.
- The evidence sink: a TLS listener that presents hs01's TLS certificate and requires a client
  certificate from the dev TLS CA, a process per connection from hs02; it answers SMTP
  (pipelining allowed), counts each message it ends with 250 and keeps nothing.

Senders and sink are process trees of their own, read as Postfix's are (``benchmarks.procstat``:
what exited is counted through its parent's cutime); a sender stays until the window's CPU
is read.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.synchronize
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized
from typing import Any

from benchmarks.postfix_peer import HS01_SENDER, Hs01Tls, crlf

_FORK = multiprocessing.get_context("fork")
EHLO = b"EHLO gw.hs01.kep.tr\r\n"


def prepare(recipient: str, message: bytes) -> tuple[bytes, bytes]:
    """The pipelined commands and the DATA content (dot-stuffed, ended) of one message."""
    content = crlf(message)
    if not content.endswith(b"\r\n"):
        content += b"\r\n"
    stuffed = content.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    commands = f"MAIL FROM:<{HS01_SENDER}>\r\nRCPT TO:<{recipient}>\r\nDATA\r\n".encode()
    return commands, stuffed + b".\r\n"


class _Replies:
    """Reads SMTP replies; a multi-line reply (``250-``) counts as one."""

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self.sock = sock
        self.buffer = b""

    def code(self) -> int:
        while True:
            end = self.buffer.find(b"\r\n")
            while end < 0:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("connection closed by the server")
                self.buffer += chunk
                end = self.buffer.find(b"\r\n")
            line, self.buffer = self.buffer[:end], self.buffer[end + 2 :]
            if line[3:4] != b"-":
                return int(line[:3])


def _expect(replies: _Replies, *codes: int) -> None:
    for want in codes:
        got = replies.code()
        if got != want:
            raise RuntimeError(f"the server answered {got} where {want} was expected")


@dataclass(frozen=True)
class _Signals:
    """Shared between the senders and this process."""

    ready: Synchronized[int]  # senders connected and waiting
    failures: Synchronized[int]  # senders that stopped on an error
    go: multiprocessing.synchronize.Event  # start sending
    done: multiprocessing.synchronize.Event  # the window's CPU is read: exit

    @classmethod
    def make(cls) -> _Signals:
        return cls(_FORK.Value("i", 0), _FORK.Value("i", 0), _FORK.Event(), _FORK.Event())


def _client_tls(tls: Hs01Tls, server_name: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca))
    context.load_cert_chain(str(tls.cert), str(tls.key))
    context.check_hostname = bool(server_name)
    return context


def _send(
    tls: Hs01Tls,
    server_name: str,
    port: int,
    prepared: list[tuple[bytes, bytes]],
    signals: _Signals,
) -> None:
    """One connection: connect, TLS, EHLO; wait for the start; send ``prepared``; QUIT; stay
    until ``done``, so that the process is still there to be read at the end of the window
    (a zombie's /proc counters are gone, and its parent has not reaped it yet)."""
    try:
        _session(tls, server_name, port, prepared, signals)
    except Exception:
        with signals.failures.get_lock():
            signals.failures.value += 1
        raise
    finally:
        signals.done.wait()


def _session(
    tls: Hs01Tls,
    server_name: str,
    port: int,
    prepared: list[tuple[bytes, bytes]],
    signals: _Signals,
) -> None:
    raw = socket.create_connection(("127.0.0.1", port), timeout=300)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock = _client_tls(tls, server_name).wrap_socket(raw, server_hostname=server_name or None)
    replies = _Replies(sock)
    _expect(replies, 220)
    sock.sendall(EHLO)
    _expect(replies, 250)
    with signals.ready.get_lock():
        signals.ready.value += 1
    signals.go.wait()
    for commands, content in prepared:
        sock.sendall(commands)
        _expect(replies, 250, 250, 354)
        sock.sendall(content)
        _expect(replies, 250)
    sock.sendall(b"QUIT\r\n")
    with contextlib.suppress(OSError, RuntimeError, ConnectionError):
        _expect(replies, 221)
    sock.close()


def _senders(
    tls: Hs01Tls,
    server_name: str,
    port: int,
    shares: list[list[tuple[bytes, bytes]]],
    signals: _Signals,
) -> None:
    """The senders' supervisor: forks one process per share and reaps them all."""
    children = [
        _FORK.Process(target=_send, args=(tls, server_name, port, share, signals), daemon=True)
        for share in shares
    ]
    for child in children:
        child.start()
    failed = 0
    for child in children:
        child.join()
        failed += child.exitcode != 0
    raise SystemExit(1 if failed else 0)


class _Sink:
    """Runs in the sink process: accepts TLS connections, a process each (forked)."""

    def __init__(self, listener: socket.socket, tls: Hs01Tls, count: Synchronized[int]) -> None:
        self.listener = listener
        self.count = count
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(tls.ca))
        self.context.load_cert_chain(str(tls.cert), str(tls.key))
        self.context.verify_mode = ssl.CERT_REQUIRED

    def serve(self) -> None:
        threading.Thread(target=self.reap, daemon=True).start()
        while True:
            raw, _ = self.listener.accept()
            if os.fork() == 0:  # a process per connection: no lock shared between them
                try:
                    self.listener.close()
                    self.session(raw)
                finally:
                    os._exit(0)
            raw.close()

    def reap(self) -> None:
        """Wait for each connection's process, so its CPU is added to this one's cutime."""
        while True:
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                time.sleep(0.1)

    def session(self, raw: socket.socket) -> None:
        with contextlib.suppress(OSError, ConnectionError, ssl.SSLError):
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.context.wrap_socket(raw, server_side=True) as sock:
                self.converse(sock)

    def converse(self, sock: ssl.SSLSocket) -> None:
        buffer = b""
        sock.sendall(b"220 sink.hs01.kep.tr ESMTP\r\n")
        while True:
            end = buffer.find(b"\r\n")
            if end < 0:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                buffer += chunk
                continue
            line, buffer = buffer[:end], buffer[end + 2 :]
            verb = line[:4].upper()
            if verb == b"EHLO":
                sock.sendall(
                    b"250-sink.hs01.kep.tr\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
                    b"250 ENHANCEDSTATUSCODES\r\n"
                )
            elif verb == b"DATA":
                sock.sendall(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                # The content ends with CRLF.CRLF; the CRLF before the dot is its own.
                search = 0
                while True:
                    end = buffer.find(b"\r\n.\r\n", search)
                    if end >= 0:
                        break
                    search = max(0, len(buffer) - 4)
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                buffer = buffer[end + 5 :]
                with self.count.get_lock():
                    self.count.value += 1
                sock.sendall(b"250 2.0.0 Ok: discarded\r\n")
            elif verb == b"QUIT":
                sock.sendall(b"221 2.0.0 Bye\r\n")
                return
            else:  # HELO, MAIL, RCPT, RSET, NOOP
                sock.sendall(b"250 2.0.0 Ok\r\n")


def _sink(listener: socket.socket, tls: Hs01Tls, count: Synchronized[int]) -> None:
    _Sink(listener, tls, count).serve()


@dataclass
class LeanPeer:
    """hs01's lean senders (once loaded) and its evidence sink."""

    tls: Hs01Tls
    hs02_port: int
    hs02_name: str
    connections: int
    sink_process: Any  # multiprocessing's forked Process
    sink_port: int
    received: Synchronized[int]
    senders: Any = None
    signals: _Signals | None = None

    @property
    def count(self) -> int:
        """Messages the sink accepted."""
        return int(self.received.value)

    def trees(self) -> dict[str, int]:
        """The root process of each part, for its CPU."""
        parts = {"evidence sink (1 process)": int(self.sink_process.pid)}
        if self.senders is not None:
            parts = {
                f"hs01's senders ({self.connections} processes)": int(self.senders.pid),
                **parts,
            }
        return parts

    def load(self, messages: list[tuple[str, bytes]]) -> float:
        """Fork the senders with their shares of (recipient, message), connected and waiting
        for ``release``. Returns the seconds it took (outside any timed window)."""
        start = time.perf_counter()
        prepared = [prepare(recipient, message) for recipient, message in messages]
        shares = [prepared[n :: self.connections] for n in range(self.connections)]
        shares = [share for share in shares if share]
        self.signals = signals = _Signals.make()
        args = (self.tls, self.hs02_name, self.hs02_port, shares, signals)
        self.senders = _FORK.Process(target=_senders, args=args, daemon=False)
        self.senders.start()
        deadline = time.monotonic() + 60
        while signals.ready.value < len(shares):
            if signals.failures.value or time.monotonic() > deadline:
                raise RuntimeError(
                    f"only {signals.ready.value} of {len(shares)} senders connected to hs02"
                )
            time.sleep(0.05)
        return time.perf_counter() - start

    def release(self) -> None:
        assert self.signals is not None, "load() first"
        self.signals.go.set()

    def left(self) -> int:
        """Nothing is queued here: what a sender has not sent when it stops is an error."""
        return 0

    def failed(self) -> str | None:
        """Why the senders stopped early, if they did."""
        if self.signals is not None and self.signals.failures.value:
            return f"{self.signals.failures.value} sender processes failed (see above)"
        if not self.sink_process.is_alive():
            return f"the evidence sink exited with {self.sink_process.exitcode}"
        return None

    def stop(self) -> None:
        if self.signals is not None:
            self.signals.done.set()
        if self.senders is not None:
            self.senders.join(timeout=30)
            if self.senders.is_alive():
                self.senders.terminate()
        self.sink_process.terminate()
        self.sink_process.join(timeout=10)


@contextlib.contextmanager
def lean_peer(
    tls: Hs01Tls, hs02_port: int, connections: int = 20, hs02_name: str = "gw.hs02.kep.tr"
) -> Iterator[LeanPeer]:
    """Start hs01's evidence sink; ``LeanPeer.load`` starts the senders."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    received: Synchronized[int] = _FORK.Value("q", 0)
    sink = _FORK.Process(target=_sink, args=(listener, tls, received), daemon=True)
    sink.start()
    port = int(listener.getsockname()[1])
    listener.close()  # the sink process has its own
    peer = LeanPeer(tls, hs02_port, hs02_name, connections, sink, port, received)
    try:
        yield peer
    finally:
        peer.stop()
