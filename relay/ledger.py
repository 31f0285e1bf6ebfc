"""Signed checkpoints of the evidence ledger (INTEROP-PROFILE.md §7).

A checkpoint is a short text naming the provider, the number of ledger records and the hash of
the last one, signed with the process certificate as a detached CMS signature (time-stamped
when a TSA is configured). Anyone holding the ledger can check that each checkpoint's head is
the chain's hash at that length and that the signature is the provider's: records cannot then
be changed, removed or reordered behind a checkpoint without it showing.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import structlog

from interop.cms.parse import ParsedSignedData
from interop.cms.sign import sign_digest
from interop.cms.verify import verify_parsed
from interop.errors import KepError
from relay.context import NodeContext

log = structlog.get_logger("kep.ledger")

# Profile §7: at least daily.
INTERVAL = 24 * 3600.0


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


def take(context: NodeContext) -> Checkpoint:
    """Sign the chain head now and store the checkpoint.

    Signed and time-stamped outside any transaction (a TSA over the network may take seconds,
    and the store's lock serves every stage): records appended meanwhile are simply not
    covered by this checkpoint but by the next. ``TsaUnavailable`` when no token can be had:
    the checkpoint is taken at the next pass.
    """
    records, head = context.store.ledger_head()
    document = _document(context, records, head)
    signature = sign_digest(
        context.process,
        hashlib.sha256(document).digest(),
        context.clock(),
        timestamp=context.stamp_function(),
    )
    created = time.time()
    context.store.add_checkpoint(records, head, document, signature, created)
    log.info("checkpoint_taken", records=records, head=head.hex())
    return Checkpoint(records, head, document, signature, created)


def last_time(context: NodeContext) -> float | None:
    return context.store.last_checkpoint_time()


def take_if_due(context: NodeContext) -> Checkpoint | None:
    last = last_time(context)
    if last is None or time.time() - last >= INTERVAL:
        return take(context)
    return None


def verify_checkpoints(context: NodeContext) -> tuple[int, list[str]]:
    """(checkpoints checked, problems): heads against the chain, signatures against trust."""
    hashes = context.store.ledger_hashes()
    problems = []
    count = 0
    entry = context.verifiers.trust[context.provider.id]
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
            context.clock(),
            context.verifiers.process(entry.id),
            expected_names=[entry.process_san],
            tsa_validator=context.verifiers.tsa,
        )
        if not result.ok:
            problems.append(f"checkpoint {seq}: {result.detail}")
    return count, problems
