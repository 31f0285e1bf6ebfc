"""The lifecycle table is the one truth: the docs draw it, the store enforces it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from relay.lifecycle import MOVES, IllegalMove, Kind, State
from relay.store import Store

DOCS = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"


def _section() -> str:
    text = DOCS.read_text(encoding="utf-8")
    return text[text.index("## The life of a message") : text.index("## Where each profile rule")]


def test_the_docs_table_is_the_code_table() -> None:
    documented = {
        (Kind(k), State(f), State(t))
        for k, f, t in re.findall(
            r"^\| `([a-z-]+)` \| `([a-z]+)` \| `([a-z]+)` \|", _section(), re.M
        )
    }
    assert documented == set(MOVES)


def test_the_docs_diagram_is_the_code_table() -> None:
    drawn = set()
    for source, target, kinds in re.findall(r"^    ([a-z]+) --> ([a-z]+): (.+)$", _section(), re.M):
        drawn |= {(Kind(k.strip()), State(source), State(target)) for k in kinds.split(",")}
    assert drawn == set(MOVES)


def test_every_kind_and_state_has_a_way_in_and_every_move_a_reason() -> None:
    for kind in Kind:
        assert any(k is kind for k, _f, _t in MOVES), kind
    reached = {t for _k, _f, t in MOVES} | {State.RECEIVED, State.QUEUED}
    assert reached == set(State)
    assert all(why for why in MOVES.values())


@pytest.fixture
def store(store_url: str) -> Store:
    return Store(store_url, clock=lambda: 1000.0)


def _add(store: Store, kind: Kind, state: State) -> None:
    with store.transaction() as db:
        store.add_message(
            db, id="m1", kind=kind, peer="hs02", remmd_id="r@hs01.kep.tr",
            mail_from="a@hs01.kep.tr", rcpt_to=["b@hs02.kep.tr"], size=1, sha256="00",
            state=state,
        )  # fmt: skip


def test_the_store_moves_only_along_the_table(store: Store) -> None:
    _add(store, Kind.DISPATCH_OUT, State.QUEUED)
    row = store.message("m1")
    assert row is not None
    with store.transaction() as db:
        store.move(db, row, State.SENDING)
    # Not in the table for any message of this kind: refused before any change.
    with pytest.raises(IllegalMove, match="never moves to processed"), store.transaction() as db:
        store.move(db, row, State.PROCESSED)
    # In the table, but not from where the message is now: refused, nothing changed.
    with pytest.raises(IllegalMove, match="from sending"), store.transaction() as db:
        store.move(db, row, State.EXPIRED)
    moved = store.message("m1")
    assert moved is not None and moved.state is State.SENDING and moved.kind is Kind.DISPATCH_OUT
    with store.transaction() as db:
        store.move(db, row, State.SENT, last_reply="250 ok")
    sent = store.message("m1")
    assert sent is not None and sent.state is State.SENT and sent.last_reply == "250 ok"
    store.close()


def test_recovery_puts_what_was_on_the_wire_back_in_the_queue(store: Store) -> None:
    _add(store, Kind.EVIDENCE_OUT, State.SENDING)
    assert store.recover() == 1
    again = store.message("m1")
    assert again is not None and again.state is State.QUEUED
    store.close()
