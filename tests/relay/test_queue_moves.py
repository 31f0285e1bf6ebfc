"""An operator's moves (relay/operator.py, Store.operator_move) and the queue's read queries
(StoreReader), in process, on SQLite and on PostgreSQL (``store_url``): each move allowed and
refused, a live claim never taken, the fencing token moved on, the evidence a sender is owed
issued once. The same commands against running nodes are in test_queue_cmd.py."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from interop.envelope.parse import parse_envelope
from interop.evidence import xmlio
from interop.evidence.codes import Event, EvidenceType
from interop.pki.devpki import DevPki
from interop.reasons import Reason
from relay.config_file import from_mapping
from relay.context import NodeContext, build_context
from relay.issuing import record, sign
from relay.keys import write_pki
from relay.lifecycle import (
    CONTENT_DONE,
    HELD,
    MOVES,
    OPERATOR_MOVES,
    Claimed,
    IllegalMove,
    Kind,
    State,
    Superseded,
)
from relay.node import processing_failed
from relay.operator import Action, Queue
from relay.stages import evidence_in, outbound
from relay.store import MessageRow, Store
from relay.store.reader import QueueFilter, StoreReader
from tests.helpers import make_dispatch, make_evidence_message

LEASE = 60.0
START = 2_000_000_000.0


class Clock:
    """The store's one clock, moved by the test (seconds since the epoch)."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(store_url: str, clock: Clock) -> Iterator[Store]:
    opened = Store(store_url, clock=clock)
    yield opened
    opened.close()


def _add(
    store: Store,
    queue_id: str,
    kind: Kind,
    state: State,
    *,
    peer: str | None = "hs02",
    next_attempt: float | None = None,
    attempts: int = 0,
) -> MessageRow:
    with store.transaction() as db:
        store.add_message(
            db, id=queue_id, kind=kind, peer=peer, remmd_id=f"{queue_id}@hs01.kep.tr",
            mail_from="ali.yilmaz@hs01.kep.tr", rcpt_to=["ayse.demir@hs02.kep.tr"], size=10,
            sha256="00", state=state, next_attempt=next_attempt,
        )  # fmt: skip
        if attempts:
            db.execute("UPDATE messages SET attempts = ? WHERE id = ?", (attempts, queue_id))
    row = store.message(queue_id)
    assert row is not None
    return row


def _now(store: Store, queue_id: str) -> MessageRow:
    row = store.message(queue_id)
    assert row is not None
    return row


def test_every_operator_move_is_in_the_table_and_ends_nowhere_unlisted() -> None:
    assert set(OPERATOR_MOVES) <= set(MOVES)
    assert State.HOLD in HELD  # the gauge kep_queue_messages and KepMessagesHeld show them
    assert all(State.DELETED in states for states in CONTENT_DONE.values())
    assert all(State.HOLD not in states for states in CONTENT_DONE.values())


def test_hold_keeps_a_message_off_every_path_until_released(store: Store, clock: Clock) -> None:
    out = _add(store, "out1", Kind.DISPATCH_OUT, State.QUEUED)
    came = _add(store, "in1", Kind.DISPATCH_IN, State.RECEIVED, peer="hs03")
    queue = Queue(store, "tester")
    assert queue.act(Action.HOLD, "out1").to is State.HOLD
    assert queue.act(Action.HOLD, "in1").to is State.HOLD
    assert _now(store, "out1").fence == out.fence + 1  # a late holder's write changes nothing
    clock.now += 3600
    assert store.claim_due("hs01/1", clock.now, LEASE) == []
    assert store.claim_received("hs01/1", clock.now, LEASE) == []
    assert store.content_done(clock.now + 86400) == []  # retention leaves held copies
    again = queue.act(Action.HOLD, "out1")
    assert (again.done, again.why) == (False, "held already")
    assert queue.act(Action.RETRY, "out1").why == "held; release it first"
    assert queue.act(Action.RELEASE, "out1").to is State.QUEUED
    assert queue.act(Action.RELEASE, "in1").to is State.RECEIVED
    assert _now(store, "out1").next_attempt == clock.now  # due now
    assert [r.id for r in store.claim_due("hs01/1", clock.now, LEASE)] == ["out1"]
    taken = store.claim_received("hs01/1", clock.now, LEASE)
    assert [r.id for r in taken] == ["in1"] and taken[0].fence == came.fence + 3


def test_retry_makes_a_message_waiting_its_back_off_due_now(store: Store, clock: Clock) -> None:
    _add(store, "out1", Kind.DISPATCH_OUT, State.QUEUED, next_attempt=START + 1800)
    _add(store, "in1", Kind.SUBMISSION, State.RECEIVED, peer=None, next_attempt=START + 600)
    assert store.claim_due("hs01/1", clock.now, LEASE) == []
    queue = Queue(store, "tester")
    retried = queue.act(Action.RETRY, "out1")
    assert (retried.source, retried.to) == (State.QUEUED, State.QUEUED)
    assert queue.act(Action.RETRY, "in1").to is State.RECEIVED
    assert [r.id for r in store.claim_due("hs01/1", clock.now, LEASE)] == ["out1"]
    assert [r.id for r in store.claim_received("hs01/1", clock.now, LEASE)] == ["in1"]
    # Retrying what does not wait is refused with why, and changes nothing.
    sent = _add(store, "out2", Kind.DISPATCH_OUT, State.SENT)
    refused = queue.act(Action.RETRY, "out2")
    assert not refused.done
    assert refused.why == (
        "sent: the peer accepted it (250); its evidence obligations run on timers"
    )
    assert _now(store, "out2") == sent
    assert queue.act(Action.RETRY, "nosuch").why == "no such message"


def test_a_live_claim_is_never_taken(store: Store, clock: Clock) -> None:
    _add(store, "in1", Kind.DISPATCH_IN, State.RECEIVED)
    [claimed] = store.claim_received("hs01/2", clock.now, LEASE)
    queue = Queue(store, "tester")
    for action in (Action.HOLD, Action.RETRY, Action.DELETE):
        refused = queue.act(action, "in1")
        assert refused.why == "being processed by hs01/2; try again", action
    with pytest.raises(Claimed) as caught:
        store.operator_move(claimed, State.HOLD)
    assert caught.value.owner == "hs01/2"
    assert _now(store, "in1").owner == "hs01/2"
    # Its holder stalled past the lease: the operator's move ends the claim and fences it.
    clock.now += LEASE + 1
    assert queue.act(Action.HOLD, "in1").to is State.HOLD
    with pytest.raises(Superseded), store.transaction() as db:
        store.move(db, claimed, State.PROCESSED)
    assert _now(store, "in1").state is State.HOLD


def test_an_operator_move_is_conditional_on_what_was_read(store: Store) -> None:
    row = _add(store, "out1", Kind.DISPATCH_OUT, State.QUEUED)
    with pytest.raises(IllegalMove):
        store.operator_move(row, State.SENT)  # not a move the table has from queued
    [claimed] = store.claim_due("hs01/1", store.clock(), LEASE)
    with store.transaction() as db:
        store.move(db, claimed, State.SENT)
    with pytest.raises(Superseded, match="it is sent now"):
        store.operator_move(row, State.HOLD)  # read queued; it was sent since
    assert _now(store, "out1").state is State.SENT
    # Queue.act reads again and decides on what it is now.
    assert Queue(store, "tester").act(Action.HOLD, "out1").why == (
        "sent: the peer accepted it (250); its evidence obligations run on timers"
    )


def test_release_processes_again_what_the_node_put_aside(store: Store, clock: Clock) -> None:
    for queue_id, state in (
        ("e1", State.INVALID),
        ("e2", State.UNMATCHED),
        ("e3", State.QUARANTINED),
    ):
        _add(store, queue_id, Kind.EVIDENCE_IN, state, attempts=5)
    _add(store, "d1", Kind.DISPATCH_IN, State.QUARANTINED, attempts=5)
    answered = _add(store, "d2", Kind.DISPATCH_IN, State.QUARANTINED, attempts=5)
    with store.transaction() as db:  # the Rejection its sender got when it was put aside
        store.add_evidence(
            db, id="ev-rejection", direction="issued", remmd_id="d2@hs01.kep.tr",
            type="RelayREMMDAcceptanceRejection", event="Rejection",
            recipient="ayse.demir@hs02.kep.tr", sender="ali.yilmaz@hs01.kep.tr",
            issuer="delil@hs02.kep.tr", xml=b"<x/>", message_id="d2", envelope_id=None,
            validation=(),
        )  # fmt: skip
    queue = Queue(store, "tester")
    for queue_id in ("e1", "e2", "e3", "d1"):
        assert queue.act(Action.RELEASE, queue_id).to is State.RECEIVED, queue_id
        row = _now(store, queue_id)
        assert (row.attempts, row.next_attempt) == (0, clock.now)  # quarantine counts anew
    refused = queue.act(Action.RELEASE, "d2")
    assert refused.why is not None and "answered twice" in refused.why
    assert _now(store, "d2") == answered
    assert queue.act(Action.RELEASE, "e1").why == "received: not held; retry takes it up now"


def test_delete_ends_a_message_for_good_and_says_who_and_why(store: Store, clock: Clock) -> None:
    _add(store, "ev1", Kind.EVIDENCE_OUT, State.QUEUED)
    _add(store, "ev2", Kind.EVIDENCE_IN, State.UNMATCHED)
    _add(store, "in1", Kind.DISPATCH_IN, State.RECEIVED)
    _add(store, "in2", Kind.DISPATCH_IN, State.PROCESSED)
    _add(store, "out1", Kind.DISPATCH_OUT, State.SENT)
    _add(store, "out2", Kind.DISPATCH_OUT, State.QUEUED)
    assert Queue(store, "tester").act(Action.DELETE, "ev1").why == "say why (--reason TEXT)"
    queue = Queue(store, "tester", reason="test traffic")
    for queue_id in ("ev1", "ev2"):
        assert queue.act(Action.DELETE, queue_id).to is State.DELETED
        row = _now(store, queue_id)
        assert row.last_reply == "deleted by tester: test traffic"
    assert {"ev1", "ev2"} <= set(store.content_done(clock.now + 1))  # their files go
    assert store.known_ids(["ev1", "ev2"]) == {"ev1", "ev2"}  # the rows stay
    assert queue.act(Action.DELETE, "in1").why == (
        "received: waiting to be processed; hold it first"
    )
    assert queue.act(Action.DELETE, "in2").why == "processed: its evidence was issued"
    assert queue.act(Action.DELETE, "out1").why == (
        "sent: the peer accepted it (250); its evidence obligations run on timers"
    )
    # Ending a Dispatch issues RelayREMMDFailure: without the node's keys it is not done.
    assert queue.act(Action.DELETE, "out2").why == (
        "ending it issues evidence, and the node's keys are not open"
    )
    assert _now(store, "out2").state is State.QUEUED
    assert queue.act(Action.RELEASE, "ev1").why == "deleted: ended for good"


def test_requeue_sends_evidence_again_but_never_a_dispatch_given_up(
    store: Store, clock: Clock
) -> None:
    for queue_id, state in (("ev1", State.SENT), ("ev2", State.FAILED), ("ev3", State.EXPIRED)):
        _add(store, queue_id, Kind.EVIDENCE_OUT, state, attempts=4)
    _add(store, "out1", Kind.DISPATCH_OUT, State.FAILED)
    _add(store, "ev4", Kind.EVIDENCE_OUT, State.QUEUED)
    queue = Queue(store, "tester")
    for queue_id in ("ev1", "ev2", "ev3"):
        assert queue.act(Action.REQUEUE, queue_id).to is State.QUEUED
        row = _now(store, queue_id)
        assert (row.attempts, row.next_attempt) == (0, clock.now)
    assert queue.act(Action.REQUEUE, "out1").why == (
        "failed: its sender has RelayREMMDFailure; the sender must submit it again"
    )
    assert queue.act(Action.REQUEUE, "ev4").why == (
        "queued: requeue sends again an Evidence message that went out; retry it"
    )


def test_a_repeated_dispatch_leaves_held_evidence_held(store: Store) -> None:
    _add(store, "in1", Kind.DISPATCH_IN, State.PROCESSED)
    with store.transaction() as db:
        for queue_id in ("ev1", "ev2"):
            store.add_message(
                db, id=queue_id, kind=Kind.EVIDENCE_OUT, peer="hs02", remmd_id="r@hs02.kep.tr",
                mail_from="delil@hs01.kep.tr", rcpt_to=["a@hs02.kep.tr"], size=1, sha256="00",
                state=State.QUEUED, parent="in1",
            )  # fmt: skip
    Queue(store, "tester").act(Action.HOLD, "ev1")
    [claimed] = store.claim_due("hs01/1", store.clock(), LEASE)
    with store.transaction() as db:
        store.move(db, claimed, State.SENT)
    assert store.resend_evidence_of("in1") == 1  # the one sent, not the one held
    assert _now(store, "ev1").state is State.HOLD
    assert _now(store, "ev2").state is State.QUEUED


def test_the_reader_lists_and_shapes_the_queue(store: Store, store_url: str, clock: Clock) -> None:
    _add(store, "a", Kind.DISPATCH_OUT, State.QUEUED)
    clock.now += 7 * 60
    _add(store, "b", Kind.DISPATCH_OUT, State.QUEUED, peer="hs03")
    _add(store, "c", Kind.SUBMISSION, State.RECEIVED, peer=None)
    _add(store, "d", Kind.DISPATCH_OUT, State.SENT)
    clock.now += 200 * 60
    _add(store, "e", Kind.EVIDENCE_OUT, State.QUEUED)
    Queue(store, "tester").act(Action.HOLD, "e")
    waiting = (State.RECEIVED, State.QUEUED, State.SENDING, *HELD)
    with StoreReader(store_url) as reader:
        everything = QueueFilter(states=waiting, local="hs01")
        assert [e.row.id for e in reader.entries(everything, 10)] == ["a", "b", "c", "e"]
        assert [e.row.id for e in reader.entries(everything, 2)] == ["a", "b"]
        page = reader.entries(everything, 2, after=(START + 420, "b"))
        assert [e.row.id for e in page] == ["c", "e"]
        mine = QueueFilter(states=waiting, peer="hs01", local="hs01")
        assert [e.row.id for e in reader.entries(mine, 10)] == ["c"]  # a submission
        old = QueueFilter(states=waiting, created_before=clock.now - 3600, local="hs01")
        assert [e.row.id for e in reader.entries(old, 10)] == ["a", "b", "c"]
        held = QueueFilter(states=(State.HOLD,), kinds=(Kind.EVIDENCE_OUT,), local="hs01")
        assert [e.row.id for e in reader.entries(held, 10)] == ["e"]
        edges = [m * 60.0 for m in (5, 10, 20, 40, 80, 160)]
        assert reader.shape(everything, edges, clock.now) == {
            "hs02": [1, 0, 0, 0, 0, 0, 1],  # e now, a 207 minutes ago
            "hs03": [0, 0, 0, 0, 0, 0, 1],
            "hs01": [0, 0, 0, 0, 0, 0, 1],
        }
        entry = reader.entry("e")
        assert entry is not None and entry.row.state is State.HOLD and not entry.content_gone
        assert reader.entry("nosuch") is None


# -- with the node's keys: the evidence a sender is owed ----------------------------------


class NodeClock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def node(pki: DevPki, tmp_path: Path, store_url: str) -> Iterator[tuple[NodeContext, NodeClock]]:
    write_pki(pki, tmp_path / "pki")
    config = from_mapping(
        {
            "node": {"provider": "hs01", "dev_pki": "pki", "data_dir": "data"},
            "store": {"url": store_url},
            "timers": {"relay_timeout": "10m"},
        },
        "t",
        tmp_path,
    )
    clock = NodeClock(pki.created + dt.timedelta(minutes=1))
    context = build_context(config, clock=clock, owner="hs01/queue-tester")
    yield context, clock
    context.store.close()


def _dispatch_out(context: NodeContext, pki: DevPki) -> str:
    """A Dispatch to hs02 queued with its relay timer, as the S-GW leaves it."""
    exchange = make_dispatch(pki, now=context.clock())
    remmd = exchange.submission.message.remmd_message_id
    submission = sign(context, exchange.submission)
    with context.store.transaction() as db:
        context.store.add_message(
            db, id="d1", kind=Kind.DISPATCH_OUT, peer="hs02", remmd_id=remmd,
            mail_from="ali.yilmaz@hs01.kep.tr", rcpt_to=["ayse.demir@hs02.kep.tr"], size=1,
            sha256="00", state=State.QUEUED,
        )  # fmt: skip
        record(context, db, submission, direction="issued", message_id="d1")
        context.store.set_timer(db, "d1", remmd, "hs02", relay_deadline=context.now() + 600)
    return remmd


def _failures(context: NodeContext, queue_id: str) -> list[bytes]:
    return [
        bytes(e["xml"])
        for e in context.store.evidence_of_message(queue_id)
        if e["type"] == "RelayREMMDFailure"
    ]


def test_deleting_a_dispatch_gives_its_sender_relay_failure(
    pki: DevPki, node: tuple[NodeContext, NodeClock]
) -> None:
    context, _clock = node
    _dispatch_out(context, pki)
    queue = Queue(context.store, "tester", node=lambda: context, reason="a test")
    assert queue.act(Action.HOLD, "d1").to is State.HOLD
    deleted = queue.act(Action.DELETE, "d1")
    assert (deleted.source, deleted.to) == (State.HOLD, State.DELETED)
    row = _now(context.store, "d1")
    assert (row.state, row.last_reply, row.owner) == (
        State.DELETED,
        "deleted by tester: a test",
        None,
    )
    [xml] = _failures(context, "d1")
    failure = xmlio.parse(xml)
    assert failure.type is EvidenceType.RelayREMMDFailure
    assert failure.reasons[0].reason is Reason.Other
    assert failure.reasons[0].details == "withdrawn by the operator of hs01.kep.tr"
    timer = context.store.timer("d1")
    assert timer is not None and timer["done"]  # nothing fires for it any more
    [(filed, _seen)] = context.mailboxes.list("ali.yilmaz@hs01.kep.tr", "Delil")
    with filed.open("rb") as stream:
        in_delil = xmlio.parse(parse_envelope(io.BytesIO(stream.read())).evidence_xml)
    assert in_delil.identifier == failure.identifier
    again = queue.act(Action.DELETE, "d1")
    assert again.why == "deleted: ended for good"
    assert len(_failures(context, "d1")) == 1


def test_a_held_dispatch_still_ends_at_its_relay_timeout(
    pki: DevPki, node: tuple[NodeContext, NodeClock]
) -> None:
    context, clock = node
    _dispatch_out(context, pki)
    assert Queue(context.store, "tester").act(Action.HOLD, "d1").to is State.HOLD
    clock.now += dt.timedelta(minutes=9)
    assert outbound.check_timers(context) == 0
    clock.now += dt.timedelta(minutes=2)
    assert outbound.check_timers(context) == 1
    assert _now(context.store, "d1").state is State.EXPIRED
    assert b"R_REMMD_Unreachable" in _failures(context, "d1")[0]


def _received(context: NodeContext, kind: Kind, data: bytes, peer: str | None) -> MessageRow:
    queue_id, _path = context.spool.write_bytes(data)
    with context.store.transaction() as db:
        context.store.add_message(
            db, id=queue_id, kind=kind, peer=peer, remmd_id=f"{queue_id}@hs02.kep.tr",
            mail_from="ayse.demir@hs02.kep.tr", rcpt_to=["ali.yilmaz@hs01.kep.tr"],
            size=len(data), sha256="0" * 64, state=State.RECEIVED,
        )  # fmt: skip
    return _now(context.store, queue_id)


def test_deleting_a_held_dispatch_from_a_peer_answers_it_once(
    pki: DevPki, node: tuple[NodeContext, NodeClock]
) -> None:
    context, _clock = node
    exchange = make_dispatch(
        pki, sender="ayse.demir@hs02.kep.tr", recipients=("ali.yilmaz@hs01.kep.tr",),
        issuer="hs02", now=context.clock(),
    )  # fmt: skip
    held = _received(context, Kind.DISPATCH_IN, exchange.dispatch, "hs02")
    queue = Queue(context.store, "tester", node=lambda: context, reason="spam")
    assert queue.act(Action.HOLD, held.id).to is State.HOLD
    assert queue.act(Action.DELETE, held.id).to is State.DELETED
    [out] = context.store.messages(kind=Kind.EVIDENCE_OUT)
    assert (out.peer, out.parent, out.state) == ("hs02", held.id, State.QUEUED)
    with io.BytesIO(context.store.content(out.id) or b"") as stream:
        rejection = xmlio.parse(parse_envelope(stream).evidence_xml)
    assert (rejection.type, rejection.event) == (
        EvidenceType.RelayREMMDAcceptanceRejection,
        Event.Rejection,
    )
    assert rejection.reasons[0].reason is Reason.Other
    # One put aside by the node was answered then: deleting it issues nothing more.
    broken = _received(context, Kind.DISPATCH_IN, exchange.dispatch, "hs02")
    processing_failed(context, broken, KeyError("a reader bug"))
    for _ in range(context.config.limits.max_processing_attempts):
        current = _now(context.store, broken.id)
        if current.state is State.QUARANTINED:
            break
        processing_failed(context, current, KeyError("a reader bug"))
    assert _now(context.store, broken.id).state is State.QUARANTINED
    issued = len(context.store.evidence_of_message(broken.id))
    assert issued == 1
    assert queue.act(Action.DELETE, broken.id).to is State.DELETED
    assert len(context.store.evidence_of_message(broken.id)) == issued


def test_released_evidence_is_recorded_and_filed_once(
    pki: DevPki, node: tuple[NodeContext, NodeClock]
) -> None:
    """Evidence about no Dispatch of ours is kept (unmatched); once the Dispatch is known, a
    release processes it again: recorded and filed once, however often it is processed."""
    context, _clock = node
    exchange = make_dispatch(pki, now=context.clock())
    _evidence, message = make_evidence_message(pki, exchange.submission, now=context.clock())
    row = _received(context, Kind.EVIDENCE_IN, message, "hs02")
    asyncio.run(evidence_in.process_evidence(context, row))
    assert _now(context.store, row.id).state is State.UNMATCHED
    remmd = exchange.submission.message.remmd_message_id
    with context.store.transaction() as db:
        context.store.add_message(
            db, id="d1", kind=Kind.DISPATCH_OUT, peer="hs02", remmd_id=remmd,
            mail_from="ali.yilmaz@hs01.kep.tr", rcpt_to=["ayse.demir@hs02.kep.tr"], size=1,
            sha256="00", state=State.SENT,
        )  # fmt: skip
    queue = Queue(context.store, "tester")
    for _ in range(2):  # a second release finds it processed: nothing to do
        released = queue.act(Action.RELEASE, row.id)
        if not released.done:
            assert released.why == "processed: its evidence was issued"
            break
        [claimed] = context.store.claim_received(context.owner, context.now(), LEASE)
        asyncio.run(evidence_in.process_evidence(context, claimed))
    assert _now(context.store, row.id).state is State.PROCESSED
    received = [e for e in context.store.evidence_of_message("d1") if e["direction"] == "received"]
    assert len(received) == 1
    assert len(context.mailboxes.list("ali.yilmaz@hs01.kep.tr", "Delil")) == 1


def test_deleting_a_held_submission_files_its_rejection_for_the_sender(
    pki: DevPki, node: tuple[NodeContext, NodeClock]
) -> None:
    context, _clock = node
    queue_id, _path = context.spool.write_bytes(make_dispatch(pki).original)
    with context.store.transaction() as db:
        context.store.add_message(
            db, id=queue_id, kind=Kind.SUBMISSION, peer=None, remmd_id=None,
            mail_from="ali.yilmaz@hs01.kep.tr", rcpt_to=["ayse.demir@hs02.kep.tr"], size=1,
            sha256="00", state=State.RECEIVED,
        )  # fmt: skip
    queue = Queue(context.store, "tester", node=lambda: context, reason="held for review")
    assert queue.act(Action.HOLD, queue_id).to is State.HOLD
    assert queue.act(Action.DELETE, queue_id).to is State.DELETED
    [(filed, _seen)] = context.mailboxes.list("ali.yilmaz@hs01.kep.tr", "Delil")
    with filed.open("rb") as stream:
        rejection = xmlio.parse(parse_envelope(io.BytesIO(stream.read())).evidence_xml)
    assert (rejection.type, rejection.event) == (
        EvidenceType.SubmissionAcceptanceRejection,
        Event.Rejection,
    )
    assert rejection.reasons[0].details == "withdrawn by the operator of hs01.kep.tr"
    assert context.store.messages(kind=Kind.DISPATCH_OUT) == []  # nothing relayed
    assert context.mailboxes.list("ali.yilmaz@hs01.kep.tr", "Sent") == []
