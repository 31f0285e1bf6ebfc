"""The file ``kep-relay evidence export`` writes, and reading one back without trusting it.

One ZIP (deflated; names below) per message::

    manifest.json                         what is here and how it fits together (``Manifest``)
    report.html                           the one-page report (relay/export_report.py)
    evidence/NN-<Type>-<Event>.xml        each signed delil.xml, byte for byte as in the ledger
    messages/NN-<Type>-<Event>.eml        the Evidence message carrying it, when one is at hand
    validation/<sha256>.crt | .crl        DER certificates and CRLs verifying needs (profile §7)
    archive/NN.tsr                        the archive time-stamp tokens (relay/ledger.py)

The manifest lists every other member with its SHA-256 (``files``), and carries what the
archive tokens stamp (each stamp's records, head, checkpoint signature hash and previous token
hash) and the ledger proof: the hash of the record before the first exported evidence and
(seq, evidence id, SHA-256 of the XML) of every record from there to the last one an archive
stamp needed here covers, so the heads the tokens stamp can be recomputed. Records of other
messages appear as ids and hashes only, never with their content.

Reading (``read_members``) is bounded by ``ExportLimits`` and refuses absolute names, ``..``,
duplicates, directories, encrypted or oddly compressed members, and anything over a limit,
before a byte is decompressed past it. ``Manifest.parse`` turns the JSON into values that
checked themselves, or raises ``Unreadable``: the one exception of the export modules, which
the verifier turns into a failed check (relay/export_verify.py) and nothing else sees.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interop.limits import MiB

FORMAT = "kep-relay evidence export"
VERSION = 1
MANIFEST = "manifest.json"
REPORT = "report.html"
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header; an empty archive


@dataclass(frozen=True, slots=True)
class ExportLimits:
    """What a verifier reads of an export at most (STYLE: every limit has a name)."""

    # Members: one message to Limits.recipients (1000) recipients has ~3 evidence each, an
    # Evidence message for each, a few chains, CRLs and archive tokens: ~6,100.
    members: int = 10_000
    # One member: the largest is the manifest, whose ledger proof lists the records from the
    # first exported evidence to the archive stamp covering the last (a day of records with
    # daily stamps), ~130 bytes a record: 500,000 records. Evidence messages are ~20 KiB.
    member_bytes: int = 64 * MiB
    # All members decompressed together (a ZIP bomb stops here, not in memory).
    total_bytes: int = 256 * MiB
    # A member's name (ours are under 100 bytes; POSIX NAME_MAX is 255).
    name_bytes: int = 255

    @property
    def file_bytes(self) -> int:
        """The ZIP file itself: its members plus a header and directory entry for each."""
        return self.total_bytes + self.members * (2 * self.name_bytes + 128)


DEFAULT_EXPORT_LIMITS = ExportLimits()


class Unreadable(Exception):
    """An export that cannot be taken for one: ``check`` names the check it fails."""

    def __init__(self, check: str, detail: str) -> None:
        super().__init__(detail)
        self.check = check
        self.detail = detail


_HEX32 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z]{1,64}$")
_MAX_SEQ = 2**62  # ledger seq and record counts: SQLite INTEGER, and 8 bytes in archive_data


def member_name(folder: str, index: int, width: int, kind: str, event: str, ext: str) -> str:
    """``folder/NN-<Type>-<Event>.ext``; names read from the store are letters only."""
    kind = kind if _NAME.match(kind) else "Evidence"
    event = event if _NAME.match(event) else "Event"
    return f"{folder}/{index:0{width}d}-{kind}-{event}.{ext}"


@dataclass(frozen=True, slots=True)
class EvidenceEntry:
    file: str
    sha256: str
    seq: int  # its ledger record
    direction: str  # issued, received
    type: str
    event: str
    issuer: str
    recipient: str | None
    event_time: str  # ISO 8601, as in the signed evidence
    evidence_id: str
    validation: tuple[str, ...]  # SHA-256 of the objects its verification used when recorded
    message: str | None  # the Evidence message carrying it, when one was at hand

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "sha256": self.sha256,
            "ledger_seq": self.seq,
            "direction": self.direction,
            "type": self.type,
            "event": self.event,
            "issuer": self.issuer,
            "recipient": self.recipient,
            "event_time": self.event_time,
            "evidence_id": self.evidence_id,
            "validation": list(self.validation),
            "message": self.message,
        }

    @classmethod
    def from_json(cls, o: _Object) -> EvidenceEntry:
        return cls(
            file=o.text("file"),
            sha256=o.hex32("sha256"),
            seq=o.number("ledger_seq"),
            direction=o.text("direction"),
            type=o.text("type"),
            event=o.text("event"),
            issuer=o.text("issuer"),
            recipient=o.opt_text("recipient"),
            event_time=o.text("event_time"),
            evidence_id=o.text("evidence_id"),
            validation=o.hashes("validation"),
            message=o.opt_text("message"),
        )


@dataclass(frozen=True, slots=True)
class ValidationEntry:
    file: str
    kind: str  # certificate, crl
    sha256: str

    def __post_init__(self) -> None:
        if self.kind not in ("certificate", "crl"):
            raise Unreadable("manifest", f"{self.file}: kind {self.kind!r} is not certificate, crl")

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "kind": self.kind, "sha256": self.sha256}

    @classmethod
    def from_json(cls, o: _Object) -> ValidationEntry:
        return cls(o.text("file"), o.text("kind"), o.hex32("sha256"))


@dataclass(frozen=True, slots=True)
class StampEntry:
    """An archive stamp: its token's file, and what the token stamps (``stamped_data``)."""

    file: str
    sha256: str
    seq: int
    records: int
    head: str
    checkpoint: int | None
    checkpoint_signature_sha256: str | None  # None: the stamp covers no checkpoint
    previous: str
    validation: tuple[str, ...]  # the TSA's chain and CRLs when it was taken

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "sha256": self.sha256,
            "seq": self.seq,
            "records": self.records,
            "head": self.head,
            "checkpoint": self.checkpoint,
            "checkpoint_signature_sha256": self.checkpoint_signature_sha256,
            "previous": self.previous,
            "validation": list(self.validation),
        }

    @classmethod
    def from_json(cls, o: _Object) -> StampEntry:
        return cls(
            file=o.text("file"),
            sha256=o.hex32("sha256"),
            seq=o.number("seq"),
            records=o.number("records"),
            head=o.hex32("head"),
            checkpoint=o.opt_number("checkpoint"),
            checkpoint_signature_sha256=o.opt_hex32("checkpoint_signature_sha256"),
            previous=o.hex32("previous"),
            validation=o.hashes("validation"),
        )


@dataclass(frozen=True, slots=True)
class LedgerProof:
    before: str  # hash of the record before the first listed (zeros before record 1)
    records: tuple[tuple[int, str, str], ...]  # (seq, evidence id, SHA-256 of its XML)

    def __post_init__(self) -> None:
        if not self.records:
            raise Unreadable("ledger proof", "the ledger proof lists no record")
        first = self.records[0][0]
        for offset, (seq, _id, _digest) in enumerate(self.records):
            if seq != first + offset:
                raise Unreadable("ledger proof", f"the ledger proof skips record {first + offset}")

    @property
    def first(self) -> int:
        return self.records[0][0]

    @property
    def last(self) -> int:
        return self.records[-1][0]

    def to_json(self) -> dict[str, Any]:
        return {"before": self.before, "records": [list(r) for r in self.records]}

    @classmethod
    def from_json(cls, o: _Object) -> LedgerProof:
        records = []
        for index, item in enumerate(o.items("records")):
            if not isinstance(item, list) or len(item) != 3:
                raise Unreadable("manifest", f"ledger_proof: record {index} is not [seq, id, hash]")
            entry = _Object(dict(zip(("seq", "id", "sha256"), item, strict=True)), "ledger_proof")
            records.append((entry.number("seq"), entry.text("id"), entry.hex32("sha256")))
        return cls(o.hex32("before"), tuple(records))


@dataclass(frozen=True, slots=True)
class Manifest:
    provider_id: str
    provider_domain: str
    remmd_id: str
    exported_at: dt.datetime
    original_sha256: str  # as the evidence's ds:DigestValue gives it
    evidence: tuple[EvidenceEntry, ...]  # in ledger order
    validation: tuple[ValidationEntry, ...]
    archive: tuple[StampEntry, ...]  # oldest first
    proof: LedgerProof
    files: Mapping[str, str]  # every member but the manifest → its SHA-256

    def __post_init__(self) -> None:
        if not self.evidence:
            raise Unreadable("manifest", "the manifest lists no evidence")
        named: list[tuple[str, str | None]] = [(e.file, e.sha256) for e in self.evidence]
        named += [(e.message, None) for e in self.evidence if e.message]
        named += [(v.file, v.sha256) for v in self.validation]
        named += [(s.file, s.sha256) for s in self.archive]
        for name, sha256 in named:
            if name not in self.files:
                raise Unreadable("manifest", f"{name} has no checksum in the manifest's files")
            if sha256 is not None and self.files[name] != sha256:
                raise Unreadable("manifest", f"{name}: the manifest gives two checksums")
        # Every file is there for a reason the manifest states (the report is added last).
        unexplained = set(self.files) - {name for name, _sha in named} - {REPORT}
        if unexplained:
            raise Unreadable("manifest", f"{min(unexplained)} is in no entry of the manifest")
        objects = {v.sha256 for v in self.validation}
        uses = [(e.file, e.validation) for e in self.evidence]
        uses += [(s.file, s.validation) for s in self.archive]
        for name, hashes in uses:
            if not objects.issuperset(hashes):
                raise Unreadable("manifest", f"{name}: its validation objects are not all here")

    def with_file(self, name: str, sha256: str) -> Manifest:
        return dataclasses.replace(self, files={**self.files, name: sha256})

    def to_json(self) -> bytes:
        value = {
            "format": FORMAT,
            "version": VERSION,
            "provider": {"id": self.provider_id, "domain": self.provider_domain},
            "remmd_id": self.remmd_id,
            "exported_at": self.exported_at.isoformat(),
            "original_sha256": self.original_sha256,
            "evidence": [e.to_json() for e in self.evidence],
            "validation": [v.to_json() for v in self.validation],
            "archive": [s.to_json() for s in self.archive],
            "ledger_proof": self.proof.to_json(),
            "files": dict(sorted(self.files.items())),
        }
        return json.dumps(value, ensure_ascii=False, indent=1).encode() + b"\n"

    @classmethod
    def parse(cls, data: bytes) -> Manifest:
        """The manifest of an export; ``Unreadable`` names what is wrong."""
        try:
            value = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise Unreadable("manifest", f"{MANIFEST} is not JSON: {exc}") from exc
        top = _Object(value, MANIFEST)
        version = top.value.get("version")
        if top.value.get("format") != FORMAT or type(version) is not int or version != VERSION:
            raise Unreadable("manifest", f"{MANIFEST} is not a {FORMAT} version {VERSION}")
        provider = top.obj("provider")
        files = top.obj("files")
        return cls(
            provider_id=provider.text("id"),
            provider_domain=provider.text("domain"),
            remmd_id=top.text("remmd_id"),
            exported_at=top.time("exported_at"),
            original_sha256=top.hex32("original_sha256"),
            evidence=tuple(EvidenceEntry.from_json(o) for o in top.objects("evidence")),
            validation=tuple(ValidationEntry.from_json(o) for o in top.objects("validation")),
            archive=tuple(StampEntry.from_json(o) for o in top.objects("archive")),
            proof=LedgerProof.from_json(top.obj("ledger_proof")),
            files={name: files.hex32(name) for name in files.value},
        )


class _Object:
    """A JSON object read field by field; anything not as required is ``Unreadable``."""

    def __init__(self, value: object, where: str) -> None:
        if not isinstance(value, dict):
            raise Unreadable("manifest", f"{where}: not an object")
        self.value: dict[str, object] = value
        self.where = where

    def _get(self, key: str, kind: type, what: str) -> Any:
        found = self.value.get(key)
        if not isinstance(found, kind) or isinstance(found, bool):
            raise Unreadable("manifest", f"{self.where}: {key} is not {what}")
        return found

    def text(self, key: str) -> str:
        found: str = self._get(key, str, "a string")
        if not found or len(found) > 1024:
            raise Unreadable("manifest", f"{self.where}: {key} is empty or too long")
        return found

    def opt_text(self, key: str) -> str | None:
        return None if self.value.get(key) is None else self.text(key)

    def number(self, key: str) -> int:
        found: int = self._get(key, int, "an integer")
        if not 0 <= found < _MAX_SEQ:
            raise Unreadable("manifest", f"{self.where}: {key} is out of range")
        return found

    def opt_number(self, key: str) -> int | None:
        return None if self.value.get(key) is None else self.number(key)

    def hex32(self, key: str) -> str:
        found = self.text(key)
        if not _HEX32.match(found):
            raise Unreadable("manifest", f"{self.where}: {key} is not a SHA-256 in hex")
        return found

    def opt_hex32(self, key: str) -> str | None:
        return None if self.value.get(key) is None else self.hex32(key)

    def time(self, key: str) -> dt.datetime:
        try:
            found = dt.datetime.fromisoformat(self.text(key))
        except ValueError as exc:
            raise Unreadable("manifest", f"{self.where}: {key} is not a time") from exc
        if found.tzinfo is None:
            raise Unreadable("manifest", f"{self.where}: {key} has no time zone")
        return found

    def obj(self, key: str) -> _Object:
        return _Object(self.value.get(key), f"{self.where}: {key}")

    def items(self, key: str) -> list[object]:
        found: list[object] = self._get(key, list, "a list")
        return found

    def objects(self, key: str) -> list[_Object]:
        return [_Object(v, f"{key}[{i}]") for i, v in enumerate(self.items(key))]

    def hashes(self, key: str) -> tuple[str, ...]:
        found = self.items(key)
        if not all(isinstance(v, str) and _HEX32.match(v) for v in found):
            raise Unreadable("manifest", f"{self.where}: {key} holds something not a SHA-256")
        return tuple(str(v) for v in found)


def safe_name(name: str, limits: ExportLimits = DEFAULT_EXPORT_LIMITS) -> bool:
    """A relative member name with no way out of the folder it would be extracted into."""
    parts = name.split("/")
    return (
        0 < len(name.encode("utf-8", "surrogateescape")) <= limits.name_bytes
        and not name.startswith("/")
        and "\\" not in name
        and ":" not in parts[0]
        and all(part not in ("", ".", "..") for part in parts)
        and all(ch.isprintable() for ch in name)
    )


def read_members(path: Path, limits: ExportLimits = DEFAULT_EXPORT_LIMITS) -> dict[str, bytes]:
    """Every member of the ZIP at ``path``, read within ``limits``; ``Unreadable`` otherwise."""
    if path.stat().st_size > limits.file_bytes:
        raise Unreadable("archive", f"the file is larger than {limits.file_bytes} bytes")
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            _check_directory(infos, limits)
            members: dict[str, bytes] = {}
            total = 0
            for info in infos:
                with archive.open(info) as member:
                    data = member.read(limits.member_bytes + 1)
                if len(data) > limits.member_bytes:
                    raise Unreadable("archive", f"{info.filename} is over the member limit")
                total += len(data)
                if total > limits.total_bytes:
                    raise Unreadable(
                        "archive", f"the members total over {limits.total_bytes} bytes"
                    )
                members[info.filename] = data
            return members
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, ValueError) as exc:
        raise Unreadable("archive", f"not a readable ZIP file: {exc}") from exc
    except (NotImplementedError, RuntimeError) as exc:  # an unknown method, encryption
        raise Unreadable("archive", f"a member cannot be read: {exc}") from exc


def _check_directory(infos: list[zipfile.ZipInfo], limits: ExportLimits) -> None:
    """The central directory within the limits, before any member is decompressed."""
    if len(infos) > limits.members:
        raise Unreadable("archive", f"more than {limits.members} members")
    seen: set[str] = set()
    declared = 0
    for info in infos:
        name = info.filename
        if not safe_name(name, limits) or info.is_dir():
            raise Unreadable("archive", f"refused member name {name!r}")
        if name in seen:
            raise Unreadable("archive", f"{name!r} is in the archive twice")
        seen.add(name)
        if info.flag_bits & 0x1:
            raise Unreadable("archive", f"{name} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise Unreadable("archive", f"{name}: compression method {info.compress_type}")
        if info.file_size > limits.member_bytes:
            raise Unreadable(
                "archive", f"{name} is {info.file_size} bytes, over {limits.member_bytes}"
            )
        declared += info.file_size
        if declared > limits.total_bytes:
            raise Unreadable("archive", f"the members total over {limits.total_bytes} bytes")
