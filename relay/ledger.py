"""Signed checkpoints of the evidence ledger and its archive time-stamps (INTEROP-PROFILE.md §7).

A checkpoint is a short text naming the provider, the number of ledger records and the hash of
the last one, signed with the process certificate as a detached CMS signature (time-stamped
when a TSA is configured). Anyone holding the ledger can check that each checkpoint's head is
the chain's hash at that length and that the signature is the provider's: records cannot then
be changed, removed or reordered behind a checkpoint without it showing.

Archive stamps keep that provable after certificates expire (the idea of RFC 4998 evidence
records and XAdES-A). Each is an RFC 3161 token over ``archive_data``: the ledger's head, the
newest checkpoint's signature and the previous archive token. One is taken with every daily
checkpoint (and on demand: ``kep-relay ledger archive``, when an algorithm weakens). So each
token proves, at its genTime, everything before it, its predecessor included: the newest must
verify now, each older one as of its successor's genTime, and the evidence and checkpoints
they cover as of the first that covers them. A TSA certificate must be replaced before it
expires (``kep_ledger_archive_tsa_expiry_timestamp_seconds``, alert KepArchiveTsaExpiring):
the first daily stamp made with the new one carries the whole chain over.

``verify_stamps`` checks a chain without a node, from the stamps and the ledger's heads alone:
what an auditor holding an export of one message does (relay/export.py).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import structlog
from cryptography import x509
from cryptography.hazmat.primitives.hashes import SHA256

from interop.cms.parse import ParsedSignedData
from interop.cms.sign import sign_digest
from interop.cms.timestamp import TimestampResult, token_gen_time, verify_token
from interop.cms.verify import verify_parsed
from interop.errors import KepError
from interop.evidence import xmlio
from interop.evidence.xades import verify_evidence
from interop.pathval import CertificateValidator
from interop.revocation import RevocationData
from interop.verifiers import Verifiers
from relay.context import NodeContext
from relay.store import GENESIS, Row, Store

log = structlog.get_logger("kep.ledger")

# Profile §7: at least daily.
INTERVAL = 24 * 3600.0
ARCHIVE_FORMAT = b"kep-relay ledger archive stamp 1\n"
NO_HASH = b"\x00" * 32


@dataclass(frozen=True, slots=True)
class Checkpoint:
    records: int
    head: bytes
    document: bytes
    signature: bytes
    created: float


def _document(context: NodeContext, records: int, head: bytes) -> bytes:
    return (
        "kep-relay ledger checkpoint 1\n"
        f"provider: {context.provider.id}\n"
        f"records: {records}\n"
        f"head: {head.hex()}\n"
        f"time: {context.clock().isoformat()}\n"
    ).encode()


def take(context: NodeContext) -> Checkpoint | None:
    """Sign the chain head now and store the checkpoint (None: another node process of the
    provider stored one meanwhile, and this one is dropped).

    Signed and time-stamped outside any transaction (a TSA over the network may take seconds,
    and the store's lock serves every stage): records appended meanwhile are simply not
    covered by this checkpoint but by the next. ``TsaUnavailable`` when no token can be had:
    the checkpoint is taken at the next pass.
    """
    after = context.store.last_checkpoint_time()
    records, head = context.store.ledger_head()
    document = _document(context, records, head)
    signature = sign_digest(
        context.process,
        hashlib.sha256(document).digest(),
        context.clock(),
        timestamp=context.stamp_function(),
    )
    created = context.now()
    if not context.store.add_checkpoint(records, head, document, signature, created, after=after):
        log.info("checkpoint_taken_elsewhere", records=records)
        return None
    log.info("checkpoint_taken", records=records, head=head.hex())
    if context.stamping.configured:
        archive(context)
    return Checkpoint(records, head, document, signature, created)


def archive_data(records: int, head: bytes, checkpoint_signature: bytes, previous: bytes) -> bytes:
    """What an archive token stamps: the ledger's head, the newest checkpoint, the token before."""
    digest = hashlib.sha256(checkpoint_signature).digest() if checkpoint_signature else NO_HASH
    return stamped_data(records, head, digest, previous)


def stamped_data(records: int, head: bytes, checkpoint_digest: bytes, previous: bytes) -> bytes:
    """``archive_data`` from the checkpoint signature's SHA-256 (``NO_HASH`` for none): what a
    verifier holding the hash only, not the signature, recomputes (an export, relay/export.py)."""
    return ARCHIVE_FORMAT + records.to_bytes(8, "big") + head + checkpoint_digest + previous


def archive(context: NodeContext) -> bool:
    """Time-stamp the ledger's head, the newest checkpoint and the archive chain so far; False
    when no TSA is configured, or another node process extended the chain meanwhile (its
    stamp covers as much)."""
    stamp = context.stamp_function()
    if stamp is None:
        return False
    records, head = context.store.ledger_head()
    checkpoint = context.store.last_checkpoint()
    stamps = context.store.archive_stamps()
    previous = hashlib.sha256(bytes(stamps[-1]["token"])).digest() if stamps else NO_HASH
    data = archive_data(records, head, checkpoint[1] if checkpoint else b"", previous)
    token = stamp(data)
    appended = context.store.add_archive_stamp(
        records=records,
        head=head,
        checkpoint=checkpoint[0] if checkpoint else None,
        previous=previous,
        token=token,
        validation=context.validation_material(),
        created=context.now(),
    )
    if not appended:
        log.info("archive_stamped_elsewhere", records=records)
        return False
    log.info("ledger_archived", records=records, head=head.hex())
    return True


def last_time(context: NodeContext) -> float | None:
    return context.store.last_checkpoint_time()


def take_if_due(context: NodeContext) -> Checkpoint | None:
    last = last_time(context)
    if last is None or context.now() - last >= INTERVAL:
        return take(context)
    return None


@dataclass(frozen=True, slots=True)
class ArchiveStamp:
    """One archive stamp as a verifier needs it: what its token stamps, and the token."""

    seq: int
    records: int
    head: bytes
    checkpoint: int | None
    checkpoint_digest: bytes  # SHA-256 of that checkpoint's signature; NO_HASH when none
    previous: bytes
    token: bytes


def archive_stamps(store: Store) -> list[ArchiveStamp]:
    """Every archive stamp of ``store``, oldest first."""
    return [_stamp_of(store, row) for row in store.archive_stamps()]


def _stamp_of(store: Store, row: Row) -> ArchiveStamp:
    checkpoint = row["checkpoint"]
    signature = store.checkpoint_signature(checkpoint) if checkpoint else None
    return ArchiveStamp(
        seq=int(row["seq"]),
        records=int(row["records"]),
        head=bytes(row["head"]),
        checkpoint=int(checkpoint) if checkpoint is not None else None,
        # A checkpoint gone from the store stamps as none, and so fails the token.
        checkpoint_digest=hashlib.sha256(signature).digest() if signature else NO_HASH,
        previous=bytes(row["previous"]),
        token=bytes(row["token"]),
    )


@dataclass(frozen=True, slots=True)
class StampCheck:
    """How one archive stamp verified: its token's result and the time its TSA was judged at."""

    seq: int
    records: int
    result: TimestampResult
    judged_at: dt.datetime


@dataclass(frozen=True, slots=True)
class ArchiveProof:
    """What the archive chain proves: for each stamp that verifies (oldest first), the ledger
    records and the checkpoint it covers and the time it proves them at; and what failed."""

    stamps: tuple[tuple[int, int | None, dt.datetime], ...]
    problems: tuple[str, ...]
    # Each stamp's check, oldest first (those before a failure are not checked).
    checked: tuple[StampCheck, ...] = ()

    def time_for_record(self, seq: int) -> dt.datetime | None:
        """When the first stamp covering ledger record ``seq`` (1-based) proves it existed."""
        return next((t for records, _c, t in self.stamps if records >= seq), None)

    def time_for_checkpoint(self, seq: int) -> dt.datetime | None:
        return next((t for _r, c, t in self.stamps if c is not None and c >= seq), None)


def verify_archive(context: NodeContext, at: dt.datetime, verifiers: Verifiers) -> ArchiveProof:
    """Verify the node's archive chain against its ledger, as ``verify_stamps`` says."""
    hashes = context.store.ledger_hashes()
    heads = {0: GENESIS, **{index + 1: h for index, h in enumerate(hashes)}}
    return verify_stamps(archive_stamps(context.store), heads, at, verifiers.tsa)


def token_time(token: bytes) -> dt.datetime | None:
    """The genTime an archive token claims (None when it cannot be read): the time to judge
    the newest stamp at when the caller asks "as of the time it was issued"."""
    try:
        return token_gen_time(token)
    except KepError:
        return None


def verify_stamps(
    stamps: Sequence[ArchiveStamp],
    heads: Mapping[int, bytes],
    at: dt.datetime | None,
    tsa: CertificateValidator | None,
    *,
    complete: bool = True,
) -> ArchiveProof:
    """Verify an archive chain from the newest stamp back: the newest as of ``at`` (None: as of
    its own genTime, the time it was issued), each older one as of the genTime of the one
    after it (which stamped it). Needs no node: ``heads`` maps a record count to the ledger's
    hash at that length (0: ``GENESIS``).

    ``complete``: ``stamps`` is the whole chain and ``heads`` the whole ledger (the node's own
    check): the first stamp follows none, and a stamp over records ``heads`` lacks is a problem.
    Otherwise (an export, relay/export.py) the chain starts at the first stamp given, and a
    stamp over more records than ``heads`` holds is taken with the head it stamps: its token
    still proves the stamps before it, which is all it is there for.
    """
    proven: list[tuple[int, int | None, dt.datetime]] = []
    checked: list[StampCheck] = []
    problems: list[str] = []
    if at is None and stamps:
        at = token_time(stamps[-1].token)
        if at is None:
            problems.append(f"archive stamp {stamps[-1].seq}: unreadable token")
    valid_at: dt.datetime | None = None
    for index in range(len(stamps) - 1, -1, -1):
        if at is None:
            break
        stamp = stamps[index]
        if index:
            expected_previous = hashlib.sha256(stamps[index - 1].token).digest()
        else:
            expected_previous = NO_HASH if complete else stamp.previous
        head = heads.get(stamp.records)
        if head is None and not complete:
            head = stamp.head
        if head is None or stamp.head != head:
            problems.append(
                f"archive stamp {stamp.seq}: the ledger's head at {stamp.records} differs"
            )
            break
        if stamp.previous != expected_previous:
            problems.append(f"archive stamp {stamp.seq}: it does not follow the stamp before")
            break
        data = stamped_data(stamp.records, head, stamp.checkpoint_digest, expected_previous)
        if tsa is None:
            problems.append("archive stamps: no TSA is trusted")
            break
        result = verify_token(stamp.token, data, at, tsa, valid_at=valid_at)
        checked.append(StampCheck(stamp.seq, stamp.records, result, valid_at or at))
        if not result.ok or result.time is None:
            problems.append(f"archive stamp {stamp.seq}: {result.detail}")
            break
        valid_at = result.time
        proven.append((stamp.records, stamp.checkpoint, result.time))
    return ArchiveProof(tuple(reversed(proven)), tuple(problems), tuple(reversed(checked)))


def offline_verifiers(context: NodeContext) -> Verifiers:
    """The node's trust, with every CRL kept in the ledger besides the current ones: what
    verifying old evidence at the time it was made needs (profile §7)."""
    kept = [x509.load_der_x509_crl(der) for der in context.store.validation_objects("crl")]
    current = context.verifiers.revocation
    known = {c.fingerprint(SHA256()) for c in current.crls}
    crls = [*current.crls, *(c for c in kept if c.fingerprint(SHA256()) not in known)]
    return Verifiers(context.verifiers.trust, RevocationData.of(crls, require=current.require))


@dataclass(frozen=True, slots=True)
class LedgerReport:
    records: int
    chain_problem: str | None
    evidence_problems: tuple[str, ...]
    checkpoints: int
    checkpoint_problems: tuple[str, ...]
    archive: ArchiveProof

    @property
    def ok(self) -> bool:
        return not (
            self.chain_problem
            or self.evidence_problems
            or self.checkpoint_problems
            or self.archive.problems
        )


def verify(
    context: NodeContext,
    at: dt.datetime,
    progress: Callable[[int, int], None] | None = None,
) -> LedgerReport:
    """The whole ledger as of ``at``: the hash chain, the archive chain, every evidence
    signature (judged as of its proven time, its TSA as of the archive stamp that covers it)
    and every checkpoint. ``progress(done, records)`` is called after each evidence (a
    signature takes milliseconds, so a large ledger takes minutes)."""
    count, chain_problem = context.store.verify_ledger()
    verifiers = offline_verifiers(context)
    proof = verify_archive(context, at, verifiers)
    problems = []
    for done, (seq, evidence_id, xml, _set) in enumerate(context.store.ledger_evidence(), 1):
        problem = _evidence_problem(context, verifiers, xml, at, proof.time_for_record(seq))
        if problem:
            problems.append(f"evidence {evidence_id}: {problem}")
        if progress is not None:
            progress(done, count)
    checked, checkpoint_problems = verify_checkpoints(context, at, verifiers, proof)
    return LedgerReport(
        count, chain_problem, tuple(problems), checked, tuple(checkpoint_problems), proof
    )


def _evidence_problem(
    context: NodeContext,
    verifiers: Verifiers,
    xml: bytes,
    at: dt.datetime,
    archived: dt.datetime | None,
) -> str | None:
    try:
        issuer = xmlio.issuer_of(xmlio.safe_parse(xml))
    except KepError as exc:
        return exc.detail
    entry = verifiers.trust.owner_of(issuer.rsplit("@", 1)[-1])
    if entry is None:
        return f"issuer {issuer} is not in the trust list"
    try:
        result = verify_evidence(
            xml,
            at,
            verifiers.process(entry.id),
            tsa_validator=verifiers.tsa,
            tsa_valid_at=archived,
            expected_issuer_domain=entry.provider.domain,
        )
    except KepError as exc:
        return exc.detail
    return None if result.ok else result.detail


def verify_checkpoints(
    context: NodeContext,
    at: dt.datetime | None = None,
    verifiers: Verifiers | None = None,
    proof: ArchiveProof | None = None,
) -> tuple[int, list[str]]:
    """(checkpoints checked, problems): heads against the chain, signatures against trust,
    as of ``at`` (now by default), each time-stamp as of the archive stamp covering it."""
    at = at or context.clock()
    verifiers = verifiers or context.verifiers
    hashes = context.store.ledger_hashes()
    problems = []
    count = 0
    entry = verifiers.trust[context.provider.id]
    for seq, records, head, document, signature in context.store.checkpoints():
        count += 1
        expected = hashes[records - 1] if 0 < records <= len(hashes) else b"\x00" * 32
        if records > len(hashes) or bytes(head) != expected:
            problems.append(
                f"checkpoint {seq}: the chain's head at {records} records is not "
                f"{bytes(head).hex()}"
            )
            continue
        if f"records: {records}\nhead: {bytes(head).hex()}\n".encode() not in bytes(document):
            problems.append(f"checkpoint {seq}: its signed text names another head")
            continue
        try:
            parsed = ParsedSignedData.parse(bytes(signature))
        except KepError as exc:
            problems.append(f"checkpoint {seq}: {exc.detail}")
            continue
        result = verify_parsed(
            parsed,
            hashlib.new(parsed.digest_algorithm, bytes(document)).digest(),
            at,
            verifiers.process(entry.id),
            expected_names=[entry.process_san],
            tsa_validator=verifiers.tsa,
            tsa_valid_at=proof.time_for_checkpoint(seq) if proof else None,
        )
        if not result.ok:
            problems.append(f"checkpoint {seq}: {result.detail}")
    return count, problems
