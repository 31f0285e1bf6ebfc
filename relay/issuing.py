"""Issuing evidence, for every stage that issues it: sign it, wrap it in an Evidence message
held in the store, record it; file it in a user's Delil folder. Not a stage itself.

Nothing here commits: callers put the returned rows into their own transaction, so evidence,
ledger and queue change together or not at all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.serialization import Encoding

from interop.envelope.parse import parse_envelope
from interop.evidence import xmlio
from interop.evidence.model import Evidence
from interop.evidence.xades import EvidenceResult
from relay.context import NodeContext
from relay.lifecycle import Kind, State
from relay.spool import new_id
from relay.store import MessageRow, Tx


@dataclass(frozen=True, slots=True)
class Issued:
    evidence: Evidence
    xml: bytes


@dataclass(frozen=True, slots=True)
class Outgoing:
    """An Evidence message to be queued to ``peer``, its bytes (``content``) held in the store
    with its queue row."""

    queue_id: str
    peer: str
    issued: Issued
    size: int
    sha256: str
    content: bytes
    # Header values of the Evidence message (write_evidence_message's keywords), kept with the
    # queue row so the message can be made again for a resend after it is gone (§7).
    headers: dict[str, str | None] = field(default_factory=dict)


def sign(context: NodeContext, evidence: Evidence) -> Issued:
    return Issued(evidence, context.crypto.sign_evidence(evidence, context.clock()))


def write_message(
    context: NodeContext,
    issued: Issued,
    peer: str,
    *,
    dispatch_message_id: str | None = None,
    ileti_tip: str = "standart",
    ileti_id: str | None = None,
) -> Outgoing:
    """An Evidence message about evidence signed already, to be held in the store with its
    queue row (``queue``)."""
    headers = {
        "dispatch_message_id": dispatch_message_id,
        "ileti_tip": ileti_tip,
        "ileti_id": ileti_id,
    }
    message = context.crypto.evidence_message(
        issued.evidence, issued.xml, context.clock(), **headers
    )
    return _outgoing(issued, peer, message, headers)


def file_evidence(
    context: NodeContext,
    issued: Issued,
    address: str,
    key: str,
    *,
    ileti_tip: str = "standart",
    fresh_until: float | None = None,
) -> Issued:
    """File an Evidence message about ``issued`` in the Delil folder of ``address`` (one of
    this provider's own users), under ``key``, and return the evidence filed: the one to
    record, with ``key`` as its ``envelope_id``.

    A replay after a crash (or a node process taking over one that died) finds the message
    filed there already: it is not filed twice, and the evidence returned is the one in it,
    the one the user holds, so the ledger never records a second EvidenceIdentifier for it.
    The folder is searched only when there may have been an earlier attempt: not before
    ``fresh_until`` (``NodeContext.fresh_until`` of the claim the caller works under).
    """
    filed = context.mailboxes.earlier(address, "Delil", key, fresh_until)
    if filed is not None:
        with filed.open("rb") as stream:
            xml = parse_envelope(stream).evidence_xml
        return Issued(xmlio.parse(xml), xml)
    message = context.crypto.evidence_message(
        issued.evidence, issued.xml, context.clock(), ileti_tip=ileti_tip
    )
    context.mailboxes.put(address, "Delil", key, message, fresh_until=fresh_until)
    return issued


def write_messages(
    context: NodeContext,
    evidence: Sequence[Evidence],
    peer: str,
    *,
    dispatch_message_id: str | None = None,
    ileti_tip: str = "standart",
    ileti_id: str | None = None,
) -> list[Outgoing]:
    """Sign each evidence and make its Evidence message, to be held in the store with its
    queue row (``queue``): nothing is written yet, and no file is made (an Evidence message is
    small, and can be made again from the ledger: ``remake_message``)."""
    headers = {
        "dispatch_message_id": dispatch_message_id,
        "ileti_tip": ileti_tip,
        "ileti_id": ileti_id,
    }
    signed = context.crypto.issue_messages(evidence, context.clock(), **headers)
    return [
        _outgoing(Issued(e, xml), peer, message, headers)
        for e, (xml, message) in zip(evidence, signed, strict=True)
    ]


def _outgoing(
    issued: Issued, peer: str, message: bytes, headers: dict[str, str | None]
) -> Outgoing:
    return Outgoing(
        new_id(),
        peer,
        issued,
        len(message),
        hashlib.sha256(message).hexdigest(),
        message,
        headers,
    )


def remake_message(context: NodeContext, row: MessageRow) -> bytes:
    """An Evidence message sent before, whose content went once it was sent (§7), made again
    for a resend (§2: a repeated Dispatch gets the evidence already issued, with the same
    EvidenceIdentifier): the same signed evidence, in a newly signed envelope, held in the
    store again; returns it."""
    xml = context.store.evidence_carried_by(row.id)
    if xml is None:
        raise LookupError(f"no evidence is recorded for the Evidence message {row.id}")
    message = context.crypto.evidence_message(xmlio.parse(xml), xml, context.clock(), **row.headers)
    context.store.content_restored(row.id, message)
    return message


def material_of(result: EvidenceResult) -> list[tuple[str, bytes]]:
    """(kind, DER) of what a received evidence's verification rested on: the signer's chain and
    its CRLs, the TSA's chain and its CRLs (profile §7: kept to verify it offline later)."""
    certificates = list(result.chain.chain) if result.chain else []
    crls = list(result.chain.crls) if result.chain else []
    if result.timestamp is not None:
        certificates += result.timestamp.certificates
        crls += result.timestamp.crls
    material = {c.public_bytes(Encoding.DER): "certificate" for c in certificates}
    material.update({c.public_bytes(Encoding.DER): "crl" for c in crls})
    return [(kind, der) for der, kind in material.items()]


def record(
    context: NodeContext,
    db: Tx,
    issued: Issued,
    *,
    direction: str,
    message_id: str | None,
    envelope_id: str | None = None,
    validation: Sequence[tuple[str, bytes]] | None = None,
) -> None:
    """Record evidence in the ledger with what verifying it later needs (§7): for evidence
    this node issued, its own chain and CRLs (``NodeContext.validation_material``); for
    received evidence, what its verification used (``validation``). Evidence recorded already
    (a replay finding what it filed before) is not recorded twice."""
    e = issued.evidence
    if context.store.has_evidence(db, e.identifier):
        return
    if validation is None and direction == "issued":
        validation = context.validation_material()
    context.store.add_evidence(
        db,
        id=e.identifier,
        direction=direction,
        remmd_id=e.message.remmd_message_id,
        type=e.type.value,
        event=e.event.value,
        recipient=e.recipient,
        sender=e.sender,
        issuer=e.issuer,
        xml=issued.xml,
        message_id=message_id,
        envelope_id=envelope_id,
        validation=validation or (),
    )


def queue(context: NodeContext, db: Tx, outgoing: Outgoing, parent: str) -> None:
    """Queue ``outgoing`` to its peer in ``db``, with the evidence it carries recorded in the
    ledger as issued about ``parent`` and carried by it (what ``remake_message`` makes the
    message again from)."""
    record(
        context,
        db,
        outgoing.issued,
        direction="issued",
        message_id=parent,
        envelope_id=outgoing.queue_id,
    )
    e = outgoing.issued.evidence
    context.store.add_message(
        db,
        id=outgoing.queue_id,
        kind=Kind.EVIDENCE_OUT,
        peer=outgoing.peer,
        remmd_id=e.message.remmd_message_id,
        mail_from=e.issuer,
        rcpt_to=[e.sender],
        size=outgoing.size,
        sha256=outgoing.sha256,
        state=State.QUEUED,
        parent=parent,
        headers=outgoing.headers,
        content=outgoing.content,
    )
