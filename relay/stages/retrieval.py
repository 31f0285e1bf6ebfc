"""Retrieval: a recipient opens a message (INTEROP-PROFILE.md §4 R-GW 3).

Takes: a message in a recipient's INBOX, first read. Promises: it is marked read and
RetrievalNonRetrievalByRecipient (Retrieval) is issued, recorded, and queued to the S-GW (or
filed for the sender here when the sender is local), in one transaction.
"""

from __future__ import annotations

from pathlib import Path

import structlog

from interop.evidence import xmlio
from interop.evidence.codes import Event, EvidenceType
from interop.evidence.issue import follow_up
from relay.context import NodeContext
from relay.issuing import Issued, file_evidence, queue, record, sign, write_message
from relay.lifecycle import Kind

log = structlog.get_logger("kep.retrieval")


def key_of(path: Path) -> tuple[str, int] | None:
    """(queue id, recipient index) from a delivered file's name (``Mailboxes.put``)."""
    parts = path.name.split(".")
    if len(parts) < 3 or "-" not in parts[1]:
        return None
    queue_id, _, index = parts[1].rpartition("-")
    return (queue_id, int(index)) if index.isdigit() else None


def retrieve(context: NodeContext, recipient: str, path: Path) -> Issued | None:
    """Mark ``path`` read and issue Retrieval evidence; None if already read or not KEP mail."""
    if "/cur/" in str(path) and path.name.endswith(":2,S"):
        return None
    key = key_of(path)
    row = context.store.message(key[0]) if key else None
    if key is None or row is None:
        context.mailboxes.mark_read(path)
        return None
    relay_rows = [
        e
        for e in context.store.evidence_of_message(row.id)
        if e["type"] == EvidenceType.RelayREMMDAcceptanceRejection.value
        and e["event"] == Event.Acceptance.value
        and (e["recipient"] or "").lower() == recipient.lower()
    ]
    if not relay_rows:
        context.mailboxes.mark_read(path)
        return None
    about = xmlio.parse(bytes(relay_rows[0]["xml"]))
    issued = sign(
        context,
        follow_up(
            about,
            context.provider,
            EvidenceType.RetrievalNonRetrievalByRecipient,
            Event.Retrieval,
            context.clock(),
            recipient=about.refers_to_recipient,
        ),
    )
    local = row.kind is Kind.SUBMISSION
    peer = context.provider.id if local else (row.peer or "")
    if local:  # filed under a key of its own, so a replay does not file it twice
        filed_as = f"{key[0]}-{key[1]}-read"
        issued = file_evidence(context, issued, row.mail_from, filed_as)
        with context.store.transaction() as db:
            record(context, db, issued, direction="issued", message_id=row.id, envelope_id=filed_as)
    else:
        note = write_message(context, issued, peer)
        with context.store.transaction() as db:
            queue(context, db, note, parent=row.id)
    context.mailboxes.mark_read(path)
    log.info("retrieval_issued", queue_id=row.id, remmd_id=row.remmd_id, peer=peer)
    return issued
