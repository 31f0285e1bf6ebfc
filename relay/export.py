"""Evidence for a court: ``kep-relay evidence export`` (INTEROP-PROFILE.md §7).

Takes: a node's context (its store, mailboxes and trust) and a REMMD message id.
Promises: one self-contained ZIP file (layout in relay/export_format.py) that verifies
offline with ``kep-relay evidence verify FILE --trust ROOTS``: every evidence about the message
in this node's ledger byte for byte; what verifying it needs (the chains, CRLs and time-stamp
tokens kept with it, and the node's current CRLs of the same CAs); the archive stamps from the
first that covers the evidence to the newest, which carry its time-stamps past their TSAs'
certificates; the ledger proof tying the evidence to the heads those stamps stamp; the
Evidence messages still filed in the sender's Delil folder (optional copies: a user may have
deleted them, and the R-GW keeps none once sent); the manifest; and report.html, the one-page
timeline with how each piece verified at export time (relay/export_report.py). The file is
written whole or not at all (a temporary file, fsync'd, renamed, the directory fsync'd); the
store and the mailboxes are only read.
On failure: ``LookupError`` when the ledger holds no evidence about the message (a usage
error); ``ValueError`` when the ledger does not recompute over the records the proof needs (a
damaged ledger: nothing is written, ``kep-relay ledger verify`` says where); ``OSError`` from
reading the mailboxes or writing the file. An export that does not verify at export time is
still written, with its report saying why (``Exported.verification``).
"""

from __future__ import annotations

import datetime as dt
import email.parser
import email.policy
import hashlib
import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from interop.envelope.fields import EVIDENCE_IDENTIFIER, MESSAGE_IDENTIFIER
from interop.errors import KepError
from interop.evidence import xmlio
from interop.evidence.model import Evidence
from interop.limits import DEFAULT_LIMITS
from relay import ledger
from relay.context import NodeContext
from relay.export_format import (
    DEFAULT_EXPORT_LIMITS,
    MANIFEST,
    REPORT,
    EvidenceEntry,
    LedgerProof,
    Manifest,
    StampEntry,
    ValidationEntry,
    member_name,
)
from relay.export_report import render_report
from relay.export_verify import ExportVerification, record_hash, verify_export
from relay.spool import fsync_dir
from relay.store import Row

# The header block of a filed Evidence message read to match it (Limits.header_block).
_HEADER_BYTES = DEFAULT_LIMITS.header_block
# The order of the steps of one message (KEP-DOMAIN.md "Evidence steps").
_STEPS = {
    name: step
    for step, name in enumerate(
        (
            "SubmissionAcceptanceRejection",
            "RelayREMMDAcceptanceRejection",
            "RelayREMMDFailure",
            "DeliveryNonDeliveryToRecipient",
            "DownloadNonDownloadByRecipient",
            "RetrievalNonRetrievalByRecipient",
            "AcceptanceRejectionByRecipient",
        )
    )
}


@dataclass(frozen=True, slots=True)
class Exported:
    path: Path
    sha256: str
    manifest: Manifest
    verification: ExportVerification


def export_message(context: NodeContext, remmd_id: str, out: Path) -> Exported:
    """Write the export of ``remmd_id`` to ``out`` (the module's contract)."""
    bundle = _Bundle(context)
    manifest, evidence = bundle.collect(remmd_id)
    verification = verify_export(
        {**bundle.members, MANIFEST: manifest.to_json()},
        lambda _domains: context.verifiers.trust,
        at=None,  # the newest archive stamp as of the time it was issued, the rest from it
        now=manifest.exported_at,
    )
    report = render_report(manifest, evidence, verification, bundle.certificates(), out.name)
    manifest = manifest.with_file(REPORT, hashlib.sha256(report).hexdigest())
    members = {MANIFEST: manifest.to_json(), REPORT: report, **bundle.members}
    digest = _write(out, members, manifest.exported_at)
    return Exported(out, digest, manifest, verification)


class _Bundle:
    """The members of one export as they are gathered, and the validation objects among them
    (by SHA-256: a chain shared by every evidence is there once)."""

    def __init__(self, context: NodeContext) -> None:
        self.context = context
        self.members: dict[str, bytes] = {}
        self.validation: dict[str, tuple[str, bytes]] = {}

    def collect(self, remmd_id: str) -> tuple[Manifest, list[Evidence | None]]:
        store = self.context.store
        rows = store.ledger_records_of(remmd_id)
        if not rows:
            raise LookupError(
                f"the ledger of {self.context.provider.id} holds no evidence about {remmd_id}"
            )
        seqs = [int(r["seq"]) for r in rows]
        stamps = _needed_stamps(ledger.archive_stamps(store), min(seqs))
        proof = _ledger_proof(self.context, min(seqs), _reach(seqs, stamps))
        filed = _filed_messages(self.context, remmd_id, rows)
        ordered = _in_time_order(rows)
        width = max(2, len(str(len(rows))))
        entries = [
            self.evidence(row, signed, index, width, filed.get(str(row["id"])))
            for index, (row, signed) in enumerate(ordered, 1)
        ]
        sets = {int(r["seq"]): r["validation_set"] for r in store.archive_stamps()}
        archive = [self.stamp(s, index, sets.get(s.seq)) for index, s in enumerate(stamps, 1)]
        self.current_crls()
        evidence = [signed for _row, signed in ordered]
        manifest = Manifest(
            provider_id=self.context.provider.id,
            provider_domain=self.context.provider.domain,
            remmd_id=remmd_id,
            exported_at=self.context.clock(),
            original_sha256=next((x.message.digest.hex() for x in evidence if x), "0" * 64),
            evidence=tuple(entries),
            validation=tuple(self.validation_entries()),
            archive=tuple(archive),
            proof=proof,
            files={name: hashlib.sha256(data).hexdigest() for name, data in self.members.items()},
        )
        return manifest, evidence

    def evidence(
        self,
        row: Row,
        signed: Evidence | None,
        index: int,
        width: int,
        message: bytes | None,
    ) -> EvidenceEntry:
        xml = bytes(row["xml"])
        kind, event = str(row["type"]), str(row["event"])
        name = member_name("evidence", index, width, kind, event, "xml")
        self.members[name] = xml
        message_name = None
        if message is not None:
            message_name = member_name("messages", index, width, kind, event, "eml")
            self.members[message_name] = message
        return EvidenceEntry(
            file=name,
            sha256=hashlib.sha256(xml).hexdigest(),
            seq=int(row["seq"]),
            direction=str(row["direction"]),
            type=kind,
            event=event,
            issuer=str(row["issuer"]),
            recipient=str(row["recipient"]) if row["recipient"] is not None else None,
            event_time=signed.event_time.isoformat() if signed else "unreadable",
            evidence_id=str(row["id"]),
            validation=self.validation_set(row["validation_set"]),
            message=message_name,
        )

    def stamp(self, stamp: ledger.ArchiveStamp, index: int, set_id: object) -> StampEntry:
        name = f"archive/{index:02d}.tsr"
        self.members[name] = stamp.token
        digest = stamp.checkpoint_digest
        return StampEntry(
            file=name,
            sha256=hashlib.sha256(stamp.token).hexdigest(),
            seq=stamp.seq,
            records=stamp.records,
            head=stamp.head.hex(),
            checkpoint=stamp.checkpoint,
            checkpoint_signature_sha256=None if digest == ledger.NO_HASH else digest.hex(),
            previous=stamp.previous.hex(),
            validation=self.validation_set(set_id),
        )

    def validation_set(self, set_id: object) -> tuple[str, ...]:
        """The objects of a stored validation set, added; their SHA-256s."""
        if not isinstance(set_id, bytes):
            return ()
        hashes = []
        for kind, der in self.context.store.validation_set(set_id):
            sha = hashlib.sha256(der).hexdigest()
            self.validation[sha] = (kind, der)
            hashes.append(sha)
        return tuple(sorted(hashes))

    def certificates(self) -> list[x509.Certificate]:
        return [
            x509.load_der_x509_certificate(der)
            for kind, der in self.validation.values()
            if kind == "certificate"
        ]

    def current_crls(self) -> None:
        """The node's current CRLs of the CAs here: what verifying the export as of today
        needs besides those kept when the evidence and the stamps were recorded."""
        subjects = {c.subject for c in self.certificates()}
        for crl in self.context.verifiers.revocation.crls:
            if crl.issuer in subjects:
                der = crl.public_bytes(Encoding.DER)
                self.validation[hashlib.sha256(der).hexdigest()] = ("crl", der)

    def validation_entries(self) -> list[ValidationEntry]:
        entries = []
        for sha, (kind, der) in sorted(self.validation.items()):
            name = f"validation/{sha}.{'crt' if kind == 'certificate' else 'crl'}"
            self.members[name] = der
            entries.append(ValidationEntry(name, kind, sha))
        return entries


def _needed_stamps(stamps: Sequence[ledger.ArchiveStamp], first: int) -> list[ledger.ArchiveStamp]:
    """From the first stamp covering record ``first`` to the newest: each proves the one
    before it, so older ones (and the records they cover) are not needed."""
    index = next((i for i, s in enumerate(stamps) if s.records >= first), len(stamps))
    return list(stamps[index:])


def _reach(seqs: Sequence[int], stamps: Sequence[ledger.ArchiveStamp]) -> int:
    """The last record the ledger proof lists: the last exported evidence, or the head of the
    first stamp covering one if further (its head must be recomputed; later stamps' need not,
    their tokens chain them). With daily stamps, at most a day of records."""
    reach = max(seqs)
    for seq in seqs:
        covering = next((s for s in stamps if s.records >= seq), None)
        if covering is not None:
            reach = max(reach, covering.records)
    return reach


def _ledger_proof(context: NodeContext, first: int, last: int) -> LedgerProof:
    """The records ``first``..``last`` as ids and hashes, each recomputed against the store."""
    before = context.store.ledger_hash_at(first - 1)
    if before is None:
        raise ValueError(f"ledger record {first - 1} is missing: the ledger is damaged")
    records, prev = [], before
    for seq, evidence_id, digest, stored in context.store.ledger_digests(first, last):
        if digest is None:
            raise ValueError(f"ledger record {seq}: evidence {evidence_id} is missing")
        prev = record_hash(prev, evidence_id, digest)
        if prev != stored:
            raise ValueError(f"ledger record {seq} does not recompute: the ledger is damaged")
        records.append((seq, evidence_id, digest.hex()))
    if len(records) != last - first + 1:
        raise ValueError(f"ledger records {first}-{last} are not all there")
    return LedgerProof(before.hex(), tuple(records))


def _in_time_order(rows: Sequence[Row]) -> list[tuple[Row, Evidence | None]]:
    """Each evidence with its content, in the order things happened: by EventTime (whole
    seconds), then by the step (a relay acceptance and the delivery after it often share a
    second), then by ledger record. The timeline a reader expects; the ledger order is kept
    in each entry's ``ledger_seq``."""
    parsed = []
    for row in rows:
        try:
            signed: Evidence | None = xmlio.parse(bytes(row["xml"]))
        except KepError:
            signed = None  # the export's verification says so, in the report too
        parsed.append((row, signed))
    never = dt.datetime.max.replace(tzinfo=dt.UTC)

    def key(item: tuple[Row, Evidence | None]) -> tuple[dt.datetime, int, int]:
        row, signed = item
        when = signed.event_time if signed else never
        return when, _STEPS.get(str(row["type"]), len(_STEPS)), int(row["seq"])

    return sorted(parsed, key=key)


def _filed_messages(context: NodeContext, remmd_id: str, rows: Sequence[Row]) -> dict[str, bytes]:
    """Evidence id → the Evidence message carrying it, as filed in the Delil folder of the
    original sender when that is an account here (matched by its header fields)."""
    wanted = {str(r["id"]) for r in rows}
    found: dict[str, bytes] = {}
    for address in sorted({str(r["sender"]).lower() for r in rows}):
        for path in _delil_messages(context, address):
            identifier = _evidence_identifier(path, remmd_id)
            if identifier not in wanted or identifier in found:
                continue
            try:
                if path.stat().st_size <= DEFAULT_EXPORT_LIMITS.member_bytes:
                    found[identifier] = path.read_bytes()
            except FileNotFoundError:
                continue  # read or moved meanwhile: the copy is optional
    return found


def _delil_messages(context: NodeContext, address: str) -> list[Path]:
    root = context.mailboxes.root.resolve()
    folder = context.mailboxes.folder(address, "Delil")
    # The address comes from evidence a peer may have signed: it must not lead elsewhere.
    if not folder.resolve().is_relative_to(root) or not folder.is_dir():
        return []
    return sorted(
        entry
        for sub in ("new", "cur")
        if (folder / sub).is_dir()
        for entry in (folder / sub).iterdir()
        if entry.is_file()
    )


def _evidence_identifier(path: Path, remmd_id: str) -> str | None:
    try:
        with path.open("rb") as handle:
            head = handle.read(_HEADER_BYTES)
    except FileNotFoundError:
        return None
    headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(head)
    if str(headers.get(MESSAGE_IDENTIFIER, "")).strip() != remmd_id:
        return None
    return str(headers.get(EVIDENCE_IDENTIFIER, "")).strip() or None


def _write(out: Path, members: Mapping[str, bytes], when: dt.datetime) -> str:
    """Write the ZIP whole or not at all; its SHA-256. Members are dated ``when`` in UTC (a
    ZIP date has no zone)."""
    date = when.astimezone(dt.UTC).timetuple()[:6]
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as handle:
            with zipfile.ZipFile(handle, "w") as archive:
                for name, data in members.items():
                    info = zipfile.ZipInfo(name, date)
                    info.compress_type = zipfile.ZIP_DEFLATED
                    info.external_attr = 0o644 << 16
                    archive.writestr(info, data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(out.parent)
    return hashlib.sha256(out.read_bytes()).hexdigest()
