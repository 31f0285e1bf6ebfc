"""One way out (STYLE.md): the queue hands an entry to ``deliver`` and gets a result back."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


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


@dataclass(frozen=True, slots=True)
class Result:
    outcome: Outcome
    reply: str


class Transport(Protocol):
    async def deliver(self, entry: Entry) -> Result: ...

    async def close(self) -> None: ...
