"""Traffic from hs01's users to hs02's, and the checks that none of it was lost or doubled
(profile §2, §7): shared by the crash tests of one node and of many."""

from __future__ import annotations

import datetime as dt
import email
import signal
import smtplib
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from interop.envelope.smime import build_signed_message
from tests.relay.gateways import Gateway, Mesh, wait_for

SENDER = "ali.yilmaz@hs01.kep.tr"
RECIPIENTS = ("ayse.demir@hs02.kep.tr", "ali.yilmaz@hs02.kep.tr")


def submit(
    mesh: Mesh,
    gateway: Gateway,
    count: int,
    sent: list[str],
    *,
    during: dict[int, Callable[[], None]] | None = None,
) -> None:
    """``count`` signed messages from SENDER to RECIPIENTS in turn, through ``gateway``'s
    submission listener; ``during[n]`` is done just before the n-th (a kill, say)."""
    signer = mesh.pki.user(SENDER).signer
    with smtplib.SMTP("127.0.0.1", gateway.submission_port, timeout=60) as client:
        for number in range(count):
            if during and number in during:
                during[number]()
            message_id = f"<{uuid.uuid4().hex}@hs01.kep.tr>"
            recipient = RECIPIENTS[len(sent) % 2]
            data = build_signed_message(
                signer,
                sender=SENDER,
                recipients=[recipient],
                subject=f"Yük {len(sent)}",
                body="x" * 200,
                now=dt.datetime.now(dt.UTC),
                message_id=message_id,
            )
            client.sendmail(SENDER, [recipient], data)
            sent.append(message_id)


def killer(gateway: Gateway) -> Callable[[], None]:
    def kill() -> None:
        gateway.stop(signal.SIGKILL)

    return kill


def _message_ids(paths: list[Path]) -> Counter[str]:
    return Counter(str(email.message_from_bytes(p.read_bytes())["Message-ID"]) for p in paths)


def wait_delivered(hs01: Gateway, total: int, timeout: float = 240) -> None:
    """Until hs01 holds Delivery evidence for ``total`` messages."""

    def all_delivered() -> bool:
        rows = hs01.query(
            "SELECT COUNT(DISTINCT remmd_id) FROM evidence WHERE direction = 'received'"
            " AND type = 'DeliveryNonDeliveryToRecipient'"
        )
        return bool(rows[0][0] == total)

    wait_for(all_delivered, timeout=timeout, what=f"Delivery evidence for {total} messages")


def assert_exactly_once(hs01: Gateway, hs02: Gateway, sent: list[str]) -> None:
    """Every message in its recipient's INBOX once; every evidence issued once, received
    once and filed once; both ledgers verify."""
    total = len(sent)
    inbox = _message_ids([p for r in RECIPIENTS for p in hs02.mail(r)])
    assert sorted(inbox) == sorted(sent)
    assert set(inbox.values()) == {1}
    counts = hs01.query(
        "SELECT type, direction, COUNT(*), COUNT(DISTINCT remmd_id) FROM evidence"
        " GROUP BY type, direction"
    )
    per_kind = {(t, d): (n, m) for t, d, n, m in counts}
    assert per_kind[("RelayREMMDAcceptanceRejection", "received")] == (total, total)
    assert per_kind[("DeliveryNonDeliveryToRecipient", "received")] == (total, total)
    # One SubmissionAcceptance for the sender and one inside each Dispatch.
    assert per_kind[("SubmissionAcceptanceRejection", "issued")] == (2 * total, total)
    assert len(hs01.mail(SENDER, "Delil")) == 3 * total
    assert len(hs01.mail(SENDER, "Sent")) == total
    issued_at_hs02 = hs02.query(
        "SELECT type, COUNT(*), COUNT(DISTINCT remmd_id) FROM evidence GROUP BY type"
    )
    assert {(t, n, m) for t, n, m in issued_at_hs02} == {
        ("RelayREMMDAcceptanceRejection", total, total),
        ("DeliveryNonDeliveryToRecipient", total, total),
    }
    # What hs01 received is what hs02 issued: one EvidenceIdentifier each.
    issued = {str(i) for (i,) in hs02.query("SELECT id FROM evidence")}
    received = {
        str(i) for (i,) in hs01.query("SELECT id FROM evidence WHERE direction = 'received'")
    }
    assert issued == received
    for gateway in (hs01, hs02):
        done = gateway.cli("ledger", "verify")
        assert done.returncode == 0, done.stdout + done.stderr
