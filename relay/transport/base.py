"""One way out (STYLE.md): the queue hands an entry to ``send`` and gets a result back."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

# Bytes: a message this small (the Evidence messages, most Dispatches) is read whole when its
# entry is made, on the same worker thread, so sending it needs no further hand-off to read the
# spool file; a larger one is streamed from the file, a chunk at a time.
READ_WITH_ENTRY = 64 * 1024


class Outcome(enum.Enum):
    DELIVERED = "delivered"
    TEMPORARY = "temporary"  # 4xx, connection trouble: try again later
    PERMANENT = "permanent"  # 5xx: stop


@dataclass(frozen=True, slots=True)
class Entry:
    queue_id: str
    peer: str
    mail_from: str
    rcpt_to: tuple[str, ...]
    path: Path
    size: int
    content: bytes | None = None  # the whole message, when READ_WITH_ENTRY allowed reading it


@dataclass(frozen=True, slots=True)
class Result:
    outcome: Outcome
    reply: str  # the peer's reply as it came, or what went wrong when none came
    code: int = 0  # the peer's reply code; 0 when no reply came (connection, TLS, DNS)
    host: str | None = None  # host:port of the peer's gateway that answered, when one did


class Transport(Protocol):
    async def send(self, entry: Entry) -> Result: ...

    async def close(self) -> None: ...
