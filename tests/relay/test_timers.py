"""Timers and eTebligat, with hs02 unable to send its evidence back to hs01."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from interop.evidence import xmlio
from interop.evidence.teblig import deemed_service_time
from interop.pki.devpki import DevPki
from relay.config_file import from_mapping
from relay.context import build_context
from relay.issuing import record, sign
from relay.keys import write_pki
from relay.lifecycle import Kind, State
from relay.stages import outbound
from tests.helpers import make_dispatch
from tests.relay.gateways import (
    Mesh,
    evidence,
    make_mesh,
    remmd_of_subject,
    scrape,
    send,
    subject,
    value,
    wait_evidence,
    wait_for,
)

DELIVERY_AT_HS02 = (
    "SELECT xml FROM evidence WHERE remmd_id = ? AND type = 'DeliveryNonDeliveryToRecipient'"
)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    root = tmp_path_factory.mktemp("timers")
    # hs02's route to hs01 leads nowhere: its evidence never arrives.
    built = make_mesh(
        root,
        ["hs01", "hs02"],
        timers={"evidence_timeout": "3s", "evidence_lifetime": "4s"},
        dead_routes=("hs01",),
    )
    built["hs01"].start()
    built["hs02"].start()
    yield built
    built.stop()


def test_evidence_timeout_gives_relay_failure(mesh: Mesh) -> None:
    hs01 = mesh["hs01"]
    title = subject()
    send(hs01, "ali.yilmaz@hs01.kep.tr", "ayse.demir@hs02.kep.tr", subject=title)
    remmd = remmd_of_subject(hs01, "ali.yilmaz@hs01.kep.tr", title)
    wait_evidence(hs01, remmd, {("RelayREMMDFailure", "DeliveryExpiration", "")}, timeout=30)
    xml = hs01.query(
        "SELECT xml FROM evidence WHERE remmd_id = ? AND type = 'RelayREMMDFailure'", remmd
    )
    assert b"S_REMMD_ReceivedNoDeliveryInfoFromR_REMMD" in bytes(xml[0][0])
    # The Dispatch itself was relayed (250); only its evidence is missing.
    assert hs01.query(
        "SELECT state FROM messages WHERE kind = 'dispatch-out' AND remmd_id = ?", remmd
    ) == [("sent",)]
    assert (
        "RelayREMMDAcceptanceRejection",
        "Acceptance",
        "ayse.demir@hs02.kep.tr",
        "received",
    ) not in evidence(hs01, remmd)


def test_evidence_nobody_takes_is_given_up_after_its_lifetime(mesh: Mesh) -> None:
    hs01, hs02 = mesh["hs01"], mesh["hs02"]
    title = subject()
    send(hs01, "ali.yilmaz@hs01.kep.tr", "ayse.demir@hs02.kep.tr", subject=title)
    remmd = remmd_of_subject(hs01, "ali.yilmaz@hs01.kep.tr", title)

    def states() -> list[str]:
        rows = hs02.query(
            "SELECT state FROM messages WHERE kind = 'evidence-out' AND remmd_id = ?", remmd
        )
        return sorted(str(r[0]) for r in rows)

    # hs02 cannot reach hs01: both Evidence messages are retried, then given up, not for ever.
    wait_for(lambda: states() == ["expired", "expired"], timeout=30, what="evidence expired")
    assert value(scrape(hs02), "kep_messages_expired_total", kind="evidence-out") >= 2
    assert '"event": "evidence_expired"' in hs02.log.read_text()
    # The evidence itself stays in hs02's ledger, and the ledger verifies.
    assert len(hs02.query("SELECT 1 FROM evidence WHERE remmd_id = ?", remmd)) == 2
    assert hs02.cli("ledger", "verify").returncode == 0


def test_etebligat_delivery_states_the_deemed_service_time(mesh: Mesh) -> None:
    hs01, hs02 = mesh["hs01"], mesh["hs02"]
    title = subject()
    # The development PKI's public body: hs01's legal-person account, authorised for eTebligat.
    body = "0123456789012345@hs01.kep.tr"
    send(hs01, body, "ayse.demir@hs02.kep.tr", subject=title, extra=("--etebligat",))
    remmd = remmd_of_subject(hs01, body, title)
    # hs02 cannot send it back here, so look at what hs02 issued.
    wait_for(
        lambda: bool(
            hs02.query(
                DELIVERY_AT_HS02.replace("xml", "1"),
                remmd,
            )
        ),
        what="Delivery evidence at hs02",
    )
    xml = bytes(
        hs02.query(
            DELIVERY_AT_HS02,
            remmd,
        )[0][0]
    )
    delivery = xmlio.parse(xml)
    assert delivery.teblig_zamani == deemed_service_time(delivery.event_time)
    assert b"<kep:TebligZamani>" in xml


@pytest.mark.parametrize(
    ("delivered", "deemed"),
    [
        # 10:00 Istanbul on 24 Nov: the end of 29 Nov, 23:59:59+03:00.
        (
            dt.datetime(2026, 11, 24, 7, 0, tzinfo=dt.UTC),
            dt.datetime(2026, 11, 29, 20, 59, 59, tzinfo=dt.UTC),
        ),
        # 23:30 UTC on 24 Nov is already 25 Nov in Istanbul.
        (
            dt.datetime(2026, 11, 24, 23, 30, tzinfo=dt.UTC),
            dt.datetime(2026, 11, 30, 20, 59, 59, tzinfo=dt.UTC),
        ),
        # Across a month and a year.
        (
            dt.datetime(2026, 12, 28, 12, 0, tzinfo=dt.UTC),
            dt.datetime(2027, 1, 2, 20, 59, 59, tzinfo=dt.UTC),
        ),
    ],
)
def test_deemed_service_time(delivered: dt.datetime, deemed: dt.datetime) -> None:
    assert deemed_service_time(delivered) == deemed


def test_the_relay_timeout_runs_on_the_node_clock(pki: DevPki, tmp_path: Path) -> None:
    """No sleeping: the node's one clock is injected, so a deadline is tested by moving it."""
    write_pki(pki, tmp_path / "pki")
    config = from_mapping(
        {
            "node": {"provider": "hs01", "dev_pki": "pki", "data_dir": "data"},
            "timers": {"relay_timeout": "10m"},
        },
        "t",
        tmp_path,
    )
    clock = Clock(pki.created + dt.timedelta(minutes=1))
    context = build_context(config, clock=clock)
    exchange = make_dispatch(pki, now=clock())
    submission = sign(context, exchange.submission)
    with context.store.transaction() as db:
        context.store.add_message(
            db, id="d1", kind=Kind.DISPATCH_OUT, peer="hs02",
            remmd_id=exchange.submission.message.remmd_message_id,
            mail_from="ali.yilmaz@hs01.kep.tr", rcpt_to=["ayse.demir@hs02.kep.tr"], size=1,
            sha256="00", state=State.QUEUED,
        )  # fmt: skip
        record(context, db, submission, direction="issued", message_id="d1")
        context.store.set_timer(
            db, "d1", exchange.submission.message.remmd_message_id, "hs02",
            relay_deadline=context.now() + 600,
        )  # fmt: skip
    clock.now += dt.timedelta(minutes=9)
    assert outbound.check_timers(context) == 0
    clock.now += dt.timedelta(minutes=2)
    assert outbound.check_timers(context) == 1
    dispatch = context.store.message("d1")
    assert dispatch is not None and dispatch.state is State.EXPIRED
    failure = [
        e for e in context.store.evidence_of_message("d1") if e["type"] == "RelayREMMDFailure"
    ]
    assert len(failure) == 1
    assert xmlio.parse(bytes(failure[0]["xml"])).event_time == clock().replace(microsecond=0)
    context.store.close()


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now
