"""``kep-relay queue`` against running nodes: hs01 sends to hs02 while hs02 is down (the route
leads nowhere, as with a dead route), so Dispatches wait in hs01's queue with an hour's
back-off; the operator lists them, shapes them, holds, retries, releases, deletes and
requeues, while hs01 runs. The store-level rules of each move are in test_queue_moves.py."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from interop.envelope.parse import parse_envelope
from interop.evidence import xmlio
from interop.evidence.codes import EvidenceType
from interop.reasons import Reason
from relay.lifecycle import State
from relay.store import Store
from tests.relay.gateways import (
    Gateway,
    Mesh,
    make_mesh,
    remmd_of_subject,
    send,
    subject,
    wait_evidence,
    wait_for,
)

SENDER, RECIPIENT = "ali.yilmaz@hs01.kep.tr", "ayse.demir@hs02.kep.tr"
BACKOFF = 3600.0  # retry_initial and retry_max: a Dispatch that failed once waits an hour


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    root = tmp_path_factory.mktemp("queue")
    built = make_mesh(root, ["hs01", "hs02"], timers={"retry_initial": "1h", "retry_max": "1h"})
    built["hs01"].start()
    yield built
    built.stop()


def _down(mesh: Mesh) -> None:
    if mesh["hs02"].process is not None:
        mesh["hs02"].stop()


def _up(mesh: Mesh) -> None:
    if mesh["hs02"].process is None:
        mesh["hs02"].start()


def _row(gateway: Gateway, queue_id: str) -> dict[str, Any]:
    done = gateway.cli("queue", "show", queue_id, "--json")
    assert done.returncode == 0, done.stderr
    shown: dict[str, Any] = json.loads(done.stdout)
    return shown


def _deferred(gateway: Gateway, count: int) -> list[dict[str, Any]]:
    """Send ``count`` messages to hs02 (down) and wait until each Dispatch failed once and
    waits its back-off; returns them as ``queue list --json`` shows them."""
    remmds = []
    for _ in range(count):
        title = subject()
        send(gateway, SENDER, RECIPIENT, subject=title)
        remmds.append(remmd_of_subject(gateway, SENDER, title))
    found: dict[str, dict[str, Any]] = {}

    def waiting() -> bool:
        done = gateway.cli("queue", "list", "--kind", "dispatch-out", "--peer", "hs02", "--json")
        assert done.returncode == 0, done.stderr
        for line in done.stdout.splitlines():
            row = json.loads(line)
            if row["remmd_id"] in remmds and row["state"] == "queued" and row["attempts"] >= 1:
                found[row["remmd_id"]] = row
        return len(found) == count

    wait_for(waiting, timeout=60, what="Dispatches deferred")
    return [found[r] for r in remmds]


def _next_attempt(gateway: Gateway, queue_id: str) -> float:
    [(due,)] = gateway.query("SELECT next_attempt FROM messages WHERE id = ?", queue_id)
    return float(due)


def _sent(gateway: Gateway, queue_id: str) -> float | None:
    rows = gateway.query("SELECT state, sent_at FROM messages WHERE id = ?", queue_id)
    return float(rows[0][1]) if rows and rows[0][0] == "sent" else None


def _wait_sent(gateway: Gateway, queue_id: str) -> float:
    """When the peer accepted the message (its 250), once it has."""
    wait_for(lambda: _sent(gateway, queue_id) is not None, what=f"{queue_id} sent")
    sent_at = _sent(gateway, queue_id)
    assert sent_at is not None
    return sent_at


def test_list_summary_hold_retry_release_while_the_node_runs(mesh: Mesh) -> None:
    hs01 = mesh["hs01"]
    _down(mesh)
    first, second, third = _deferred(hs01, 3)
    ids = [first["id"], second["id"], third["id"]]
    listed = hs01.cli("queue", "list")
    assert listed.returncode == 0, listed.stderr
    for queue_id in ids:
        [line] = [x for x in listed.stdout.splitlines() if x.startswith(queue_id)]
        assert " dispatch-out " in line and " queued " in line and " hs02 " in line
        assert " in 5" in line  # its next attempt, most of an hour away
    assert "last reply:" in listed.stdout  # why it waits: the connection failed
    # qshape: every one in hs02's row, in the youngest column.
    shape = hs01.cli("queue", "summary", "--kind", "dispatch-out")
    assert shape.returncode == 0, shape.stderr
    head, total, *peers = shape.stdout.splitlines()
    assert head.split() == [
        "total",
        "<5m",
        "5-10m",
        "10-20m",
        "20-40m",
        "40-80m",
        "80-160m",
        ">160m",
    ]
    hs02_row = [p.split() for p in peers if p.startswith("hs02")]
    assert hs02_row and int(hs02_row[0][1]) >= 3 and int(hs02_row[0][2]) >= 3
    assert total.split()[0] == "TOTAL"
    # Held: not taken up when hs02 comes back, even by a retry of everything.
    held = hs01.cli("queue", "hold", first["id"])
    assert held.returncode == 0, held.stderr
    assert f"{first['id']}: queued -> hold" in held.stdout
    _up(mesh)
    started = time.time()
    # When their back-off would let them go: most of an hour from now.
    due = {row["id"]: _next_attempt(hs01, row["id"]) for row in (second, third)}
    assert min(due.values()) > started + BACKOFF / 2
    retried = hs01.cli("queue", "retry", "--all", "--peer", "hs02")
    assert retried.returncode == 0, retried.stderr
    assert f"{second['id']}: queued -> queued" in retried.stdout
    assert f"{first['id']}" not in retried.stdout  # held: not what a retry selects
    # Sent at once, long before the back-off they were waiting would have let them go.
    for queue_id, when in due.items():
        sent_at = _wait_sent(hs01, queue_id)
        assert started <= sent_at < when
    assert _row(hs01, first["id"])["state"] == "hold"
    refused = hs01.cli("queue", "retry", first["id"])
    assert refused.returncode == 1
    assert f"kep-relay: {first['id']}: held; release it first" in refused.stderr
    held_due = _next_attempt(hs01, first["id"])
    assert held_due > time.time() + BACKOFF / 2  # its back-off runs on while held
    released = hs01.cli("queue", "release", first["id"])
    assert released.returncode == 0, released.stderr
    assert f"{first['id']}: hold -> queued, due now" in released.stdout
    assert "release: 1 done, 0 refused" in released.stdout
    assert _wait_sent(hs01, first["id"]) < held_due  # released: sent now, not then
    for row in (first, second, third):
        wait_evidence(
            hs01, row["remmd_id"], {("DeliveryNonDeliveryToRecipient", "Delivery", RECIPIENT)}
        )
    shown = hs01.cli("queue", "show", first["id"])
    assert "state:" in shown.stdout and "sent" in shown.stdout
    assert "SubmissionAcceptanceRejection" in shown.stdout  # the evidence inside it


def test_delete_of_a_queued_dispatch_gives_its_sender_relay_failure(mesh: Mesh) -> None:
    hs01 = mesh["hs01"]
    _down(mesh)
    [row] = _deferred(hs01, 1)
    usage = hs01.cli("queue", "delete", row["id"])
    assert usage.returncode == 2 and "--reason" in usage.stderr
    usage = hs01.cli("queue", "hold")
    assert usage.returncode == 2 and usage.stderr.startswith("kep-relay: ")
    # A node process holding it now (a live claim): refused, nothing changed.
    store = Store(hs01.data / "state.sqlite3")
    try:
        claim = store.take(row["id"], "hs01/9", time.time(), 60)
        assert claim is not None
        busy = hs01.cli("queue", "delete", row["id"], "--reason", "test")
        assert busy.returncode == 1
        assert busy.stderr.strip().endswith(f"{row['id']}: being processed by hs01/9; try again")
        store.release(claim)
    finally:
        store.close()
    assert _row(hs01, row["id"])["state"] == "queued"
    deleted = hs01.cli("queue", "delete", row["id"], "--reason", "sent by mistake")
    assert deleted.returncode == 0, deleted.stderr
    assert f"{row['id']}: queued -> deleted" in deleted.stdout
    assert '"event": "operator_move"' in deleted.stderr  # logged, with who did it
    wait_evidence(hs01, row["remmd_id"], {("RelayREMMDFailure", "DeliveryExpiration", "")})
    failures = []
    for path in hs01.mail(SENDER, "Delil"):
        with path.open("rb") as stream:
            filed = xmlio.parse(parse_envelope(stream).evidence_xml)
        if filed.message.remmd_message_id == row["remmd_id"]:
            failures += [filed] if filed.type is EvidenceType.RelayREMMDFailure else []
    [failure] = failures
    assert failure.reasons[0].reason is Reason.Other
    assert failure.reasons[0].details == "withdrawn by the operator of hs01.kep.tr"
    shown = _row(hs01, row["id"])
    assert shown["state"] == "deleted"
    assert (
        shown["last_reply"].startswith("deleted by ") and "sent by mistake" in shown["last_reply"]
    )
    # hs02 back: what came after it arrives; the deleted Dispatch never does.
    _up(mesh)
    title = subject()
    send(hs01, SENDER, RECIPIENT, subject=title)
    after = remmd_of_subject(hs01, SENDER, title)
    wait_evidence(hs01, after, {("DeliveryNonDeliveryToRecipient", "Delivery", RECIPIENT)})
    assert mesh["hs02"].query("SELECT 1 FROM messages WHERE remmd_id = ?", row["remmd_id"]) == []
    again = hs01.cli("queue", "retry", row["id"])
    assert again.returncode == 1 and "deleted: ended for good" in again.stderr


def test_requeue_sends_an_evidence_message_again(mesh: Mesh) -> None:
    hs01, hs02 = mesh["hs01"], mesh["hs02"]
    _up(mesh)
    title = subject()
    send(hs02, RECIPIENT, SENDER, subject=title)
    remmd = remmd_of_subject(hs02, RECIPIENT, title)
    wait_evidence(hs02, remmd, {("DeliveryNonDeliveryToRecipient", "Delivery", SENDER)})
    listed = hs01.cli("queue", "list", "--state", "sent", "--kind", "evidence-out", "--json")
    ours = [json.loads(x) for x in listed.stdout.splitlines()]
    ours = [r for r in ours if r["remmd_id"] == remmd]
    assert len(ours) == 2  # relay acceptance and delivery, both sent
    delivery = ours[-1]
    wait_for(lambda: _row(hs01, delivery["id"])["spool_file"] == "removed", what="retention")
    before = hs02.query("SELECT COUNT(*) FROM messages WHERE kind = 'evidence-in'")[0][0]
    requeued = hs01.cli("queue", "requeue", delivery["id"])
    assert requeued.returncode == 0, requeued.stderr
    assert f"{delivery['id']}: sent -> queued" in requeued.stdout
    # Made again from the ledger (its file went once sent), sent again, taken by hs02 again.
    wait_for(
        lambda: (
            hs02.query("SELECT COUNT(*) FROM messages WHERE kind = 'evidence-in'")[0][0]
            == before + 1
        ),
        what="the Evidence message at hs02 again",
    )
    wait_for(lambda: _row(hs01, delivery["id"])["state"] == "sent", what="sent again")
    wait_for(
        lambda: (
            hs02.query(
                "SELECT COUNT(*) FROM messages WHERE kind = 'evidence-in' AND state = 'processed'"
            )[0][0]
            == before + 1
        ),
        what="hs02 to process it",
    )
    # The same evidence, recorded once at hs02.
    got = hs02.query(
        "SELECT COUNT(*) FROM evidence WHERE remmd_id = ? AND type = ?",
        remmd,
        "DeliveryNonDeliveryToRecipient",
    )
    assert got == [(1,)]
    # A Dispatch given up is not sent again; its sender has its failure evidence.
    [(dispatch,)] = hs02.query(
        "SELECT id FROM messages WHERE kind = 'dispatch-out' AND remmd_id = ?", remmd
    )
    refused = hs02.cli("queue", "requeue", dispatch)
    assert refused.returncode == 1
    assert "sent: the peer accepted it (250)" in refused.stderr
    assert "requeue: 0 done, 1 refused" in refused.stdout
    assert State(_row(hs02, dispatch)["state"]) is State.SENT
