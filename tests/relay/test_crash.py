"""kill -9 during traffic: nothing lost, nothing doubled, ledgers intact (profile §2, §7)."""

from __future__ import annotations

import datetime as dt
import email
import signal
import smtplib
import uuid
from collections import Counter
from pathlib import Path

from interop.envelope.smime import build_signed_message
from tests.relay.gateways import Gateway, Mesh, make_mesh, wait_for

SENDER = "ali.yilmaz@hs01.kep.tr"
RECIPIENTS = ("ayse.demir@hs02.kep.tr", "ali.yilmaz@hs02.kep.tr")


def _submit(
    mesh: Mesh,
    gateway: Gateway,
    count: int,
    sent: list[str],
    *,
    during: tuple[int, Gateway] | None = None,
) -> None:
    signer = mesh.pki.user(SENDER).signer
    with smtplib.SMTP("127.0.0.1", gateway.submission_port, timeout=60) as client:
        for number in range(count):
            if during is not None and number == during[0]:
                during[1].stop(signal.SIGKILL)
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


def _message_ids(paths: list[Path]) -> Counter[str]:
    return Counter(str(email.message_from_bytes(p.read_bytes())["Message-ID"]) for p in paths)


def test_kill_9_loses_and_doubles_nothing(tmp_path: Path) -> None:
    mesh = make_mesh(
        tmp_path, ["hs01", "hs02"], timers={"relay_timeout": "1h", "evidence_timeout": "1h"}
    )
    hs01, hs02 = mesh["hs01"], mesh["hs02"]
    hs01.start()
    hs02.start()
    sent: list[str] = []
    try:
        _submit(mesh, hs01, 120, sent)
        # Both die while submissions, Dispatches and evidence are in flight.
        hs02.stop(signal.SIGKILL)
        hs01.stop(signal.SIGKILL)
        hs01.start()
        hs02.start()
        # hs02 dies again in the middle of the next batch and stays down for a while.
        _submit(mesh, hs01, 120, sent, during=(40, hs02))
        hs01.stop(signal.SIGKILL)
        hs01.start()
        hs02.start()
        total = len(sent)

        def all_delivered() -> bool:
            rows = hs01.query(
                "SELECT COUNT(DISTINCT remmd_id) FROM evidence WHERE direction = 'received'"
                " AND type = 'DeliveryNonDeliveryToRecipient'"
            )
            return bool(rows[0][0] == total)

        wait_for(all_delivered, timeout=240, what=f"Delivery evidence for {total} messages")
        # Every message is in its recipient's INBOX exactly once.
        inbox = _message_ids([p for r in RECIPIENTS for p in hs02.mail(r)])
        assert sorted(inbox) == sorted(sent)
        assert set(inbox.values()) == {1}
        # Every message has exactly one of each evidence at hs01, and the Delil folder holds
        # exactly those three.
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
        for gateway in (hs01, hs02):
            done = gateway.cli("ledger", "verify")
            assert done.returncode == 0, done.stdout
    finally:
        mesh.stop()
