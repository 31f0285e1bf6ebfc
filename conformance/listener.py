"""The suite's own gateway listener: SMTP over mutual TLS where the target sends to the
provider the suite plays (its Evidence in ``run``, its Dispatches in ``receive``).

Takes an address and a server ``ssl.SSLContext`` (a client certificate is required, §2);
promises every message received, with the client's certificate, the SMTP envelope and the
bytes exactly as they came (dot-unstuffed, CRLF kept), to ``wait_for`` callers. What it answers
is 250 unless ``answer`` says otherwise (a case that wants the target to retry answers 451).
It accepts any MAIL FROM and RCPT TO: judging them is the cases' business, not the
listener's, so a wrong one is reported instead of hidden behind a refusal.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email.parser
import email.policy
import itertools
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

# Evidence messages are a few KiB and Dispatches at most 25 MiB plus the envelope (§2): the
# listener holds what it receives in memory, so it bounds it.
MAX_MESSAGE = 27 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Received:
    number: int
    at: float  # time.time() when the final dot came
    peer_certificate: bytes | None
    tls_version: str | None
    mail_from: str
    rcpt_to: tuple[str, ...]
    mail_options: tuple[str, ...]
    data: bytes
    answered: str

    @property
    def headers(self) -> Message:
        parser = email.parser.BytesHeaderParser(policy=email.policy.compat32)
        return parser.parsebytes(self.data)

    def header(self, name: str) -> str | None:
        value = self.headers.get(name)
        return None if value is None else " ".join(str(value).split())

    @property
    def message_identifier(self) -> str | None:
        return self.header("X-REM-Message-Identifier")

    @property
    def msg_type(self) -> str | None:
        return self.header("X-REM-Msg-Type")


Answer = Callable[[Received], str | None]


class _Server(SMTP):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        self.peer_der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        self.tls_version = ssl_object.version() if ssl_object else None


@dataclass
class Listener:
    host: str
    port: int
    tls: ssl.SSLContext
    hostname: str = "conformance.invalid"
    answer: Answer | None = None
    received: list[Received] = field(default_factory=list)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _server: asyncio.Server | None = None
    _numbers: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    async def start(self) -> None:
        handler = _Handler(self)

        def factory() -> _Server:
            return _Server(
                handler,
                data_size_limit=MAX_MESSAGE,
                decode_data=False,
                enable_SMTPUTF8=False,
                hostname=self.hostname,
                timeout=60,
            )

        self._server = await asyncio.get_running_loop().create_server(
            factory, self.host, self.port, ssl=self.tls
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    @property
    def running(self) -> bool:
        return self._server is not None

    async def add(self, received: Received) -> None:
        async with self._changed:
            self.received.append(received)
            self._changed.notify_all()

    async def wait_for(
        self,
        select: Callable[[Received], bool],
        enough: Callable[[list[Received]], bool],
        timeout: float,
    ) -> list[Received]:
        """The messages ``select`` picks, as soon as ``enough`` of them came or after
        ``timeout`` seconds (whatever came by then: the caller judges)."""
        deadline = asyncio.get_running_loop().time() + timeout
        async with self._changed:
            while True:
                chosen = [r for r in self.received if select(r)]
                left = deadline - asyncio.get_running_loop().time()
                if enough(chosen) or left <= 0:
                    return chosen
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout=left)


class _Handler:
    def __init__(self, listener: Listener) -> None:
        self.listener = listener

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content: Any = envelope.content
        data = bytes(content) if isinstance(content, bytes | bytearray) else b""
        assert isinstance(server, _Server)
        received = Received(
            # Numbered as it comes (connections run side by side): a message's own key.
            number=next(self.listener._numbers),
            at=time.time(),
            peer_certificate=server.peer_der,
            tls_version=server.tls_version,
            mail_from=str(envelope.mail_from or ""),
            rcpt_to=tuple(str(r) for r in envelope.rcpt_tos),
            mail_options=tuple(str(o) for o in envelope.mail_options),
            data=data,
            answered="",
        )
        answer = (self.listener.answer(received) if self.listener.answer else None) or (
            "250 2.0.0 OK: received by the conformance suite"
        )
        await self.listener.add(dataclasses.replace(received, answered=answer))
        return answer
