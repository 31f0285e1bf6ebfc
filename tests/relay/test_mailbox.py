"""Maildir accounts: idempotent delivery, usage, read flags."""

from __future__ import annotations

from pathlib import Path

from relay.mailbox import Account, AccountState, AccountType, Mailboxes


def test_delivery_is_idempotent_and_usage_counts_every_folder(tmp_path: Path) -> None:
    # A data folder under a directory named tmp must not hide the mail (a regression).
    root = tmp_path / "tmp" / "mail"
    account = Account("ali@hs01.kep.tr", AccountType.SEND_RECEIVE, AccountState.ACTIVE, 100)
    boxes = Mailboxes(root, [account])
    first = boxes.deliver("ali@hs01.kep.tr", "INBOX", "q1-1", b"x" * 60)
    again = boxes.deliver("ali@hs01.kep.tr", "INBOX", "q1-1", b"y" * 60)
    assert first == again and first.read_bytes() == b"x" * 60
    boxes.deliver("ali@hs01.kep.tr", "Delil", "q1-n0", b"z" * 50)
    assert boxes.usage("ali@hs01.kep.tr") == 110
    assert boxes.is_full(account)
    assert boxes.why_cannot_send("ali@hs01.kep.tr") == (
        "the mailbox of ali@hs01.kep.tr is full; it may receive but not send"
    )
    ((path, seen),) = boxes.list("ali@hs01.kep.tr")
    assert not seen
    read = boxes.mark_read(path)
    assert boxes.list("ali@hs01.kep.tr") == [(read, True)]
    assert boxes.find("ali@hs01.kep.tr", "INBOX", "q1-1") == read


def test_account_rules() -> None:
    boxes = Mailboxes(
        Path("/nonexistent"),
        [
            Account("a@hs01.kep.tr", AccountType.RECEIVE_ONLY, AccountState.ACTIVE, 10),
            Account("b@hs01.kep.tr", AccountType.SEND_RECEIVE, AccountState.PENDING, 10),
            Account("c@hs01.kep.tr", AccountType.SEND_RECEIVE, AccountState.CLOSED, 10),
            Account("d@hs01.kep.tr", AccountType.SEND_RECEIVE, AccountState.ACTIVE, 10),
        ],
    )
    assert "receive-only" in (boxes.why_cannot_send("a@hs01.kep.tr") or "")
    assert "activation" in (boxes.why_cannot_send("b@hs01.kep.tr") or "")
    assert "closed" in (boxes.why_cannot_send("c@hs01.kep.tr") or "")
    assert boxes.why_cannot_send("d@hs01.kep.tr") is None
    assert "no account" in (boxes.why_cannot_send("e@hs01.kep.tr") or "")
