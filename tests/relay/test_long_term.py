"""Evidence outlives its certificates (INTEROP-PROFILE.md 1.1 §1 "Signing time", §7).

A node issues XAdES-T evidence and takes its daily checkpoint with an archive stamp. Years
pass on a frozen clock: one day after the process certificate's notAfter, the evidence, its
Evidence message and the ledger still verify with the operator tools (``--at``), because their
signers are judged at the time their time-stamps prove. The provider renews its certificates
and TSA before they expire; past the first TSA certificate's notAfter, the ledger still
verifies through its archive chain, and so does an export of the message, offline with the
roots alone. A changed byte still fails.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import zipfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from interop.cms.timestamp import LocalTsa
from interop.envelope.smime import build_signed_message
from interop.evidence import xmlio
from interop.evidence.issue import submission_evidence
from interop.pki.devpki import DevPki, generate, renewed
from interop.providers import BUILTIN_DIRECTORY
from relay import ledger
from relay.config import NodeConfig
from relay.config_file import from_mapping
from relay.context import NodeContext, build_context
from relay.export import export_message
from relay.issuing import record, sign
from relay.keys import write_pki
from tests.interop.crls import make_crl
from tests.relay.gateways import run_cli

ROOT = Path(__file__).resolve().parents[2]
T0 = dt.datetime(2026, 1, 5, 12, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def _current_crl(pki: DevPki, folder: Path, at: dt.datetime) -> None:
    """The operator's CRL of the process CA, current at ``at`` (what a verifier holds then)."""
    crl = make_crl(pki.process_ca, at - dt.timedelta(hours=1), at + 30 * DAY)
    (folder / "ca" / "process-ca.crl").write_bytes(crl.public_bytes(Encoding.PEM))


@pytest.fixture
def node(tmp_path: Path) -> tuple[DevPki, NodeConfig, Clock]:
    pki = generate(T0, ["hs01", "hs02"])
    write_pki(pki, tmp_path / "pki")
    config = from_mapping(
        {
            "node": {"provider": "hs01", "dev_pki": "pki", "data_dir": "data"},
        },
        str(tmp_path / "hs01.toml"),
        tmp_path,
    )
    (tmp_path / "hs01.toml").write_text(
        '[node]\nprovider = "hs01"\ndev_pki = "pki"\ndata_dir = "data"\n'
    )
    return pki, config, Clock(T0 + dt.timedelta(hours=1))


def _issue(context: NodeContext, pki: DevPki) -> bytes:
    """SubmissionAcceptanceRejection, as the S-GW issues it, recorded in the ledger."""
    sender, recipient = "ali.yilmaz@hs01.kep.tr", "ayse.demir@hs02.kep.tr"
    original = build_signed_message(
        pki.user(sender).signer,
        sender=sender,
        recipients=[recipient],
        subject="Kira sözleşmesi",
        body="Ekte imzalı sözleşme.",
        now=context.clock(),
    )
    evidence = submission_evidence(
        io.BytesIO(original),
        BUILTIN_DIRECTORY["hs01"],
        sender,
        [recipient],
        "rem-lt-1@hs01.kep.tr",
        context.clock(),
    )
    issued = sign(context, evidence)
    with context.store.transaction() as db:
        record(context, db, issued, direction="issued", message_id=None)
    return issued.xml


def test_evidence_issued_before_verifies_after_its_certificates_expire(
    node: tuple[DevPki, NodeConfig, Clock], tmp_path: Path
) -> None:
    pki, config, clock = node
    context = build_context(config, clock=clock)
    xml = _issue(context, pki)
    assert b"SignatureTimeStamp" in xml  # XAdES-T (profile §5)
    message = context.crypto.evidence_message(xmlio.parse(xml), xml, clock())
    ledger.take(context)  # the daily checkpoint, with its archive stamp
    context.store.close()
    (tmp_path / "delil.xml").write_bytes(xml)
    (tmp_path / "evidence.eml").write_bytes(message)

    # One day after the process certificate's notAfter; the verifier holds a current CRL, and
    # the one current when the evidence was signed (a CRL issued after a certificate expired
    # may leave it out, RFC 5280 §3.3: the ledger keeps the earlier one with the evidence).
    kept = tmp_path / "kept-process-ca.crl"
    kept.write_bytes((tmp_path / "pki" / "ca" / "process-ca.crl").read_bytes())
    process_end = pki.providers["hs01"].process.certificate.not_valid_after_utc
    later = process_end + DAY
    assert later < pki.tsa.certificate.not_valid_after_utc
    _current_crl(pki, tmp_path / "pki", later)
    at = ("--at", later.isoformat())
    config_file = tmp_path / "hs01.toml"
    folder = ("--pki", tmp_path / "pki", "--crl", kept)
    for args in (
        ("evidence", "verify", tmp_path / "delil.xml", *folder),
        ("envelope", "verify", tmp_path / "evidence.eml", *folder),
        ("ledger", "verify", "--config", config_file),
    ):
        done = run_cli(*args, *at)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        assert "INVALID" not in done.stdout
    # Without its time-stamp the same evidence would be judged now: expired.
    bes = _without_timestamp(xml)
    (tmp_path / "bes.xml").write_bytes(bes)
    done = run_cli("evidence", "verify", tmp_path / "bes.xml", *folder, *at)
    assert done.returncode == 1 and "expired" in done.stdout, done.stdout
    # A changed byte still fails.
    (tmp_path / "changed.xml").write_bytes(xml.replace(b"Kira", b"Kirq", 1))
    done = run_cli("evidence", "verify", tmp_path / "changed.xml", *folder, *at)
    assert done.returncode == 1, done.stdout

    # Before the first TSA certificate ends, the provider renews its process certificate and
    # TSA; the next daily checkpoint's archive stamp carries the proof over.
    tsa_end = pki.tsa.certificate.not_valid_after_utc
    renewal = tsa_end - 30 * DAY
    _current_crl(pki, tmp_path / "pki", renewal)
    clock.now = renewal
    context = build_context(config, clock=clock)
    process, tsa = renewed(pki, renewal - dt.timedelta(hours=1), "hs01")
    context.process = process
    context.stamping.local = LocalTsa(tsa)
    ledger.take(context)
    context.store.close()

    # Past the first TSA certificate's notAfter: the ledger still verifies, through its
    # archive chain, with the CRLs it kept.
    after_tsa = tsa_end + DAY
    _current_crl(pki, tmp_path / "pki", after_tsa)
    done = run_cli("ledger", "verify", "--config", config_file, "--at", after_tsa.isoformat())
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 archive time-stamps valid" in done.stdout, done.stdout
    # The bare evidence file cannot prove its time-stamp by itself any more: its TSA expired.
    done = run_cli(
        "evidence", "verify", tmp_path / "delil.xml", *folder, "--at", after_tsa.isoformat()
    )
    assert done.returncode == 1, done.stdout

    # An export of the message made then verifies with the roots alone, through the archive
    # chain it carries; without the second stamp, nothing proves the first TSA any more.
    clock.now = after_tsa
    context = build_context(config, clock=clock)
    exported = export_message(context, "rem-lt-1@hs01.kep.tr", tmp_path / "delil.zip")
    context.store.close()
    assert exported.verification.ok, exported.verification.detail
    assert len(exported.manifest.archive) == 2
    roots = ("--trust", tmp_path / "pki" / "ca" / "process-ca.crt")
    done = run_cli("evidence", "verify", exported.path, *roots, "--at", after_tsa.isoformat())
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.rstrip().endswith("VALID") and "[ok] archive stamp" in done.stdout
    shorter = _without_newest_stamp(exported.path, tmp_path / "shorter.zip")
    done = run_cli("evidence", "verify", shorter, *roots, "--at", after_tsa.isoformat())
    assert done.returncode == 1, done.stdout + done.stderr
    assert "[FAIL] archive stamp" in done.stdout and "expired" in done.stdout, done.stdout

    # The ledger with one byte changed in its evidence fails.
    with build_context(config, clock=clock).store.transaction() as db:
        db.execute("UPDATE evidence SET xml = replace(xml, 'Kira', 'Kirq')")
    done = run_cli("ledger", "verify", "--config", config_file, *at)
    assert done.returncode == 1 and "INVALID" in done.stdout, done.stdout + done.stderr


def _without_timestamp(xml: bytes) -> bytes:
    start = xml.index(b"<xades:UnsignedProperties")
    end = xml.index(b"</xades:UnsignedProperties>") + len(b"</xades:UnsignedProperties>")
    return xml[:start] + xml[end:]


def _without_newest_stamp(path: Path, out: Path) -> Path:
    """The export with its newest archive stamp taken out, manifest and members alike."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    manifest = json.loads(members["manifest.json"])
    newest = manifest["archive"].pop()
    del manifest["files"][newest["file"]], members[newest["file"]]
    members["manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out
