"""The queue manager records what several sends came to in one transaction (``relay.stages.
outbound``: accepted messages settled together as they come in), without letting one message's
trouble undo or lose the others; and it keeps its housekeeping out of a busy queue's way
(``Node.send_loop``: at most once per ``timers.queue_poll``)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from interop.pki.devpki import DevPki
from relay.config_file import from_mapping
from relay.context import NodeContext, build_context
from relay.keys import write_pki
from relay.lifecycle import Kind, State
from relay.node import Node
from relay.stages import outbound
from relay.store.reader import StoreReader
from relay.transport.base import READ_WITH_ENTRY, Entry, Outcome, Result
from tests.helpers import count_hand_offs

ACCEPTED = Result(Outcome.DELIVERED, "250 2.0.0 Queued as x", 250, host="127.0.0.1:2625")
IDS = ("e1", "e2", "e3", "e4")


@pytest.fixture
def context(pki: DevPki, tmp_path: Path) -> Iterator[NodeContext]:
    yield from _context(pki, tmp_path, "1s")


def _context(pki: DevPki, tmp_path: Path, queue_poll: str) -> Iterator[NodeContext]:
    write_pki(pki, tmp_path / "pki")
    config = from_mapping(
        {
            "node": {"provider": "hs01", "dev_pki": "pki", "data_dir": "data"},
            "timers": {"queue_poll": queue_poll},
        },
        "t",
        tmp_path,
    )
    when = pki.created + dt.timedelta(minutes=1)
    context = build_context(config, clock=lambda: when)
    for queue_id in IDS:
        context.spool.path(queue_id).write_bytes(b"x")
        with context.store.transaction() as db:
            context.store.add_message(
                db, id=queue_id, kind=Kind.EVIDENCE_OUT, peer="hs02", remmd_id=f"{queue_id}@hs01",
                mail_from="delil@hs01.kep.tr", rcpt_to=["delil@hs02.kep.tr"], size=1,
                sha256="00", state=State.QUEUED,
            )  # fmt: skip
    yield context
    context.store.close()


class Together:
    """A transport whose sends all answer 250 at the same moment, once every one has begun:
    the queue manager sees them finish together."""

    def __init__(self, count: int, before_answer: Any = None) -> None:
        self.count = count
        self.begun: list[str] = []
        self.all_begun = asyncio.Event()
        self.before_answer = before_answer

    async def send(self, entry: Entry) -> Result:
        self.begun.append(entry.queue_id)
        if len(self.begun) == self.count:
            if self.before_answer is not None:
                self.before_answer()
            self.all_begun.set()
        await self.all_begun.wait()
        return ACCEPTED

    async def close(self) -> None:
        return None


def _count_transactions(context: NodeContext, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each write transaction begun from now on, by the function that began it."""
    begun: list[str] = []
    original = type(context.store).transaction

    def counted(store: Any, **kwargs: Any) -> AbstractContextManager[Any]:
        import sys

        begun.append(sys._getframe(1).f_code.co_name)
        return original(store, **kwargs)

    monkeypatch.setattr(type(context.store), "transaction", counted)
    return begun


def _attempts(context: NodeContext) -> dict[str, list[tuple[int, str, str]]]:
    with StoreReader(context.store.url) as reader:
        return {m: [(a.number, a.outcome, a.reply) for a in reader.attempts_of([m])] for m in IDS}


def test_sends_accepted_together_commit_in_one_transaction(
    context: NodeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    begun = _count_transactions(context, monkeypatch)
    assert asyncio.run(outbound.send_due(context, Together(len(IDS)))) == len(IDS)
    assert begun == ["_claim", "_settle_sent"]  # the claim, then one commit for all four
    for queue_id in IDS:
        row = context.store.message(queue_id)
        assert row is not None and row.state is State.SENT and row.attempts == 1
        assert row.owner is None and row.lease_until is None  # the claim ended with the move
    assert _attempts(context) == {m: [(1, "sent", ACCEPTED.reply)] for m in IDS}


def test_one_taken_over_does_not_undo_the_others(
    context: NodeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another node process took e2 over while it was on the wire (this one stalled past its
    lease): its late record changes nothing of e2, the other three are recorded, and the loss
    is counted."""

    def take_over() -> None:
        with context.store.transaction() as db:
            db.execute("UPDATE messages SET fence = fence + 1, owner = 'hs01/9' WHERE id = 'e2'")

    def lost() -> float:
        labels = {"kind": str(Kind.EVIDENCE_OUT)}
        return context.metrics.registry.get_sample_value("kep_claims_lost_total", labels) or 0.0

    lost_before = lost()
    begun = _count_transactions(context, monkeypatch)
    assert asyncio.run(outbound.send_due(context, Together(len(IDS), take_over))) == len(IDS)
    assert begun[-1] == "_settle_sent"
    e2 = context.store.message("e2")
    assert e2 is not None and e2.state is State.SENDING and e2.owner == "hs01/9"
    assert e2.attempts == 0
    for queue_id in ("e1", "e3", "e4"):
        row = context.store.message(queue_id)
        assert row is not None and row.state is State.SENT
    assert _attempts(context)["e2"] == []
    assert lost() == lost_before + 1


def test_a_group_that_does_not_commit_is_recorded_one_by_one(
    context: NodeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store refuses the group's transaction (a busy database, a full disk for a moment):
    each message is then recorded in its own, none is left ``sending`` or recorded twice."""
    original = type(context.store).transaction
    refused: list[str] = []

    def busy_once(store: Any, **kwargs: Any) -> AbstractContextManager[Any]:
        import sys

        if sys._getframe(1).f_code.co_name == "_settle_sent" and not refused:
            refused.append("_settle_sent")
            raise sqlite3.OperationalError("database is locked")
        return original(store, **kwargs)

    monkeypatch.setattr(type(context.store), "transaction", busy_once)
    assert asyncio.run(outbound.send_due(context, Together(len(IDS)))) == len(IDS)
    assert refused == ["_settle_sent"]
    for queue_id in IDS:
        row = context.store.message(queue_id)
        assert row is not None and row.state is State.SENT and row.attempts == 1
    assert _attempts(context) == {m: [(1, "sent", ACCEPTED.reply)] for m in IDS}


def test_housekeeping_runs_at_most_once_per_queue_poll(
    pki: DevPki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Timers, the ledger checkpoint and content removal: on the first pass, then once per
    ``queue_poll`` however often the queue is woken, not after every pass of a busy queue."""
    context = next(_context(pki, tmp_path, "0.5s"))
    passes: list[int] = [1] * 6 + [0] * 3  # six busy passes at once, then three idle ones
    housekept: list[int] = []
    node = Node(context)

    async def send_due(_context: NodeContext, _transport: object) -> int:
        tried = passes.pop(0) if passes else 0
        if not passes:
            node.stopping.set()
        return tried

    monkeypatch.setattr(outbound, "send_due", send_due)
    monkeypatch.setattr(node, "housekeeping", lambda: housekept.append(len(passes)))
    asyncio.run(node.send_loop())
    # The first pass; not the five busy ones after it nor the first idle one (all within far
    # less than 0.5 s of it); each idle pass after waiting queue_poll.
    assert housekept == [8, 1, 0]
    context.store.close()


def test_a_small_message_is_read_with_its_entry_a_large_one_streamed(
    context: NodeContext,
) -> None:
    """Up to READ_WITH_ENTRY the message travels in the entry (no further hand-off to read
    the file); above it, the transport streams the spool file (bench_outbound's memory)."""
    rows = {m: context.store.message(m) for m in ("e1", "e2")}
    context.spool.path("e1").write_bytes(b"x" * READ_WITH_ENTRY)
    context.spool.path("e2").write_bytes(b"x" * (READ_WITH_ENTRY + 1))
    small, large = (outbound._entry(context, row) for row in rows.values() if row is not None)
    assert small.content == b"x" * READ_WITH_ENTRY and small.size == READ_WITH_ENTRY
    assert large.content is None and large.size == READ_WITH_ENTRY + 1


@pytest.mark.parametrize(
    ("small_work", "hand_offs"), [("threads", ["_claim_due", "_settle_sent"]), ("loop", [])]
)
def test_entries_are_made_with_the_claim_in_one_step(
    context: NodeContext, monkeypatch: pytest.MonkeyPatch, small_work: str, hand_offs: list[str]
) -> None:
    """A pass takes two steps for four sends that finish together: the claim (with every
    entry: content from the store or the spool) and the one commit, not one more per message
    to make its entry. Small work on threads, each is one hand-off; on the loop, none is."""
    handed = count_hand_offs(monkeypatch)
    config = dataclasses.replace(context.config, small_work=small_work)
    monkeypatch.setattr(context, "config", config)
    transport = Together(len(IDS))
    assert asyncio.run(outbound.send_due(context, transport)) == len(IDS)
    assert handed == hand_offs
    assert sorted(transport.begun) == sorted(IDS)
    assert [context.store.message(i).state for i in IDS] == [State.SENT] * len(IDS)  # type: ignore[union-attr]


def test_an_entry_not_made_is_a_temporary_outcome_for_that_message_alone(
    context: NodeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = outbound._entry

    def entry(context: NodeContext, row: Any) -> Entry:
        if row.id == "e2":
            raise OSError("the spool cannot be read")
        return made(context, row)

    monkeypatch.setattr(outbound, "_entry", entry)
    transport = Together(len(IDS) - 1)
    assert asyncio.run(outbound.send_due(context, transport)) == len(IDS)
    assert sorted(transport.begun) == ["e1", "e3", "e4"]
    states = {m: row.state for m in IDS if (row := context.store.message(m)) is not None}
    assert states == {"e1": State.SENT, "e2": State.QUEUED, "e3": State.SENT, "e4": State.SENT}
    assert _attempts(context)["e2"] == [(1, "deferred", "local error: OSError")]
