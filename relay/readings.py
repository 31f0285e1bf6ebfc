"""Intake's reading of an envelope, kept for the verifier in the same node process.

Intake reads each envelope's structure (``interop.envelope.parse``) and its delil.xml
(``interop.evidence.xmlio.read``) before it says 250, and the R-GW or the evidence intake
verifies the envelope moments later, usually in the same node process: the reading is kept
here so each is read once per message, not twice.

Nothing depends on it being here. The verifier takes a reading only for the very bytes it was
made from: a small message's, held in the store with its row, by their size and SHA-256; a
spool file by its identity (same device, inode, size and modification time: the file is written
once, then only read). It reads the message again otherwise: after a restart, in another node
process (when this one did not come to it within ``READER_FIRST``), after the file was
changed, or when the reading was dropped. Whatever it takes, the bytes that signatures and
digests cover are hashed from the message itself, so a signed part changed since intake still
fails verification.

Bounded (STYLE.md "Every limit has a name"): ``KEPT_BYTES`` of envelopes, and readings go
``KEPT_FOR`` after they were made.

So that it is the same process, a message whose reading is kept waits ``READER_FIRST`` for
the process that read it before another claims it (``relay.store.messages``), unless that
other has nothing else to do (``claim_awaited``); a node's processes would otherwise claim
arrivals in turn, and read again what the others had read.

A stage verifying a received message starts from ``receive``: the bytes held in the store, or
the spool file, read whole when it is small (``READ_WHOLE``: its CPU steps then run on the
event loop's thread, with no file to wait for; ``relay.steps``), and intake's reading when it
still describes those bytes. Intake reads a small envelope from the spool writer's copy, on
the loop's thread too.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, cast

from interop.envelope.mime import Span
from interop.envelope.parse import ParsedEnvelope
from interop.evidence.xmlio import ReadEvidence
from relay.spool import SpanReader

MiB = 1024 * 1024
# The envelope bytes besides the original (headers, delil.xml, smime.p7s: what a reading holds;
# the original is only an offset) that readings may hold in all. A reading takes about 2.6
# times as much memory, delil.xml's parsed tree included (measured: a 4 KiB Dispatch with 16
# KB of such bytes held 19 KB for the envelope's reading and 24 KB for delil.xml's), so this
# is some 21 MiB for about 500 such Dispatches waiting: a node's usual backlog.
KEPT_BYTES = 8 * MiB
# Seconds a reading is kept: a message waits seconds for its claim, not minutes; a reading
# older than this is most likely of a message another node process claimed.
KEPT_FOR = 60.0
# Seconds a received message whose reading is kept waits for the node process that read it:
# before then only that process claims it (``Readings.waiting``, ``claim_received(mine=)``),
# or another that has nothing else to do (``claim_awaited``); any process after. A node's
# processes otherwise claim what arrives in turn, so each read again about half of what the
# others had read (N-1 of N). Long enough for a busy process to come to it; short enough
# that another takes it soon from one that is stuck or gone.
READER_FIRST = 5.0
# A received message up to this size is held whole in memory: intake reads it from the spool
# writer's copy and stores it with its row (no spool file is made for it: the store's
# ``contents``, gone with the rest of its content once its obligations are met, profile §7),
# and the stage verifying it has the bytes its claim read; both on the event loop's thread
# (relay.steps). Verifying 128 KiB costs under a millisecond more than 4 KiB (three SHA-256
# passes), so the loop is never held long by one. The copies intake keeps while DATA arrives
# are at most [limits] max_connections of these (200: 25 MiB) at once.
READ_WHOLE = 128 * 1024


class HasFileno(Protocol):
    def fileno(self) -> int: ...


@dataclass(frozen=True, slots=True)
class FileIdentity:
    """Which file, as it was: a file changed or replaced since has another identity."""

    device: int
    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, stream: HasFileno) -> FileIdentity:
        st = os.fstat(stream.fileno())
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True, slots=True)
class HeldIdentity:
    """Which bytes, for a message held in the store (written once with its row, then only
    read): its size and SHA-256."""

    size: int
    sha256: bytes

    @classmethod
    def of(cls, data: bytes) -> HeldIdentity:
        return cls(len(data), hashlib.sha256(data).digest())


@dataclass(frozen=True, slots=True)
class Reading:
    envelope: ParsedEnvelope
    evidence: ReadEvidence  # envelope.evidence_xml parsed, and its content
    source: FileIdentity | HeldIdentity  # what it was read from

    @property
    def weight(self) -> int:
        """Envelope bytes the reading stands for, besides the original (only an offset)."""
        original = self.envelope.original
        return self.envelope.size - (original.size if original else 0)

    def describes(self, stream: BinaryIO) -> bool:
        """Whether this is a reading of the file open as ``stream``, unchanged since."""
        if not isinstance(self.source, FileIdentity):
            return False
        try:
            return FileIdentity.of(stream) == self.source
        except (OSError, ValueError):  # not a file with a descriptor: read it again
            return False

    def describes_held(self, data: bytes) -> bool:
        """Whether this is a reading of the bytes ``data`` (a message held in the store)."""
        return isinstance(self.source, HeldIdentity) and HeldIdentity.of(data) == self.source


@dataclass(frozen=True, slots=True)
class Received:
    """A received message as the stage verifying it has it: its spool file, or its bytes when
    it is small (held in the store, or its file read whole), and intake's reading of it when
    that still describes them."""

    path: Path
    data: bytes | None  # the whole message, up to READ_WHOLE
    reading: Reading | None

    @property
    def small(self) -> bool:
        return self.data is not None

    def open(self, span: Span | None = None) -> BinaryIO:
        """The message (or its bytes ``span``) to read from the start: from the bytes held, else
        from its file (blocking then); the caller closes it."""
        if self.data is not None:
            return io.BytesIO(self.data if span is None else self.data[span.start : span.end])
        if span is None:
            return self.path.open("rb")
        return cast(BinaryIO, SpanReader(self.path, span.start, span.end))


def receive(
    path: Path, reading: Reading | None, held: bytes | None = None, read_whole: int = READ_WHOLE
) -> Received:
    """The message ``held`` in the store, or else its file ``path`` opened (blocking) and read
    whole if it is no longer than ``read_whole``; with ``reading`` only if it describes what
    was had. Raises ``OSError``."""
    if held is not None:
        return Received(path, held, reading if reading and reading.describes_held(held) else None)
    with path.open("rb") as stream:
        if reading is not None and not reading.describes(stream):
            reading = None
        small = os.fstat(stream.fileno()).st_size <= read_whole
        data = stream.read() if small else None
    return Received(path, data, reading)


class Readings:
    """Readings by queue id; intake's threads keep them, the processing threads take them."""

    def __init__(self, kept_bytes: int = KEPT_BYTES, kept_for: float = KEPT_FOR) -> None:
        self.kept_bytes = kept_bytes
        self.kept_for = kept_for
        self._readings: OrderedDict[str, tuple[float, Reading]] = OrderedDict()
        self._weight = 0
        self._lock = threading.Lock()

    def keep(self, queue_id: str, reading: Reading, now: float) -> bool:
        """Keep ``reading`` of the message ``queue_id`` if there is room; whether it is kept.

        Readings that outlived ``kept_for`` make room; younger ones are never pushed out for a
        newer one: messages are claimed oldest first, so the oldest readings are the next to
        be used.
        """
        with self._lock:
            self._expire(now)
            if self._weight + reading.weight > self.kept_bytes:
                return False
            self._readings[queue_id] = (now, reading)
            self._weight += reading.weight
            return True

    def waiting(self, now: float, count: int) -> list[str]:
        """The oldest ``count`` messages whose readings were kept less than ``READER_FIRST``
        ago: waiting for this process alone (an older one is due to every process)."""
        with self._lock:
            young = (
                queue_id
                for queue_id, (kept, _) in self._readings.items()
                if now - kept < READER_FIRST
            )
            return list(itertools.islice(young, count))

    def drop(self, queue_id: str) -> None:
        """Forget the reading of a message that was not stored after all."""
        with self._lock:
            self._pop(queue_id)

    def take(self, queue_id: str, now: float) -> Reading | None:
        """The reading of ``queue_id``, if one is kept and young enough; it is kept no longer
        (a retry after a failure reads the file again)."""
        with self._lock:
            kept = self._pop(queue_id)
            self._expire(now)
        if kept is None or now - kept[0] > self.kept_for:
            return None
        return kept[1]

    def _pop(self, queue_id: str) -> tuple[float, Reading] | None:
        kept = self._readings.pop(queue_id, None)
        if kept is not None:
            self._weight -= kept[1].weight
        return kept

    def __len__(self) -> int:
        return len(self._readings)

    def _expire(self, now: float) -> None:
        while self._readings:
            made, reading = next(iter(self._readings.values()))
            if now - made <= self.kept_for:
                return
            self._readings.popitem(last=False)
            self._weight -= reading.weight
