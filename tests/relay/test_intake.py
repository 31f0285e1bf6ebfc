"""Intake's commit, in process: a Dispatch delivered twice at once is stored once (§2); a
store that cannot commit defers the message and leaves nothing behind. Each for a message
held in memory and stored with its row (a small one, as the listeners take it) and for one
in a spool file (a large one)."""

from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from aiosmtpd.smtp import Envelope

from interop.errors import SmtpReply
from interop.pki.devpki import DevPki
from relay.config_file import from_mapping
from relay.context import build_context
from relay.keys import write_pki
from relay.lifecycle import Kind
from relay.readings import READ_WHOLE
from relay.stages.intake import ALREADY_ACCEPTED, PeerIntake
from tests.helpers import make_dispatch

# What the spool writer keeps in memory: a small message (no spool file), or nothing (a file).
HELD_OR_FILED = pytest.mark.parametrize("keep", [READ_WHOLE, 0], ids=["held", "filed"])


@HELD_OR_FILED
def test_the_same_dispatch_committed_twice_at_once_is_stored_once(
    pki: DevPki, tmp_path: Path, keep: int
) -> None:
    write_pki(pki, tmp_path / "pki")
    config = from_mapping(
        {"node": {"provider": "hs02", "dev_pki": "pki", "data_dir": "data"}}, "t", tmp_path
    )
    context = build_context(config)
    intake = PeerIntake(context, lambda: None)
    dispatch = make_dispatch(pki).dispatch
    envelope = Envelope()
    envelope.mail_from = "ali.yilmaz@hs01.kep.tr"
    envelope.rcpt_tos = ["ayse.demir@hs02.kep.tr"]

    def deliver() -> tuple[SmtpReply, str]:
        writer = context.spool.writer(keep=keep)
        writer.write(dispatch)
        reply = intake._commit(
            writer,
            kind=Kind.DISPATCH_IN,
            peer="hs01",
            remmd_id="rem-1@hs01.kep.tr",
            envelope=envelope,
        )
        return reply, writer.queue_id

    # Many at once, on threads as the node runs them: whichever commits first is the message.
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: deliver(), range(8)))
    rows = context.store.messages(kind=Kind.DISPATCH_IN)
    assert len(rows) == 1
    kept = rows[0].id
    assert [str(r) for r, q in results if q == kept] == [f"250 2.0.0 Queued as {kept}"]
    assert all(str(r) == f"250 2.0.0 {ALREADY_ACCEPTED} {kept}" for r, q in results if q != kept)
    # Only the stored one's content is left: its spool file, or its bytes in the store.
    files = {p.stem for p in context.spool.msg_dir.iterdir()}
    assert files == (set() if keep else {kept})
    assert list(context.spool.tmp_dir.iterdir()) == []
    assert context.store.content(kept) == (dispatch if keep else None)
    held = [q for _, q in results if context.store.content(q) is not None]
    assert held == ([kept] if keep else [])
    context.store.close()


@HELD_OR_FILED
def test_a_store_that_cannot_commit_defers_and_leaves_nothing(
    pki: DevPki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep: int
) -> None:
    write_pki(pki, tmp_path / "pki")
    config = from_mapping(
        {"node": {"provider": "hs02", "dev_pki": "pki", "data_dir": "data"}}, "t", tmp_path
    )
    context = build_context(config)
    intake = PeerIntake(context, lambda: None)

    def full(*args: object, **kwargs: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(context.store, "add_message", full)
    envelope = Envelope()
    envelope.mail_from = "ali.yilmaz@hs01.kep.tr"
    envelope.rcpt_tos = ["ayse.demir@hs02.kep.tr"]
    writer = context.spool.writer(keep=keep)
    writer.write(make_dispatch(pki).dispatch)
    reply = intake._commit(
        writer, kind=Kind.DISPATCH_IN, peer="hs01", remmd_id="rem-2@hs01.kep.tr", envelope=envelope
    )
    assert str(reply) == "451 4.3.0 Temporary storage problem, try again later"
    assert list(context.spool.msg_dir.iterdir()) == []
    assert list(context.spool.tmp_dir.iterdir()) == []
    context.store.close()
