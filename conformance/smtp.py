"""A small SMTP client that sends exactly the bytes it is given (RFC 5321), over TLS.

The suite needs what a friendly client hides: a transaction whose every reply is kept, DATA
whose bytes are the caller's (dot-stuffed, nothing else), bare line endings on purpose, and
the transcript for the report. Takes a host, a port and an ``ssl.SSLContext``; promises a
``Transcript`` of every line exchanged (DATA shown by size), and raises ``SmtpGone`` when the
server closes or the connection fails, with what happened so far in the transcript.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field

# Lines of a reply the client reads before it calls the server broken (RFC 5321 §4.5.3.1.5
# bounds a reply line at 512 octets; EHLO answers have a dozen lines).
MAX_REPLY_LINES = 100
MAX_LINE = 4096
# A transcript keeps DATA's first bytes for people reading the report, not the message.
DATA_SHOWN = 200


class SmtpGone(Exception):
    """The connection failed or was closed before a reply came."""


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " / ".join(self.lines)

    @property
    def enhanced(self) -> str | None:
        first = self.lines[0] if self.lines else ""
        token = first.split(" ", 1)[0]
        parts = token.split(".")
        if len(parts) == 3 and all(p.isdigit() for p in parts):
            return token
        return None

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


@dataclass
class Transcript:
    lines: list[str] = field(default_factory=list)

    def client(self, line: str) -> None:
        self.lines.append(f"C: {line}")

    def server(self, reply: Reply) -> None:
        self.lines += [f"S: {reply.code} {line}" for line in reply.lines]

    def note(self, text: str) -> None:
        self.lines.append(f"-- {text}")


class SmtpClient:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        timeout: float,
        transcript: Transcript,
    ) -> None:
        self.reader, self.writer = reader, writer
        self.timeout = timeout
        self.transcript = transcript
        self.greeting: Reply | None = None
        self.extensions: dict[str, str] = {}

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        tls: ssl.SSLContext | None,
        *,
        timeout: float = 30.0,
        transcript: Transcript | None = None,
    ) -> SmtpClient:
        record = transcript if transcript is not None else Transcript()
        record.note(f"connect {host}:{port}" + (" (TLS)" if tls else ""))
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=tls, server_hostname=host if tls else None
                )
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            record.note(f"connection failed: {type(exc).__name__}: {exc}")
            raise SmtpGone(f"connection to {host}:{port} failed: {exc}") from exc
        client = cls(reader, writer, timeout, record)
        client.greeting = await client.read_reply()
        return client

    def peer_certificate(self) -> bytes | None:
        ssl_object = self.writer.get_extra_info("ssl_object")
        return ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None

    def tls_version(self) -> str | None:
        ssl_object = self.writer.get_extra_info("ssl_object")
        return ssl_object.version() if ssl_object is not None else None

    async def read_reply(self) -> Reply:
        lines: list[str] = []
        code = 0
        try:
            async with asyncio.timeout(self.timeout):
                while len(lines) < MAX_REPLY_LINES:
                    raw = await self.reader.readline()
                    if not raw:
                        raise SmtpGone("the server closed the connection")
                    line = raw[:MAX_LINE].decode("utf-8", "replace").rstrip("\r\n")
                    if len(line) < 3 or not line[:3].isdigit():
                        raise SmtpGone(f"not an SMTP reply: {line[:80]!r}")
                    code = int(line[:3])
                    lines.append(line[4:])
                    if line[3:4] != "-":
                        break
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            self.transcript.note(f"no reply: {type(exc).__name__}: {exc}")
            raise SmtpGone(f"no reply: {type(exc).__name__}: {exc}") from exc
        except SmtpGone as exc:
            self.transcript.note(str(exc))
            raise
        reply = Reply(code, tuple(lines))
        self.transcript.server(reply)
        return reply

    async def send_line(self, line: str) -> None:
        self.transcript.client(line)
        await self._write(line.encode("utf-8") + b"\r\n")

    async def _write(self, data: bytes) -> None:
        try:
            self.writer.write(data)
            async with asyncio.timeout(self.timeout):
                await self.writer.drain()
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            self.transcript.note(f"write failed: {type(exc).__name__}: {exc}")
            raise SmtpGone(f"write failed: {exc}") from exc

    async def command(self, line: str) -> Reply:
        await self.send_line(line)
        return await self.read_reply()

    async def ehlo(self, name: str) -> Reply:
        reply = await self.command(f"EHLO {name}")
        if reply.code == 250:
            for line in reply.lines[1:]:
                keyword, _, value = line.partition(" ")
                self.extensions[keyword.upper()] = value
        return reply

    async def data(self, payload: bytes, *, stuff: bool = True, end: bytes = b"\r\n.\r\n") -> Reply:
        """DATA with ``payload`` (dot-stuffed unless ``stuff`` is False) and ``end`` as the
        end mark; the reply to the end mark (or to DATA when that is refused)."""
        start = await self.command("DATA")
        if start.code != 354:
            return start
        body = stuff_dots(payload) if stuff else payload
        if body.endswith(b"\r\n") and end.startswith(b"\r\n"):
            end = end[2:]  # the body's last CRLF begins the end mark
        shown = body[:DATA_SHOWN].decode("utf-8", "replace").replace("\r\n", "⏎")
        self.transcript.client(f"<{len(body)} bytes: {shown}…>")
        await self._write(body + end)
        return await self.read_reply()

    async def transaction(
        self,
        mail_from: str,
        rcpt_to: list[str],
        payload: bytes | None,
        *,
        size: int | None = None,
    ) -> Transaction:
        """MAIL, RCPT for each, DATA when some recipient was accepted."""
        options = f" SIZE={size}" if size is not None and "SIZE" in self.extensions else ""
        mail = await self.command(f"MAIL FROM:<{mail_from}>{options}")
        result = Transaction(mail)
        if mail.code != 250:
            return result
        for recipient in rcpt_to:
            result.rcpt.append(await self.command(f"RCPT TO:<{recipient}>"))
        if payload is not None and any(r.code == 250 for r in result.rcpt):
            result.data = await self.data(payload)
        elif payload is not None:
            await self.command("RSET")
        return result

    async def quit(self) -> None:
        try:
            await self.command("QUIT")
        except SmtpGone:
            pass
        finally:
            self.close()

    def close(self) -> None:
        self.writer.close()


@dataclass
class Transaction:
    mail: Reply
    rcpt: list[Reply] = field(default_factory=list)
    data: Reply | None = None

    @property
    def accepted(self) -> bool:
        return self.data is not None and self.data.code == 250

    @property
    def final(self) -> Reply:
        """The reply that decided the transaction."""
        if self.data is not None:
            return self.data
        refused = [r for r in self.rcpt if r.code != 250]
        return refused[0] if refused else self.mail


def stuff_dots(data: bytes) -> bytes:
    """RFC 5321 §4.5.2: a line starting with '.' gets one more."""
    stuffed = data.replace(b"\r\n.", b"\r\n..")
    return b"." + stuffed if stuffed.startswith(b".") else stuffed
