"""Verifying an export of one message's evidence (relay/export.py) offline.

Takes: the members of an export (``relay.export_format.read_members``), the trust to judge it
with (a ``TrustList`` for the issuers' domains: a node's, or ``trust_from_roots``), CRLs to use
besides the export's, the time to judge at (``at``; None: as of the newest archive stamp's own
time) and the time it is now. Promises: a result naming each check in order, never an exception
for what the export holds: the manifest and every checksum; the ledger proof (the heads the
archive tokens stamp, recomputed); the archive chain (``relay.ledger.verify_stamps``: the
newest token as of ``at``, each older one as of its successor's genTime); each evidence
(``verify_evidence``, its own time-stamp's TSA judged as of the first archive stamp covering
it, or as of ``at``/now when none does), and that the signed evidence says what the manifest
says. Revocation data is the export's CRLs (and the caller's), required; intermediates may
come from the export's certificates. Nothing is fetched, nothing written.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from interop.envelope.verify import Check
from interop.errors import ConfigurationError, KepError
from interop.evidence import xmlio
from interop.evidence.model import Evidence
from interop.evidence.xades import EvidenceResult, verify_evidence
from interop.pathval import CertificateValidator, ChainResult, Role
from interop.providers import BUILTIN_DIRECTORY, KEP_ROOT_DOMAIN, Provider
from interop.reasons import Reason
from interop.revocation import RevocationData
from interop.trust import ProviderTrust, TrustList
from relay.export_format import (
    DEFAULT_EXPORT_LIMITS,
    FORMAT,
    MANIFEST,
    VERSION,
    EvidenceEntry,
    ExportLimits,
    Manifest,
    StampEntry,
    Unreadable,
    read_members,
)
from relay.ledger import NO_HASH, ArchiveProof, ArchiveStamp, StampCheck, verify_stamps
from relay.store import GENESIS

# Trust for the issuers' domains: a node's trust list, or one built from roots given.
TrustFor = Callable[[Sequence[str]], TrustList]


@dataclass(frozen=True, slots=True)
class EvidenceOutcome:
    entry: EvidenceEntry
    result: EvidenceResult | None  # None: it could not be verified at all (``problem``)
    archived: StampCheck | None  # the archive stamp whose time its TSA was judged at
    problem: str | None
    reason: Reason | None

    @property
    def ok(self) -> bool:
        return self.problem is None


@dataclass(frozen=True, slots=True)
class ExportVerification:
    checks: tuple[Check, ...]
    reason: Reason | None  # of the first failed check
    detail: str
    verified_at: dt.datetime
    manifest: Manifest | None = None
    evidence: tuple[EvidenceOutcome, ...] = ()
    archive: ArchiveProof | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


class _Run:
    """The checks so far; the first failure gives the result its reason and detail."""

    def __init__(self) -> None:
        self.checks: list[Check] = []
        self.failure: tuple[Reason, str] | None = None

    def add(self, name: str, ok: bool, detail: str, reason: Reason | None = None) -> None:
        self.checks.append(Check(name, ok, detail))
        if not ok and self.failure is None:
            self.failure = (reason or Reason.InvalidMessageFormat, f"{name}: {detail}")

    def result(
        self,
        verified_at: dt.datetime,
        manifest: Manifest | None = None,
        evidence: tuple[EvidenceOutcome, ...] = (),
        archive: ArchiveProof | None = None,
    ) -> ExportVerification:
        reason, detail = self.failure if self.failure else (None, "valid")
        return ExportVerification(
            tuple(self.checks), reason, detail, verified_at, manifest, evidence, archive
        )


def verify_file(
    path: Path,
    trust_for: TrustFor,
    *,
    at: dt.datetime | None,
    now: dt.datetime,
    crls: Sequence[x509.CertificateRevocationList] = (),
    limits: ExportLimits = DEFAULT_EXPORT_LIMITS,
) -> ExportVerification:
    """``verify_export`` of the ZIP file at ``path``, read within ``limits``."""
    run = _Run()
    try:
        members = read_members(path, limits)
    except Unreadable as exc:
        run.add(exc.check, False, exc.detail)
        return run.result(at or now)
    run.add("archive", True, f"{len(members)} members, within the limits")
    found = verify_export(members, trust_for, at=at, now=now, crls=crls)
    return dataclasses.replace(found, checks=(*run.checks, *found.checks))


def verify_export(
    members: Mapping[str, bytes],
    trust_for: TrustFor,
    *,
    at: dt.datetime | None,
    now: dt.datetime,
    crls: Sequence[x509.CertificateRevocationList] = (),
) -> ExportVerification:
    """Every check of the module's docstring over ``members`` (name → bytes)."""
    run = _Run()
    try:
        manifest = Manifest.parse(members.get(MANIFEST, b""))
        run.add("manifest", True, _describe(manifest))
        run.add("checksums", True, _checksums(manifest, members))
        heads = _proof_heads(manifest, members)
        run.add("ledger proof", True, _proof_text(manifest))
        certificates, own_crls = _validation_objects(manifest, members)
    except Unreadable as exc:
        run.add(exc.check, False, exc.detail)
        return run.result(at or now)
    issuers = [_issuer_domain(members[e.file]) for e in manifest.evidence]
    try:
        trust = trust_for(sorted({d for d in issuers if d}))
    except ConfigurationError as exc:
        run.add("trust", False, exc.detail, Reason.PolicyViolation)
        return run.result(at or now, manifest=manifest)
    judge = _Judge(trust, RevocationData.of([*own_crls, *crls], require=True), certificates)
    stamps = [_archive_stamp(s, members[s.file]) for s in manifest.archive]
    proof = verify_stamps(stamps, heads, at, judge.tsa, complete=False)
    _stamp_checks(run, proof, at)
    outcomes = []
    for entry, domain in zip(manifest.evidence, issuers, strict=True):
        outcome = _verify_one(judge, manifest, entry, members[entry.file], domain, proof, at or now)
        outcomes.append(outcome)
        run.add(_name(entry), outcome.ok, _outcome_text(outcome), outcome.reason)
    if all(o.ok for o in outcomes):
        run.add(
            "original",
            True,
            f"each evidence is about the original of SHA-256 {manifest.original_sha256}",
        )
    return run.result(at or now, manifest=manifest, evidence=tuple(outcomes), archive=proof)


def trust_from_roots(roots: Sequence[x509.Certificate], domains: Iterable[str]) -> TrustList:
    """Trust in ``roots`` alone: the process-certificate CAs of every provider of the built-in
    directory and of any issuer's domain it lacks (a provider added by configuration), and the
    TSA roots. What an auditor holding only the roots verifies with (``--trust``)."""
    providers = list(BUILTIN_DIRECTORY)
    directory = BUILTIN_DIRECTORY
    for domain in domains:
        label = domain.split(".")[0]
        if directory.owner_of(domain) is None and domain.endswith("." + KEP_ROOT_DOMAIN):
            if directory.get(label) is not None:
                continue  # another domain of a provider known by that id: not trusted
            try:
                directory = directory.with_providers([Provider(label, domain)])
            except ConfigurationError:
                continue  # not a provider's domain: its evidence will not be trusted
            providers.append(directory[label])
    # TLS plays no part offline; a trust list entry must still name a CA and a host for it.
    entries = [ProviderTrust(p, tuple(roots), tuple(roots), (p.domain,)) for p in providers]
    return TrustList.build(entries, (), roots)


class _Pooled(CertificateValidator):
    """A validator that may also build paths through the export's CA certificates."""

    def __init__(
        self,
        anchors: Sequence[x509.Certificate],
        revocation: RevocationData,
        role: Role,
        pool: Sequence[x509.Certificate],
    ) -> None:
        super().__init__(anchors, revocation, role)
        self._pool = tuple(pool)

    def validate(
        self,
        leaf: x509.Certificate,
        intermediates: Sequence[x509.Certificate],
        at: dt.datetime,
        expected_names: Sequence[str] = (),
        *,
        proven: bool = False,
    ) -> ChainResult:
        extra = [c for c in self._pool if c != leaf and c not in intermediates]
        return super().validate(leaf, [*intermediates, *extra], at, expected_names, proven=proven)


class _Judge:
    """The validators of one verification: a TSA's, and one per issuing provider."""

    def __init__(
        self, trust: TrustList, revocation: RevocationData, certificates: Sequence[x509.Certificate]
    ) -> None:
        self.trust = trust
        self.revocation = revocation
        self.pool = tuple(c for c in certificates if _is_ca(c))
        self.tsa = (
            _Pooled(trust.tsa_cas, revocation, Role.TSA, self.pool) if trust.tsa_cas else None
        )
        self._process: dict[str, CertificateValidator] = {}

    def process(self, entry: ProviderTrust) -> CertificateValidator:
        if entry.id not in self._process:
            self._process[entry.id] = _Pooled(
                entry.process_cas, self.revocation, Role.PROCESS, self.pool
            )
        return self._process[entry.id]


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except (x509.ExtensionNotFound, ValueError):
        return False


def _describe(manifest: Manifest) -> str:
    return (
        f"{FORMAT} {VERSION}: REMMD id {manifest.remmd_id}, {len(manifest.evidence)} evidence,"
        f" exported by {manifest.provider_id} at {manifest.exported_at.isoformat()}"
    )


def _checksums(manifest: Manifest, members: Mapping[str, bytes]) -> str:
    for name in members:
        if name != MANIFEST and name not in manifest.files:
            raise Unreadable("checksums", f"{name} is not listed in the manifest")
    for name, expected in manifest.files.items():
        if name not in members:
            raise Unreadable("checksums", f"{name} is listed in the manifest but missing")
        if hashlib.sha256(members[name]).hexdigest() != expected:
            raise Unreadable("checksums", f"{name}: its SHA-256 is not the manifest's")
    return f"{len(manifest.files)} files match the manifest"


def record_hash(prev: bytes, evidence_id: str, xml_sha256: bytes) -> bytes:
    """``relay.store.ledger_hash`` from the evidence's SHA-256 instead of its bytes (a ledger
    proof carries only that for the records of other messages)."""
    h = hashlib.sha256(prev)
    h.update(len(evidence_id).to_bytes(4, "big") + evidence_id.encode())
    h.update(xml_sha256)
    return h.digest()


def _proof_heads(manifest: Manifest, members: Mapping[str, bytes]) -> dict[int, bytes]:
    """The ledger's hash at each length the proof reaches; each exported evidence in it."""
    proof = manifest.proof
    prev = bytes.fromhex(proof.before)
    if proof.first == 1 and prev != GENESIS:
        raise Unreadable("ledger proof", "record 1 follows no record, yet a hash is given")
    heads = {proof.first - 1: prev}
    for seq, evidence_id, digest in proof.records:
        prev = record_hash(prev, evidence_id, bytes.fromhex(digest))
        heads[seq] = prev
    listed = {seq: (evidence_id, digest) for seq, evidence_id, digest in proof.records}
    for entry in manifest.evidence:
        digest = hashlib.sha256(members[entry.file]).hexdigest()
        if listed.get(entry.seq) != (entry.evidence_id, digest):
            raise Unreadable("ledger proof", f"record {entry.seq} is not the evidence {entry.file}")
    return heads


def _proof_text(manifest: Manifest) -> str:
    proof = manifest.proof
    return (
        f"records {proof.first}-{proof.last} chained from the hash before record {proof.first};"
        f" the {len(manifest.evidence)} evidence among them"
    )


def _validation_objects(
    manifest: Manifest, members: Mapping[str, bytes]
) -> tuple[list[x509.Certificate], list[x509.CertificateRevocationList]]:
    certificates, crls = [], []
    for entry in manifest.validation:
        try:
            # Names are parsed when first read: read them here, where a bad one is expected.
            if entry.kind == "certificate":
                certificate = x509.load_der_x509_certificate(members[entry.file])
                certificates.append(certificate)
                _names = (certificate.subject, certificate.issuer)
            else:
                crl = x509.load_der_x509_crl(members[entry.file])
                crls.append(crl)
                _names = (crl.issuer, crl.issuer)
        except ValueError as exc:
            raise Unreadable("validation", f"{entry.file}: not a DER {entry.kind}") from exc
    return certificates, crls


def _issuer_domain(xml: bytes) -> str | None:
    try:
        return xmlio.issuer_of(xmlio.safe_parse(xml)).rsplit("@", 1)[-1].lower()
    except KepError:
        return None


def _archive_stamp(entry: StampEntry, token: bytes) -> ArchiveStamp:
    digest = entry.checkpoint_signature_sha256
    return ArchiveStamp(
        seq=entry.seq,
        records=entry.records,
        head=bytes.fromhex(entry.head),
        checkpoint=entry.checkpoint,
        checkpoint_digest=bytes.fromhex(digest) if digest else NO_HASH,
        previous=bytes.fromhex(entry.previous),
        token=token,
    )


def _stamp_checks(run: _Run, proof: ArchiveProof, at: dt.datetime | None) -> None:
    checked = proof.checked
    for index, check in enumerate(checked):
        if index + 1 < len(checked):
            why = f"the time archive stamp {checked[index + 1].seq} proves"
        else:
            why = "--at" if at is not None else "the time it was issued"
        result, tsa = check.result, check.result.tsa or "an unreadable TSA"
        when = f"judged as of {check.judged_at.isoformat()} ({why})"
        if result.ok and result.time is not None:
            detail = f"time-stamped at {result.time.isoformat()} by {tsa}, its TSA {when}"
        else:
            detail = f"{result.detail} ({tsa}, {when})"
        run.add(f"archive stamp {check.seq}", result.ok, detail, Reason.PolicyViolation)
    told = {f"archive stamp {c.seq}: {c.result.detail}" for c in checked}
    for problem in proof.problems:
        if problem not in told:
            run.add("archive stamps", False, problem)
    if not checked and not proof.problems:
        run.add(
            "archive stamps",
            True,
            "none covers this evidence yet: each is judged by its own time-stamp",
        )


def _covering(proof: ArchiveProof, seq: int, reach: int) -> tuple[StampCheck | None, str | None]:
    """The first verified stamp covering record ``seq``, if the ledger proof reaches it."""
    for check in proof.checked:
        if check.result.ok and check.records >= seq:
            if check.records > reach:
                return None, (
                    f"the ledger proof stops at record {reach}, before archive stamp"
                    f" {check.seq}, which covers it"
                )
            return check, None
    return None, None


def _verify_one(
    judge: _Judge,
    manifest: Manifest,
    entry: EvidenceEntry,
    xml: bytes,
    domain: str | None,
    proof: ArchiveProof,
    now: dt.datetime,
) -> EvidenceOutcome:
    def failed(
        problem: str, reason: Reason, result: EvidenceResult | None = None
    ) -> EvidenceOutcome:
        return EvidenceOutcome(entry, result, archived, problem, reason)

    archived, problem = _covering(proof, entry.seq, manifest.proof.last)
    if problem:
        return failed(problem, Reason.InvalidMessageFormat)
    provider = judge.trust.owner_of(domain) if domain else None
    if provider is None:
        return failed(f"issuer {domain or '?'} is not in the trust list", Reason.PolicyViolation)
    try:
        result = verify_evidence(
            xml,
            now,
            judge.process(provider),
            tsa_validator=judge.tsa,
            tsa_valid_at=archived.result.time if archived else None,
            expected_issuer_domain=provider.provider.domain,
        )
    except KepError as exc:
        return failed(exc.detail, exc.reason)
    if not result.ok or result.evidence is None:
        return failed(result.detail, result.reason or Reason.InvalidMessageFormat, result)
    differs = _disagreement(manifest, entry, result.evidence)
    if differs:
        return failed(differs, Reason.InvalidMessageFormat, result)
    return EvidenceOutcome(entry, result, archived, None, None)


def _disagreement(manifest: Manifest, entry: EvidenceEntry, evidence: Evidence) -> str | None:
    """What the manifest says that the signed evidence does not."""
    pairs = (
        ("EvidenceIdentifier", entry.evidence_id, evidence.identifier),
        ("type", entry.type, evidence.type.value),
        ("event", entry.event, evidence.event.value),
        ("issuer", entry.issuer, evidence.issuer),
        ("recipient", entry.recipient, evidence.recipient),
        ("EventTime", entry.event_time, evidence.event_time.isoformat()),
        ("REMMD id", manifest.remmd_id, evidence.message.remmd_message_id),
        ("original SHA-256", manifest.original_sha256, evidence.message.digest.hex()),
    )
    for what, said, signed in pairs:
        if said != signed:
            return f"the manifest gives {what} {said!r}, the signed evidence {signed!r}"
    return None


def _name(entry: EvidenceEntry) -> str:
    return "evidence " + entry.file.rsplit("/", 1)[-1].rsplit(".", 1)[0]


def _outcome_text(outcome: EvidenceOutcome) -> str:
    if outcome.problem is not None or outcome.result is None:
        return outcome.problem or "not verified"
    entry, result = outcome.entry, outcome.result
    text = f"issued by {entry.issuer} at {entry.event_time}"
    if result.chain is not None:
        text += f"; signer {result.chain.describe()}"
    stamp = result.timestamp
    if stamp is not None and stamp.time is not None:
        text += f"; time-stamped at {stamp.time.isoformat()} by {stamp.tsa}"
        if outcome.archived is not None:
            text += (
                f", its TSA judged as of {outcome.archived.result.time.isoformat()}"
                f" (archive stamp {outcome.archived.seq})"
                if outcome.archived.result.time
                else ""
            )
    return text
