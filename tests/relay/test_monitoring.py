"""The operators' view of two real gateways: metrics, health probes and log lines.

hs01 sends hs02 a message that is delivered and read, hs02 meets a peer without a client
certificate, one with a certificate nobody trusts, and one speaking for another provider.
Then the metrics, the probes and the JSON log lines must tell exactly that story.
"""

from __future__ import annotations

import json
import smtplib
import socket
import ssl
import subprocess
from collections.abc import Iterator

import pytest

from tests.helpers import need_tool
from tests.relay.gateways import (
    Gateway,
    Mesh,
    get,
    make_mesh,
    remmd_of_subject,
    scrape,
    subject_of,
    value,
    wait_evidence,
    wait_for,
)

SENDER, RECIPIENT = "ali.yilmaz@hs01.kep.tr", "ayse.demir@hs02.kep.tr"
SECRET_SUBJECT = "Gizli dava konusu 7f3a"
SECRET_BODY = "Bu metin hicbir log satirina girmemeli 91c2"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    built = make_mesh(tmp_path_factory.mktemp("monitoring"), ["hs01", "hs02"])
    built["hs01"].start()
    built["hs02"].start()
    hs01, hs02 = built["hs01"], built["hs02"]
    done = hs01.cli(
        "send", "--from", SENDER, "--to", RECIPIENT, "--subject", SECRET_SUBJECT,
        "--body", SECRET_BODY,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    remmd = remmd_of_subject(hs01, SENDER, SECRET_SUBJECT)
    wait_evidence(hs01, remmd, {("DeliveryNonDeliveryToRecipient", "Delivery", RECIPIENT)})
    inbox = hs02.mail(RECIPIENT)
    number = [subject_of(p) for p in inbox].index(SECRET_SUBJECT) + 1
    assert hs02.cli("mailbox", "read", RECIPIENT, str(number)).returncode == 0
    wait_evidence(hs01, remmd, {("RetrievalNonRetrievalByRecipient", "Retrieval", RECIPIENT)})
    yield built
    built.stop()


def _handshake(gateway: Gateway, context: ssl.SSLContext) -> None:
    with socket.create_connection(("127.0.0.1", gateway.peer_port), timeout=5) as raw:
        try:
            with context.wrap_socket(raw) as tls:
                tls.recv(100)  # TLS 1.3 reports a refused client certificate on first read
        except (ssl.SSLError, OSError):
            pass


def test_traffic_shows_in_metrics(mesh: Mesh) -> None:
    hs01, hs02 = mesh["hs01"], mesh["hs02"]
    wait_for(
        lambda: value(scrape(hs01), "kep_evidence_total", direction="received", peer="hs02") >= 3,
        what="hs01 to count the evidence it received",
    )
    one, two = scrape(hs01), scrape(hs02)
    # Sender side: one submission, one Dispatch sent, evidence back with its round trip.
    assert value(one, "kep_messages_received_total", listener="submission", result="accepted") == 1
    assert (
        value(one, "kep_messages_relayed_total", peer="hs02", kind="dispatch", result="sent") == 1
    )
    assert value(one, "kep_peer_up", peer="hs02") == 1
    assert value(one, "kep_verifications_total", check="user_message", result="valid") == 1
    for kind in ("RelayREMMDAcceptanceRejection", "DeliveryNonDeliveryToRecipient"):
        assert value(one, "kep_evidence_total", direction="received", type=kind, peer="hs02") == 1
        assert value(one, "kep_evidence_round_trip_seconds_count", peer="hs02", type=kind) == 1
        assert (
            value(one, "kep_evidence_round_trip_seconds_bucket", peer="hs02", type=kind, le="+Inf")
            == 1
        )
    assert (
        value(one, "kep_evidence_total", direction="issued", type="SubmissionAcceptanceRejection")
        >= 1
    )
    assert value(one, "kep_smtp_acceptance_seconds_count", listener="submission") == 1
    assert value(one, "kep_tls_handshakes_total", endpoint="outbound", certificate="accepted") >= 1
    assert value(one, "kep_evidence_awaited", peer="hs02") == 0
    # Receiver side: the Dispatch verified, delivered, and its evidence (Retrieval issued by
    # the operator tool included) counted from the ledger.
    assert (
        value(two, "kep_messages_received_total", listener="peer", peer="hs01", result="accepted")
        >= 1
    )
    assert value(two, "kep_verifications_total", check="dispatch", result="valid") == 1
    assert value(two, "kep_local_delivery_seconds_count", peer="hs01") == 1
    assert (
        value(
            two,
            "kep_evidence_total",
            direction="issued",
            type="RetrievalNonRetrievalByRecipient",
            peer="hs01",
        )
        == 1
    )
    assert value(two, "kep_tls_handshakes_total", endpoint="peer", certificate="accepted") >= 1
    assert value(two, "kep_message_size_bytes_count", listener="peer") >= 1
    # State read at scrape time.
    assert value(two, "kep_ledger_records") == 3  # acceptance, delivery, retrieval
    assert value(two, "kep_ledger_last_checkpoint_timestamp_seconds") > 0
    assert value(two, "kep_queue_messages", kind="dispatch-in", state="received") == 0
    assert value(two, "kep_certificate_expiry_timestamp_seconds", provider="hs02", role="tls") > 0
    assert value(two, "kep_data_disk_free_bytes") > 0
    assert value(two, "process_resident_memory_bytes") > 0


def test_tls_failures_and_refusals_are_counted(mesh: Mesh) -> None:
    hs02 = mesh["hs02"]
    ca = str(mesh.root / "pki" / "ca" / "tls-ca.crt")
    bare = ssl.create_default_context(cafile=ca)
    bare.check_hostname = False
    _handshake(hs02, bare)  # no client certificate
    stranger = ssl.create_default_context(cafile=ca)
    stranger.check_hostname = False
    pki = mesh.root / "pki"
    # A user's e-imza certificate is signed by a CA the TLS listener does not trust.
    stranger.load_cert_chain(pki / "users" / f"{SENDER}.crt", pki / "users" / f"{SENDER}.key")
    _handshake(hs02, stranger)
    # hs01 trying to speak for hs02's domain is refused with 550 5.7.1.
    context = ssl.create_default_context(cafile=ca)
    context.check_hostname = False
    context.load_cert_chain(
        pki / "providers" / "hs01" / "tls.crt", pki / "providers" / "hs01" / "tls.key"
    )
    with smtplib.SMTP_SSL("127.0.0.1", hs02.peer_port, context=context, timeout=10) as client:
        client.ehlo("gw.hs01.kep.tr")
        code, _ = client.mail("someone@hs02.kep.tr")
        assert code == 550
    samples = scrape(hs02)
    assert (
        value(
            samples,
            "kep_tls_handshakes_total",
            endpoint="peer",
            version="none",
            certificate="missing",
        )
        == 1
    )
    assert (
        value(
            samples,
            "kep_tls_handshakes_total",
            endpoint="peer",
            version="none",
            certificate="untrusted",
        )
        == 1
    )
    assert (
        value(
            samples,
            "kep_smtp_refusals_total",
            listener="peer",
            peer="hs01",
            reason="not_permitted",
            code_class="5xx",
        )
        == 1
    )


def test_labels_are_bounded(mesh: Mesh) -> None:
    for gateway in (mesh["hs01"], mesh["hs02"]):
        for (name, labels), _ in scrape(gateway).items():
            for key, label in labels:
                assert "@" not in label, (name, key, label)  # never an address
                if key != "subject":  # certificate subjects are configuration, not mail
                    assert "kep.tr" not in label, (name, key, label)


def test_promtool_accepts_the_output(mesh: Mesh) -> None:
    promtool = need_tool("promtool")
    for gateway in (mesh["hs01"], mesh["hs02"]):
        _status, body = get(gateway, "/metrics")
        done = subprocess.run(
            [promtool, "check", "metrics"], input=body, capture_output=True, timeout=60
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.strip() == b"", done.stdout  # no lint complaints either


def test_health_probes(mesh: Mesh) -> None:
    hs01 = mesh["hs01"]
    status, body = get(hs01, "/healthz")
    assert status == 200 and json.loads(body)["checks"] == {"event_loop": "ok"}
    status, body = get(hs01, "/readyz")
    assert status == 200, body
    assert set(json.loads(body)["checks"]) == {"storage", "pki", "listeners", "draining"}
    assert get(hs01, "/nothing")[0] == 404


def test_log_lines(mesh: Mesh) -> None:
    for gateway in (mesh["hs01"], mesh["hs02"]):
        text = gateway.log.read_text(encoding="utf-8")
        assert SECRET_SUBJECT not in text and SECRET_BODY not in text
        lines = [json.loads(line) for line in text.splitlines() if line.strip()]  # all JSON
        assert lines
        about_messages = [line for line in lines if "queue_id" in line]
        assert about_messages
        for line in about_messages:
            assert line.get("remmd_id") and line.get("peer"), line
        for line in lines:
            assert line["event"].replace("_", "").isalpha() and line["event"].islower(), line
            assert {"level", "timestamp"} <= set(line)


def test_submission_gets_its_remmd_id_at_acceptance(mesh: Mesh) -> None:
    hs01 = mesh["hs01"]
    rows = hs01.query("SELECT id, remmd_id FROM messages WHERE kind = 'submission'")
    assert rows and all(r == f"{i}@hs01.kep.tr" for i, r in rows)
