"""Intake's reading of an envelope, taken by the verifier of the same process: the envelope is
read once per message when that is sound, and again when it is not (a restart, a file changed
since intake); either way the outcome is the same. Readings are bounded in bytes and in age."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import Envelope

import interop.envelope.verify
from interop.envelope.parse import parse_envelope
from interop.evidence import xades, xmlio
from interop.evidence.codes import Event, EvidenceType
from interop.pki.devpki import DevPki
from relay.config_file import from_mapping
from relay.context import NodeContext, build_context
from relay.keys import write_pki
from relay.lifecycle import Kind, State
from relay.readings import (
    READ_WHOLE,
    READER_FIRST,
    FileIdentity,
    HeldIdentity,
    Reading,
    Readings,
)
from relay.smtp.server import Connection
from relay.spool import SpoolWriter
from relay.stages import retention
from relay.stages.intake import PeerIntake, SubmissionIntake
from relay.stages.rgw import process_dispatch
from relay.store import MessageRow
from tests.helpers import count_hand_offs, make_dispatch

RECIPIENT = "ayse.demir@hs02.kep.tr"


@pytest.fixture
def node(pki: DevPki, tmp_path: Path) -> Iterator[NodeContext]:
    write_pki(pki, tmp_path / "pki")
    context = _context(pki, tmp_path)
    yield context
    context.store.close()


def _context(pki: DevPki, root: Path) -> NodeContext:
    config = from_mapping(
        {"node": {"provider": "hs02", "dev_pki": "pki", "data_dir": "data"}}, "t", root
    )
    return build_context(config, clock=lambda: pki.created)


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the verifier's own reads of an envelope's structure."""
    count: list[int] = []

    def counted(*args: object, **kwargs: object) -> object:
        count.append(1)
        return parse_envelope(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(interop.envelope.verify, "parse_envelope", counted)
    return count


@pytest.fixture
def handed(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """For each evidence signature verified: whether delil.xml's content read before (by
    intake) was handed to the verifier."""
    seen: list[bool] = []
    verify_tree = xades.verify_evidence_tree  # as interop.envelope.verify imported it

    def spy(*args: Any, **kwargs: Any) -> xades.EvidenceResult:
        seen.append(kwargs.get("content") is not None)
        return verify_tree(*args, **kwargs)

    monkeypatch.setattr("interop.envelope.verify.verify_evidence_tree", spy)
    return seen


def _accept(context: NodeContext, data: bytes, *, keep: int | None = None) -> str:
    """A Dispatch from hs01 through intake, as the peer listener takes it; its queue id.
    ``keep``: what the spool writer keeps a copy of (None: as the listener opens it)."""
    intake = PeerIntake(context, lambda: None)
    connection = Connection(("127.0.0.1", 2525), provider="hs01")
    envelope = Envelope()
    envelope.mail_from = "ali.yilmaz@hs01.kep.tr"
    envelope.rcpt_tos = [RECIPIENT]
    sink = (
        intake.open_sink(connection, envelope) if keep is None else context.spool.writer(keep=keep)
    )
    assert isinstance(sink, SpoolWriter)
    for start in range(0, len(data), 4096):  # as DATA arrives, in blocks
        sink.write(data[start : start + 4096])
    reply = asyncio.run(intake.finish(connection, envelope, sink))
    assert reply.code == 250, str(reply)
    return sink.queue_id


def _process(
    context: NodeContext, queue_id: str, later: float = 0.0
) -> tuple[MessageRow, list[tuple[str, str]]]:
    """Claim and process the Dispatch ``later`` seconds from now, as a node process does
    (naming the messages whose readings it keeps, which wait for it alone); its row and the
    (type, event) of what was issued."""
    now = context.now() + later
    mine = context.readings.waiting(now, 8)
    [row] = context.store.claim_received(context.owner, now, 60, mine=mine)
    assert row.id == queue_id
    asyncio.run(process_dispatch(context, row))
    done = context.store.message(queue_id)
    assert done is not None
    return done, _issued(context)


def _issued(context: NodeContext) -> list[tuple[str, str]]:
    """(type, event) of every evidence queued to peers so far."""
    issued = []
    for out in context.store.messages(kind=Kind.EVIDENCE_OUT):
        with io.BytesIO(context.store.content(out.id) or b"") as stream:
            evidence = xmlio.parse(parse_envelope(stream).evidence_xml)
        issued.append((evidence.type.value, evidence.event.value))
    return sorted(issued)


ACCEPTED = sorted(
    [
        (EvidenceType.RelayREMMDAcceptanceRejection.value, Event.Acceptance.value),
        (EvidenceType.DeliveryNonDeliveryToRecipient.value, Event.Delivery.value),
    ]
)
REJECTED = [(EvidenceType.RelayREMMDAcceptanceRejection.value, Event.Rejection.value)]


def test_the_verifier_takes_intakes_reading_in_the_same_process(
    pki: DevPki, node: NodeContext, parses: list[int], handed: list[bool]
) -> None:
    queue_id = _accept(node, make_dispatch(pki, recipients=(RECIPIENT,)).dispatch)
    assert len(node.readings) == 1
    row, issued = _process(node, queue_id)
    assert parses == []  # read once, by intake
    assert handed == [True]  # and delil.xml's content with it
    assert row.state is State.PROCESSED and issued == ACCEPTED
    assert len(node.readings) == 0  # taken, not kept for ever


def test_a_message_waits_for_the_process_that_read_it_then_for_any(
    pki: DevPki, node: NodeContext, parses: list[int], handed: list[bool]
) -> None:
    """Another node process cannot claim a message whose reading this one keeps until
    READER_FIRST has passed (so the reading is used, not read again there); this one claims
    it at once, and any process once it has waited that long (its reader stuck or gone)."""
    queue_id = _accept(node, make_dispatch(pki, recipients=(RECIPIENT,)).dispatch)
    now = node.now()
    assert node.readings.waiting(now, 8) == [queue_id]
    other = "hs02/other-process"
    assert node.store.claim_received(other, now, 60) == []
    assert node.store.claim_received(other, now + READER_FIRST - 0.1, 60) == []
    [row] = node.store.claim_received(other, now + READER_FIRST, 60)
    assert row.id == queue_id and row.owner == other
    assert node.readings.waiting(now + READER_FIRST, 8) == []  # due to all: not named


def test_a_small_envelope_makes_no_spool_file_its_bytes_go_with_its_row(
    pki: DevPki, node: NodeContext, parses: list[int], handed: list[bool]
) -> None:
    """No file is created, synced, renamed, read and removed for a small message: its bytes
    are stored with its row, processed from there, and removed with it once its obligations
    are met (profile §7)."""
    dispatch = make_dispatch(pki, recipients=(RECIPIENT,)).dispatch
    queue_id = _accept(node, dispatch)
    assert list(node.spool.msg_dir.iterdir()) == list(node.spool.tmp_dir.iterdir()) == []
    assert node.store.content(queue_id) == dispatch
    row, issued = _process(node, queue_id)
    assert parses == [] and handed == [True]  # intake's reading described the bytes held
    assert row.state is State.PROCESSED and issued == ACCEPTED
    assert retention.sweep(node) == 1  # the Dispatch; its evidence waits to be sent
    assert node.store.content(queue_id) is None
    assert list(node.spool.msg_dir.iterdir()) == []


def test_a_small_message_an_earlier_release_spooled_is_read_from_its_file(
    pki: DevPki, node: NodeContext, parses: list[int]
) -> None:
    """A message received before its bytes were held in the store has only its spool file:
    it is processed from the file, the same as before."""
    queue_id = _accept(node, make_dispatch(pki, recipients=(RECIPIENT,)).dispatch, keep=0)
    assert node.store.content(queue_id) is None
    assert node.spool.path(queue_id).exists()
    node.readings.take(queue_id, node.now())  # a reading is no longer at hand (a restart)
    row, issued = _process(node, queue_id, later=READER_FIRST)  # it waited for its reader
    assert parses == [1]
    assert row.state is State.PROCESSED and issued == ACCEPTED


def test_where_the_store_cannot_forget_a_small_envelope_is_spooled(
    pki: DevPki,
    node: NodeContext,
    parses: list[int],
    handed: list[bool],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a database that keeps deleted rows' bytes (PostgreSQL), a small message is written
    to its spool file at its commit, and its reading describes that file."""
    monkeypatch.setattr(node.store.database, "forgets_deleted", False)
    queue_id = _accept(node, make_dispatch(pki, recipients=(RECIPIENT,)).dispatch)
    assert node.store.content(queue_id) is None
    assert [p.name for p in node.spool.msg_dir.iterdir()] == [f"{queue_id}.eml"]
    assert list(node.spool.tmp_dir.iterdir()) == []
    row, issued = _process(node, queue_id)
    assert parses == [] and handed == [True]
    assert row.state is State.PROCESSED and issued == ACCEPTED


def test_bytes_held_and_changed_since_intake_are_read_again_and_refused(
    pki: DevPki, node: NodeContext, parses: list[int]
) -> None:
    """Whoever changes a held message's bytes in the store: the reading no longer describes
    them, the envelope is read again and its signatures fail."""
    queue_id = _accept(node, make_dispatch(pki, recipients=(RECIPIENT,)).dispatch)
    data = bytearray(node.store.content(queue_id) or b"")
    original = parse_envelope(io.BytesIO(bytes(data))).original
    assert original is not None
    data[original.start + original.size // 2] ^= 0x01
    with node.store.transaction() as db:
        db.execute("UPDATE contents SET data = ? WHERE message_id = ?", (bytes(data), queue_id))
    row, issued = _process(node, queue_id)
    assert parses == [1]
    assert row.state is State.PROCESSED and issued == REJECTED


def test_a_small_envelope_is_read_from_the_writers_copy_a_large_one_from_its_file(
    pki: DevPki, node: NodeContext, parses: list[int], handed: list[bool]
) -> None:
    small, large = (
        make_dispatch(pki, recipients=(RECIPIENT,), subject=subject).dispatch
        for subject in ("small", "large")
    )
    writer = node.spool.writer(keep=len(small))
    writer.write(small)
    assert writer.copy is not None and bytes(writer.copy) == small  # read on the loop's thread
    writer.write(b"\r\n")
    assert writer.copy is None  # more than it keeps: read back from its file
    writer.discard()
    for data, keep in ((small, len(small)), (large, len(large) - 1)):
        queue_id = _accept(node, data, keep=keep)
        assert len(node.readings) == 1
        row, _ = _process(node, queue_id)
        assert row.state is State.PROCESSED
    assert parses == []  # either way, the reading described the spool file and was taken
    assert handed == [True, True]
    assert _issued(node) == sorted(ACCEPTED * 2)


@pytest.mark.parametrize(
    ("small_work", "small_hand_offs"), [("loop", []), ("threads", ["_settle"])]
)
def test_intake_commits_a_small_envelope_where_small_work_runs_a_large_one_on_a_thread(
    pki: DevPki,
    node: NodeContext,
    monkeypatch: pytest.MonkeyPatch,
    small_work: str,
    small_hand_offs: list[str],
) -> None:
    """``[node] small_work``: a small envelope's commit (spool file and store row, before the
    250) in place on the event loop's thread, or handed to a thread; a large one, read back
    from its file first, always on a thread."""
    handed_over = count_hand_offs(monkeypatch)
    monkeypatch.setattr(node, "config", dataclasses.replace(node.config, small_work=small_work))
    small, large = (
        make_dispatch(pki, recipients=(RECIPIENT,), subject=subject).dispatch
        for subject in ("small", "large")
    )
    _accept(node, small, keep=len(small))
    assert handed_over == small_hand_offs
    _accept(node, large, keep=len(large) - 1)
    assert handed_over == [*small_hand_offs, "_accept"]
    assert [row.state for row in node.store.messages()] == [State.RECEIVED] * 2


@pytest.mark.parametrize(
    ("small_work", "small_hand_offs"), [("loop", []), ("threads", ["_commit"])]
)
def test_submission_intake_commits_a_small_message_where_small_work_runs(
    node: NodeContext,
    monkeypatch: pytest.MonkeyPatch,
    small_work: str,
    small_hand_offs: list[str],
) -> None:
    """The same for a user's submission: a small one committed in place or on a thread, as
    ``[node] small_work`` says; a large one always on a thread."""
    handed_over = count_hand_offs(monkeypatch)
    monkeypatch.setattr(node, "config", dataclasses.replace(node.config, small_work=small_work))
    intake = SubmissionIntake(node, lambda: None)
    connection = Connection(("127.0.0.1", 2587))
    for size in (READ_WHOLE, READ_WHOLE + 1):
        envelope = Envelope()
        envelope.mail_from = RECIPIENT
        envelope.rcpt_tos = ["ali.yilmaz@hs01.kep.tr"]
        sink = intake.open_sink(connection, envelope)
        assert isinstance(sink, SpoolWriter)
        sink.write(b"x" * size)
        assert asyncio.run(intake.finish(connection, envelope, sink)).code == 250
    assert handed_over == [*small_hand_offs, "_commit"]
    assert [row.kind for row in node.store.messages()] == [Kind.SUBMISSION] * 2


def test_after_a_restart_the_envelope_is_read_again_to_the_same_outcome(
    pki: DevPki, node: NodeContext, parses: list[int], handed: list[bool], tmp_path: Path
) -> None:
    queue_id = _accept(node, make_dispatch(pki, recipients=(RECIPIENT,)).dispatch)
    node.store.close()
    restarted = _context(pki, tmp_path)  # a new process: the reading died with the old one
    try:
        row, issued = _process(restarted, queue_id, later=READER_FIRST)
    finally:
        restarted.store.close()
    assert parses == [1]
    assert handed == [False]
    assert row.state is State.PROCESSED and issued == ACCEPTED


def _flip_in_original(context: NodeContext, queue_id: str, *, in_place: bool = False) -> None:
    """Change a byte of the original in the spool file: in place, or (as an editor does) in
    a new file renamed over it."""
    path = context.spool.path(queue_id)
    data = bytearray(path.read_bytes())
    original = parse_envelope(io.BytesIO(bytes(data))).original
    assert original is not None
    data[original.start + original.size // 2] ^= 0x01
    if in_place:
        with path.open("r+b") as file:
            file.write(data)
    else:
        aside = path.with_suffix(".new")
        aside.write_bytes(bytes(data))
        aside.replace(path)


def test_a_file_changed_since_intake_is_read_again_and_refused(
    pki: DevPki, node: NodeContext, parses: list[int]
) -> None:
    # A spool file, as a large message has (or a small one an earlier release wrote).
    queue_id = _accept(node, make_dispatch(pki, recipients=(RECIPIENT,)).dispatch, keep=0)
    _flip_in_original(node, queue_id)
    row, issued = _process(node, queue_id)
    assert parses == [1]  # not the file intake read: read anew
    assert row.state is State.PROCESSED and issued == REJECTED


def test_a_change_that_hides_from_the_identity_still_fails_the_signatures(
    pki: DevPki, node: NodeContext, parses: list[int]
) -> None:
    # Someone with the disk changes the file and puts its modification time back: the reading
    # is used, but the signed bytes are hashed from the file, so the Dispatch is refused.
    queue_id = _accept(node, make_dispatch(pki, recipients=(RECIPIENT,)).dispatch, keep=0)
    path = node.spool.path(queue_id)
    before = path.stat()
    _flip_in_original(node, queue_id, in_place=True)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    with path.open("rb") as stream:  # the same file, as far as its identity tells
        assert FileIdentity.of(stream) == FileIdentity(
            before.st_dev, before.st_ino, before.st_size, before.st_mtime_ns
        )
    row, issued = _process(node, queue_id)
    assert parses == []
    assert row.state is State.PROCESSED and issued == REJECTED


# -- the bounds ------------------------------------------------------------------------------


def _reading(pki: DevPki, tmp_path: Path) -> Reading:
    path = tmp_path / "d.eml"
    path.write_bytes(make_dispatch(pki).dispatch)
    with path.open("rb") as stream:
        envelope = parse_envelope(stream)
        return Reading(envelope, xmlio.read(envelope.evidence_xml), FileIdentity.of(stream))


def test_readings_hold_at_most_their_bytes_and_never_push_out_a_younger_one(
    pki: DevPki, tmp_path: Path
) -> None:
    reading = _reading(pki, tmp_path)
    readings = Readings(kept_bytes=2 * reading.weight, kept_for=60)
    assert readings.keep("a", reading, now=0)
    assert readings.keep("b", reading, now=1)
    assert not readings.keep("c", reading, now=2)  # full: a and b are claimed first
    assert readings.take("c", now=3) is None
    assert readings.take("a", now=3) is reading
    assert readings.take("a", now=3) is None  # taken once
    assert readings.keep("c", reading, now=4)


def test_readings_go_when_they_are_old(pki: DevPki, tmp_path: Path) -> None:
    reading = _reading(pki, tmp_path)
    readings = Readings(kept_bytes=2 * reading.weight, kept_for=60)
    readings.keep("a", reading, now=0)  # say, of a message another node process claimed
    readings.keep("b", reading, now=30)
    assert readings.take("b", now=91) is None  # too old to trust it was made moments ago
    assert readings.keep("c", reading, now=100)  # a went to make room
    assert len(readings) == 1


def test_a_reading_describes_only_its_own_file_unchanged(pki: DevPki, tmp_path: Path) -> None:
    reading = _reading(pki, tmp_path)
    path = tmp_path / "d.eml"
    with path.open("rb") as stream:
        assert reading.describes(stream)
    other = tmp_path / "copy.eml"
    other.write_bytes(path.read_bytes())
    with other.open("rb") as stream:
        assert not reading.describes(stream)  # the same bytes, another file
    with path.open("ab") as grow:
        grow.write(b"\r\n")
    with path.open("rb") as stream:
        assert not reading.describes(stream)
    assert not reading.describes(io.BytesIO(path.read_bytes()))  # not a file at all
    assert not reading.describes_held(path.read_bytes())  # of a file, not of bytes held


def test_a_reading_of_bytes_held_describes_only_those_bytes(pki: DevPki, tmp_path: Path) -> None:
    data = make_dispatch(pki).dispatch
    envelope = parse_envelope(io.BytesIO(data))
    reading = Reading(envelope, xmlio.read(envelope.evidence_xml), HeldIdentity.of(data))
    assert reading.describes_held(data)
    assert not reading.describes_held(data[:-1] + bytes([data[-1] ^ 1]))
    path = tmp_path / "d.eml"
    path.write_bytes(data)
    with path.open("rb") as stream:
        assert not reading.describes(stream)  # the same bytes, but a file
