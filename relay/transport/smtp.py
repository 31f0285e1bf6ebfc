"""SMTP to peer gateways with aiosmtplib: mutual TLS, raw bytes, a small pool per peer.

The message goes out exactly as it lies in the spool, only dot-stuffed (RFC 5321 §4.5.2), so
signatures over it stay valid. It is streamed: read from the spool file ``DATA_CHUNK`` bytes at
a time, stuffed chunk by chunk, written with flow control, so what a sender holds per message
does not grow with the message (a 25 MiB Dispatch costs what a 1 MiB one does). aiosmtplib does
the rest (connect, TLS, EHLO, MAIL, RCPT, reading replies, errors); its ``data()`` takes one
bytes object, so DATA is sent here by ``_data``.

The peer's TLS certificate must chain to the trust list's TLS CAs (checked by OpenSSL) and map
to the provider we meant to reach (checked here with ``interop``'s validator and the provider's
TLS names), whatever address the route gave.
"""

from __future__ import annotations

import asyncio
import io
import os
import ssl
from collections import defaultdict
from pathlib import Path
from typing import BinaryIO

import aiosmtplib
import structlog
from aiosmtplib.protocol import SMTPProtocol
from cryptography import x509

from relay.config import NodeConfig
from relay.context import NodeContext
from relay.errors import RouteTrouble
from relay.handshakes import count_failures
from relay.smtp.data import DotStuffer
from relay.transport.base import Entry, Outcome, Result
from relay.transport.mx import MX_PORT, Resolver, candidates, resolve_mx

log = structlog.get_logger("kep.smtp_out")

# Bytes of the spool file read, stuffed and written at a time during DATA; also the TLS
# transport's write-buffer mark. What one delivery holds is a few of these (the chunk, its
# stuffed copy, the TLS and socket buffers), whatever the message's size: a pool of
# connections to many peers multiplies it, so it is small; 64 KiB is asyncio's own mark for a
# socket, and a 25 MiB message takes some 400 reads. Not ``interop.limits.STREAM_CHUNK``
# (1 MiB), which sizes reads for hashing, one message at a time.
DATA_CHUNK = 64 * 1024
# Seconds a connection a message left idle is kept for the next one to the same peer, then
# closed with QUIT. A steady flow reuses it (the queue is looked at every second at least);
# a burst's connections (up to [limits] sending_connections_per_peer) do not go on holding
# the peer's connection slots, which its other clients need. Postfix keeps one 2 s
# (smtp_connection_cache_time_limit); a new one costs a TLS handshake.
IDLE_KEEP = 10.0


def _open(path: Path) -> tuple[BinaryIO, int]:
    """The spool file and its size (for SIZE=, without reading it). Runs on a thread."""
    stream = path.open("rb")
    return stream, os.fstat(stream.fileno()).st_size


async def _read(stream: BinaryIO, size: int) -> bytes:
    """The next chunk: from memory at once, from a file on a worker thread."""
    if isinstance(stream, io.BytesIO):
        return stream.read(size)
    return await asyncio.to_thread(stream.read, size)


async def _drain(protocol: SMTPProtocol) -> None:
    """Wait until the connection's write buffers are below their high-water marks.

    aiosmtplib has no public way to wait for it (its own DATA writes the whole message at
    once), but its protocol carries asyncio's flow control: ``FlowControlMixin`` (copied from
    asyncio.streams, with ``pause_writing``/``resume_writing``), whose ``_drain_helper`` is what
    ``StreamWriter.drain`` awaits. Wrapping the protocol in a ``StreamWriter`` instead would be
    no more public, and since Python 3.11.5 a collected StreamWriter closes its transport (the
    pooled connection). Checked against aiosmtplib 3.0.0 through 5.1.3: same name, same
    behaviour (raises ConnectionResetError once the connection is lost).
    """
    await protocol._drain_helper()


def sending_slots(config: NodeConfig) -> int:
    """Connections this node process opens to one peer at a time: its share of
    ``[limits] sending_connections_per_peer``, at least one."""
    return max(1, config.limits.sending_connections_per_peer // config.processes)


class SmtpTransport:
    def __init__(
        self,
        context: NodeContext,
        per_peer: int | None = None,
        timeout: float = 60.0,
        resolver: Resolver = resolve_mx,
        chunk: int = DATA_CHUNK,
        idle_keep: float = IDLE_KEEP,
    ) -> None:
        if chunk < 1:
            raise ValueError(f"chunk must be at least 1 byte, not {chunk}")
        self.context = context
        self.resolver = resolver
        self.timeout = timeout
        self.chunk = chunk
        handshakes = context.metrics.tls_handshakes
        self._tls = count_failures(
            context.client_tls(), lambda result: handshakes.labels("outbound", "none", result).inc()
        )
        # Host names are checked against the trust list below, not against the route address.
        self._tls.check_hostname = False
        self._tls.verify_mode = ssl.CERT_REQUIRED
        self.idle_keep = idle_keep
        self._idle: dict[str, list[aiosmtplib.SMTP]] = defaultdict(list)
        self._expiry: dict[aiosmtplib.SMTP, asyncio.TimerHandle] = {}
        self._quitting: set[asyncio.Task[None]] = set()
        slots = sending_slots(context.config) if per_peer is None else per_peer
        self._slots: dict[str, asyncio.Semaphore] = defaultdict(lambda: asyncio.Semaphore(slots))

    async def _connect(self, peer: str) -> aiosmtplib.SMTP:
        entry = self.context.verifiers.trust.get(peer)
        if entry is None:
            raise ConnectionError(f"{peer} is not in the trust list")
        route = self.context.routes.get(peer)
        peer_config = self.context.config.peer(peer)
        mx_port = peer_config.mx_port if peer_config else MX_PORT
        problems = []
        for host, port in await candidates(route, entry.provider.domain, self.resolver, mx_port):
            try:
                return await self._connect_to(peer, host, port)
            except (aiosmtplib.SMTPException, OSError, ConnectionError, ssl.SSLError) as exc:
                problems.append(f"{host}:{port}: {exc}")
        raise ConnectionError(f"no gateway of {peer} answered: {'; '.join(problems)}")

    async def _connect_to(self, peer: str, host: str, port: int) -> aiosmtplib.SMTP:
        client = aiosmtplib.SMTP(
            hostname=host,
            port=port,
            use_tls=True,
            tls_context=self._tls,
            timeout=self.timeout,
            local_hostname=self.context.provider.domain,
        )
        await client.connect()
        ssl_object = client.transport.get_extra_info("ssl_object") if client.transport else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        entry = self.context.verifiers.trust.get(peer)
        if der is None or entry is None:
            client.close()
            raise ConnectionError(f"{peer}: no TLS certificate")
        check = self.context.verifiers.tls(peer).validate(
            x509.load_der_x509_certificate(der), [], self.context.clock(), entry.tls_names
        )
        version = ssl_object.version() if ssl_object else None
        self.context.metrics.tls_handshakes.labels(
            "outbound", version or "unknown", "accepted" if check.ok else "refused"
        ).inc()
        if not check.ok:
            client.close()
            raise ConnectionError(
                f"{peer} at {host}:{port} is not who it should be: {check.detail}"
            )
        # TLS buffers up to 512 KiB before it pauses the writer (asyncio's default mark); one
        # chunk is enough to keep the socket fed, and keeps what a message holds small.
        if isinstance(client.transport, asyncio.WriteTransport):
            client.transport.set_write_buffer_limits(high=self.chunk)
        return client

    async def send(self, entry: Entry) -> Result:
        async with self._slots[entry.peer]:
            client = None
            host: str | None = None  # the gateway that answered, for the attempt's record
            try:
                client = self._take_idle(entry.peer)
                if client is None or not client.is_connected:
                    client = await self._connect(entry.peer)
                host = f"{client.hostname}:{client.port}"
                refused, reply = await self._transaction(client, entry)
                if refused:
                    first = refused[0]
                    outcome = Outcome.PERMANENT if first.code >= 500 else Outcome.TEMPORARY
                    return Result(outcome, f"{first.code} {first.message}", first.code, host=host)
                # Only a connection that finished its transaction with a 250 goes back: one that
                # failed anywhere (mid-DATA above all) is closed below.
                self._keep_idle(entry.peer, client)
                client = None
                return Result(Outcome.DELIVERED, f"250 {reply.message}", 250, host=host)
            except aiosmtplib.SMTPResponseException as exc:
                outcome = Outcome.PERMANENT if exc.code >= 500 else Outcome.TEMPORARY
                return Result(outcome, f"{exc.code} {exc.message}", exc.code, host=host)
            except aiosmtplib.SMTPRecipientsRefused as exc:  # every recipient: the first says
                first = exc.recipients[0]
                outcome = Outcome.PERMANENT if first.code >= 500 else Outcome.TEMPORARY
                return Result(outcome, f"{first.code} {first.message}", first.code, host=host)
            except (aiosmtplib.SMTPException, OSError, ConnectionError, ssl.SSLError) as exc:
                return Result(Outcome.TEMPORARY, f"{type(exc).__name__}: {exc}", host=host)
            except RouteTrouble as exc:  # DNS could not answer: the next attempt may
                return Result(Outcome.TEMPORARY, exc.detail)
            finally:
                if client is not None:
                    client.close()

    async def _transaction(
        self, client: aiosmtplib.SMTP, entry: Entry
    ) -> tuple[list[aiosmtplib.SMTPRecipientRefused], aiosmtplib.SMTPResponse]:
        """MAIL, RCPT and DATA as aiosmtplib's ``sendmail`` does them, the message streamed.

        Returns the refused recipients (some) and the reply to DATA; raises as ``sendmail``
        does, ``SMTPRecipientsRefused`` included when every recipient was refused.
        """
        if entry.content is not None:  # read with its entry (READ_WITH_ENTRY)
            stream: BinaryIO = io.BytesIO(entry.content)
            size = len(entry.content)
        else:
            stream, size = await asyncio.to_thread(_open, entry.path)
        try:
            if client.is_ehlo_or_helo_needed:
                await client.ehlo()
            # RFC 1870: the size in octets (the stuffing dots not counted), where the peer
            # advertises SIZE. The file's size, so a message too big is refused before DATA.
            options = [f"SIZE={size}"] if client.supports_extension("size") else []
            await client.mail(entry.mail_from, options=options)
            refused = []
            for recipient in entry.rcpt_to:
                try:
                    await client.rcpt(recipient)
                except aiosmtplib.SMTPRecipientRefused as exc:
                    refused.append(exc)
            if len(refused) == len(entry.rcpt_to):
                raise aiosmtplib.SMTPRecipientsRefused(refused)
            return refused, await self._data(client, stream, size)
        finally:
            stream.close()

    async def _data(
        self, client: aiosmtplib.SMTP, stream: BinaryIO, size: int
    ) -> aiosmtplib.SMTPResponse:
        """DATA, the message stuffed chunk by chunk, the end mark, and the peer's reply.

        The command and the replies go through aiosmtplib (``execute_command``, the protocol's
        ``read_response``); the message is written to its protocol, waiting for the buffers to
        drain after each chunk, so at most a chunk and the transport's buffers are held. Chunks
        are read on a worker thread: a spool on a slow or busy disk must not stall the event
        loop, which serves every other connection; one read at a time keeps memory bounded
        (the network, not the page cache, is what a large message waits for). Reading stops
        at ``size``, the file's size (spool files are written once): a message of one chunk
        is one read, not one and another to find the end. A small message read with its
        entry (``READ_WITH_ENTRY``) is taken from memory.
        """
        start = await client.execute_command(b"DATA")
        if start.code != aiosmtplib.SMTPStatus.start_input:
            raise aiosmtplib.SMTPDataError(start.code, start.message)
        protocol = client.protocol
        if protocol is None:
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        stuffer = DotStuffer()
        left = size
        while left > 0 and (chunk := await _read(stream, self.chunk)):
            left -= len(chunk)
            protocol.write(stuffer.feed(chunk))
            try:
                async with asyncio.timeout(self.timeout):
                    await _drain(protocol)
            except TimeoutError as exc:
                raise aiosmtplib.SMTPTimeoutError(
                    f"the peer took no data for {self.timeout:g} s"
                ) from exc
        # Nothing awaited between the end mark and read_response: aiosmtplib (5.1.3) drops
        # what arrives while no reply is awaited, and a quick peer may answer at once.
        protocol.write(stuffer.end())
        reply = await protocol.read_response(timeout=self.timeout)
        if reply.code != aiosmtplib.SMTPStatus.completed:
            raise aiosmtplib.SMTPDataError(reply.code, reply.message)
        return reply

    def _take_idle(self, peer: str) -> aiosmtplib.SMTP | None:
        """The connection to ``peer`` used last, if one is idle (its closing called off)."""
        if not self._idle[peer]:
            return None
        client = self._idle[peer].pop()
        self._expiry.pop(client).cancel()
        return client

    def _keep_idle(self, peer: str, client: aiosmtplib.SMTP) -> None:
        """Keep ``client`` for the next message to ``peer``, for ``idle_keep`` seconds."""
        self._idle[peer].append(client)
        self._expiry[client] = asyncio.get_running_loop().call_later(
            self.idle_keep, self._expire, peer, client
        )

    def _expire(self, peer: str, client: aiosmtplib.SMTP) -> None:
        """``client`` stayed idle for ``idle_keep`` seconds: QUIT (closed if the peer is slow
        to answer), in a task of its own."""
        self._idle[peer].remove(client)
        del self._expiry[client]
        task = asyncio.get_running_loop().create_task(self._quit(client))
        self._quitting.add(task)
        task.add_done_callback(self._quitting.discard)

    async def _quit(self, client: aiosmtplib.SMTP) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                await client.quit()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            client.close()

    async def close(self) -> None:
        """QUIT every idle connection, and let those already quitting finish."""
        for handle in self._expiry.values():
            handle.cancel()
        self._expiry.clear()
        idle = [client for clients in self._idle.values() for client in clients]
        self._idle.clear()
        await asyncio.gather(*(self._quit(client) for client in idle), *self._quitting)
