"""Evidence for a court: ``kep-relay evidence export`` and its offline verification.

Two real gateways carry one message all the way (submitted, accepted by the recipient's
provider, delivered, read); the sender's gateway takes its checkpoint (with an archive stamp)
and exports the message. The file verifies with the development PKI's root alone (its
process CA is also its TSA root), and any change to it, or a hostile archive, is INVALID or
refused: never a traceback.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from relay.export_format import ExportLimits, Unreadable, read_members
from relay.export_verify import record_hash, trust_from_roots, verify_export
from relay.keys import load_certificates
from relay.store import GENESIS, ledger_hash
from tests.relay.gateways import (
    Mesh,
    make_mesh,
    remmd_of_subject,
    run_cli,
    send,
    subject_of,
    wait_evidence,
)

ROOT = Path(__file__).resolve().parents[2]
SENDER, RECIPIENT = "ali.yilmaz@hs01.kep.tr", "ayse.demir@hs02.kep.tr"
TITLE = "Kira <script>alert('x')</script> & ihtar ğüşİ"
XHTML = "{http://www.w3.org/1999/xhtml}"
STEPS = {
    ("SubmissionAcceptanceRejection", "Acceptance"),
    ("RelayREMMDAcceptanceRejection", "Acceptance"),
    ("DeliveryNonDeliveryToRecipient", "Delivery"),
    ("RetrievalNonRetrievalByRecipient", "Retrieval"),
}


class Exported:
    def __init__(self, mesh: Mesh, remmd: str, path: Path, stdout: str) -> None:
        self.mesh = mesh
        self.remmd = remmd
        self.path = path
        self.stdout = stdout

    @property
    def roots(self) -> Path:
        return self.mesh.root / "pki" / "ca" / "process-ca.crt"

    def verify(self, path: Path | None = None, *extra: str) -> subprocess.CompletedProcess[str]:
        done = run_cli("evidence", "verify", path or self.path, "--trust", self.roots, *extra)
        assert "Traceback" not in done.stderr, done.stderr
        return done


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exported]:
    root = tmp_path_factory.mktemp("export")
    mesh = make_mesh(root, ["hs01", "hs02"])
    hs01, hs02 = mesh["hs01"], mesh["hs02"]
    hs01.start()
    hs02.start()
    try:
        send(hs01, SENDER, RECIPIENT, subject=TITLE)
        remmd = remmd_of_subject(hs01, SENDER, TITLE)
        wait_evidence(hs01, remmd, {("DeliveryNonDeliveryToRecipient", "Delivery", RECIPIENT)})
        inbox = hs02.mail(RECIPIENT)
        number = inbox.index(next(p for p in inbox if subject_of(p) == TITLE)) + 1
        assert hs02.cli("mailbox", "read", RECIPIENT, str(number)).returncode == 0
        wait_evidence(hs01, remmd, {("RetrievalNonRetrievalByRecipient", "Retrieval", RECIPIENT)})
        checkpoint = hs01.cli("ledger", "checkpoint")  # the daily one, with its archive stamp
        assert checkpoint.returncode == 0, checkpoint.stderr
        done = hs01.cli("evidence", "export", remmd, "--out", str(root / "delil.zip"))
        assert done.returncode == 0, done.stdout + done.stderr
        yield Exported(mesh, remmd, root / "delil.zip", done.stdout)
    finally:
        mesh.stop()


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _manifest(members: dict[str, bytes]) -> dict[str, object]:
    value: dict[str, object] = json.loads(members["manifest.json"])
    return value


def test_the_export_verifies_offline_with_the_roots_alone(exported: Exported) -> None:
    assert "VALID at export" in exported.stdout
    done = exported.verify()
    assert done.returncode == 0, done.stdout
    assert done.stdout.rstrip().endswith("VALID")
    assert "[FAIL]" not in done.stdout and "[ok] archive stamp" in done.stdout
    report = json.loads(exported.verify(None, "--json").stdout)
    assert report["valid"] is True and report["remmd_id"] == exported.remmd
    assert {(e["type"], e["event"]) for e in report["timeline"]} == STEPS
    assert all(e["valid"] and e["archive_stamp"] for e in report["timeline"])
    # The original's SHA-256, against the copy filed in the sender's Sent folder: the bytes
    # the evidence's digest is over (profile §5).
    sent = next(p for p in exported.mesh["hs01"].mail(SENDER, "Sent") if subject_of(p) == TITLE)
    assert report["original_sha256"] == hashlib.sha256(sent.read_bytes()).hexdigest()
    # The node's own trust (--config) agrees.
    config = exported.mesh["hs01"].config
    assert run_cli("evidence", "verify", exported.path, "--config", config).returncode == 0


def test_the_zip_holds_what_the_manifest_says(exported: Exported) -> None:
    members = _members(exported.path)
    manifest = _manifest(members)
    assert manifest["format"] == "kep-relay evidence export" and manifest["version"] == 1
    files = manifest["files"]
    assert isinstance(files, dict)
    assert set(files) == set(members) - {"manifest.json"}
    evidence = manifest["evidence"]
    assert isinstance(evidence, list)
    ledger = dict(exported.mesh["hs01"].query("SELECT evidence_id, seq FROM ledger"))
    for entry in evidence:
        xml = exported.mesh["hs01"].query(
            "SELECT xml FROM evidence WHERE id = ?", entry["evidence_id"]
        )
        assert members[entry["file"]] == bytes(xml[0][0])  # byte for byte as in the ledger
        assert entry["ledger_seq"] == ledger[entry["evidence_id"]]
    # Evidence messages filed in the sender's Delil folder come along; the one inside the
    # Dispatch was never filed.
    assert any(name.startswith("messages/") for name in members)
    assert all(
        n.startswith(("evidence/", "messages/", "validation/", "archive/"))
        or n in ("manifest.json", "report.html")
        for n in members
    )


def test_the_report_lists_the_timeline_as_escaped_xhtml(exported: Exported) -> None:
    members = _members(exported.path)
    page = members["report.html"]
    root = etree.fromstring(page)  # well-formed: an XML parser, not a forgiving one
    assert root.tag == f"{XHTML}html"
    assert not list(root.iter(f"{XHTML}script", f"{XHTML}img", f"{XHTML}link", f"{XHTML}iframe"))
    for element in root.iter():
        names = [str(name) for name in element.attrib]
        assert not any(name.startswith("on") or name in ("src", "href") for name in names)
    text = "".join(str(t) for t in root.itertext())
    assert TITLE in text  # the subject shows as text
    assert b"<script>" not in page and b"&lt;script&gt;" in page
    manifest = _manifest(members)
    assert str(manifest["original_sha256"]) in text
    for label in (
        "Submitted: accepted by the sender's provider",
        "Accepted by the recipient's provider",
        "Delivered to the recipient's mailbox",
        "Read by the recipient",
        "Alıcı tarafından okundu",
    ):
        assert label in text
    evidence = manifest["evidence"]
    assert isinstance(evidence, list)
    for entry in evidence:
        assert entry["event_time"][:19].replace("T", " ") in text  # its time, in UTC
    # The rows follow what happened: submitted, accepted, delivered, read.
    order = [
        text.index(label)
        for label in ("Submitted: accepted", "Accepted by the recipient", "Delivered to", "Read by")
    ]
    assert order == sorted(order)


def _changed(members: dict[str, bytes], name: str, old: bytes, new: bytes) -> dict[str, bytes]:
    assert old in members[name], (name, old)
    return {**members, name: members[name].replace(old, new, 1)}


def _rechecksummed(members: dict[str, bytes], name: str) -> dict[str, bytes]:
    """A forger's change: the member's checksum in the manifest made to match."""
    manifest = _manifest(members)
    text = members["manifest.json"].decode()
    files = manifest["files"]
    assert isinstance(files, dict)
    text = text.replace(files[name], hashlib.sha256(members[name]).hexdigest())
    return {**members, "manifest.json": text.encode()}


def test_any_change_is_invalid_never_a_traceback(exported: Exported, tmp_path: Path) -> None:
    members = _members(exported.path)
    manifest = _manifest(members)
    evidence = manifest["evidence"]
    assert isinstance(evidence, list)
    first = evidence[0]["file"]
    read = next(e["file"] for e in evidence if e["event"] == "Retrieval")
    forged = _changed(members, read, b"Retrieval</", b"Retrievql</")
    cases = {
        "evidence byte": _changed(members, first, b"Kira", b"Kirq"),
        "evidence byte, checksum made to match": _rechecksummed(forged, read),
        "manifest: a checksum": _changed(
            members, "manifest.json", str(evidence[0]["sha256"]).encode(), b"0" * 64
        ),
        "manifest: the ledger proof": _changed(
            members, "manifest.json", b'"before": "', b'"before": "1'
        ),
        "manifest: the REMMD id": _changed(
            members, "manifest.json", b'"remmd_id": "', b'"remmd_id": "x'
        ),
        "manifest: not JSON": _changed(members, "manifest.json", b"{", b"["),
        "a member added": {**members, "evidence/99-Extra-Acceptance.xml": b"<x/>"},
        "a member removed": {k: v for k, v in members.items() if k != first},
        "the report changed": _changed(members, "report.html", b"Valid", b"Vaiid"),
    }
    for case, changed in cases.items():
        done = exported.verify(_zip(tmp_path / "changed.zip", changed))
        assert done.returncode == 1, (case, done.stdout, done.stderr)
        assert "INVALID" in done.stdout and "[FAIL]" in done.stdout, (case, done.stdout)
    # A byte flipped in the ZIP file itself: its CRC no longer holds.
    raw = bytearray(exported.path.read_bytes())
    raw[raw.index(b"evidence/") + 200] ^= 0xFF
    (tmp_path / "flipped.zip").write_bytes(bytes(raw))
    done = exported.verify(tmp_path / "flipped.zip")
    assert done.returncode == 1 and "INVALID" in done.stdout, done.stdout + done.stderr


def test_hostile_archives_are_refused_cleanly(exported: Exported, tmp_path: Path) -> None:
    members = _members(exported.path)
    for name in ("../x", "/etc/passwd", "evidence/../../x", "a\\b"):
        done = exported.verify(_zip(tmp_path / "named.zip", {**members, name: b"x"}))
        assert done.returncode == 1, (name, done.stdout)
        assert "refused member name" in done.stdout, done.stdout
    # 65 MiB of zeros deflate to 64 KiB: refused from the directory, never inflated.
    bomb = _zip(tmp_path / "bomb.zip", {**members, "validation/big.crl": bytes(65 << 20)})
    assert bomb.stat().st_size < 1 << 20
    done = exported.verify(bomb)
    assert done.returncode == 1 and "over 67108864" in done.stdout, done.stdout
    # The limits have names and can be set lower.
    with pytest.raises(Unreadable, match="more than 3 members"):
        read_members(exported.path, ExportLimits(members=3))
    with pytest.raises(Unreadable, match="over 1000"):
        read_members(exported.path, ExportLimits(member_bytes=1000))
    with pytest.raises(Unreadable, match="total"):
        read_members(exported.path, ExportLimits(total_bytes=50_000))
    (tmp_path / "not.zip").write_bytes(b"PK\x03\x04 but not a zip")
    done = exported.verify(tmp_path / "not.zip")
    assert done.returncode == 1 and "not a readable ZIP" in done.stdout, done.stdout


def test_unknown_message_and_usage_errors_exit_2(exported: Exported, tmp_path: Path) -> None:
    out = tmp_path / "none.zip"
    done = exported.mesh["hs01"].cli("evidence", "export", "yok@hs01.kep.tr", "--out", str(out))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no evidence about yok@hs01.kep.tr" in done.stderr and "Traceback" not in done.stderr
    assert not out.exists()
    missing = exported.verify(tmp_path / "missing.zip")
    assert missing.returncode == 2
    (tmp_path / "roots.pem").write_text("not a certificate")
    done = run_cli("evidence", "verify", exported.path, "--trust", tmp_path / "roots.pem")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr


def test_the_recipients_gateway_exports_what_it_issued(exported: Exported, tmp_path: Path) -> None:
    out = tmp_path / "hs02.zip"
    done = exported.mesh["hs02"].cli("evidence", "export", exported.remmd, "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    verified = exported.verify(out, "--json")
    assert verified.returncode == 0, verified.stdout
    events = {(e["type"], e["event"]) for e in json.loads(verified.stdout)["timeline"]}
    assert events == STEPS - {("SubmissionAcceptanceRejection", "Acceptance")}


def test_a_ledger_proof_record_hashes_as_the_store_does() -> None:
    xml = b"<delil/>"
    for prev in (GENESIS, hashlib.sha256(b"x").digest()):
        expected = ledger_hash(prev, "kimlik-ğ", xml)
        assert record_hash(prev, "kimlik-ğ", hashlib.sha256(xml).digest()) == expected


def test_reading_refuses_duplicates_and_encryption(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("manifest.json", b"{}")
        with pytest.warns(UserWarning, match="Duplicate name"):
            archive.writestr("manifest.json", b"{}")
    (tmp_path / "dup.zip").write_bytes(buffer.getvalue())
    with pytest.raises(Unreadable, match="twice"):
        read_members(tmp_path / "dup.zip")
    raw = bytearray(_zip(tmp_path / "enc.zip", {"manifest.json": b"{}"}).read_bytes())
    for header in (b"PK\x03\x04", b"PK\x01\x02"):  # set the encryption flag everywhere
        at = raw.index(header) + (6 if header == b"PK\x03\x04" else 8)
        raw[at] |= 0x1
    (tmp_path / "enc.zip").write_bytes(bytes(raw))
    with pytest.raises(Unreadable, match="encrypted"):
        read_members(tmp_path / "enc.zip")


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_a_changed_byte_anywhere_is_a_result_not_an_exception(
    exported: Exported, data: st.DataObject
) -> None:
    """A forger's change (the checksums made to match), so every parser behind them runs."""
    members = _members(exported.path)
    name = data.draw(st.sampled_from(sorted(members)))
    changed = bytearray(members[name])
    changed[data.draw(st.integers(0, len(changed) - 1))] ^= data.draw(st.integers(1, 255))
    members = {**members, name: bytes(changed)}
    if name != "manifest.json":
        old = hashlib.sha256(_members(exported.path)[name]).hexdigest()
        text = members["manifest.json"].replace(
            old.encode(), hashlib.sha256(changed).hexdigest().encode()
        )
        members["manifest.json"] = text
    roots = load_certificates((exported.roots,))
    result = verify_export(
        members,
        lambda domains: trust_from_roots(roots, domains),
        at=None,
        now=dt.datetime.now(dt.UTC),
    )
    # Not every byte matters (a token's or a signature's unsigned certificate bag, a root
    # copied beside the trusted one): the answer is a result either way.
    assert result.checks and result.ok == all(c.ok for c in result.checks)
