"""A message's content held in the store goes for good (INTEROP-PROFILE.md §7, "Content is not
kept"): once removed, its bytes are in none of the store's files, not only out of its tables.
SQLite zeroes deleted content (``secure_delete``) and empties its write-ahead log when no
other process is in the way (``Store.purge_removed``); PostgreSQL cannot, so it holds none."""

from __future__ import annotations

import secrets
import sqlite3
from pathlib import Path

from relay.lifecycle import Kind, State
from relay.store import Store
from relay.store.base import PURGE_EVERY


class Clock:
    def __init__(self) -> None:
        self.now = 2_000_000_000.0

    def __call__(self) -> float:
        return self.now


def _hold(store: Store, queue_id: str, content: bytes) -> None:
    with store.transaction() as db:
        store.add_message(
            db, id=queue_id, kind=Kind.DISPATCH_IN, peer="hs01",
            remmd_id=f"{queue_id}@hs01.kep.tr", mail_from="a@hs01.kep.tr",
            rcpt_to=["b@hs02.kep.tr"], size=len(content), sha256="00",
            state=State.PROCESSED, content=content,
        )  # fmt: skip


def _files_holding(folder: Path, needle: bytes) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_file() and needle in p.read_bytes())


def _needle() -> bytes:
    """A body no page of the store holds by chance, long enough to span pages."""
    return secrets.token_hex(8).encode() * 1000


def test_removed_content_is_in_none_of_the_stores_files(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.sqlite3", clock=Clock())
    body = _needle()
    _hold(store, "m1", b"Subject: x\r\n\r\n" + body)
    _hold(store, "m2", b"Subject: y\r\n\r\n" + _needle())  # another message, kept
    marker = body[:64]
    assert _files_holding(tmp_path, marker) != []
    store.content_removed(["m1"])
    assert store.content("m1") is None
    # Out of the table, but the log still holds the pages as they were: what the purge is for.
    assert _files_holding(tmp_path, marker) == ["state.sqlite3-wal"]
    assert store.purge_removed()
    assert _files_holding(tmp_path, marker) == []
    assert store.content("m2") is not None  # what is kept stays
    store.close()
    assert _files_holding(tmp_path, marker) == []


def test_a_purge_another_process_is_in_the_way_of_is_tried_again_later(tmp_path: Path) -> None:
    clock = Clock()
    store = Store(tmp_path / "state.sqlite3", clock=clock)
    body = _needle()
    _hold(store, "m1", body)
    reader = sqlite3.connect(tmp_path / "state.sqlite3", isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM messages").fetchone()  # a read holds its snapshot
    store.content_removed(["m1"])
    assert not store.purge_removed()  # not waited for: the sweep goes on
    reader.execute("COMMIT")
    clock.now += PURGE_EVERY / 2
    assert not store.purge_removed()  # not tried again so soon
    assert _files_holding(tmp_path, body[:64]) != []
    clock.now += PURGE_EVERY / 2
    assert store.purge_removed()
    assert store.purge_removed()  # nothing owed now
    assert _files_holding(tmp_path, body[:64]) == []
    reader.close()
    store.close()


def test_only_a_database_that_can_forget_holds_content(store_url: str) -> None:
    store = Store(store_url, clock=Clock())
    try:
        assert store.holds_content == store_url.startswith("sqlite:")
    finally:
        store.close()
