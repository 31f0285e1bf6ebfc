"""Maildir accounts: idempotent delivery, usage, read flags, who may sign for them."""

from __future__ import annotations

import shutil
from pathlib import Path

from relay.mailbox import Account, AccountState, AccountType, Mailboxes, SignerRole
from relay.store import Store


def test_delivery_is_idempotent_and_usage_counts_every_folder(tmp_path: Path) -> None:
    # A data folder under a directory named tmp must not hide the mail (a regression).
    root = tmp_path / "tmp" / "mail"
    account = Account("ali@hs01.kep.tr", AccountType.SEND_RECEIVE, AccountState.ACTIVE, 100)
    boxes = Mailboxes(root, [account])
    first = boxes.put("ali@hs01.kep.tr", "INBOX", "q1-1", b"x" * 60)
    again = boxes.put("ali@hs01.kep.tr", "INBOX", "q1-1", b"y" * 60)
    assert first == again and first.read_bytes() == b"x" * 60
    boxes.put("ali@hs01.kep.tr", "Delil", "q1-n0", b"z" * 50)
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


def test_a_mailbox_removed_while_the_node_runs_is_made_again(tmp_path: Path) -> None:
    """The node makes a mailbox's folders once, not for every message; one removed behind its
    back (an operator's clean-up) is made again on the next delivery, not refused."""
    boxes = Mailboxes(tmp_path / "mail", [])
    first = boxes.put("ali@hs01.kep.tr", "INBOX", "q1", b"x" * 60)
    shutil.rmtree(tmp_path / "mail" / "ali@hs01.kep.tr")
    second = boxes.put("ali@hs01.kep.tr", "INBOX", "q2", b"y" * 60)
    assert second.read_bytes() == b"y" * 60 and second.parent == first.parent
    assert sorted(p.name for p in second.parent.parent.iterdir()) == ["cur", "new", "tmp"]
    assert list((second.parent.parent / "tmp").iterdir()) == []


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


def test_usage_reads_maildir_sizes_from_names_and_counts_every_folder(tmp_path: Path) -> None:
    boxes = Mailboxes(tmp_path, [])
    filed = boxes.put("ali@hs01.kep.tr", "Sent", "q2", b"s" * 70)
    assert filed.name.endswith(",S=70")  # Maildir++ size field, as Dovecot writes it
    account = tmp_path / "ali@hs01.kep.tr"
    # Filed by an IMAP server: a folder of its own, a size field before the flags, and one
    # message whose name has no size field (its file is measured instead).
    for folder in (account / ".Arşiv", account):
        for sub in ("new", "cur", "tmp"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
    (account / ".Arşiv" / "cur" / "1700000000.M1P2.imap,S=1000,W=1020:2,S").write_bytes(b"a")
    (account / "cur" / "1700000000.M3P4.imap:2,S").write_bytes(b"b" * 30)
    # Not filed messages: a delivery in progress, the IMAP server's own index files.
    (account / "tmp" / "1700000001.M5P6.imap").write_bytes(b"c" * 500)
    (account / "dovecot.index").write_bytes(b"d" * 500)
    assert boxes.usage("ali@hs01.kep.tr") == 70 + 1000 + 30
    assert boxes.usage("nobody@hs01.kep.tr") == 0


def test_who_may_sign_is_kept_with_its_history(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.sqlite3")
    company, first, second = "1234567890123456@hs01.kep.tr", "10000000146", "99000000042"
    boxes = Mailboxes(
        tmp_path / "mail",
        [Account(company, AccountType.SEND_RECEIVE, AccountState.ACTIVE, 10, operators=(first,))],
        store,
    )
    # A file's account: the signers it names, with no history.
    assert boxes.signers_at(company, 0.0) == {first: SignerRole.OPERATOR}
    store.put_account(company, "send-receive", "active", 10)
    assert store.allow_signer(company, first, "operator", 100.0)
    assert not store.allow_signer(company, first, "operator", 150.0)  # already: not twice
    assert store.allow_signer(company, second, "operator", 200.0)
    assert store.end_signer(company, first, "operator", 300.0)
    assert not store.end_signer(company, first, "operator", 350.0)
    # A signature is judged against the operators of its moment.
    assert boxes.signers_at(company, 50.0) == {}
    assert boxes.signers_at(company, 250.0) == {
        first: SignerRole.OPERATOR,
        second: SignerRole.OPERATOR,
    }
    assert boxes.signers_at(company, 300.0) == {second: SignerRole.OPERATOR}
    assert [(r["number"], r["since"], r["until"]) for r in store.signer_history(company)] == [
        (first, 100.0, 300.0),
        (second, 200.0, None),
    ]
    # A person has one holder at a time: a new one ends the last.
    person = "ali.yilmaz@hs01.kep.tr"
    store.allow_signer(person, first, "holder", 10.0)
    store.allow_signer(person, second, "holder", 20.0)
    assert store.signers_at(person, 15.0) == {first: "holder"}
    assert store.signers_at(person, 25.0) == {second: "holder"}
    store.close()
