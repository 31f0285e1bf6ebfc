"""Issuing Evidence messages (relay/issuing.py): held in the store with their queue rows, not
written as files; removed with the rest of a message's content (§7) and made again from the
ledger for a resend; one an earlier release spooled is still sent from its file."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from interop.envelope.parse import parse_envelope
from interop.evidence import xmlio
from interop.evidence.codes import Event, EvidenceType
from interop.evidence.issue import follow_up
from interop.pki.devpki import DevPki
from interop.providers import BUILTIN_DIRECTORY
from relay import spool
from relay.config_file import from_mapping
from relay.context import NodeContext, build_context
from relay.issuing import Outgoing, queue, write_messages
from relay.keys import write_pki
from relay.lifecycle import Kind, State
from relay.stages import outbound
from tests.helpers import NOW, make_dispatch


@pytest.fixture
def context(pki: DevPki, tmp_path: Path) -> Iterator[NodeContext]:
    write_pki(pki, tmp_path / "pki")
    config = from_mapping(
        {"node": {"provider": "hs02", "dev_pki": "pki", "data_dir": "data"}}, "t", tmp_path
    )
    context = build_context(config)
    yield context
    context.store.close()


def _write(context: NodeContext, pki: DevPki, parent: str = "d1") -> list[Outgoing]:
    """A Dispatch's two Evidence messages, queued and recorded as R-GW does (rgw.send_back)."""
    about = make_dispatch(pki).submission
    evidence = [
        follow_up(about, BUILTIN_DIRECTORY["hs02"], kind, event, NOW, recipient=1)
        for kind, event in (
            (EvidenceType.RelayREMMDAcceptanceRejection, Event.Acceptance),
            (EvidenceType.DeliveryNonDeliveryToRecipient, Event.Delivery),
        )
    ]
    outgoing = write_messages(context, evidence, "hs01", dispatch_message_id="<d@hs01.kep.tr>")
    with context.store.transaction() as db:
        for message in outgoing:
            queue(context, db, message, parent=parent)
    return outgoing


def _evidence_in(message: bytes) -> bytes:
    return parse_envelope(io.BytesIO(message)).evidence_xml


def test_a_dispatchs_evidence_messages_are_held_with_their_rows_not_filed(
    context: NodeContext, pki: DevPki, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[Path] = []
    monkeypatch.setattr(spool, "fsync_dir", synced.append)
    outgoing = _write(context, pki)
    assert len(outgoing) == 2
    # No file made, nothing synced: the bytes went into the store with the queue rows.
    assert synced == []
    assert list(context.spool.msg_dir.iterdir()) == []
    assert list(context.spool.tmp_dir.iterdir()) == []
    for message in outgoing:
        held = context.store.content(message.queue_id)
        assert held == message.content
        row = context.store.message(message.queue_id)
        assert row is not None and row.kind is Kind.EVIDENCE_OUT and row.state is State.QUEUED
        assert (row.size, row.sha256) == (len(held), hashlib.sha256(held).hexdigest())
        assert _evidence_in(held) == message.issued.xml
        # What the transport is handed is these bytes, from memory.
        entry = outbound._entry(context, row)
        assert (entry.content, entry.size) == (held, len(held))


def test_removed_with_the_content_and_made_again_for_a_resend(
    context: NodeContext, pki: DevPki
) -> None:
    """§7: once sent, the bytes go (``content_removed``, the retention sweep); a repeated
    Dispatch asks for the evidence again (§2): the same signed evidence in a new envelope,
    held again."""
    first, _ = _write(context, pki)
    context.store.content_removed([first.queue_id])
    assert context.store.content(first.queue_id) is None
    row = context.store.message(first.queue_id)
    assert row is not None
    entry = outbound._entry(context, row)
    assert entry.content is not None
    assert _evidence_in(entry.content) == first.issued.xml
    assert context.store.content(first.queue_id) == entry.content
    again = context.store.message(first.queue_id)
    assert again is not None and again.size == len(entry.content)
    assert list(context.spool.msg_dir.iterdir()) == []


def test_one_an_earlier_release_spooled_is_sent_from_its_file(
    context: NodeContext, pki: DevPki
) -> None:
    """Queued before the upgrade: its bytes in a spool file, none in the store."""
    first, _ = _write(context, pki)
    with context.store.transaction() as db:
        db.execute("DELETE FROM contents WHERE message_id = ?", (first.queue_id,))
    context.spool.write_bytes(first.content, first.queue_id)
    row = context.store.message(first.queue_id)
    assert row is not None
    entry = outbound._entry(context, row)
    assert entry.content == first.content and entry.path == context.spool.path(first.queue_id)
    evidence = xmlio.parse(_evidence_in(first.content))
    assert evidence.type is EvidenceType.RelayREMMDAcceptanceRejection
