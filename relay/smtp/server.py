"""The SMTP server: aiosmtpd, wrapped so DATA streams to the spool (INTEROP-PROFILE.md §2).

What aiosmtpd does well (command parsing, pipelining, state) it keeps doing. Replaced: DATA,
which aiosmtpd gathers in memory line by line; here blocks go through ``DataDecoder`` straight
into a ``Sink`` the intake stage opens. The listener's ``Intake`` decides every reply.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass, field
from typing import Any, AnyStr, Protocol

from aiosmtpd.smtp import SMTP, Envelope, Session

from relay.smtp.data import DataDecoder

BLOCK = 64 * 1024


class Sink(Protocol):
    size: int

    def write(self, data: bytes) -> None: ...

    def discard(self) -> None: ...


@dataclass
class Connection:
    """What the intake knows about one client connection."""

    peer_address: tuple[str, int] | None
    provider: str | None = None  # the provider the TLS client certificate maps to
    tls: bool = False
    tls_version: str | None = None
    refused: str | None = None  # a reply to give every transaction (no provider, say)
    extra: dict[str, Any] = field(default_factory=dict)


class Intake(Protocol):
    """The stage behind a listener: it answers MAIL, RCPT and the end of DATA."""

    def size_limit(self, connection: Connection) -> int: ...

    def identify(self, connection: Connection, peer_cert: bytes | None) -> None: ...

    def check_mail(
        self, connection: Connection, address: str, options: list[str]
    ) -> str | None: ...

    def check_rcpt(
        self, connection: Connection, envelope: Envelope, address: str
    ) -> str | None: ...

    def open_sink(self, connection: Connection, envelope: Envelope) -> Sink: ...

    async def finish(self, connection: Connection, envelope: Envelope, sink: Sink) -> str: ...

    def refused(self, connection: Connection, reply: str) -> None:
        """Told of every 4xx and 5xx reply given on the connection (for metrics)."""

    def transaction_done(self, connection: Connection, reply: str, seconds: float) -> None:
        """Told of the reply at the end of DATA, ``seconds`` after MAIL FROM was accepted."""


class KepSMTP(SMTP):
    def __init__(
        self,
        intake: Intake,
        *,
        data_timeout: float,
        command_timeout: float,
        limiter: ConnectionLimiter | None = None,
        **kwargs: Any,
    ) -> None:
        # data_size_limit=None: SIZE is advertised and enforced here, with enhanced codes.
        super().__init__(
            _Handler(self),
            data_size_limit=None,
            enable_SMTPUTF8=False,
            decode_data=False,
            timeout=command_timeout,
            hostname=kwargs.pop("hostname", None),
            **kwargs,
        )
        self.intake = intake
        self.data_timeout = data_timeout
        self.connection = Connection(None)
        self.limiter = limiter
        self.mail_started = 0.0  # monotonic time MAIL FROM was accepted

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.connection = Connection(transport.get_extra_info("peername"))
        ssl_object = transport.get_extra_info("ssl_object")
        cert = None
        if isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
            self.connection.tls = True
            self.connection.tls_version = ssl_object.version()
            cert = ssl_object.getpeercert(binary_form=True)
        self.intake.identify(self.connection, cert)
        refusal = self.limiter.admit(self) if self.limiter is not None else None
        if refusal is not None:
            # RFC 5321 §3.1: 421 instead of the greeting, then close.
            self.intake.refused(self.connection, refusal)
            transport.write(refusal.encode() + b"\r\n")  # type: ignore[attr-defined]
            transport.close()

    async def push(self, status: AnyStr) -> None:
        text = status if isinstance(status, str) else status.decode("ascii", "replace")
        if text[:1] in ("4", "5"):
            self.intake.refused(self.connection, text)
        await super().push(status)

    @property
    def busy(self) -> bool:
        """A transaction is in progress (MAIL given, not yet finished or reset)."""
        return self.envelope is not None and self.envelope.mail_from is not None

    def close_if_idle(self) -> bool:
        if self.busy or self.transport is None:
            return False
        self.transport.write(b"421 4.3.2 Shutting down, try again later\r\n")  # type: ignore[attr-defined]
        self.transport.close()
        return True

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        if self.limiter is not None:
            self.limiter.release(self)

    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed():
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 RCPT first")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        decoder = DataDecoder()
        sink: Sink | None = self.intake.open_sink(self.connection, self.envelope)
        too_big = False
        try:
            while not decoder.done:
                self._reset_timeout(self.data_timeout)  # a slow link is fine, silence is not
                block = await self._reader.read(BLOCK)
                if not block:
                    if sink is not None:
                        sink.discard()
                    return  # connection closed mid-DATA: nothing was acknowledged
                data = decoder.feed(block)
                if sink is not None and not too_big:
                    if sink.size + len(data) > self.intake.size_limit(self.connection):
                        too_big = True  # keep reading to the end mark, store nothing (§2)
                        sink.discard()
                        sink = None
                    else:
                        sink.write(data)
        except BaseException:
            if sink is not None:
                sink.discard()
            raise
        finally:
            self._reset_timeout()
        if decoder.leftover:
            # Pipelined commands after the end mark go back to aiosmtpd's reader.
            self._reader._buffer[:0] = decoder.leftover  # type: ignore[attr-defined]
        if too_big or sink is None:
            limit = self.intake.size_limit(self.connection)
            reply = f"552 5.3.4 Message exceeds the size limit of {limit} bytes"
        elif decoder.bare_line_ending:
            sink.discard()
            reply = "550 5.6.11 Bare CR or LF in message data is not accepted (RFC 5321 2.3.8)"
        else:
            reply = await self.intake.finish(self.connection, self.envelope, sink)
        await self.push(reply)
        self.intake.transaction_done(self.connection, reply, time.monotonic() - self.mail_started)
        self._set_post_data_state()  # type: ignore[no-untyped-call]


class _Handler:
    """aiosmtpd's handler hooks, forwarded to the intake."""

    def __init__(self, server: KepSMTP) -> None:
        self.server = server

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        limit = self.server.intake.size_limit(self.server.connection)
        extensions = [
            f"250-SIZE {limit}",
            "250-8BITMIME",
            "250-ENHANCEDSTATUSCODES",
            "250-PIPELINING",
        ]
        return [responses[0], *extensions, "250 HELP"]

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        connection = self.server.connection
        if connection.refused:
            return connection.refused
        for option in options:
            name, _, value = option.partition("=")
            if (
                name.upper() == "SIZE"
                and value.isdigit()
                and int(value) > self.server.intake.size_limit(self.server.connection)
            ):
                limit = self.server.intake.size_limit(self.server.connection)
                return f"552 5.3.4 Message size exceeds the limit of {limit} bytes"
        problem = self.server.intake.check_mail(connection, address, options)
        if problem:
            return problem
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        self.server.mail_started = time.monotonic()
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        problem = self.server.intake.check_rcpt(self.server.connection, envelope, address)
        if problem:
            return problem
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 OK"


class ConnectionLimiter:
    """Overall and per-peer connection limits; refused connections get 421 and are closed."""

    def __init__(self, total: int, per_peer: int) -> None:
        self.total, self.per_peer = total, per_peer
        self.open: set[KepSMTP] = set()

    def admit(self, server: KepSMTP) -> str | None:
        if len(self.open) >= self.total:
            return "421 4.3.2 Too many connections, try again later"
        provider = server.connection.provider
        if (
            provider
            and sum(1 for s in self.open if s.connection.provider == provider) >= self.per_peer
        ):
            return f"421 4.3.2 Too many connections from {provider}, try again later"
        self.open.add(server)
        return None

    def release(self, server: KepSMTP) -> None:
        self.open.discard(server)
