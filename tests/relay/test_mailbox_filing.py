"""Filing into a mailbox whose size does not matter (issue 13): a stage holding a message's
first claim files without listing the folder; any later attempt (a replay after a crash, a
takeover) finds what an earlier one filed, wherever a reader moved it, and files nothing twice.

Listing is refused outright in the first attempt (``no_listing``) instead of being timed: what
costs a delivery in a folder of 50,000 messages is the listing, whatever this machine's speed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from interop.evidence import xmlio
from interop.evidence.codes import Event, EvidenceType
from interop.pki.devpki import DevPki
from relay.config_file import from_mapping
from relay.context import NodeContext, build_context
from relay.keys import write_pki
from relay.lifecycle import Kind, State
from relay.mailbox import Mailboxes
from relay.stages import rgw
from relay.store import MessageRow
from tests.helpers import make_dispatch

RECIPIENT = "ayse.demir@hs02.kep.tr"


def no_listing(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """From now on, listing any folder under ``root`` fails the test."""
    scandir, listdir, root = os.scandir, os.listdir, root.resolve()

    def guard(path: Any) -> None:
        if not isinstance(path, int) and Path(os.fsdecode(path)).resolve().is_relative_to(root):
            raise AssertionError(f"{path} was listed")

    def guarded_scandir(path: Any = ".") -> Any:
        guard(path)
        return scandir(path)

    def guarded_listdir(path: Any = ".") -> list[str]:
        guard(path)
        return listdir(path)

    monkeypatch.setattr(os, "scandir", guarded_scandir)
    monkeypatch.setattr(os, "listdir", guarded_listdir)


class Clock:
    """The node's one clock, moved by the test."""

    def __init__(self, start: dt.datetime) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def clock(pki: DevPki) -> Clock:
    return Clock(pki.created)


@pytest.fixture
def context(pki: DevPki, tmp_path: Path, clock: Clock) -> Iterator[NodeContext]:
    write_pki(pki, tmp_path / "pki")
    config = from_mapping(
        {"node": {"provider": "hs02", "dev_pki": "pki", "data_dir": "data"}}, "t", tmp_path
    )
    built = build_context(config, clock=clock)
    yield built
    built.store.close()


def _received(context: NodeContext, pki: DevPki, rcpt_to: list[str]) -> str:
    """A Dispatch from hs01 as intake stores it: spool file and ``received`` row."""
    data = make_dispatch(pki, recipients=(RECIPIENT,)).dispatch
    queue_id, _path = context.spool.write_bytes(data)
    with context.store.transaction() as db:
        context.store.add_message(
            db,
            id=queue_id,
            kind=Kind.DISPATCH_IN,
            peer="hs01",
            remmd_id=f"{queue_id}@hs01.kep.tr",
            mail_from="ali.yilmaz@hs01.kep.tr",
            rcpt_to=rcpt_to,
            size=len(data),
            sha256="0" * 64,
            state=State.RECEIVED,
        )
    return queue_id


def _claim(context: NodeContext) -> MessageRow:
    [row] = context.store.claim_received(context.owner, context.now(), context.config.store.lease)
    return row


def _inbox(context: NodeContext) -> list[tuple[Path, bool]]:
    return context.mailboxes.list(RECIPIENT)


def _delivery_evidence(context: NodeContext, queue_id: str) -> list[str]:
    return [
        str(e["event"])
        for e in context.store.evidence_of_message(queue_id)
        if e["type"] == EvidenceType.DeliveryNonDeliveryToRecipient.value
    ]


def _fill(context: NodeContext, count: int) -> None:
    """Mail the recipient holds already."""
    for i in range(count):
        context.mailboxes.put(RECIPIENT, "INBOX", f"old{i}-1", b"old")


def test_a_dispatch_under_its_first_claim_is_delivered_without_listing_the_mailbox(
    pki: DevPki, context: NodeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fill(context, 20)
    queue_id = _received(context, pki, [RECIPIENT])
    row = _claim(context)
    assert row.fence == 1
    no_listing(monkeypatch, context.mailboxes.root)
    asyncio.run(rgw.process_dispatch(context, row))
    monkeypatch.undo()
    done = context.store.message(queue_id)
    assert done is not None and done.state is State.PROCESSED
    assert len(_inbox(context)) == 21
    assert _delivery_evidence(context, queue_id) == [Event.Delivery.value]


@pytest.mark.parametrize("after", ["restart", "takeover"])
def test_a_replay_finds_the_copy_a_reader_moved_and_files_nothing_twice(
    pki: DevPki,
    context: NodeContext,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
    after: str,
) -> None:
    """The first attempt files without looking and dies before its commit; an IMAP server
    moves the message to cur/ and flags it; the node process starting again (or another one
    taking over once the lease ran out) replays the Dispatch: one copy, the reader's."""
    _fill(context, 5)
    queue_id = _received(context, pki, [RECIPIENT])
    row = _claim(context)

    def crash(*args: object, **kwargs: object) -> None:
        raise SystemExit("killed between the mailbox and the commit")

    with monkeypatch.context() as patched:
        patched.setattr(rgw, "commit_back", crash)
        with pytest.raises(SystemExit):
            asyncio.run(rgw.process_dispatch(context, row))
    [filed] = [p for p, _ in _inbox(context) if f".{queue_id}-1." in p.name]
    read = context.mailboxes.mark_read(filed)  # the reader: new/ to cur/, flagged Seen
    if after == "restart":
        context.store.recover(context.owner)
        replaying = context
    else:
        clock.now += dt.timedelta(seconds=context.config.store.lease + 1)
        replaying = dataclasses.replace(context, owner="hs02/2")
    again = _claim(replaying)
    assert again.id == queue_id and replaying.fresh_until(again) is None
    asyncio.run(rgw.process_dispatch(replaying, again))
    assert [p for p, _ in _inbox(context) if f".{queue_id}-1." in p.name] == [read]
    assert len(_inbox(context)) == 6
    assert _delivery_evidence(context, queue_id) == [Event.Delivery.value]
    assert context.store.verify_ledger() == (2, None)


def test_a_recipient_named_twice_is_delivered_once(
    pki: DevPki, context: NodeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A RCPT TO given twice names one recipient: one copy, one evidence of each kind (the
    first attempt does not search, so a second filing under the same key would be a copy)."""
    queue_id = _received(context, pki, [RECIPIENT, RECIPIENT.upper()])
    no_listing(monkeypatch, context.mailboxes.root)
    asyncio.run(rgw.process_dispatch(context, _claim(context)))
    monkeypatch.undo()
    assert len(_inbox(context)) == 1
    kinds = sorted(
        xmlio.parse(bytes(e["xml"])).type.value for e in context.store.evidence_of_message(queue_id)
    )
    assert kinds == [
        EvidenceType.DeliveryNonDeliveryToRecipient.value,
        EvidenceType.RelayREMMDAcceptanceRejection.value,
    ]


def test_put_lists_the_folder_only_when_an_earlier_attempt_may_have_filed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [2_000_000_000.0]
    boxes = Mailboxes(tmp_path, [], clock=lambda: now[0])
    boxes.put(RECIPIENT, "INBOX", "old-1", b"o")
    with monkeypatch.context() as patched:
        no_listing(patched, tmp_path)
        filed = boxes.put(RECIPIENT, "INBOX", "q1-1", b"x" * 10, fresh_until=now[0] + 30)
        assert filed.parent.name == "new"
        assert filed.name.endswith(f".q1-1.{socket.gethostname()},S=10")
        assert boxes.put(RECIPIENT, "Delil", "q1-n0", b"e", fresh_until=now[0] + 30).exists()
    moved = filed.parent.parent / "cur" / f"{filed.name}:2,FS"  # read and flagged by a reader
    os.replace(filed, moved)
    assert boxes.put(RECIPIENT, "INBOX", "q1-1", b"y") == moved  # a replay searches
    now[0] += 31  # a first attempt that stalled past its fresh time searches too
    assert boxes.put(RECIPIENT, "INBOX", "q1-1", b"z", fresh_until=now[0] - 1) == moved
    assert len(boxes.list(RECIPIENT)) == 2 and moved.read_bytes() == b"x" * 10
