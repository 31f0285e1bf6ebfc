"""The spool writer: a message it may keep (``keep``) stays in memory with no file until it
outgrows that; then, or when committed as a file, the file holds every byte written."""

from __future__ import annotations

import hashlib
from pathlib import Path

from relay.spool import Spool


def _files(spool: Spool) -> list[Path]:
    return sorted([*spool.tmp_dir.iterdir(), *spool.msg_dir.iterdir()])


def test_a_message_kept_in_memory_makes_no_file(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    writer = spool.writer(keep=10)
    writer.write(b"12345")
    writer.write(b"67890")
    assert writer.held == b"1234567890" and writer.size == 10
    assert writer.sha256.digest() == hashlib.sha256(b"1234567890").digest()
    assert _files(spool) == []
    writer.discard()
    assert writer.held is None and _files(spool) == []


def test_a_message_that_outgrows_what_is_kept_goes_to_its_file_whole(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    writer = spool.writer(keep=10)
    writer.write(b"12345")
    writer.write(b"678901")
    assert writer.held is None and writer.copy is None
    assert _files(spool) == [writer.tmp]
    writer.write(b"x")
    assert writer.commit().read_bytes() == b"12345678901x"
    assert _files(spool) == [spool.path(writer.queue_id)]


def test_a_message_held_is_written_to_its_file_when_committed_as_one(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    writer = spool.writer(keep=10)
    writer.write(b"abc")
    assert writer.commit().read_bytes() == b"abc"
    assert writer.held is None
    assert _files(spool) == [spool.path(writer.queue_id)]
    writer.discard()  # after the commit: the file stays, for the row pointing at it
    assert _files(spool) == [spool.path(writer.queue_id)]


def test_a_writer_that_keeps_nothing_writes_its_file_at_once(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    writer = spool.writer()
    assert _files(spool) == [writer.tmp]
    writer.write(b"abc")
    assert writer.held is None
    writer.discard()
    assert _files(spool) == []
