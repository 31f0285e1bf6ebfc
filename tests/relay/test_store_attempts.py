"""The attempts history (migration 5) and the read-only queries of one message's story
(``relay.store.attempts``, ``relay.store.status``, ``relay.story``), on SQLite and on a real
PostgreSQL (``store_url``); and the queue manager writing an attempt with each outcome, in the
outcome's own transaction."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from interop.evidence import xmlio
from interop.evidence.codes import Event, EvidenceType
from interop.evidence.issue import follow_up, submission_evidence
from interop.evidence.model import EventReason
from interop.pki.devpki import DevPki
from interop.providers import BUILTIN_DIRECTORY
from interop.reasons import Reason
from relay.config_file import from_mapping
from relay.context import build_context
from relay.issuing import record, sign
from relay.keys import write_pki
from relay.lifecycle import Kind, State, Superseded
from relay.stages import outbound
from relay.store import Store, schema
from relay.store.attempts import ATTEMPTS_KEPT, REPLY_KEPT
from relay.store.database import SqliteDatabase
from relay.store.reader import StoreReader
from relay.story import story, story_json, summaries
from relay.transport.base import Entry, Outcome, Result
from tests.helpers import NOW

T0 = 2_000_000_000.0
REMMD = "q1@hs01.kep.tr"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def _message(
    store: Store,
    id: str,
    kind: Kind,
    state: State,
    *,
    peer: str | None = "hs02",
    remmd_id: str | None = REMMD,
    mail_from: str = "ali.yilmaz@hs01.kep.tr",
    rcpt_to: tuple[str, ...] = ("ayse.demir@hs02.kep.tr",),
) -> None:
    with store.transaction() as db:
        store.add_message(
            db, id=id, kind=kind, peer=peer, remmd_id=remmd_id, mail_from=mail_from,
            rcpt_to=rcpt_to, size=1, sha256="00", state=state,
        )  # fmt: skip


def _evidence(
    store: Store, type_: EvidenceType, event: Event, *, reasons: tuple[EventReason, ...] = ()
) -> str:
    """Evidence about REMMD as the store keeps it (unsigned XML: the story reads its reasons)."""
    submission = submission_evidence(
        io.BytesIO(b"Subject: x\r\n\r\nx\r\n"),
        BUILTIN_DIRECTORY["hs01"],
        "ali.yilmaz@hs01.kep.tr",
        ["ayse.demir@hs02.kep.tr"],
        REMMD,
        NOW,
    )
    evidence = (
        submission
        if type_ is EvidenceType.SubmissionAcceptanceRejection
        else follow_up(
            submission, BUILTIN_DIRECTORY["hs01"], type_, event, NOW, recipient=1, reasons=reasons
        )
    )
    with store.transaction() as db:
        store.add_evidence(
            db, id=evidence.identifier, direction="issued", remmd_id=REMMD,
            type=type_.value, event=event.value, recipient=evidence.recipient,
            sender=evidence.sender, issuer=evidence.issuer, xml=xmlio.to_bytes(evidence),
            message_id="q1",
        )  # fmt: skip
    return evidence.identifier


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = Store(store_url, clock=Clock())
    yield opened
    opened.close()


def _attempt(store: Store, message_id: str, outcome: str, reply: str, host: str | None) -> None:
    row = store.message(message_id)
    assert row is not None
    with store.transaction() as db:
        store.add_attempt(db, row, outcome=outcome, reply=reply, host=host)


def test_attempts_are_numbered_per_message_and_only_the_last_are_kept(store: Store) -> None:
    _message(store, "d1", Kind.DISPATCH_OUT, State.QUEUED)
    _message(store, "d2", Kind.DISPATCH_OUT, State.QUEUED, peer="hs03")
    clock = store.clock
    assert isinstance(clock, Clock)
    for n in range(1, ATTEMPTS_KEPT + 4):
        clock.now = T0 + n
        _attempt(store, "d1", "deferred", f"421 4.3.2 busy {n}", "127.0.0.1:2625")
    _attempt(store, "d2", "failed", "550 " + "x" * 2000, None)
    with StoreReader(store.url) as reader:
        one, two = reader.attempts_of(["d1"]), reader.attempts_of(["d2"])
    # The oldest three were overwritten in place; the rest in time order, numbered on.
    assert [a.number for a in one] == list(range(4, ATTEMPTS_KEPT + 4))
    assert [a.attempted for a in one] == [T0 + n for n in range(4, ATTEMPTS_KEPT + 4)]
    assert one[-1].reply == f"421 4.3.2 busy {ATTEMPTS_KEPT + 3}"
    assert {(a.outcome, a.host) for a in one} == {("deferred", "127.0.0.1:2625")}
    # Another message's history is its own, from 1; a long reply is cut.
    [only] = two
    assert (only.number, only.outcome, only.host) == (1, "failed", None)
    assert len(only.reply) == REPLY_KEPT


def test_an_attempt_is_recorded_only_with_its_outcome(store: Store) -> None:
    """The attempt is written in the transaction that moves the message: a claim taken over
    meanwhile (Superseded) leaves neither."""
    _message(store, "d1", Kind.DISPATCH_OUT, State.QUEUED)
    [stale] = store.claim_due("node-a/1", T0 + 1, 60.0)
    clock = store.clock
    assert isinstance(clock, Clock)
    clock.now = T0 + 120
    store.recover()  # the lease ran out: back in the queue, the fence moved on
    with pytest.raises(Superseded), store.transaction() as db:
        store.move(db, stale, State.SENT, attempts=1, last_reply="250 ok")
        store.add_attempt(db, stale, outcome="sent", reply="250 ok", host=None)
    with StoreReader(store.url) as reader:
        assert reader.attempts_of(["d1"]) == []


def test_the_story_of_a_remmd_id_across_its_rows(store: Store) -> None:
    clock = store.clock
    assert isinstance(clock, Clock)
    _message(store, "q1", Kind.SUBMISSION, State.PROCESSED, peer=None)
    clock.now += 1
    _message(store, "d1", Kind.DISPATCH_OUT, State.QUEUED)
    _message(store, "e9", Kind.EVIDENCE_IN, State.PROCESSED, remmd_id="other@hs01.kep.tr")
    _evidence(store, EvidenceType.SubmissionAcceptanceRejection, Event.Acceptance)
    failure = _evidence(
        store,
        EvidenceType.RelayREMMDFailure,
        Event.DeliveryExpiration,
        reasons=(EventReason(Reason.R_REMMD_Unreachable, "hs02 did not answer"),),
    )
    with store.transaction() as db:
        store.set_timer(db, "d1", REMMD, "hs02", relay_deadline=T0 + 3600)
        store.set_timer(db, "dx", REMMD, "hs03", evidence_deadline=T0 + 60)
        store.stop_timer(db, REMMD, "hs03")
    _attempt(store, "d1", "deferred", "ConnectionError: no gateway of hs02 answered", None)
    with StoreReader(store.url) as reader:
        by_remmd = story(reader, REMMD, T0 + 600)
        by_queue_id = story(reader, "d1", T0 + 600)
        assert story(reader, "nothing@hs01.kep.tr", T0) is None
    assert by_remmd is not None and by_queue_id is not None
    assert [(m.id, m.kind, m.state) for m in by_remmd.messages] == [
        ("q1", Kind.SUBMISSION, State.PROCESSED),
        ("d1", Kind.DISPATCH_OUT, State.QUEUED),
    ]
    assert by_queue_id.remmd_id == REMMD and by_queue_id.messages == by_remmd.messages
    assert [(e.stored.type, e.stored.event) for e in by_remmd.evidence] == [
        ("SubmissionAcceptanceRejection", "Acceptance"),
        ("RelayREMMDFailure", "DeliveryExpiration"),
    ]
    [with_reason] = [e for e in by_remmd.evidence if e.stored.id == failure]
    assert [(r.name, r.details) for r in with_reason.reasons] == [
        ("R_REMMD_Unreachable", "hs02 did not answer")
    ]
    # Only the running timer (hs03's stopped), with its time left.
    [deadline] = by_remmd.deadlines
    assert (deadline.dispatch_id, deadline.which, deadline.at) == ("d1", "relay", T0 + 3600)
    shape = story_json(by_remmd)
    assert shape["timers"] == [
        {
            "dispatch_id": "d1",
            "peer": "hs02",
            "timer": "relay",
            "deadline": "2033-05-18T04:33:20.000Z",
            "left_seconds": 3000.0,
        }
    ]
    [attempt] = shape["attempts"]
    assert (attempt["message_id"], attempt["peer"], attempt["outcome"]) == (
        "d1",
        "hs02",
        "deferred",
    )


def test_an_accounts_messages_newest_first(store: Store) -> None:
    clock = store.clock
    assert isinstance(clock, Clock)
    # Sent by the account, received from a peer, received from a user of this provider.
    _message(store, "s1", Kind.SUBMISSION, State.PROCESSED, peer=None, remmd_id="s1@hs01.kep.tr")
    clock.now += 1
    _message(
        store, "r1", Kind.DISPATCH_IN, State.PROCESSED, peer="hs02", remmd_id="r1@hs02.kep.tr",
        mail_from="ayse.demir@hs02.kep.tr", rcpt_to=("x@hs01.kep.tr", "Ali.Yilmaz@hs01.kep.tr"),
    )  # fmt: skip
    clock.now += 1
    _message(
        store, "s2", Kind.SUBMISSION, State.PROCESSED, peer=None, remmd_id="s2@hs01.kep.tr",
        mail_from="veli@hs01.kep.tr", rcpt_to=("ali.yilmaz@hs01.kep.tr",),
    )  # fmt: skip
    # Not the account's: "_" and "%" in an address are not wildcards; Dispatches out and
    # Evidence messages are rows of a message already listed.
    clock.now += 1
    _message(
        store, "n1", Kind.DISPATCH_IN, State.PROCESSED, remmd_id="n1@hs02.kep.tr",
        mail_from="b@hs02.kep.tr", rcpt_to=("aliXyilmaz@hs01.kep.tr",),
    )  # fmt: skip
    _message(store, "n2", Kind.DISPATCH_OUT, State.SENT, remmd_id="s1@hs01.kep.tr")
    with StoreReader(store.url) as reader:
        found = summaries(reader, "ALI.YILMAZ@hs01.kep.tr", 10)
        newest = summaries(reader, "ali.yilmaz@hs01.kep.tr", 1)
        wildcard = summaries(reader, "ali_yilmaz@hs01.kep.tr", 10)
    assert [(f.message.id, f.direction) for f in found] == [
        ("s2", "received"),
        ("r1", "received"),
        ("s1", "sent"),
    ]
    assert [f.message.id for f in newest] == ["s2"]
    assert wildcard == []


def test_a_store_before_the_attempts_history_gains_it(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Migration 5 on a store of the release before; a reader of a store not yet migrated (a
    node not started since the upgrade) shows no attempts instead of failing."""
    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:4])
    monkeypatch.setattr(schema, "VERSION", 4)
    old = Store(store_url, clock=Clock())
    _message(old, "d1", Kind.DISPATCH_OUT, State.QUEUED)
    old.close()
    monkeypatch.undo()
    with StoreReader(store_url) as reader:
        found = story(reader, REMMD, T0)
        assert found is not None and found.attempts == ()
    new = Store(store_url, clock=Clock())
    try:
        _attempt(new, "d1", "deferred", "451 4.3.0 try later", "127.0.0.1:1")
        with new.database.read() as db:
            versions = [int(r[0]) for r in db.execute("SELECT version FROM schema_version")]
        assert versions == list(range(1, schema.VERSION + 1))
        with StoreReader(store_url) as reader:
            assert [a.reply for a in reader.attempts_of(["d1"])] == ["451 4.3.0 try later"]
    finally:
        new.close()


# -- the queue manager records each attempt with its outcome --------------------------------


class Replies:
    """A transport double answering each message with its result in ``results``."""

    def __init__(self, results: dict[str, Result]) -> None:
        self.results = results

    async def send(self, entry: Entry) -> Result:
        return self.results[entry.queue_id]

    async def close(self) -> None:
        return None


class NodeClock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def test_the_queue_manager_records_every_outcome(pki: DevPki, tmp_path: Path) -> None:
    """Deferred, then refused (5xx: RelayREMMDFailure) for a Dispatch; deferred past its
    lifetime (given up) for an Evidence message: each attempt with the peer's reply."""
    write_pki(pki, tmp_path / "pki")
    config = from_mapping(
        {
            "node": {"provider": "hs01", "dev_pki": "pki", "data_dir": "data"},
            "timers": {"retry_initial": "1s", "retry_max": "1s", "evidence_lifetime": "1h"},
        },
        "t",
        tmp_path,
    )
    clock = NodeClock(pki.created + dt.timedelta(minutes=1))
    context = build_context(config, clock=clock)
    store = context.store
    submission = sign(
        context,
        submission_evidence(
            io.BytesIO(b"Subject: x\r\n\r\nx\r\n"), context.provider, "ali.yilmaz@hs01.kep.tr",
            ["ayse.demir@hs02.kep.tr"], REMMD, clock(),
        ),
    )  # fmt: skip
    for id_, kind in (("d1", Kind.DISPATCH_OUT), ("e1", Kind.EVIDENCE_OUT)):
        context.spool.path(id_).parent.mkdir(parents=True, exist_ok=True)
        context.spool.path(id_).write_bytes(b"x")
        _message(store, id_, kind, State.QUEUED)
    with store.transaction() as db:
        record(context, db, submission, direction="issued", message_id="d1")
    later = Result(Outcome.TEMPORARY, "421 4.3.2 busy", 421, host="127.0.0.1:2625")
    assert asyncio.run(outbound.send_due(context, Replies({"d1": later, "e1": later}))) == 2
    clock.now += dt.timedelta(hours=2)  # past the Evidence message's lifetime
    refused = Result(Outcome.PERMANENT, "554 5.6.0 no", 554, host="127.0.0.1:2625")
    gone = Result(Outcome.TEMPORARY, "ConnectionRefusedError: refused")
    assert asyncio.run(outbound.send_due(context, Replies({"d1": refused, "e1": gone}))) == 2
    d1, e1 = store.message("d1"), store.message("e1")
    assert d1 is not None and d1.state is State.FAILED
    assert e1 is not None and e1.state is State.EXPIRED
    with StoreReader(store.url) as reader:
        found = {
            m: [(a.number, a.outcome, a.reply, a.host) for a in reader.attempts_of([m])]
            for m in ("d1", "e1")
        }
    assert found == {
        "d1": [
            (1, "deferred", "421 4.3.2 busy", "127.0.0.1:2625"),
            (2, "failed", "554 5.6.0 no", "127.0.0.1:2625"),
        ],
        "e1": [
            (1, "deferred", "421 4.3.2 busy", "127.0.0.1:2625"),
            (2, "deferred", "ConnectionRefusedError: refused", None),
        ],
    }
    assert [e["type"] for e in store.evidence_of_message("d1")] == [
        "SubmissionAcceptanceRejection",
        "RelayREMMDFailure",
    ]
    store.close()


def test_the_story_reads_through_indexes(tmp_path: Path) -> None:
    """Every query of a message's story, and the attempt's insert on the send path, is a
    search of an index whatever the store holds (SQLite plans without statistics); only an
    account's listing reads the messages table through."""
    store = Store(tmp_path / "state.sqlite3", clock=Clock())
    _message(store, "d1", Kind.DISPATCH_OUT, State.QUEUED)
    assert isinstance(store.database, SqliteDatabase)
    writes: list[str] = []
    store.database.db.set_trace_callback(writes.append)
    _attempt(store, "d1", "sent", "250 ok", None)
    store.database.db.set_trace_callback(None)
    store.close()
    with StoreReader(f"sqlite:///{tmp_path / 'state.sqlite3'}") as reader:
        assert isinstance(reader.db, sqlite3.Connection)
        reads: list[str] = []
        reader.db.set_trace_callback(reads.append)
        assert story(reader, "d1", T0) is not None
        summaries(reader, "ali.yilmaz@hs01.kep.tr", 5)
        reader.db.set_trace_callback(None)
        queries = [s for s in (*writes, *reads) if s.startswith(("SELECT", "INSERT"))]
        scanning = {}
        for query in queries:
            plan = [str(r[3]) for r in reader.db.execute(f"EXPLAIN QUERY PLAN {query}")]
            scanning[query] = [step for step in plan if step.startswith("SCAN")]
    tables = " ".join(queries)
    assert all(f" {t} " in tables for t in ("attempts", "evidence", "timers", "messages"))
    # The account's listing scans (and the store's version, a table of a few rows); no
    # query of one message's story and not the attempt's insert.
    listing = next(q for q in queries if "lower(mail_from)" in q)
    assert scanning[listing] == ["SCAN messages"]
    assert not [q for q, p in scanning.items() if p and q != listing and "schema_version" not in q]
