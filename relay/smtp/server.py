"""The SMTP server: aiosmtpd, wrapped so DATA streams to the spool (INTEROP-PROFILE.md §2).

What aiosmtpd does well (command parsing, pipelining, state) it keeps doing. Replaced: DATA,
which aiosmtpd gathers in memory line by line; here blocks go through ``DataDecoder`` straight
into a ``Sink`` the intake stage opens. The listener's ``Intake`` decides every reply.

Whatever goes wrong inside DATA (a full disk, a file-size limit, an unreadable envelope, a bug),
the rest of the data is read to the final dot and answered once, with the reply
``relay.errors.reply_for`` gives: the body is a user's original, so its bytes must never be read
as commands. Every session is bounded in time as well as size (``SessionLimits``): silence, a
transfer below a floor rate for too long, and commands that do no work past a count end it with
``421 4.4.2``.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, AnyStr, Protocol

import structlog
from aiosmtpd.smtp import SMTP, Envelope, Session

from interop.errors import SmtpReply
from relay.errors import JunkCommands, SessionCut, Silence, SlowTransfer, TooBig, reply_for
from relay.smtp.data import DataDecoder

BLOCK = 64 * 1024
# Commands that move no message forward; counted against SessionLimits.max_junk_commands.
JUNK_COMMANDS = ("NOOP", "RSET", "HELP", "VRFY", "EXPN", "HELO", "EHLO")
# The path every KEP peer sends in MAIL FROM and RCPT TO: <dot-atom@domain>, then parameters.
# aiosmtpd reads a path with the e-mail header parser and makes a class on each call (about
# 70 us a path here, two a Dispatch). Paths of this plain form are read here, to the same
# result (tests/relay/test_smtp_paths.py); anything else (quoted local parts, source routes,
# <>, a comment after the path) is left to aiosmtpd.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_PATH = re.compile(
    rf"[ \t]*<({_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>(.*)", re.DOTALL
)

log = structlog.get_logger("kep.smtp")


class Sink(Protocol):
    size: int

    def write(self, data: bytes) -> None: ...

    def discard(self) -> None:
        """Forget what was written; never raises (failures call it)."""


@dataclass
class Connection:
    """What the intake knows about one client connection."""

    peer_address: tuple[str, int] | None
    provider: str | None = None  # the provider the TLS client certificate maps to
    tls: bool = False
    tls_version: str | None = None
    refused: SmtpReply | None = None  # a reply to give every transaction (no provider, say)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """Time bounds of one session (``[timers]`` and ``[limits]`` of the configuration)."""

    command_timeout: float  # silence between commands (aiosmtpd's timer)
    data_timeout: float  # silence inside DATA
    min_transfer_rate: float  # bytes per second below which DATA counts as slow
    slow_transfer_limit: float  # seconds DATA may stay below that rate
    max_junk_commands: int  # commands doing no work since the last accepted message


class Intake(Protocol):
    """The stage behind a listener: it answers MAIL, RCPT and the end of DATA."""

    def size_limit(self, connection: Connection) -> int: ...

    def identify(self, connection: Connection, peer_cert: bytes | None) -> None: ...

    def check_mail(
        self, connection: Connection, address: str, options: list[str]
    ) -> SmtpReply | None: ...

    def check_rcpt(
        self, connection: Connection, envelope: Envelope, address: str
    ) -> SmtpReply | None: ...

    def open_sink(self, connection: Connection, envelope: Envelope) -> Sink: ...

    async def finish(self, connection: Connection, envelope: Envelope, sink: Sink) -> SmtpReply:
        """The reply after the final dot; may raise (the server answers with ``reply_for``)."""

    def refused(self, connection: Connection, reply: SmtpReply) -> None:
        """Told of every 4xx and 5xx reply given on the connection (for metrics)."""

    def transaction_done(self, connection: Connection, reply: SmtpReply, seconds: float) -> None:
        """Told of the reply at the end of DATA, ``seconds`` after MAIL FROM was accepted."""

    def session_cut(self, connection: Connection, why: str) -> None:
        """Told when the server ends a session (``SessionCut.why``)."""


class TransferFloor:
    """A budget of seconds a transfer may spend below ``rate`` (Postfix's smtpd_min_data_rate).

    The budget starts full at ``allowance``; time spent waiting takes from it, and every byte
    received gives back ``1 / rate`` seconds, never beyond ``allowance``. A peer at or above
    the rate never runs out; one below it runs out after ``allowance`` seconds at most, however
    much it sent before.
    """

    def __init__(self, rate: float, allowance: float, now: float) -> None:
        self.rate, self.allowance = rate, allowance
        self.credit, self.last = allowance, now

    def remaining(self, now: float) -> float:
        return self.credit - (now - self.last)

    def feed(self, received: int, now: float) -> None:
        self.credit = min(self.allowance, self.remaining(now) + received / self.rate)
        self.last = now

    def describe(self) -> str:
        return f"below {self.rate:.0f} bytes/s for {self.allowance:.0f} s"


class KepSMTP(SMTP):
    def __init__(
        self,
        intake: Intake,
        *,
        limits: SessionLimits,
        limiter: ConnectionLimiter | None = None,
        **kwargs: Any,
    ) -> None:
        # data_size_limit=None: SIZE is advertised and enforced here, with enhanced codes.
        super().__init__(
            _Handler(self),
            data_size_limit=None,
            enable_SMTPUTF8=False,
            decode_data=False,
            timeout=limits.command_timeout,
            hostname=kwargs.pop("hostname", None),
            **kwargs,
        )
        self.intake = intake
        self.limits = limits
        self.connection = Connection(None)
        self.limiter = limiter
        self.mail_started = 0.0  # monotonic time MAIL FROM was accepted
        self.junk = 0  # JUNK_COMMANDS since the last accepted message
        for name in JUNK_COMMANDS:
            self._smtp_methods[name] = self._counted(self._smtp_methods[name])

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        plain = _PLAIN_PATH.fullmatch(arg)
        if plain is None:
            return super()._getaddr(arg)
        address, rest = plain.group(1), plain.group(2)
        if rest[:1] in (" ", "\t"):  # folding white space: aiosmtpd then drops all of it
            rest = rest.lstrip()
        if rest.startswith("("):  # a comment after the path: left to aiosmtpd, as any other
            return super()._getaddr(arg)
        if self.local_part_limit and len(address.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return address, rest

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
            self.intake.refused(self.connection, SmtpReply.parse(refusal))
            transport.write(refusal.encode() + b"\r\n")  # type: ignore[attr-defined]
            transport.close()

    async def push(self, status: AnyStr) -> None:
        text = status if isinstance(status, str) else status.decode("ascii", "replace")
        if text[:1] in ("4", "5"):  # ours and the SMTP library's own, as they go out
            self.intake.refused(self.connection, SmtpReply.parse(text))
        await super().push(status)

    @property
    def busy(self) -> bool:
        """A transaction is in progress (MAIL given, not yet finished or reset)."""
        return self.envelope is not None and self.envelope.mail_from is not None

    def close_if_idle(self) -> bool:
        """Say 421 and close, unless a transaction is in progress or the connection is
        closing already (a drain asks every 50 ms; TLS waits for the peer's close_notify, and a
        second close of an SSL transport leaves it unable to take a write)."""
        if self.busy or self.transport is None or self.transport.is_closing():
            return False
        self.transport.write(b"421 4.3.2 Shutting down, try again later\r\n")  # type: ignore[attr-defined]
        self.transport.close()
        return True

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        if self.limiter is not None:
            self.limiter.release(self)

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, asyncio.IncompleteReadError):
            # The client's stream ended (aiosmtpd ends the session then, by cancelling it;
            # should that ever be lost, every next command would read the same end again).
            self._end()
            return "421 4.4.2 Connection closed"  # to no one: the connection is gone
        return await super().handle_exception(error)

    def _end(self) -> None:
        """End the session of a client that is gone: nothing more can come, nor be read."""
        if self.transport is not None:
            self.transport.abort()  # type: ignore[attr-defined]

    def _counted(
        self, method: Callable[[str | None], Awaitable[None]]
    ) -> Callable[[str | None], Awaitable[None]]:
        async def counted(arg: str | None) -> None:
            self.junk += 1
            if self.junk > self.limits.max_junk_commands:
                await self.cut(JunkCommands(f"{self.junk} commands that do no work"))
                return
            await method(arg)

        return counted

    async def cut(self, cut: SessionCut) -> None:
        """End the session with ``421 4.4.2`` (RFC 5321 §3.8: the server may close after 421)."""
        log.warning(
            "session_cut",
            why=cut.why,
            detail=cut.detail,
            client=str(self.connection.peer_address),
            peer=self.connection.provider,
        )
        self.intake.session_cut(self.connection, cut.why)
        await self.push(str(cut.reply))
        if self.transport is not None:
            self.transport.close()

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
        limit = self.intake.size_limit(self.connection)
        decoder = DataDecoder()
        sink, failure = self._open_sink()
        loop = asyncio.get_running_loop()
        floor = TransferFloor(
            self.limits.min_transfer_rate, self.limits.slow_transfer_limit, loop.time()
        )
        too_big = False
        try:
            while not decoder.done:
                block = await self._read_block(floor)
                if not block:  # the client's stream ended mid-DATA: nothing was acknowledged
                    self._end()
                    return
                data = decoder.feed(block)
                if sink is None:
                    continue  # too big or failed: read on to the end mark, store nothing
                if sink.size + len(data) > limit:
                    too_big = True  # §2: nothing is stored
                else:
                    try:
                        sink.write(data)
                        continue
                    except Exception as exc:  # a full disk, a file-size limit: answered at the end
                        failure = exc
                sink.discard()
                sink = None
        except SessionCut as cut:
            await self.cut(cut)
            return
        finally:
            if not decoder.done and sink is not None:
                sink.discard()
            self._reset_timeout()
        if decoder.leftover:
            # Pipelined commands after the end mark go back to aiosmtpd's reader.
            self._reader._buffer[:0] = decoder.leftover  # type: ignore[attr-defined]
        reply = await self._decide(sink, failure, too_big, decoder.bare_line_ending, limit)
        await self.push(str(reply))
        if reply.code == 250:
            self.junk = 0  # work was done
        self.intake.transaction_done(self.connection, reply, time.monotonic() - self.mail_started)
        self._set_post_data_state()  # type: ignore[no-untyped-call]

    def _open_sink(self) -> tuple[Sink | None, Exception | None]:
        assert self.envelope is not None
        try:
            return self.intake.open_sink(self.connection, self.envelope), None
        except Exception as exc:  # e.g. the spool's folder cannot be written
            return None, exc

    async def _read_block(self, floor: TransferFloor) -> bytes:
        """The next block of DATA; ``SessionCut`` on silence or a transfer below the floor."""
        loop = asyncio.get_running_loop()
        wait = max(0.0, min(self.limits.data_timeout, floor.remaining(loop.time())))
        self._reset_timeout(wait + self.limits.command_timeout)  # aiosmtpd's timer: a backstop
        try:
            # Not asyncio.wait_for: on Python 3.11 it returns a read that completed as the
            # session was being cancelled (the client's stream ended: aiosmtpd cancels the
            # session), and the cancellation that ends the session is lost.
            async with asyncio.timeout(wait):
                block = await self._reader.read(BLOCK)
        except TimeoutError:
            if floor.remaining(loop.time()) <= 0:
                raise SlowTransfer(floor.describe()) from None
            raise Silence(f"no data for {self.limits.data_timeout:.0f} s") from None
        floor.feed(len(block), loop.time())
        if floor.remaining(loop.time()) <= 0:
            raise SlowTransfer(floor.describe())
        return block

    async def _decide(
        self,
        sink: Sink | None,
        failure: Exception | None,
        too_big: bool,
        bare_line_ending: bool,
        limit: int,
    ) -> SmtpReply:
        """The one reply to a DATA that was read to its end mark."""
        assert self.envelope is not None
        if too_big:
            return TooBig(text=f"Message exceeds the size limit of {limit} bytes").reply
        if failure is not None or sink is None:
            return self._failed(failure or RuntimeError("no sink"))
        if bare_line_ending:
            sink.discard()
            return SmtpReply(
                550, "5.6.11", "Bare CR or LF in message data is not accepted (RFC 5321 2.3.8)"
            )
        try:
            return await self.intake.finish(self.connection, self.envelope, sink)
        except Exception as exc:
            sink.discard()
            return self._failed(exc)

    def _failed(self, exc: BaseException) -> SmtpReply:
        reply = reply_for(exc)
        log.error(
            "transaction_failed",
            reply=str(reply),
            error=f"{type(exc).__name__}: {exc}",
            client=str(self.connection.peer_address),
            peer=self.connection.provider,
            exc_info=not isinstance(exc, OSError),
        )
        return reply


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
            return str(connection.refused)
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
            return str(problem)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        self.server.mail_started = time.monotonic()
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        problem = self.server.intake.check_rcpt(self.server.connection, envelope, address)
        if problem:
            return str(problem)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 OK"

    async def handle_exception(self, error: Exception) -> str:
        """A command's hook raised: the reply ``relay.errors`` decides, never a bare 500 with
        the exception's class and text (the details go to the log)."""
        return str(self.server._failed(error))


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
