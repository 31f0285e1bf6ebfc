"""Stages written in steps (relay.steps): a small message's verifying and signing are CPU steps,
run on the event loop's thread in a node; reading the file, delivering, recording and
committing are blocking steps, run there too (``[node] small_work = "loop"``) or on threads. A
large message, or signing that asks a remote TSA, runs all of it as blocking steps, on threads.
The outcome is the same whichever way a step runs."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import pytest
import structlog
from structlog.testing import capture_logs

from interop.pki.devpki import DevPki
from relay import context as context_module
from relay.config_file import from_mapping
from relay.context import NodeContext, build_context
from relay.crypto import LocalCrypto
from relay.keys import write_pki
from relay.lifecycle import Kind, State
from relay.node import Node
from relay.readings import READ_WHOLE, receive
from relay.stages import evidence_in, outbound, retention, rgw, sgw
from relay.steps import IN_PLACE, IN_TURN, ON_THREADS, FollowedBy, Steps
from relay.store import MessageRow
from tests.helpers import count_hand_offs, make_dispatch, make_evidence_message

P = ParamSpec("P")
T = TypeVar("T")
RECIPIENT = "ayse.demir@hs02.kep.tr"
SENDER = "ali.yilmaz@hs01.kep.tr"


class Recorded:
    """Steps that run in place and note which kind each was."""

    def __init__(self) -> None:
        self.taken: list[tuple[str, str]] = []

    async def blocking(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        self.taken.append(("blocking", _name(function)))
        return function(*args, **kwargs)

    async def cpu(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        self.taken.append(("cpu", _name(function)))
        return function(*args, **kwargs)

    async def last(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        self.taken.append(("last", _name(function)))
        return function(*args, **kwargs)


def _name(function: Callable[..., Any]) -> str:
    return str(getattr(function, "__name__", None) or function.func.__name__)  # type: ignore[attr-defined]


def _node(pki: DevPki, root: Path, provider: str, **node: str) -> Iterator[NodeContext]:
    write_pki(pki, root / "pki")
    config = from_mapping(
        {"node": {"provider": provider, "dev_pki": "pki", "data_dir": "data", **node}}, "t", root
    )
    context = build_context(config, clock=lambda: pki.created)
    yield context
    context.store.close()


@pytest.fixture
def node(pki: DevPki, tmp_path: Path) -> Iterator[NodeContext]:
    yield from _node(pki, tmp_path, "hs02")


@pytest.fixture
def threaded(pki: DevPki, tmp_path: Path) -> Iterator[NodeContext]:
    """hs02 with a small message's blocking steps on threads."""
    yield from _node(pki, tmp_path / "threaded", "hs02", small_work="threads")


@pytest.fixture
def hs01(pki: DevPki, tmp_path: Path) -> Iterator[NodeContext]:
    yield from _node(pki, tmp_path, "hs01")


def _received(
    context: NodeContext, kind: Kind, data: bytes, peer: str | None, sender: str = SENDER
) -> MessageRow:
    queue_id, _path = context.spool.write_bytes(data)
    with context.store.transaction() as db:
        context.store.add_message(
            db, id=queue_id, kind=kind, peer=peer, remmd_id="r", mail_from=sender,
            rcpt_to=[RECIPIENT], size=len(data), sha256="00", state=State.RECEIVED,
        )  # fmt: skip
    [row] = context.store.claim_received(context.owner, context.now(), 60)
    return row


def _dispatch(pki: DevPki, context: NodeContext, **kwargs: Any) -> MessageRow:
    data = make_dispatch(pki, recipients=(RECIPIENT,), now=context.clock(), **kwargs).dispatch
    return _received(context, Kind.DISPATCH_IN, data, "hs01")


def _issued(context: NodeContext, row: MessageRow) -> list[tuple[str, str]]:
    return sorted((e["type"], e["event"]) for e in context.store.evidence_of_message(row.id))


ACCEPTED = [
    ("DeliveryNonDeliveryToRecipient", "Delivery"),
    ("RelayREMMDAcceptanceRejection", "Acceptance"),
]


def test_a_small_dispatch_is_verified_and_signed_as_cpu_steps(
    pki: DevPki, node: NodeContext
) -> None:
    row = _dispatch(pki, node)
    steps = Recorded()
    asyncio.run(rgw.process_dispatch(node, row, steps))
    assert steps.taken == [
        ("blocking", "receive"),
        ("cpu", "verify"),
        ("blocking", "deliver"),
        ("cpu", "sign_back"),
        ("last", "commit_back"),
    ]
    assert node.store.message(row.id).state is State.PROCESSED  # type: ignore[union-attr]
    assert _issued(node, row) == ACCEPTED


def test_a_large_dispatch_is_verified_streamed_in_blocking_steps_to_the_same_outcome(
    pki: DevPki, node: NodeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(context_module, "receive", functools.partial(receive, read_whole=0))
    row = _dispatch(pki, node)
    steps = Recorded()
    asyncio.run(rgw.process_dispatch(node, row, steps))
    assert {kind for kind, _ in steps.taken} == {"blocking", "last"}  # nothing on the loop
    assert [name for _, name in steps.taken] == [
        "receive", "verify", "deliver", "sign_back", "commit_back"
    ]  # fmt: skip
    assert _issued(node, row) == ACCEPTED


def test_signing_that_asks_a_remote_tsa_is_a_blocking_step(
    pki: DevPki, node: NodeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(LocalCrypto, "signs_in_process", property(lambda self: False))
    row = _dispatch(pki, node)
    steps = Recorded()
    asyncio.run(rgw.process_dispatch(node, row, steps))
    assert ("blocking", "sign_back") in steps.taken and ("blocking", "verify") in steps.taken


def test_a_dispatch_that_fails_verification_is_refused_the_same_either_way(
    pki: DevPki, node: NodeContext
) -> None:
    row = _dispatch(pki, node, issuer="hs03")  # evidence signed by another provider than hs01
    steps = Recorded()
    asyncio.run(rgw.process_dispatch(node, row, steps))
    assert ("cpu", "verify") in steps.taken
    assert _issued(node, row) == [("RelayREMMDAcceptanceRejection", "Rejection")]


def test_evidence_is_verified_as_a_cpu_step_and_kept_in_a_blocking_one(
    pki: DevPki, node: NodeContext
) -> None:
    exchange = make_dispatch(pki, now=node.clock())
    _evidence, message = make_evidence_message(pki, exchange.submission, now=node.clock())
    row = _received(node, Kind.EVIDENCE_IN, message, "hs02", sender="delil@hs02.kep.tr")
    steps = Recorded()
    asyncio.run(evidence_in.process_evidence(node, row, steps))
    assert steps.taken == [
        ("blocking", "receive"),
        ("cpu", "verify"),
        ("last", "file_received"),
    ]
    assert node.store.message(row.id).state is State.UNMATCHED  # type: ignore[union-attr]


def test_a_submission_has_its_e_imza_verified_as_a_cpu_step(pki: DevPki, hs01: NodeContext) -> None:
    row = _received(hs01, Kind.SUBMISSION, make_dispatch(pki).original, None)
    steps = Recorded()
    asyncio.run(sgw.process_submission(hs01, row, steps))
    assert steps.taken == [
        ("blocking", "receive"),
        ("cpu", "verify_user"),
        ("last", "accept_or_refuse"),
    ]
    assert hs01.store.message(row.id).state is State.PROCESSED  # type: ignore[union-attr]
    [dispatch] = hs01.store.messages(kind=Kind.DISPATCH_OUT)
    assert dispatch.peer == "hs02" and list(dispatch.rcpt_to) == [RECIPIENT]


def test_a_small_dispatch_the_s_gw_writes_is_held_in_the_store_not_a_file(
    pki: DevPki, hs01: NodeContext
) -> None:
    """Like a small received message: the Dispatch goes into the store with its row, no spool
    file is made; the queue manager sends those bytes, and retention removes them once the
    peer took them (profile §7)."""
    row = _received(hs01, Kind.SUBMISSION, make_dispatch(pki).original, None)
    asyncio.run(sgw.process_submission(hs01, row))
    [dispatch] = hs01.store.messages(kind=Kind.DISPATCH_OUT)
    # The submission's own file (written so by this test) and no other.
    assert list(hs01.spool.msg_dir.iterdir()) == [hs01.spool.path(row.id)]
    assert list(hs01.spool.tmp_dir.iterdir()) == []
    held = hs01.store.content(dispatch.id)
    assert held is not None and hashlib.sha256(held).hexdigest() == dispatch.sha256
    assert len(held) == dispatch.size
    [(claimed, entry)] = outbound._claim_due(hs01)
    assert claimed.id == dispatch.id and not isinstance(entry, Exception)
    assert entry.content == held
    with hs01.store.transaction() as db:
        hs01.store.move(db, claimed, State.SENT)
    assert retention.sweep(hs01) == 2  # the submission and the Dispatch
    assert hs01.store.content(dispatch.id) is None
    assert list(hs01.spool.msg_dir.iterdir()) == []


def test_a_message_that_is_not_s_mime_is_refused_the_same_either_way(
    pki: DevPki, hs01: NodeContext
) -> None:
    data = b"From: ali.yilmaz@hs01.kep.tr\r\nSubject: x\r\n\r\nno e-imza\r\n"
    row = _received(hs01, Kind.SUBMISSION, data, None)
    asyncio.run(sgw.process_submission(hs01, row))
    assert hs01.store.message(row.id).state is State.REJECTED  # type: ignore[union-attr]
    assert hs01.store.messages(kind=Kind.DISPATCH_OUT) == []


def test_a_small_file_is_read_whole_and_a_large_one_left_to_stream(tmp_path: Path) -> None:
    path = tmp_path / "m.eml"
    path.write_bytes(b"x" * READ_WHOLE)
    assert receive(path, None).data == path.read_bytes()
    path.write_bytes(b"x" * (READ_WHOLE + 1))
    received = receive(path, None)
    assert received.data is None and not received.small and received.path == path


def test_on_threads_computes_on_the_loops_thread_and_blocks_on_another() -> None:
    async def where() -> tuple[int, int, int]:
        loop = threading.get_ident()
        cpu = await ON_THREADS.cpu(threading.get_ident)
        blocking = await ON_THREADS.blocking(threading.get_ident)
        return loop, cpu, blocking

    loop, cpu, blocking = asyncio.run(where())
    assert cpu == loop and blocking != loop
    assert asyncio.run(IN_PLACE.blocking(threading.get_ident)) == threading.get_ident()


def _what_was_ready(ready: list[str]) -> tuple[list[str], int]:
    return list(ready), threading.get_ident()


def test_in_turn_runs_each_step_on_the_loops_thread_after_what_was_ready() -> None:
    """``IN_TURN`` (a node's small work): each step waits for the event loop's next turn, so
    what was ready when it was called (a peer's reply to the queue manager, a block of DATA)
    runs first, not after a whole message of each processing slot; ``IN_PLACE`` runs at
    once. Either way on the loop's own thread."""

    async def seen_by_each_step(steps: Steps) -> list[tuple[list[str], int]]:
        seen = []
        for step in (steps.cpu, steps.blocking, steps.last):
            ready: list[str] = []
            asyncio.get_running_loop().call_soon(ready.append, "a reply")
            seen.append(await step(_what_was_ready, ready))
        return seen

    here = threading.get_ident()
    assert asyncio.run(seen_by_each_step(IN_TURN)) == [(["a reply"], here)] * 3
    assert asyncio.run(seen_by_each_step(IN_PLACE)) == [([], here)] * 3


def _waiting(pki: DevPki, context: NodeContext) -> str:
    """A Dispatch received and not claimed yet; its queue id."""
    data = make_dispatch(pki, recipients=(RECIPIENT,), now=context.clock()).dispatch
    queue_id, _path = context.spool.write_bytes(data)
    with context.store.transaction() as db:
        context.store.add_message(
            db, id=queue_id, kind=Kind.DISPATCH_IN, peer="hs01", remmd_id=queue_id,
            mail_from=SENDER, rcpt_to=[RECIPIENT], size=len(data), sha256="00",
            state=State.RECEIVED,
        )  # fmt: skip
    return queue_id


def test_the_node_reads_what_it_claims_in_the_claims_hand_off(
    pki: DevPki, node: NodeContext
) -> None:
    """``Node.claim`` (one hand-off to a thread) claims and reads each message; the stage then
    starts from what was read, with no blocking step of its own to read it. A file that cannot
    be read is left for the stage, which reads it again and fails as it would have."""
    first, second = _waiting(pki, node), _waiting(pki, node)
    node.spool.path(second).unlink()
    claimed = dict((row.id, (row, received)) for row, received in Node(node).claim(5))
    assert set(claimed) == {first, second}
    row, received = claimed[first]
    assert received is not None and received.data == node.spool.path(first).read_bytes()
    steps = Recorded()
    asyncio.run(rgw.process_dispatch(node, row, steps, received))
    assert [name for _, name in steps.taken] == ["verify", "deliver", "sign_back", "commit_back"]
    assert _issued(node, row) == ACCEPTED
    gone, nothing = claimed[second]
    assert nothing is None
    with pytest.raises(FileNotFoundError):
        asyncio.run(rgw.process_dispatch(node, gone, Recorded(), nothing))


@pytest.mark.parametrize(
    "where", [ON_THREADS, IN_PLACE, IN_TURN], ids=["threads", "in place", "in turn"]
)
def test_the_last_step_is_followed_where_it_ran_only_when_it_succeeded(where: Steps) -> None:
    """``FollowedBy``: what follows the last step runs where it ran (the same worker thread,
    in the same hand-off; or in place), right after it; a last step that raised is followed
    by nothing."""

    async def run(steps: FollowedBy[int], fails: bool) -> tuple[int, int]:
        def commit() -> int:
            if fails:
                raise OSError("the disk is full")
            return threading.get_ident()

        return await steps.last(commit), threading.get_ident()

    followed = FollowedBy(threading.get_ident, where)
    ran, caller = asyncio.run(run(followed, fails=False))
    assert ran == followed.followed
    assert (ran == caller) is (where is not ON_THREADS)
    refused = FollowedBy(threading.get_ident, where)
    with pytest.raises(OSError):
        asyncio.run(run(refused, fails=True))
    assert refused.followed is None


async def _until_processed(node: NodeContext, relay_node: Node, waiting: list[str]) -> None:
    loop = asyncio.create_task(relay_node.process_loop())
    while any(row.state is State.RECEIVED for m in waiting if (row := node.store.message(m))):
        await asyncio.sleep(0.05)
    relay_node.stopping.set()
    relay_node.work.set()
    await loop


def _process_all(node: NodeContext, relay_node: Node, waiting: list[str]) -> None:
    asyncio.run(_until_processed(node, relay_node, waiting))
    assert [node.store.message(m).state for m in waiting] == [State.PROCESSED] * 3  # type: ignore[union-attr]


def _counting_hand_offs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.setattr(Node, "processing_slots", lambda self: 1)
    return count_hand_offs(monkeypatch)


def test_a_busy_slot_claims_its_next_message_after_its_last_step(
    pki: DevPki, threaded: NodeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three Dispatches through one slot, small work on threads: the processing loop claims
    the first, and each later one is claimed on the thread of the commit before it; no
    hand-off of its own."""
    waiting = [_waiting(pki, threaded) for _ in range(3)]
    handed = _counting_hand_offs(monkeypatch)
    _process_all(threaded, Node(threaded), waiting)
    # The first claim finds all three waiting and takes one (one slot); then three commits,
    # each with the next claim after it (the last finds nothing). Only then does the idle
    # loop claim again (once, or more on a machine slower than timers.queue_poll).
    commits = [i for i, name in enumerate(handed) if name == "then_follow"]
    assert len(commits) == 3 and handed[: commits[-1]].count("claim") == 1
    assert handed.count("deliver") == 3 and "commit_back" not in handed


def test_small_messages_are_processed_on_the_loops_thread_with_no_hand_off(
    pki: DevPki, node: NodeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``[node] small_work = "loop"`` (the default): claims, reading, verifying, delivering,
    signing and committing three small Dispatches hand nothing to a thread."""
    waiting = [_waiting(pki, node) for _ in range(3)]
    handed = _counting_hand_offs(monkeypatch)
    _process_all(node, Node(node), waiting)
    assert handed == []


def test_a_slot_gives_the_loop_a_turn_between_two_messages(
    pki: DevPki, node: NodeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small messages' steps run in place, awaiting nothing: a slot that goes on to the next
    message it claimed lets the event loop serve the others (connections) in between."""
    waiting = [_waiting(pki, node) for _ in range(3)]
    monkeypatch.setattr(Node, "processing_slots", lambda self: 1)
    seen: set[int] = set()

    async def watch() -> None:
        while True:
            seen.add(sum(row.state is State.PROCESSED for row in node.store.messages()))
            await asyncio.sleep(0)

    async def process_with_a_watcher() -> None:
        watcher = asyncio.create_task(watch())
        await asyncio.sleep(0)
        await _until_processed(node, Node(node), waiting)
        watcher.cancel()

    asyncio.run(process_with_a_watcher())
    assert {1, 2} <= seen


def test_where_a_nodes_message_is_processed(
    node: NodeContext, threaded: NodeContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the loop's thread, in turn with the connections: a small message, on a node with
    ``small_work = "loop"`` that signs with no remote TSA. On threads: a large one, a file not
    read with its claim, small work on threads, or a remote TSA to ask (it may keep a step
    waiting for seconds)."""
    (tmp_path / "small.eml").write_bytes(b"x" * READ_WHOLE)
    (tmp_path / "large.eml").write_bytes(b"x" * (READ_WHOLE + 1))
    small, large = receive(tmp_path / "small.eml", None), receive(tmp_path / "large.eml", None)
    assert small.small and not large.small
    assert Node(node).steps_for(small) is IN_TURN
    assert Node(node).steps_for(large) is ON_THREADS
    assert Node(node).steps_for(None) is ON_THREADS
    assert Node(threaded).steps_for(small) is ON_THREADS
    monkeypatch.setattr(LocalCrypto, "signs_in_process", property(lambda self: False))
    assert Node(node).steps_for(small) is ON_THREADS


def test_a_slot_claims_nothing_more_once_the_node_drains(pki: DevPki, node: NodeContext) -> None:
    _waiting(pki, node)
    relay_node = Node(node)
    relay_node.stopping.set()
    assert relay_node.claim_next() == []
    assert [row.state for row in node.store.messages()] == [State.RECEIVED]


def test_a_claim_that_fails_after_a_commit_leaves_the_slot_to_the_loop(
    pki: DevPki, node: NodeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    relay_node = Node(node)

    def locked(*args: Any) -> list[MessageRow]:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(node.store, "claim_received", locked)
    assert relay_node.claim_next() == []


@pytest.mark.parametrize(
    "where", [ON_THREADS, IN_PLACE, IN_TURN], ids=["threads", "in place", "in turn"]
)
def test_a_failed_claim_after_a_commit_is_logged_as_the_slots_not_the_messages(
    pki: DevPki, node: NodeContext, monkeypatch: pytest.MonkeyPatch, where: Steps
) -> None:
    """The claim follows the last step inside the finished message's logging context (its
    queue id, REMMD id and peer); its own line must not name that message, and in place, what
    it unbinds for that line must stay unbound for it alone: the stage logs the message it
    finished after its last step."""
    relay_node = Node(node)

    def locked(*args: Any) -> list[MessageRow]:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(node.store, "claim_received", locked)

    async def finish_a_message() -> None:
        with structlog.contextvars.bound_contextvars(queue_id="m1", remmd_id="r1", peer="hs01"):
            steps = FollowedBy(relay_node.claim_next, where)
            await steps.last(lambda: None)
            assert steps.followed == []
            assert structlog.contextvars.get_contextvars()["queue_id"] == "m1"  # here, still

    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        asyncio.run(finish_a_message())
    [line] = [entry for entry in logs if entry["event"] == "claim_failed"]
    assert not {"queue_id", "remmd_id", "peer"} & set(line)
