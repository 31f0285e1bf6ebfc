"""Content is not kept (INTEROP-PROFILE.md §7): after a round trip, a message's body is nowhere
under the data folders but in the users' mailboxes; copies kept for ``keep_content_days`` go at
the next start once that is lifted; an Evidence message sent and removed is made again when a
repeated Dispatch asks for it (§2)."""

from __future__ import annotations

import base64
import datetime as dt
import io
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from interop.envelope.parse import parse_envelope
from interop.evidence import xmlio
from tests.helpers import make_dispatch
from tests.relay.gateways import (
    Gateway,
    Mesh,
    make_mesh,
    peer_client,
    remmd_of_subject,
    subject,
    wait_evidence,
    wait_for,
)

SENDER, RECIPIENT = "ali.yilmaz@hs01.kep.tr", "ayse.demir@hs02.kep.tr"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    built = make_mesh(
        tmp_path_factory.mktemp("retention"),
        ["hs01", "hs02"],
        extra={"hs02": "[retention]\nkeep_content_days = 30\n"},
    )
    built["hs01"].start()
    built["hs02"].start()
    yield built
    built.stop()


def _holding(gateway: Gateway, needle: bytes) -> list[Path]:
    """Every file under the gateway's data folder whose bytes contain ``needle``."""
    return [
        path
        for path in sorted(gateway.data.rglob("*"))
        if path.is_file() and needle in path.read_bytes()
    ]


def _places(gateway: Gateway, needle: bytes) -> list[tuple[str, ...]]:
    """Where under the data folder ``needle`` is: the first two parts of each file's path."""
    return [p.relative_to(gateway.data).parts[:2] for p in _holding(gateway, needle)]


def _spool_files(gateway: Gateway) -> list[str]:
    return sorted(p.name for p in (gateway.data / "spool" / "msg").iterdir())


def test_after_a_round_trip_the_body_is_only_in_the_mailboxes(mesh: Mesh) -> None:
    hs01, hs02 = mesh["hs01"], mesh["hs02"]
    body = f"Bu metin yalnız posta kutularında kalmalı {uuid.uuid4().hex}"
    title = subject()
    done = hs01.cli(
        "send", "--from", SENDER, "--to", RECIPIENT, "--subject", title, "--body", body
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    remmd = remmd_of_subject(hs01, SENDER, title)
    wait_evidence(hs01, remmd, {("DeliveryNonDeliveryToRecipient", "Delivery", RECIPIENT)})
    assert hs02.cli("mailbox", "read", RECIPIENT, "1").returncode == 0
    wait_evidence(hs01, remmd, {("RetrievalNonRetrievalByRecipient", "Retrieval", RECIPIENT)})
    # The original travels base64 inside the user's S/MIME message (build_signed_message).
    needle = base64.b64encode(body.encode())[:60]
    # hs01 keeps nothing (every obligation met); the sender's Sent copy is the user's. The
    # submission was held in the store: removed, and gone from the store's files too (the
    # write-ahead log emptied), not only from its tables.
    wait_for(lambda: _spool_files(hs01) == [], what="hs01's spool to empty")
    wait_for(
        lambda: _places(hs01, needle) == [("mail", SENDER)], what="hs01 to keep only the mailbox"
    )
    # hs02 keeps its copies for 30 days, as its operator asked: the Dispatch, held in its store.
    assert any(needle in bytes(row[0]) for row in hs02.query("SELECT data FROM contents"))
    # The evidence keeps the digest of the original, and the ledgers verify.
    for gateway in (hs01, hs02):
        verified = gateway.cli("ledger", "verify")
        assert verified.returncode == 0, verified.stdout
    # The operator lifts the retention: the copies go at the next start.
    hs02.stop()
    hs02.config.write_text(
        hs02.config.read_text().replace("keep_content_days = 30", "keep_content_days = 0")
    )
    hs02.start()
    assert _spool_files(hs02) == []
    assert all(needle not in bytes(row[0]) for row in hs02.query("SELECT data FROM contents"))
    wait_for(
        lambda: _places(hs02, needle) == [("mail", RECIPIENT)],
        what="hs02 to keep only the mailbox",
    )


def test_evidence_sent_and_removed_is_made_again_for_a_repeated_dispatch(mesh: Mesh) -> None:
    hs01, hs02 = mesh["hs01"], mesh["hs02"]
    remmd = f"{uuid.uuid4().hex}@hs02.kep.tr"
    dispatch = make_dispatch(
        mesh.pki,
        sender="ayse.demir@hs02.kep.tr",
        recipients=("ali.yilmaz@hs01.kep.tr",),
        issuer="hs02",
        now=dt.datetime.now(dt.UTC),
        remmd_id=remmd,
    ).dispatch

    def deliver() -> bytes:
        with peer_client(mesh, "hs02", hs01) as client:
            client.ehlo("gw.hs02.kep.tr")
            client.mail("ayse.demir@hs02.kep.tr")
            client.rcpt("ali.yilmaz@hs01.kep.tr")
            code, text = client.data(dispatch)
            assert code == 250, text
            return text

    deliver()
    out = "SELECT id, state, sha256 FROM messages WHERE kind = 'evidence-out' AND remmd_id = ?"
    wait_for(lambda: [r[1] for r in hs01.query(out, remmd)] == ["sent", "sent"], what="sent")
    first = hs01.query(out, remmd)
    # Sent, so removed (§7); hs02 got both (it keeps them as unmatched: it made no Dispatch).
    kept = "SELECT COUNT(*) FROM messages WHERE remmd_id = ? AND content_gone = 0"
    wait_for(lambda: hs01.query(kept, remmd) == [(0,)], what="hs01's copies to go")
    arrived = "SELECT COUNT(*) FROM messages WHERE kind = 'evidence-in' AND remmd_id = ?"
    wait_for(lambda: hs02.query(arrived, remmd) == [(2,)], what="evidence at hs02")
    # The same Dispatch again (its 250 was lost, say): the same message, the same evidence (§2).
    assert b"Already accepted" in deliver()
    wait_for(lambda: hs02.query(arrived, remmd) == [(4,)], what="evidence again at hs02")
    again = hs01.query(out, remmd)
    assert [r[0] for r in again] == [r[0] for r in first]  # the same queue rows
    assert all(a[2] != f[2] for a, f in zip(again, first, strict=True))  # newly made envelopes
    # hs02 holds the four arrivals (unmatched evidence is kept): two EvidenceIdentifiers.
    arrivals = hs02.query(
        "SELECT id FROM messages WHERE kind = 'evidence-in' AND remmd_id = ?", remmd
    )
    carried = set()
    for (queue_id,) in arrivals:  # held in hs02's store (small), unmatched so kept
        [(data,)] = hs02.query("SELECT data FROM contents WHERE message_id = ?", queue_id)
        envelope = parse_envelope(io.BytesIO(bytes(data)))
        carried.add(xmlio.parse(envelope.evidence_xml).identifier)
    issued = hs01.query(
        "SELECT id FROM evidence WHERE remmd_id = ? AND direction = 'issued'", remmd
    )
    assert carried == {r[0] for r in issued} and len(carried) == 2
    wait_for(lambda: hs01.query(kept, remmd) == [(0,)], what="hs01's copies to go again")
    assert _spool_files(hs01) == []
