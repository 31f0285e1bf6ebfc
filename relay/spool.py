"""The spool: message files on stable storage (STYLE.md "Durability", Postfix mail_stream.c).

A file is written under ``tmp/`` with a temporary name, fsync'd, renamed into ``msg/`` and
its directory fsync'd. Only then does anyone point at it (the store row), and only after that
is 250 said. A writer asked to ``keep`` small messages holds one of up to that many bytes in
memory and makes no file for it at all: its caller stores the bytes with the message's store
row, in the same transaction (``SpoolWriter.held``; a file created, synced, renamed, read and
removed per message was the largest part of the kernel's work on a small one).

The node's processes share the spool (and, with PostgreSQL, the node's machines do: it is a
folder they all mount). A temporary's name starts with the process that writes it: at start a
process removes its own leftovers; anyone's left untouched for ``STALE`` go too (a live
transaction writes at least every ``timers.data_timeout``). A file in ``msg/`` that no store row
points at (written, then a crash before the commit) is swept once it is ``STALE`` old, never
sooner: another process may be about to commit it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

from interop.limits import STREAM_CHUNK

STALE = 3600.0  # seconds: longer than any transaction's silence (timers.data_timeout)


def fsync_dir(path: Path | str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def new_id() -> str:
    """A queue id: sortable by time of creation is not needed, uniqueness is."""
    return secrets.token_hex(12)


class SpoolWriter:
    """Streams one message to a temporary file while hashing and counting it; with ``keep``,
    holds one of up to ``keep`` bytes in memory instead, and opens its file only once the
    message outgrows that."""

    def __init__(self, spool: Spool, queue_id: str, keep: int = 0) -> None:
        self.spool = spool
        self.queue_id = queue_id
        self.tmp = spool.tmp_dir / f"{spool.writer_prefix}{queue_id}.tmp"
        self.size = 0
        self.sha256 = hashlib.sha256()
        # What was written, while it is no more than ``keep`` bytes and no file was opened
        # (None: more, or not kept).
        self.copy: bytearray | None = bytearray() if keep > 0 else None
        self._keep = keep
        self._file: BinaryIO | None = None if keep > 0 else self.tmp.open("wb")
        self._done = False

    @property
    def in_memory(self) -> bool:
        """Whether the whole message is held in memory, with no file (``keep``)."""
        return self.copy is not None and self._file is None and not self._done

    @property
    def held(self) -> bytes | None:
        """The whole message when it is held in memory with no file (``keep``); None else."""
        return bytes(self.copy) if self.in_memory and self.copy is not None else None

    def write(self, data: bytes) -> None:
        assert not self._done, "write after commit or discard"
        if self.copy is not None:
            if self.size + len(data) <= self._keep:
                self.copy += data
                self._count(data)
                return
            self._open_file()
            self.copy = None
        assert self._file is not None
        self._file.write(data)
        self._count(data)

    def _count(self, data: bytes) -> None:
        self.size += len(data)
        self.sha256.update(data)

    def _open_file(self) -> BinaryIO:
        """The temporary file, opened now if the message was held in memory so far."""
        if self._file is None:
            self._file = self.tmp.open("wb")
            if self.copy:
                self._file.write(self.copy)
                self._file.flush()  # the file as it now is, for its identity (``fileno``)
        return self._file

    def fileno(self) -> int:
        """The file's descriptor (the file is made now if the message was held in memory),
        until it is committed or discarded."""
        assert not self._done, "fileno after commit or discard"
        return self._open_file().fileno()

    def flush(self) -> None:
        if self._file is not None and not self._done:
            self._file.flush()

    def commit(self, *, sync_directory: bool = True) -> Path:
        """fsync the file (made now if the message was held in memory), rename it into place
        and fsync the directory; return its path. A caller committing several files may sync
        the directory once itself, after the last (``Spool.sync``), before anything points
        at them."""
        assert not self._done, "commit after commit or discard"
        file = self._open_file()
        file.flush()
        os.fsync(file.fileno())
        file.close()
        final = self.spool.path(self.queue_id)
        os.replace(self.tmp, final)
        self._file, self._done = None, True  # nothing left to discard
        if sync_directory:
            fsync_dir(final.parent)
        return final

    def discard(self) -> None:
        """Forget the message; never raises (it is what failures call). Closing flushes the
        buffer, which fails again on a full disk: the descriptor is closed all the same."""
        file, self._file = self._file, None
        self._done = True
        self.copy = None
        if file is None:
            return  # held in memory, or committed: no temporary to remove
        with contextlib.suppress(OSError):
            file.close()
        with contextlib.suppress(OSError):
            self.tmp.unlink(missing_ok=True)


class Spool:
    def __init__(self, root: Path, owner: str = "node/1") -> None:
        self.root = root
        self.writer_prefix = _file_prefix(owner)
        self.tmp_dir = root / "tmp"
        self.msg_dir = root / "msg"
        for folder in (self.tmp_dir, self.msg_dir):
            folder.mkdir(parents=True, exist_ok=True)

    def path(self, queue_id: str) -> Path:
        return self.msg_dir / f"{queue_id}.eml"

    def sync(self) -> None:
        """Make the renames of files committed with ``sync_directory=False`` durable."""
        fsync_dir(self.msg_dir)

    def writer(self, queue_id: str | None = None, *, keep: int = 0) -> SpoolWriter:
        """A writer of a new message; ``keep``: bytes up to which it keeps a copy in memory."""
        return SpoolWriter(self, queue_id or new_id(), keep)

    def write_bytes(self, data: bytes, queue_id: str | None = None) -> tuple[str, Path]:
        writer = self.writer(queue_id)
        try:
            for start in range(0, len(data), STREAM_CHUNK):
                writer.write(data[start : start + STREAM_CHUNK])
            return writer.queue_id, writer.commit()
        except BaseException:
            writer.discard()
            raise

    def clean_temporaries(self, now: float) -> int:
        """Remove temporaries of transactions a crash interrupted (never acknowledged): this
        process's own, and any left untouched for ``STALE`` before ``now`` (the node's clock,
        seconds since the epoch)."""
        cutoff = now - STALE
        removed = 0
        for leftover in self.tmp_dir.glob("*.tmp"):
            if leftover.name.startswith(self.writer_prefix) or _older(leftover, cutoff):
                leftover.unlink(missing_ok=True)
                removed += 1
        return removed

    def sweep(self, known: Callable[[list[str]], Iterable[str]], now: float) -> int:
        """Remove committed files ``STALE`` old at ``now`` that no store row refers to (written,
        then a crash before the commit); ``known`` says which of some ids the store has."""
        cutoff = now - STALE
        old = {p.stem: p for p in self.msg_dir.glob("*.eml") if _older(p, cutoff)}
        if not old:
            return 0
        orphans = set(old) - set(known(list(old)))
        for queue_id in orphans:
            old[queue_id].unlink(missing_ok=True)
        return len(orphans)

    def remove(self, queue_id: str) -> None:
        self.path(queue_id).unlink(missing_ok=True)


def _file_prefix(owner: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in owner) + "."


def _older(path: Path, cutoff: float) -> bool:
    try:
        return path.stat().st_mtime < cutoff
    except FileNotFoundError:
        return False


class SpanReader:
    """Reads bytes [start, end) of a file as if they were a whole file (for Maildir copies)."""

    def __init__(self, path: Path, start: int, end: int) -> None:
        self._file = path.open("rb")
        self.start, self.end = start, end
        self._file.seek(start)

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: self.start, 1: self._file.tell(), 2: self.end}[whence]
        return self._file.seek(base + offset) - self.start

    def read(self, size: int = -1) -> bytes:
        left = self.end - self._file.tell()
        return self._file.read(left if size < 0 else min(size, left))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> SpanReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
