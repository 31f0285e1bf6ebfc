"""Messages whose processing keeps failing are put aside with evidence, never retried for ever;
trouble of the machine (a full disk) retries without counting against the message."""

from __future__ import annotations

import errno
import io
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from interop.envelope.parse import parse_envelope
from interop.errors import EnvelopeFormatError
from interop.evidence import xmlio
from interop.evidence.codes import Event, EvidenceType
from interop.pki.devpki import DevPki
from interop.reasons import Reason
from relay.config_file import from_mapping
from relay.context import NodeContext, build_context
from relay.keys import write_pki
from relay.lifecycle import Kind, State
from relay.node import processing_failed
from relay.store import MessageRow
from tests.helpers import make_dispatch

MAX = 3


@pytest.fixture
def context(pki: DevPki, tmp_path: Path) -> Iterator[NodeContext]:
    write_pki(pki, tmp_path / "pki")
    config = from_mapping(
        {
            "node": {"provider": "hs02", "dev_pki": "pki", "data_dir": "data"},
            "limits": {"max_processing_attempts": MAX},
            "timers": {"retry_initial": "1s", "retry_max": "1s"},
        },
        "t",
        tmp_path,
    )
    built = build_context(config, clock=lambda: pki.created)
    yield built
    built.store.close()


def _received(context: NodeContext, kind: Kind, data: bytes, rcpt: str) -> MessageRow:
    queue_id, _path = context.spool.write_bytes(data)
    with context.store.transaction() as db:
        context.store.add_message(
            db,
            id=queue_id,
            kind=kind,
            peer="hs01" if kind is Kind.DISPATCH_IN else None,
            remmd_id="rem-poison@hs01.kep.tr",
            mail_from="ali.yilmaz@hs01.kep.tr",
            rcpt_to=[rcpt],
            size=len(data),
            sha256="0" * 64,
            state=State.RECEIVED,
        )
    row = context.store.message(queue_id)
    assert row is not None
    return row


def _fail(context: NodeContext, row: MessageRow, exc: Exception, times: int) -> MessageRow:
    for _ in range(times):
        current = context.store.message(row.id)
        assert current is not None
        processing_failed(context, current, exc)
    final = context.store.message(row.id)
    assert final is not None
    return final


def _due(context: NodeContext, at: float) -> list[MessageRow]:
    """What a node would claim for processing at ``at`` (claimed, then released)."""
    claimed = context.store.claim_received("test/1", at, lease=60)
    for claim in claimed:
        context.store.release(claim)
    return claimed


def _metric(context: NodeContext, **labels: str) -> float:
    value = context.metrics.registry.get_sample_value("kep_messages_quarantined_total", labels)
    return value or 0.0


def test_a_dispatch_that_keeps_failing_is_put_aside_with_rejection_evidence(
    pki: DevPki, context: NodeContext
) -> None:
    exchange = make_dispatch(pki, recipients=("ayse.demir@hs02.kep.tr",))
    row = _received(context, Kind.DISPATCH_IN, exchange.dispatch, "ayse.demir@hs02.kep.tr")
    bug = KeyError("a reader bug")
    assert _fail(context, row, bug, MAX - 1).state is State.RECEIVED
    # Not retried at once: it waits its back-off.
    assert row.id not in {r.id for r in _due(context, context.now())}
    assert row.id in {r.id for r in _due(context, context.now() + 5)}
    assert _fail(context, row, bug, 1).state is State.QUARANTINED
    assert row.id not in {r.id for r in _due(context, context.now() + 3600)}
    # The S-GW hears: Rejection for its recipient, queued back to hs01, in the ledger.
    out = context.store.messages(kind=Kind.EVIDENCE_OUT)
    assert [(m.peer, m.state, m.parent) for m in out] == [("hs01", State.QUEUED, row.id)]
    with io.BytesIO(context.store.content(out[0].id) or b"") as stream:
        envelope = parse_envelope(stream)
    evidence = xmlio.parse(envelope.evidence_xml)
    assert evidence.type is EvidenceType.RelayREMMDAcceptanceRejection
    assert evidence.event is Event.Rejection
    assert evidence.reasons[0].reason is Reason.TechnicalMalfunction
    assert "KeyError" not in evidence.reasons[0].details  # no internals for the peer
    assert context.store.verify_ledger() == (1, None)
    assert _metric(context, kind="dispatch-in", reason="TechnicalMalfunction") == 1


def test_malformed_input_is_put_aside_at_once_with_its_reason(
    pki: DevPki, context: NodeContext
) -> None:
    exchange = make_dispatch(pki, recipients=("ayse.demir@hs02.kep.tr",))
    row = _received(context, Kind.DISPATCH_IN, exchange.dispatch, "ayse.demir@hs02.kep.tr")
    bad = EnvelopeFormatError("Content-Type 'text/plain; x*' is malformed")
    assert _fail(context, row, bad, 1).state is State.QUARANTINED
    out = context.store.messages(kind=Kind.EVIDENCE_OUT)
    with io.BytesIO(context.store.content(out[0].id) or b"") as stream:
        evidence = xmlio.parse(parse_envelope(stream).evidence_xml)
    assert evidence.reasons[0].reason is Reason.InvalidMessageFormat
    assert "x*" in evidence.reasons[0].details


@pytest.mark.parametrize(
    "trouble",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        sqlite3.OperationalError("database or disk is full"),
    ],
)
def test_trouble_of_the_machine_never_puts_a_message_aside(
    pki: DevPki, context: NodeContext, trouble: Exception
) -> None:
    exchange = make_dispatch(pki, recipients=("ayse.demir@hs02.kep.tr",))
    row = _received(context, Kind.DISPATCH_IN, exchange.dispatch, "ayse.demir@hs02.kep.tr")
    after = _fail(context, row, trouble, MAX * 3)
    assert (after.state, after.attempts) == (State.RECEIVED, 0)
    assert after.next_attempt is not None  # but it waits before the next try
    assert context.store.messages(kind=Kind.EVIDENCE_OUT) == []


def test_a_submission_that_keeps_failing_gets_rejection_in_delil(
    pki: DevPki, tmp_path: Path
) -> None:
    write_pki(pki, tmp_path / "pki")
    config = from_mapping(
        {
            "node": {"provider": "hs01", "dev_pki": "pki", "data_dir": "data"},
            "limits": {"max_processing_attempts": 1},
        },
        "t",
        tmp_path,
    )
    context = build_context(config, clock=lambda: pki.created)
    original = make_dispatch(pki).original
    row = _received(context, Kind.SUBMISSION, original, "ayse.demir@hs02.kep.tr")
    assert _fail(context, row, ValueError("bug"), 1).state is State.QUARANTINED
    filed = context.mailboxes.list("ali.yilmaz@hs01.kep.tr", "Delil")
    assert len(filed) == 1
    with filed[0][0].open("rb") as stream:
        evidence = xmlio.parse(parse_envelope(io.BytesIO(stream.read())).evidence_xml)
    assert evidence.type is EvidenceType.SubmissionAcceptanceRejection
    assert evidence.event is Event.Rejection
    assert evidence.reasons[0].reason is Reason.TechnicalMalfunction
    assert context.mailboxes.list("ali.yilmaz@hs01.kep.tr", "Sent") == []
    context.store.close()


def test_evidence_from_a_peer_is_only_held(pki: DevPki, context: NodeContext) -> None:
    row = _received(
        context, Kind.EVIDENCE_IN, b"Subject: x\r\n\r\nnot evidence\r\n", "a@hs02.kep.tr"
    )
    assert _fail(context, row, RuntimeError("bug"), MAX).state is State.QUARANTINED
    assert context.store.messages(kind=Kind.EVIDENCE_OUT) == []
    assert _metric(context, kind="evidence-in", reason="TechnicalMalfunction") == 1
