"""``kep-relay message status`` against real gateways (hs01, hs02 on loopback; hs03 in the
trust list but its route leads nowhere): what happened to a message, read from a running
node's store without SQL."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.relay.gateways import (
    ROOT,
    Gateway,
    Mesh,
    make_mesh,
    remmd_of_subject,
    send,
    subject,
    wait_evidence,
    wait_for,
)

SENDER = "ali.yilmaz@hs01.kep.tr"
RECIPIENT = "ayse.demir@hs02.kep.tr"
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \((\d+[smhd]\d*[smh]?) ago\)"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    built = make_mesh(
        tmp_path_factory.mktemp("status"),
        ["hs01", "hs02", "hs03"],
        timers={"relay_timeout": "1h"},
        dead_routes=("hs03",),
    )
    built["hs01"].start()
    built["hs02"].start()
    yield built
    built.stop()


def status(gateway: Gateway, *args: str) -> dict[str, Any]:
    done = gateway.cli("message", "status", *args, "--json")
    assert done.returncode == 0, done.stderr
    shape: dict[str, Any] = json.loads(done.stdout)
    return shape


def delivered(mesh: Mesh, sender: str = SENDER, recipient: str = RECIPIENT) -> str:
    """A message ``sender`` at hs01 sent to ``recipient`` at hs02, delivered; its REMMD id."""
    hs01 = mesh["hs01"]
    title = subject()
    send(hs01, sender, recipient, subject=title)
    remmd = remmd_of_subject(hs01, sender, title)
    wait_evidence(hs01, remmd, {("DeliveryNonDeliveryToRecipient", "Delivery", recipient)})
    return remmd


def test_a_delivered_message_shows_its_evidence_and_the_peers_250(mesh: Mesh) -> None:
    hs01, hs02 = mesh["hs01"], mesh["hs02"]
    remmd = delivered(mesh)
    shown = status(hs01, remmd)
    kinds = {(m["kind"], m["state"], m["peer"]) for m in shown["messages"]}
    assert {("submission", "processed", None), ("dispatch-out", "sent", "hs02")} <= kinds
    assert {(e["direction"], e["type"], e["event"], e["recipient"]) for e in shown["evidence"]} >= {
        ("issued", "SubmissionAcceptanceRejection", "Acceptance", None),
        ("received", "RelayREMMDAcceptanceRejection", "Acceptance", RECIPIENT),
        ("received", "DeliveryNonDeliveryToRecipient", "Delivery", RECIPIENT),
    }
    times = [e["time"] for e in shown["evidence"]]
    assert times == sorted(times)
    [dispatch] = [m for m in shown["messages"] if m["kind"] == "dispatch-out"]
    [attempt] = [a for a in shown["attempts"] if a["message_id"] == dispatch["id"]]
    assert (attempt["number"], attempt["peer"], attempt["outcome"]) == (1, "hs02", "sent")
    assert attempt["reply"].startswith("250 ")
    assert attempt["host"] == f"127.0.0.1:{hs02.peer_port}"
    # Delivery evidence came: its timer stopped.
    assert shown["timers"] == []

    # The same message by its Dispatch's queue id, for people.
    text = hs01.cli("message", "status", dispatch["id"])
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].startswith(f"message {remmd} (queue id {dispatch['id']}), as of ")
    row = next(line for line in lines if line.lstrip().startswith(f"*{dispatch['id']}"))
    assert re.search(rf"dispatch-out +sent +hs02 +{STAMP} +{STAMP} +1 +{RECIPIENT}$", row), row
    assert re.search(
        rf"{STAMP} +received +delil@hs02.kep.tr +DeliveryNonDeliveryToRecipient +Delivery"
        rf" +{RECIPIENT} +-$",
        text.stdout,
        re.MULTILINE,
    ), text.stdout
    assert re.search(
        rf"{STAMP} +{dispatch['id']} +1 +hs02 +127\.0\.0\.1:{hs02.peer_port} +sent +250 ",
        text.stdout,
    ), text.stdout
    # The columns line up under their headers.
    header = next(line for line in lines if line.lstrip().startswith("id "))
    assert row.index("dispatch-out") == header.index("kind")

    # The receiving side's story: the Dispatch processed, its Evidence messages taken by hs01.
    def evidence_sent() -> bool:
        rows = status(hs02, remmd)["messages"]
        return sorted(m["state"] for m in rows if m["kind"] == "evidence-out") == ["sent"] * 2

    wait_for(evidence_sent, what="hs02's Evidence messages sent")
    theirs = status(hs02, remmd)
    assert [m["state"] for m in theirs["messages"] if m["kind"] == "dispatch-in"] == ["processed"]
    assert {(a["peer"], a["outcome"]) for a in theirs["attempts"]} == {("hs01", "sent")}
    assert len(theirs["attempts"]) == 2


def test_a_dispatch_to_a_dead_route_shows_its_deferred_attempts_and_relay_timer(
    mesh: Mesh,
) -> None:
    hs01 = mesh["hs01"]
    title = subject()
    send(hs01, SENDER, "ayse.demir@hs03.kep.tr", subject=title)
    remmd = remmd_of_subject(hs01, SENDER, title)

    def tried_twice() -> bool:
        rows = hs01.query(
            "SELECT COUNT(*) FROM attempts a JOIN messages m ON m.id = a.message_id"
            " WHERE m.remmd_id = ?",
            remmd,
        )
        return int(rows[0][0]) >= 2

    wait_for(tried_twice, what="two attempts to hs03")
    shown = status(hs01, remmd)
    [dispatch] = [m for m in shown["messages"] if m["kind"] == "dispatch-out"]
    assert dispatch["peer"] == "hs03" and dispatch["state"] in ("queued", "sending")
    attempts = [a for a in shown["attempts"] if a["message_id"] == dispatch["id"]]
    assert [a["number"] for a in attempts][:2] == [1, 2]
    for attempt in attempts:
        assert (attempt["peer"], attempt["outcome"], attempt["host"]) == ("hs03", "deferred", None)
        assert "no gateway of hs03 answered" in attempt["reply"], attempt["reply"]
    [timer] = shown["timers"]
    assert (timer["dispatch_id"], timer["peer"], timer["timer"]) == (
        dispatch["id"],
        "hs03",
        "relay",
    )
    assert 0 < timer["left_seconds"] <= 3600
    text = hs01.cli("message", "status", remmd).stdout
    assert re.search(rf"relay +hs03 +{dispatch['id']} +\S+Z \(in \d+m\d\ds\)$", text, re.M), text
    assert re.search(rf"{dispatch['id']} +1 +hs03 +- +deferred +ConnectionError: ", text), text


def test_an_accounts_recent_messages(mesh: Mesh) -> None:
    hs01, hs02 = mesh["hs01"], mesh["hs02"]
    account = "ayse.demir@hs01.kep.tr"  # used by no other test here
    first = delivered(mesh, sender=account, recipient="ali.yilmaz@hs02.kep.tr")
    # One message: shown in full.
    alone = hs01.cli("message", "status", "--address", account)
    assert alone.returncode == 0, alone.stderr
    assert alone.stdout.startswith(f"message {first}, as of ")
    assert "\ndelivery attempts\n" in alone.stdout
    title = subject()
    send(hs02, "ali.yilmaz@hs02.kep.tr", account, subject=title)
    second = remmd_of_subject(hs02, "ali.yilmaz@hs02.kep.tr", title)

    def received() -> bool:
        return bool(hs01.query("SELECT 1 FROM messages WHERE remmd_id = ?", second))

    wait_for(received, what="the Dispatch from hs02 at hs01")
    listing = hs01.cli("message", "status", "--address", account)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0] == f"messages of {account}, newest first"
    assert lines[1].split() == [
        "created",
        "direction",
        "REMMD",
        "id",
        "state",
        "from",
        "/",
        "to",
        "evidence",
    ]
    assert re.match(rf"  {STAMP} +received +{re.escape(second)} +\w+ +ali.yilmaz@hs02", lines[2])
    assert re.match(rf"  {STAMP} +sent +{re.escape(first)} +processed +ali.yilmaz@hs02", lines[3])
    assert "evidence, last: " in lines[3]
    assert len(lines) == 4
    newest = status(hs01, "--address", account, "--limit", "1")
    assert [m["remmd_id"] for m in newest["messages"]] == [second]
    assert newest["story"]["remmd_id"] == second


def test_the_json_shape(mesh: Mesh) -> None:
    """The documented keys (docs/operations.md, "Following one message"), nothing else."""
    hs01 = mesh["hs01"]
    remmd = delivered(mesh)
    shown = status(hs01, remmd)
    assert set(shown) == {
        "query",
        "remmd_id",
        "as_of",
        "messages",
        "evidence",
        "timers",
        "attempts",
    }
    assert (shown["query"], shown["remmd_id"]) == (remmd, remmd)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", shown["as_of"])
    message_keys = {
        "id", "kind", "state", "peer", "remmd_id", "from", "recipients", "created", "updated",
        "attempts", "next_attempt", "last_reply", "parent",
    }  # fmt: skip
    assert all(set(m) == message_keys for m in shown["messages"])
    evidence_keys = {
        "time", "direction", "issuer", "type", "event", "recipient", "reasons", "id",
        "message_id",
    }  # fmt: skip
    assert all(set(e) == evidence_keys for e in shown["evidence"])
    attempt_keys = {"time", "message_id", "number", "peer", "host", "outcome", "reply"}
    assert shown["attempts"] and all(set(a) == attempt_keys for a in shown["attempts"])
    listing = status(hs01, "--address", SENDER, "--limit", "2")
    assert set(listing) == {"address", "as_of", "messages", "story"}
    assert listing["story"] is None and len(listing["messages"]) == 2
    assert all(
        set(m) == message_keys | {"direction", "evidence", "last_evidence"}
        for m in listing["messages"]
    )


def test_nothing_matching_exits_1(mesh: Mesh) -> None:
    hs01 = mesh["hs01"]
    for args, what in (
        (("nothing@hs01.kep.tr",), "no message nothing@hs01.kep.tr here"),
        (("--address", "kimse@hs01.kep.tr"), "no message of kimse@hs01.kep.tr here"),
    ):
        done = hs01.cli("message", "status", *args)
        assert (done.returncode, done.stdout, done.stderr) == (1, "", f"kep-relay: {what}\n")
    for usage in ((), ("x", "--address", SENDER)):
        done = hs01.cli("message", "status", *usage)
        assert done.returncode == 2 and done.stderr.startswith("kep-relay: give one of ID")


def test_no_node_here_creates_nothing(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "relay.cli", "message", "status", "x@hs01.kep.tr"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=tmp_path,  # the embedded default: a node under ./var, which is not there
    )
    assert done.returncode == 2 and done.stderr.startswith("kep-relay: no node here"), done
    assert list(tmp_path.iterdir()) == []
