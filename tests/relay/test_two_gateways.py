"""Two real gateways (hs01, hs02) on loopback with mutual TLS, driven like production.

hs03 is in the trust list but its route leads nowhere, for the relay timeout. Clients are
Python's smtplib (the ``send`` command and the direct checks here): SMTP software we did not
write.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import smtplib
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from interop.envelope.build import write_dispatch
from interop.envelope.smime import build_signed_message
from interop.evidence import xmlio
from interop.evidence.codes import Event
from interop.evidence.xades import sign_evidence
from interop.pki.devpki import generate
from tests.helpers import make_dispatch
from tests.relay.gateways import (
    Gateway,
    Mesh,
    make_mesh,
    peer_client,
    remmd_of_subject,
    send,
    subject,
    subject_of,
    wait_evidence,
    wait_for,
)

ACCOUNTS = {
    "hs01": """
[[accounts]]
address = "ali.yilmaz@hs01.kep.tr"
[[accounts]]
address = "ayse.demir@hs01.kep.tr"
type = "receive-only"
[[accounts]]
address = "suresi.dolmus@hs01.kep.tr"
[[accounts]]
address = "0123456789012345@hs01.kep.tr"
state = "pending"
""",
    "hs02": """
[[accounts]]
address = "ayse.demir@hs02.kep.tr"
[[accounts]]
address = "ali.yilmaz@hs02.kep.tr"
state = "closed"
[[accounts]]
address = "0123456789012345@hs02.kep.tr"
""",
}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    root = tmp_path_factory.mktemp("mesh")
    built = make_mesh(
        root,
        ["hs01", "hs02", "hs03"],
        extra=ACCOUNTS,
        timers={"relay_timeout": "8s", "evidence_timeout": "1h"},
        dead_routes=("hs03",),
    )
    built["hs01"].start()
    built["hs02"].start()
    yield built
    built.stop()


def test_round_trip_with_all_evidence(mesh: Mesh) -> None:
    hs01, hs02 = mesh["hs01"], mesh["hs02"]
    title = subject()
    send(hs01, "ali.yilmaz@hs01.kep.tr", "ayse.demir@hs02.kep.tr", subject=title)
    remmd = remmd_of_subject(hs01, "ali.yilmaz@hs01.kep.tr", title)
    recipient = "ayse.demir@hs02.kep.tr"
    wait_evidence(
        hs01,
        remmd,
        {
            ("SubmissionAcceptanceRejection", "Acceptance", ""),
            ("RelayREMMDAcceptanceRejection", "Acceptance", recipient),
            ("DeliveryNonDeliveryToRecipient", "Delivery", recipient),
        },
    )
    inbox = hs02.mail(recipient)
    delivered = [p for p in inbox if subject_of(p) == title]
    assert delivered, "the message is in the recipient's INBOX"
    # Reading it issues Retrieval evidence, which travels back to hs01.
    number = str(inbox.index(delivered[-1]) + 1)
    read = hs02.cli("mailbox", "read", recipient, number)
    assert read.returncode == 0, read.stderr
    wait_evidence(hs01, remmd, {("RetrievalNonRetrievalByRecipient", "Retrieval", recipient)})
    # The sender's evidence folder names the message each evidence is about (for an export).
    listed = hs01.cli("mailbox", "list", "ali.yilmaz@hs01.kep.tr", "--folder", "Delil")
    assert listed.stdout.count(f"[{remmd}]") == 4, listed.stdout
    # Every evidence message in the sender's Delil folder verifies with the operator tool.
    for path in hs01.mail("ali.yilmaz@hs01.kep.tr", "Delil"):
        done = hs01.cli("envelope", "verify", str(path))  # trust of hs01's configuration
        assert done.returncode == 0, done.stdout
    for gateway in (hs01, hs02):
        ledger = gateway.cli("ledger", "verify")
        assert ledger.returncode == 0, ledger.stdout
        assert "chain intact" in ledger.stdout


def test_unknown_and_closed_recipients(mesh: Mesh) -> None:
    hs01 = mesh["hs01"]
    title = subject()
    send(
        hs01, "ali.yilmaz@hs01.kep.tr", "kimse@hs02.kep.tr", "ali.yilmaz@hs02.kep.tr", subject=title
    )
    remmd = remmd_of_subject(hs01, "ali.yilmaz@hs01.kep.tr", title)
    wait_evidence(
        hs01,
        remmd,
        {
            ("RelayREMMDAcceptanceRejection", "Rejection", "kimse@hs02.kep.tr"),
            ("RelayREMMDAcceptanceRejection", "Acceptance", "ali.yilmaz@hs02.kep.tr"),
            ("DeliveryNonDeliveryToRecipient", "NonDelivery", "ali.yilmaz@hs02.kep.tr"),
        },
    )


@pytest.mark.parametrize(
    ("sender", "reason"),
    [
        ("ayse.demir@hs01.kep.tr", "receive-only"),
        ("0123456789012345@hs01.kep.tr", "waiting for activation"),
        ("suresi.dolmus@hs01.kep.tr", "expired"),
    ],
)
def test_submission_rejections(mesh: Mesh, sender: str, reason: str) -> None:
    hs01 = mesh["hs01"]
    title = subject()
    send(hs01, sender, "ayse.demir@hs02.kep.tr", subject=title)
    remmd = remmd_of_subject(hs01, sender, title)
    wait_evidence(hs01, remmd, {("SubmissionAcceptanceRejection", "Rejection", "")})
    xml = hs01.query("SELECT xml FROM evidence WHERE remmd_id = ?", remmd)[0][0]
    assert reason.encode() in bytes(xml)
    assert not hs01.query(
        "SELECT 1 FROM messages WHERE kind = 'dispatch-out' AND remmd_id = ?", remmd
    )
    # Only accepted messages are the sender's sent mail (and count against its quota).
    assert hs01.mail(sender, "Sent") == []


def _submit(gateway: Gateway, sender: str, recipient: str, message: bytes) -> None:
    """What the provider's own systems do: a user-signed message to the submission listener."""
    with smtplib.SMTP("127.0.0.1", gateway.submission_port, timeout=30) as client:
        client.sendmail(sender, [recipient], message)


def _signed(mesh: Mesh, signer: str, from_header: str, title: str, **extra: str) -> bytes:
    return build_signed_message(
        mesh.pki.user(signer).signer,
        sender=from_header,
        recipients=["ayse.demir@hs02.kep.tr"],
        subject=title,
        body="Merhaba",
        now=dt.datetime.now(dt.UTC),
        extra_headers=tuple(extra.items()),
    )


@pytest.mark.parametrize(
    "from_header",
    [
        "xali.yilmaz@hs01.kep.tr",  # contains the account's address
        "ali.yilmaz@hs01.kep.tr.example",
        "ali.yilmaz@hs01.kep.tr, ayse.demir@hs01.kep.tr",
    ],
)
def test_from_must_be_exactly_the_account(mesh: Mesh, from_header: str) -> None:
    hs01, account = mesh["hs01"], "ali.yilmaz@hs01.kep.tr"
    title = subject()
    sent_before = len(hs01.mail(account, "Sent"))
    _submit(hs01, account, "ayse.demir@hs02.kep.tr", _signed(mesh, account, from_header, title))
    remmd = remmd_of_subject(hs01, account, title)
    wait_evidence(hs01, remmd, {("SubmissionAcceptanceRejection", "Rejection", "")})
    xml = bytes(hs01.query("SELECT xml FROM evidence WHERE remmd_id = ?", remmd)[0][0])
    assert b"InvalidUserSignature" in xml and account.encode() in xml, xml
    assert len(hs01.mail(account, "Sent")) == sent_before


def test_an_unknown_ileti_tip_is_a_format_matter(mesh: Mesh) -> None:
    hs01, account = mesh["hs01"], "ali.yilmaz@hs01.kep.tr"
    title = subject()
    message = _signed(mesh, account, account, title, **{"X-TR-REM-iletiTip": "gizliTebligat"})
    _submit(hs01, account, "ayse.demir@hs02.kep.tr", message)
    remmd = remmd_of_subject(hs01, account, title)
    wait_evidence(hs01, remmd, {("SubmissionAcceptanceRejection", "Rejection", "")})
    xml = bytes(hs01.query("SELECT xml FROM evidence WHERE remmd_id = ?", remmd)[0][0])
    assert b"InvalidMessageFormat" in xml and b"InvalidUserSignature" not in xml, xml


def test_etebligat_only_through_hs01(mesh: Mesh) -> None:
    hs02 = mesh["hs02"]
    title = subject()
    send(
        hs02,
        "ayse.demir@hs02.kep.tr",
        "ali.yilmaz@hs01.kep.tr",
        subject=title,
        extra=("--etebligat",),
    )
    remmd = remmd_of_subject(hs02, "ayse.demir@hs02.kep.tr", title)
    wait_evidence(hs02, remmd, {("SubmissionAcceptanceRejection", "Rejection", "")})
    xml = bytes(hs02.query("SELECT xml FROM evidence WHERE remmd_id = ?", remmd)[0][0])
    assert b"PolicyViolation" in xml and b"eTebligat" in xml


def test_transport_refusals(mesh: Mesh) -> None:
    hs01 = mesh["hs01"]
    with peer_client(mesh, "hs02", hs01) as client:
        code, features = client.ehlo("gw.hs02.kep.tr")
        assert code == 250
        for extension in (b"SIZE 27262976", b"8BITMIME", b"ENHANCEDSTATUSCODES", b"PIPELINING"):
            assert extension in features
        # §2: a peer cannot speak for another provider, for a domain outside KEP, or for nobody.
        for sender in ("ali.yilmaz@hs03.kep.tr", "someone@gmail.com", ""):
            code, text = client.docmd(f"MAIL FROM:<{sender}>")
            assert (code, text[:5]) == (550, b"5.7.1"), (sender, code, text)
        # A sender of the right domain, badly written, is a syntax matter (RFC 3463 5.1.7).
        code, text = client.docmd("MAIL FROM:<a..b@hs02.kep.tr>")
        assert (code, text[:5]) == (553, b"5.1.7")
        # No open relay: another provider, a foreign domain, a source route to one (§2).
        assert client.docmd("MAIL FROM:<ayse.demir@hs02.kep.tr>")[0] == 250
        for recipient in ("someone@hs03.kep.tr", "someone@example.com", "@hs01.kep.tr:x@gmail.com"):
            code, text = client.docmd(f"RCPT TO:<{recipient}>")
            assert (code, text[:5]) == (550, b"5.7.1") and b"Relay denied" in text, recipient
        code, text = client.docmd("RCPT TO:<a..b@hs01.kep.tr>")
        assert (code, text[:5]) == (553, b"5.1.3")
        client.docmd("RSET")
        # SIZE above the limit is refused at MAIL FROM.
        code, text = client.docmd("MAIL FROM:<ayse.demir@hs02.kep.tr> SIZE=99999999")
        assert code == 552 and text.startswith(b"5.3.4")


def test_data_over_the_limit_is_refused_and_not_stored(mesh: Mesh) -> None:
    hs01 = mesh["hs01"]
    before = len(list((hs01.data / "spool" / "msg").iterdir()))
    limit = 25 * 1024 * 1024 + 1024 * 1024
    payload = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * (limit // 1000 + 2)
    with peer_client(mesh, "hs02", hs01) as client:
        client.ehlo("gw.hs02.kep.tr")
        # No SIZE= given: the limit must hold at the end of DATA too (§2).
        assert client.mail("ayse.demir@hs02.kep.tr")[0] == 250
        assert client.rcpt("ali.yilmaz@hs01.kep.tr")[0] == 250
        code, text = client.data(payload)
        assert code == 552 and text.startswith(b"5.3.4")
        # The session goes on: the next transaction is served.
        assert client.docmd("RSET")[0] == 250
    assert len(list((hs01.data / "spool" / "msg").iterdir())) == before


def test_untrusted_or_missing_client_certificate(mesh: Mesh, tmp_path: Path) -> None:
    hs01 = mesh["hs01"]
    stranger = generate(mesh.pki.created, ["hs02"])
    from relay.keys import write_pki

    write_pki(stranger, tmp_path / "stranger")
    refused = (ssl.SSLError, smtplib.SMTPServerDisconnected, ConnectionError)
    with (
        pytest.raises(refused),
        peer_client(mesh, "hs02", hs01, pki_root=tmp_path / "stranger") as client,
    ):
        client.ehlo("x")
        client.docmd("MAIL FROM:<ayse.demir@hs02.kep.tr>")
    context = ssl.create_default_context(cafile=str(mesh.root / "pki" / "ca" / "tls-ca.crt"))
    context.check_hostname = False
    with (
        pytest.raises(refused),
        smtplib.SMTP_SSL("127.0.0.1", hs01.peer_port, context=context, timeout=10) as client,
    ):
        client.ehlo("x")
        client.docmd("MAIL FROM:<ayse.demir@hs02.kep.tr>")


def _dispatch_from(
    mesh: Mesh, provider: str, sender: str, recipient: str, *, etebligat: bool = False
) -> tuple[bytes, str]:
    """A Dispatch signed now, with a REMMD id of its own (every call is a new message)."""
    remmd = f"{uuid.uuid4().hex}@{provider}.kep.tr"
    exchange = make_dispatch(
        mesh.pki,
        sender=sender,
        recipients=(recipient,),
        issuer=provider,
        subject="Doğrudan",
        body="x",
        now=dt.datetime.now(dt.UTC),
        stamp=False,
        remmd_id=remmd,
        extra_headers=(("X-TR-REM-iletiTip", "eTebligat"),) if etebligat else (),
    )
    return exchange.dispatch, remmd


def test_etebligat_from_another_provider_is_rejected_by_the_rgw(mesh: Mesh) -> None:
    hs01 = mesh["hs01"]
    data, remmd = _dispatch_from(
        mesh, "hs02", "ayse.demir@hs02.kep.tr", "ali.yilmaz@hs01.kep.tr", etebligat=True
    )
    with peer_client(mesh, "hs02", hs01) as client:
        client.ehlo("gw.hs02.kep.tr")
        client.sendmail("ayse.demir@hs02.kep.tr", ["ali.yilmaz@hs01.kep.tr"], data)
    wait_evidence(
        hs01, remmd, {("RelayREMMDAcceptanceRejection", "Rejection", "ali.yilmaz@hs01.kep.tr")}
    )
    xml = bytes(hs01.query("SELECT xml FROM evidence WHERE remmd_id = ?", remmd)[0][0])
    assert b"PolicyViolation" in xml


def test_tampered_envelope_is_rejected_with_evidence(mesh: Mesh) -> None:
    hs01 = mesh["hs01"]
    data, remmd = _dispatch_from(mesh, "hs02", "ayse.demir@hs02.kep.tr", "ali.yilmaz@hs01.kep.tr")
    tampered = data.replace(
        b"Content-Type: text/plain; charset=utf-8", b"Content-Type: text/plain; charset=UTF-8", 1
    )
    assert tampered != data
    with peer_client(mesh, "hs02", hs01) as client:
        client.ehlo("gw.hs02.kep.tr")
        client.sendmail("ayse.demir@hs02.kep.tr", ["ali.yilmaz@hs01.kep.tr"], tampered)
    wait_evidence(
        hs01, remmd, {("RelayREMMDAcceptanceRejection", "Rejection", "ali.yilmaz@hs01.kep.tr")}
    )
    xml = bytes(hs01.query("SELECT xml FROM evidence WHERE remmd_id = ?", remmd)[0][0])
    assert b"InvalidMessageFormat" in xml or b"InvalidUserSignature" in xml


def test_a_rcpt_the_dispatch_does_not_name_is_refused(mesh: Mesh) -> None:
    hs01 = mesh["hs01"]
    data, remmd = _dispatch_from(mesh, "hs02", "ayse.demir@hs02.kep.tr", "ali.yilmaz@hs01.kep.tr")
    with peer_client(mesh, "hs02", hs01) as client:
        client.ehlo("gw.hs02.kep.tr")
        assert client.mail("ayse.demir@hs02.kep.tr")[0] == 250
        assert client.rcpt("ali.yilmaz@hs01.kep.tr")[0] == 250
        assert client.rcpt("suresi.dolmus@hs01.kep.tr")[0] == 250
        code, text = client.data(data)
    # No evidence could ever answer that recipient: the S-GW hears it now, as a 5xx (§4).
    assert (code, text[:5]) == (550, b"5.6.0") and b"suresi.dolmus@hs01.kep.tr" in text, text
    assert hs01.query("SELECT COUNT(*) FROM messages WHERE remmd_id = ?", remmd) == [(0,)]


def test_repeated_dispatch_is_one_message(mesh: Mesh) -> None:
    hs01 = mesh["hs01"]
    data, remmd = _dispatch_from(mesh, "hs02", "ayse.demir@hs02.kep.tr", "ali.yilmaz@hs01.kep.tr")
    replies = []
    for _ in range(2):
        with peer_client(mesh, "hs02", hs01) as client:
            client.ehlo("gw.hs02.kep.tr")
            client.mail("ayse.demir@hs02.kep.tr")
            client.rcpt("ali.yilmaz@hs01.kep.tr")
            replies.append(client.data(data))
        wait_evidence(
            hs01, remmd, {("DeliveryNonDeliveryToRecipient", "Delivery", "ali.yilmaz@hs01.kep.tr")}
        )
    assert replies[0][0] == 250 and replies[1][0] == 250
    assert b"Already accepted" in replies[1][1]
    assert (
        len(hs01.query("SELECT 1 FROM messages WHERE kind = 'dispatch-in' AND remmd_id = ?", remmd))
        == 1
    )
    assert len(hs01.query("SELECT 1 FROM evidence WHERE remmd_id = ?", remmd)) == 2


def test_peer_down_then_back(mesh: Mesh) -> None:
    hs01, hs02 = mesh["hs01"], mesh["hs02"]
    hs02.stop()
    try:
        title = subject()
        send(hs01, "ali.yilmaz@hs01.kep.tr", "0123456789012345@hs02.kep.tr", subject=title)
        wait_for(
            lambda: bool(
                hs01.query(
                    "SELECT 1 FROM messages WHERE kind = 'dispatch-out' AND state = 'queued'"
                    " AND attempts >= 1"
                )
            ),
            what="a deferred Dispatch",
        )
    finally:
        hs02.start()
    remmd = remmd_of_subject(hs01, "ali.yilmaz@hs01.kep.tr", title)
    wait_evidence(
        hs01,
        remmd,
        {("DeliveryNonDeliveryToRecipient", "Delivery", "0123456789012345@hs02.kep.tr")},
    )


def test_relay_timeout_gives_relay_failure(mesh: Mesh) -> None:
    hs01 = mesh["hs01"]
    title = subject()
    send(hs01, "ali.yilmaz@hs01.kep.tr", "ali.yilmaz@hs03.kep.tr", subject=title)
    remmd = remmd_of_subject(hs01, "ali.yilmaz@hs01.kep.tr", title)
    wait_evidence(hs01, remmd, {("RelayREMMDFailure", "DeliveryExpiration", "")}, timeout=30)
    xml = bytes(
        hs01.query(
            "SELECT xml FROM evidence WHERE remmd_id = ? AND type = 'RelayREMMDFailure'", remmd
        )[0][0]
    )
    assert b"R_REMMD_Unreachable" in xml
    assert hs01.query(
        "SELECT state FROM messages WHERE kind = 'dispatch-out' AND remmd_id = ?", remmd
    ) == [("expired",)]


def test_signed_ledger_checkpoints(mesh: Mesh) -> None:
    hs01 = mesh["hs01"]
    # The node takes one at start (none was there); one more on request.
    wait_for(lambda: bool(hs01.query("SELECT 1 FROM checkpoints")), what="the first checkpoint")
    done = hs01.cli("ledger", "checkpoint")
    assert done.returncode == 0, done.stderr
    verify = hs01.cli("ledger", "verify")
    assert verify.returncode == 0, verify.stdout
    assert "signed checkpoints valid" in verify.stdout
    # Changing a record behind a checkpoint breaks the chain and the checkpoint.
    with hs01.db() as db:
        first = db.execute("SELECT id, xml FROM evidence ORDER BY created LIMIT 1").fetchone()
        db.execute(
            "UPDATE evidence SET xml = ? WHERE id = ?",
            (bytes(first[1]).replace(b"Acceptance", b"Rejection"), first[0]),
        )
    broken = hs01.cli("ledger", "verify")
    assert broken.returncode == 1
    assert "was changed" in broken.stdout
    with hs01.db() as db:
        db.execute("UPDATE evidence SET xml = ? WHERE id = ?", (bytes(first[1]), first[0]))
    assert hs01.cli("ledger", "verify").returncode == 0


def test_accounts_managed_from_the_command_line(mesh: Mesh) -> None:
    hs01, hs02 = mesh["hs01"], mesh["hs02"]
    added = hs02.cli("account", "add", "yeni.kullanici@hs02.kep.tr", "--quota-mib", "50")
    assert added.returncode == 0, added.stderr
    assert "send-receive, active, quota 50 MiB" in added.stdout
    assert hs02.cli("account", "add", "yeni.kullanici@hs02.kep.tr").returncode == 2
    assert hs02.cli("account", "add", "biri@hs01.kep.tr").returncode == 2
    listing = hs02.cli("account", "list")
    assert (
        "yeni.kullanici@hs02.kep.tr" in listing.stdout
        and "ayse.demir@hs02.kep.tr" in listing.stdout
    )
    # The running node sees the new account at once.
    title = subject()
    send(hs01, "ali.yilmaz@hs01.kep.tr", "yeni.kullanici@hs02.kep.tr", subject=title)
    remmd = remmd_of_subject(hs01, "ali.yilmaz@hs01.kep.tr", title)
    wait_evidence(
        hs01, remmd, {("DeliveryNonDeliveryToRecipient", "Delivery", "yeni.kullanici@hs02.kep.tr")}
    )
    # Closed: accepted for relay, not delivered (profile §4 R-GW 2).
    assert (
        hs02.cli("account", "set", "yeni.kullanici@hs02.kep.tr", "--state", "closed").returncode
        == 0
    )
    title = subject()
    send(hs01, "ali.yilmaz@hs01.kep.tr", "yeni.kullanici@hs02.kep.tr", subject=title)
    remmd = remmd_of_subject(hs01, "ali.yilmaz@hs01.kep.tr", title)
    wait_evidence(
        hs01,
        remmd,
        {("DeliveryNonDeliveryToRecipient", "NonDelivery", "yeni.kullanici@hs02.kep.tr")},
    )


def test_a_full_mailbox_receives_but_cannot_send(mesh: Mesh) -> None:
    hs01, hs02 = mesh["hs01"], mesh["hs02"]
    # 0123456789012345@hs02 has mail by now; a quota below it makes the mailbox full.
    wait_for(
        lambda: bool(hs02.mail("0123456789012345@hs02.kep.tr")), what="mail for the MERSİS account"
    )
    assert (
        hs02.cli(
            "account", "set", "0123456789012345@hs02.kep.tr", "--quota-mib", "0.001"
        ).returncode
        == 0
    )
    title = subject()
    send(hs02, "0123456789012345@hs02.kep.tr", "ali.yilmaz@hs01.kep.tr", subject=title)
    remmd = remmd_of_subject(hs02, "0123456789012345@hs02.kep.tr", title)
    wait_evidence(hs02, remmd, {("SubmissionAcceptanceRejection", "Rejection", "")})
    xml = bytes(hs02.query("SELECT xml FROM evidence WHERE remmd_id = ?", remmd)[0][0])
    assert b"full" in xml
    # Receiving still works (KEP-DOMAIN.md: a full mailbox keeps receiving).
    title = subject()
    send(hs01, "ali.yilmaz@hs01.kep.tr", "0123456789012345@hs02.kep.tr", subject=title)
    remmd = remmd_of_subject(hs01, "ali.yilmaz@hs01.kep.tr", title)
    wait_evidence(
        hs01,
        remmd,
        {("DeliveryNonDeliveryToRecipient", "Delivery", "0123456789012345@hs02.kep.tr")},
    )


def test_hostile_envelopes_get_replies_and_the_node_carries_on(mesh: Mesh) -> None:
    hs01 = mesh["hs01"]
    data, _remmd = _dispatch_from(mesh, "hs02", "ayse.demir@hs02.kep.tr", "ali.yilmaz@hs01.kep.tr")
    head, _, _ = data.partition(b"\r\n\r\n")
    hostile = [
        b"",
        b"Subject: hello\r\n\r\nnot an envelope\r\n",
        head + b"\r\n\r\n" + b"--x\r\n" * 5000,
        data[: len(data) // 3],
        b"X-REM-Msg-Type: Dispatch\r\n" * 2000 + b"\r\nbody\r\n",
        bytes(range(1, 128)) * 50,
    ]
    stored = hs01.query("SELECT COUNT(*) FROM messages")[0][0]
    with peer_client(mesh, "hs02", hs01) as client:
        client.ehlo("gw.hs02.kep.tr")
        for payload in hostile:
            assert client.mail("ayse.demir@hs02.kep.tr")[0] == 250
            assert client.rcpt("ali.yilmaz@hs01.kep.tr")[0] == 250
            code, text = client.data(payload)
            assert code in (550, 552), (code, text, payload[:60])
            assert text[:1] == b"5" and len(text) > 8  # an enhanced code and a reason
    assert hs01.query("SELECT COUNT(*) FROM messages")[0][0] == stored
    # Readable but changed after signing: accepted, then answered with Rejection evidence (§4).
    changed, remmd = _dispatch_from(
        mesh, "hs02", "ayse.demir@hs02.kep.tr", "ali.yilmaz@hs01.kep.tr"
    )
    with peer_client(mesh, "hs02", hs01) as client:
        client.ehlo("gw.hs02.kep.tr")
        client.sendmail(
            "ayse.demir@hs02.kep.tr",
            ["ali.yilmaz@hs01.kep.tr"],
            changed.replace(b'name="delil.xml"', b'name="delil.exe"'),
        )
    wait_evidence(
        hs01, remmd, {("RelayREMMDAcceptanceRejection", "Rejection", "ali.yilmaz@hs01.kep.tr")}
    )
    # The unreadable ones were not stored, and the node still serves the next good message.
    data, remmd = _dispatch_from(mesh, "hs02", "ayse.demir@hs02.kep.tr", "ali.yilmaz@hs01.kep.tr")
    with peer_client(mesh, "hs02", hs01) as client:
        client.ehlo("gw.hs02.kep.tr")
        client.sendmail("ayse.demir@hs02.kep.tr", ["ali.yilmaz@hs01.kep.tr"], data)
    wait_evidence(
        hs01, remmd, {("DeliveryNonDeliveryToRecipient", "Delivery", "ali.yilmaz@hs01.kep.tr")}
    )


# -- inputs coverage-guided fuzzing found (each was 451 for ever, or 250 and then stuck) -------


def _send_dispatch(mesh: Mesh, data: bytes) -> tuple[int, bytes]:
    with peer_client(mesh, "hs02", mesh["hs01"]) as client:
        client.ehlo("gw.hs02.kep.tr")
        client.mail("ayse.demir@hs02.kep.tr")
        client.rcpt("ali.yilmaz@hs01.kep.tr")
        return client.data(data)


def test_a_malformed_envelope_content_type_is_refused_not_deferred(mesh: Mesh) -> None:
    data, _remmd = _dispatch_from(mesh, "hs02", "ayse.demir@hs02.kep.tr", "ali.yilmaz@hs01.kep.tr")
    head, sep, body = data.partition(b"\r\n\r\n")
    boundary = re.search(rb'boundary="[^"]+"', head)
    assert boundary is not None
    # A parameter name with a star and no value, last: the standard library's parser raised.
    head = head[: boundary.end()] + b"; x*" + head[boundary.end() :]
    code, text = _send_dispatch(mesh, head + sep + body)
    # Input that can never pass: 5xx, so the S-GW stops and tells its sender (was 451).
    assert (code, text[:5]) == (550, b"5.6.0"), text


def test_a_dispatch_whose_evidence_time_overflows_is_refused(mesh: Mesh) -> None:
    exchange = make_dispatch(
        mesh.pki,
        sender="ayse.demir@hs02.kep.tr",
        recipients=("ali.yilmaz@hs01.kep.tr",),
        issuer="hs02",
        now=dt.datetime.now(dt.UTC),
        remmd_id=f"{uuid.uuid4().hex}@hs02.kep.tr",
    )
    signer = mesh.pki.providers["hs02"].process
    now = dt.datetime.now(dt.UTC)
    xml = sign_evidence(exchange.submission, signer, now)
    stamp = exchange.submission.event_time.strftime("%Y-%m-%dT%H:%M:%SZ").encode()
    out = io.BytesIO()
    write_dispatch(
        out,
        io.BytesIO(exchange.original),
        exchange.submission,
        xml.replace(stamp, b"9999-12-31T23:59:59-01:00"),
        signer,
        now,
        message_id=f"<overflow-{uuid.uuid4().hex}@hs02.kep.tr>",
    )
    code, text = _send_dispatch(mesh, out.getvalue())
    assert (code, text[:5]) == (550, b"5.6.0"), text


def test_an_original_with_a_malformed_content_type_is_answered_with_evidence(
    mesh: Mesh,
) -> None:
    hs01 = mesh["hs01"]
    remmd = f"{uuid.uuid4().hex}@hs02.kep.tr"
    original = (
        b"From: ayse.demir@hs02.kep.tr\r\nTo: ali.yilmaz@hs01.kep.tr\r\nSubject: x\r\n"
        b"Content-Type: text/plain; x*\r\n\r\nMerhaba\r\n"
    )
    exchange = make_dispatch(
        mesh.pki,
        sender="ayse.demir@hs02.kep.tr",
        recipients=("ali.yilmaz@hs01.kep.tr",),
        issuer="hs02",
        original=original,
        now=dt.datetime.now(dt.UTC),
        remmd_id=remmd,
    )
    assert _send_dispatch(mesh, exchange.dispatch)[0] == 250
    # Was: 250, then the R-GW raised on every attempt and the S-GW never heard.
    wait_evidence(
        hs01, remmd, {("RelayREMMDAcceptanceRejection", "Rejection", "ali.yilmaz@hs01.kep.tr")}
    )
    xml = bytes(hs01.query("SELECT xml FROM evidence WHERE remmd_id = ?", remmd)[0][0])
    assert b"InvalidUserSignature" in xml, xml
    assert hs01.query(
        "SELECT state FROM messages WHERE kind = 'dispatch-in' AND remmd_id = ?", remmd
    ) == [("processed",)]


def test_a_subject_with_a_broken_encoded_word_is_answered_with_evidence(mesh: Mesh) -> None:
    hs01, account = mesh["hs01"], "ali.yilmaz@hs01.kep.tr"
    message = _signed(mesh, account, account, "=?utf-8?b?A?=")
    with smtplib.SMTP("127.0.0.1", hs01.submission_port, timeout=30) as client:
        client.ehlo()
        client.mail(account)
        client.rcpt("ayse.demir@hs02.kep.tr")
        code, text = client.data(message)
    assert code == 250, text
    # Was: 250, then the S-GW raised on every attempt; now the sender gets its evidence.
    remmd = f"{text.decode().rsplit(' ', 1)[-1]}@hs01.kep.tr"
    wait_evidence(hs01, remmd, {("SubmissionAcceptanceRejection", "Acceptance", "")})


def test_a_submission_whose_header_block_never_ends_is_answered_with_evidence(
    mesh: Mesh,
) -> None:
    hs01, account = mesh["hs01"], "ali.yilmaz@hs01.kep.tr"
    with smtplib.SMTP("127.0.0.1", hs01.submission_port, timeout=30) as client:
        client.ehlo()
        client.mail(account)
        client.rcpt("ayse.demir@hs02.kep.tr")
        code, text = client.data(b"Subject: no empty line after this\r\nX-Kep: 1")
    assert code == 250, text
    # Was: 250, then the S-GW raised making its evidence, on every attempt.
    remmd = f"{text.decode().rsplit(' ', 1)[-1]}@hs01.kep.tr"
    wait_evidence(hs01, remmd, {("SubmissionAcceptanceRejection", "Rejection", "")})
    xml = bytes(hs01.query("SELECT xml FROM evidence WHERE remmd_id = ?", remmd)[0][0])
    assert b"InvalidUserSignature" in xml


# -- §1 account holders: the signer must be the account's holder or an authorised operator ----


def _submission_evidence(mesh: Mesh, account: str, signer: str, **extra: str) -> bytes:
    """Submit a message ``signer`` signed for ``account``; its SubmissionAcceptanceRejection."""
    gateway, title = mesh["hs01"], subject()
    _submit(
        gateway, account, "ayse.demir@hs02.kep.tr", _signed(mesh, signer, account, title, **extra)
    )
    remmd = remmd_of_subject(gateway, account, title)
    query = "SELECT xml FROM evidence WHERE remmd_id = ? AND type = 'SubmissionAcceptanceRejection'"
    wait_for(lambda: bool(gateway.query(query, remmd)), what="submission evidence")
    return bytes(gateway.query(query, remmd)[0][0])


@pytest.mark.parametrize(
    "signer", ["ayse.demir@hs01.kep.tr", "ali.yilmaz@hs02.kep.tr"], ids=["same", "other"]
)
def test_a_user_cannot_sign_for_another(mesh: Mesh, signer: str) -> None:
    account = "ali.yilmaz@hs01.kep.tr"
    # A valid e-imza, the right From: and MAIL FROM, but the certificate is someone else's.
    xml = _submission_evidence(mesh, account, signer)
    assert xmlio.parse(xml).event is Event.Rejection and b"InvalidUserSignature" in xml, xml
    number = mesh.pki.user(signer).number.encode()
    assert number in xml and account.encode() in xml  # the detail names both


def test_an_operator_signs_for_a_legal_person_until_removed(mesh: Mesh) -> None:
    hs01, company = mesh["hs01"], "1234567890123456@hs01.kep.tr"
    operator = mesh.pki.user("ayse.demir@hs01.kep.tr")
    added = hs01.cli("account", "add", company, "--operator", operator.number)
    assert added.returncode == 0, added.stderr
    assert f"operator {operator.number}" in added.stdout
    xml = _submission_evidence(mesh, company, operator.address)
    assert xmlio.parse(xml).event is Event.Acceptance, xml
    removed = hs01.cli("account", "set", company, "--remove-operator", operator.number)
    assert removed.returncode == 0, removed.stderr
    xml = _submission_evidence(mesh, company, operator.address)
    assert xmlio.parse(xml).event is Event.Rejection and b"InvalidUserSignature" in xml, xml
    # Who was allowed when stays on record.
    shown = hs01.cli("account", "show", company)
    assert shown.returncode == 0 and f"operator {operator.number}" in shown.stdout
    assert " - now" not in shown.stdout  # ended
    # Numbers are validated when set.
    bad = hs01.cli("account", "set", company, "--operator", "12345678901")
    assert bad.returncode == 2 and "check digits" in bad.stderr


def test_etebligat_only_from_accounts_authorised_for_it(mesh: Mesh) -> None:
    hs01, account = mesh["hs01"], "ali.yilmaz@hs01.kep.tr"
    notice = {"X-TR-REM-iletiTip": "eTebligat"}
    xml = _submission_evidence(mesh, account, account, **notice)
    assert b"PolicyViolation" in xml and b"not authorised to send eTebligat" in xml, xml
    assert hs01.cli("account", "set", account, "--etebligat", "yes").returncode == 0
    xml = _submission_evidence(mesh, account, account, **notice)
    assert xmlio.parse(xml).event is Event.Acceptance, xml
    assert hs01.cli("account", "set", account, "--etebligat", "no").returncode == 0
