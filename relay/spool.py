"""The spool: message files on stable storage (STYLE.md "Durability", Postfix mail_stream.c).

A file is written under ``incoming/`` with a temporary name, fsync'd, renamed into place and
its directory fsync'd. Only then does anyone point at it (the store row), and only after that
is 250 said. Leftover temporaries are removed at start-up; files no row points at are swept.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from pathlib import Path
from typing import BinaryIO

from interop.limits import STREAM_CHUNK


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def new_id() -> str:
    """A queue id: sortable by time of creation is not needed, uniqueness is."""
    return secrets.token_hex(12)


class SpoolWriter:
    """Streams one message to a temporary file while hashing and counting it."""

    def __init__(self, spool: Spool, queue_id: str) -> None:
        self.spool = spool
        self.queue_id = queue_id
        self.tmp = spool.tmp_dir / f"{queue_id}.tmp"
        self._file: BinaryIO | None = self.tmp.open("wb")
        self.size = 0
        self.sha256 = hashlib.sha256()

    def write(self, data: bytes) -> None:
        assert self._file is not None, "write after commit or discard"
        self._file.write(data)
        self.size += len(data)
        self.sha256.update(data)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def commit(self, *, sync_directory: bool = True) -> Path:
        """fsync the file, rename it into place and fsync the directory; return its path.
        A caller committing several files may sync the directory once itself, after the last
        (``Spool.sync``), before anything points at them."""
        assert self._file is not None
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        final = self.spool.path(self.queue_id)
        os.replace(self.tmp, final)
        if sync_directory:
            fsync_dir(final.parent)
        return final

    def discard(self) -> None:
        """Forget the message; never raises (it is what failures call). Closing flushes the
        buffer, which fails again on a full disk: the descriptor is closed all the same."""
        file, self._file = self._file, None
        with contextlib.suppress(OSError):
            if file is not None:
                file.close()
        with contextlib.suppress(OSError):
            self.tmp.unlink(missing_ok=True)


class Spool:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp_dir = root / "tmp"
        self.msg_dir = root / "msg"
        for folder in (self.tmp_dir, self.msg_dir):
            folder.mkdir(parents=True, exist_ok=True)

    def path(self, queue_id: str) -> Path:
        return self.msg_dir / f"{queue_id}.eml"

    def sync(self) -> None:
        """Make the renames of files committed with ``sync_directory=False`` durable."""
        fsync_dir(self.msg_dir)

    def writer(self, queue_id: str | None = None) -> SpoolWriter:
        return SpoolWriter(self, queue_id or new_id())

    def write_bytes(self, data: bytes, queue_id: str | None = None) -> tuple[str, Path]:
        writer = self.writer(queue_id)
        try:
            for start in range(0, len(data), STREAM_CHUNK):
                writer.write(data[start : start + STREAM_CHUNK])
            return writer.queue_id, writer.commit()
        except BaseException:
            writer.discard()
            raise

    def clean_temporaries(self) -> int:
        """Remove temporaries of transactions a crash interrupted (never acknowledged)."""
        removed = 0
        for leftover in self.tmp_dir.glob("*.tmp"):
            leftover.unlink(missing_ok=True)
            removed += 1
        return removed

    def sweep(self, referenced: set[str]) -> int:
        """Remove committed files no store row refers to (written, then a crash before commit)."""
        removed = 0
        for path in self.msg_dir.glob("*.eml"):
            if path.stem not in referenced:
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def remove(self, queue_id: str) -> None:
        self.path(queue_id).unlink(missing_ok=True)


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
