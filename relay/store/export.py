"""Read-only queries for an export of one message's evidence (relay/export.py)."""

from __future__ import annotations

import hashlib

from relay.store.base import GENESIS, StoreBase, blob
from relay.store.database import Row


class ExportQueries(StoreBase):
    def ledger_records_of(self, remmd_id: str) -> list[Row]:
        """The evidence about ``remmd_id`` with its ledger record's ``seq``, in ledger order."""
        with self.database.read() as db:
            return list(
                db.execute(
                    "SELECT e.*, l.seq AS seq FROM evidence e JOIN ledger l"
                    " ON l.evidence_id = e.id WHERE e.remmd_id = ? ORDER BY l.seq",
                    (remmd_id,),
                )
            )

    def ledger_hash_at(self, seq: int) -> bytes | None:
        """The hash of ledger record ``seq`` (``GENESIS`` for 0; None when there is none)."""
        if seq == 0:
            return GENESIS
        with self.database.read() as db:
            row = db.execute("SELECT hash FROM ledger WHERE seq = ?", (seq,)).fetchone()
            return blob(row[0]) if row else None

    def ledger_digests(self, first: int, last: int) -> list[tuple[int, str, bytes | None, bytes]]:
        """(seq, evidence id, SHA-256 of its XML or None when the evidence is gone, stored
        hash) of the ledger records ``first``..``last``: a ledger proof's content, with no
        evidence's bytes held in memory at once (a day of records may be millions)."""
        with self.database.read() as db:
            rows = db.execute(
                "SELECT l.seq, l.evidence_id, e.xml, l.hash FROM ledger l"
                " LEFT JOIN evidence e ON e.id = l.evidence_id"
                " WHERE l.seq BETWEEN ? AND ? ORDER BY l.seq",
                (first, last),
            )
            return [
                (
                    int(seq),
                    str(evidence_id),
                    hashlib.sha256(blob(xml)).digest() if xml is not None else None,
                    blob(record_hash),
                )
                for seq, evidence_id, xml, record_hash in rows
            ]
