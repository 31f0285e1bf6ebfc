"""Evidence, the ledger's hash chain, what verifying needs (validation data), checkpoints and
archive stamps (INTEROP-PROFILE.md §7)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from interop.evidence.codes import EvidenceType
from relay.store.base import GENESIS, StoreBase, blob, ledger_hash
from relay.store.database import Row, Tx


class EvidenceQueries(StoreBase):
    def add_evidence(
        self,
        db: Tx,
        *,
        id: str,
        direction: str,
        remmd_id: str,
        type: str,
        event: str,
        recipient: str | None,
        sender: str,
        issuer: str,
        xml: bytes,
        message_id: str | None,
        envelope_id: str | None = None,
        validation: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        """Record an evidence and append it to the ledger, in the caller's transaction.

        ``validation``: (kind, DER) of the certificates and CRLs verifying it needs, kept with
        it (profile §7, long-term verification), each object stored once.
        """
        now = self.clock()
        validation_set = self._put_validation_set(db, validation) if validation else None
        db.execute(
            "INSERT INTO evidence (id, direction, remmd_id, type, event, recipient, sender,"
            " issuer, message_id, envelope_id, xml, created, validation_set)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                id,
                direction,
                remmd_id,
                type,
                event,
                recipient,
                sender,
                issuer,
                message_id,
                envelope_id,
                xml,
                now,
                validation_set,
            ),
        )
        # One hash chain, appended by every node process of the provider: one at a time.
        self.database.serialise(db, "ledger")
        # Numbered here, under that lock, not by the database: a PostgreSQL sequence leaves a
        # gap for every rolled-back append, and record N must be the N-th link (proofs, §7).
        last = db.execute("SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev = (int(last[0]) + 1, blob(last[1])) if last else (1, GENESIS)
        db.execute(
            "INSERT INTO ledger (seq, evidence_id, prev_hash, hash, created) VALUES (?,?,?,?,?)",
            (seq, id, prev, ledger_hash(prev, id, xml), now),
        )

    def _put_validation_set(self, db: Tx, objects: Sequence[tuple[str, bytes]]) -> bytes:
        hashes = {}
        for kind, der in objects:
            hashes[hashlib.sha256(der).digest()] = (kind, der)
        members = b"".join(sorted(hashes))
        set_id = hashlib.sha256(members).digest()
        if db.execute("SELECT 1 FROM validation_sets WHERE id = ?", (set_id,)).fetchone():
            return set_id  # the usual case: the same chain and CRLs as the evidence before
        db.executemany(
            "INSERT INTO validation_objects (sha256, kind, der) VALUES (?,?,?)"
            " ON CONFLICT DO NOTHING",
            [(h, kind, der) for h, (kind, der) in hashes.items()],
        )
        db.execute(
            "INSERT INTO validation_sets (id, members) VALUES (?,?) ON CONFLICT DO NOTHING",
            (set_id, members),
        )
        return set_id

    def validation_set(self, set_id: bytes) -> list[tuple[str, bytes]]:
        """(kind, DER) of the objects of a validation set."""
        with self.database.read() as db:
            row = db.execute(
                "SELECT members FROM validation_sets WHERE id = ?", (set_id,)
            ).fetchone()
            if row is None:
                return []
            members = bytes(row[0])
            found = []
            for i in range(0, len(members), 32):
                obj = db.execute(
                    "SELECT kind, der FROM validation_objects WHERE sha256 = ?",
                    (members[i : i + 32],),
                ).fetchone()
                if obj is not None:
                    found.append((str(obj[0]), bytes(obj[1])))
            return found

    def validation_objects(self, kind: str) -> list[bytes]:
        """The DER of every kept object of ``kind`` (certificate, crl)."""
        with self.database.read() as db:
            return [
                bytes(r[0])
                for r in db.execute("SELECT der FROM validation_objects WHERE kind = ?", (kind,))
            ]

    def ledger_evidence(self) -> list[tuple[int, str, bytes, bytes | None]]:
        """(seq, evidence id, signed XML, validation set) of every ledger record, in order."""
        with self.database.read() as db:
            return [
                (int(r[0]), str(r[1]), blob(r[2]), blob(r[3]) if r[3] is not None else None)
                for r in db.execute(
                    "SELECT l.seq, l.evidence_id, e.xml, e.validation_set FROM ledger l"
                    " JOIN evidence e ON e.id = l.evidence_id ORDER BY l.seq"
                )
            ]

    def has_evidence(self, db: Tx, evidence_id: str) -> bool:
        """Whether an evidence with this EvidenceIdentifier is recorded (in ``db``'s view)."""
        return (
            db.execute("SELECT 1 FROM evidence WHERE id = ?", (evidence_id,)).fetchone() is not None
        )

    def delivery_recipients(self, db: Tx, dispatch_id: str) -> set[str]:
        """The recipients of a Dispatch sent from here whose Delivery or NonDelivery evidence
        came back (§4: the evidence timer stops when every one has)."""
        return {
            str(r[0]).lower()
            for r in db.execute(
                "SELECT recipient FROM evidence WHERE direction = 'received' AND type = ?"
                " AND message_id = ? AND recipient IS NOT NULL",
                (EvidenceType.DeliveryNonDeliveryToRecipient.value, dispatch_id),
            )
        }

    def evidence_carried_by(self, envelope_id: str) -> bytes | None:
        """The signed evidence an Evidence message we made carries."""
        with self.database.read() as db:
            row = db.execute(
                "SELECT xml FROM evidence WHERE envelope_id = ?", (envelope_id,)
            ).fetchone()
            return bytes(row[0]) if row else None

    def evidence_of_message(self, message_id: str) -> list[Row]:
        with self.database.read() as db:
            return list(
                db.execute(
                    "SELECT * FROM evidence WHERE message_id = ? ORDER BY created", (message_id,)
                )
            )

    def verify_ledger(self) -> tuple[int, str | None]:
        """(records checked, first problem or None): recomputes every link of the chain."""
        with self.database.read() as db:
            prev = GENESIS
            count = 0
            rows = db.execute(
                "SELECT l.seq, l.evidence_id, l.prev_hash, l.hash, e.xml FROM ledger l"
                " LEFT JOIN evidence e ON e.id = l.evidence_id ORDER BY l.seq"
            )
            for seq, evidence_id, prev_hash, record_hash, xml in rows:
                # Values are read as the bytes they should be: one changed into text, or
                # removed, is a change like any other, never a crash of the auditor's tool.
                if xml is None:
                    return count, f"record {seq}: evidence {evidence_id} is missing"
                if blob(prev_hash) != prev:
                    return count, f"record {seq}: does not follow the record before it"
                if ledger_hash(prev, str(evidence_id), blob(xml)) != blob(record_hash):
                    return count, f"record {seq}: evidence {evidence_id} was changed"
                prev = blob(record_hash)
                count += 1
            return count, None

    def ledger_head(self) -> tuple[int, bytes]:
        """(records, hash of the last record) of the chain now."""
        with self.database.read() as db:
            row = db.execute(
                "SELECT COUNT(*), (SELECT hash FROM ledger ORDER BY seq DESC LIMIT 1) FROM ledger"
            ).fetchone()
            return int(row[0]), bytes(row[1]) if row[1] is not None else GENESIS

    def ledger_hashes(self) -> list[bytes]:
        with self.database.read() as db:
            return [blob(h) for (h,) in db.execute("SELECT hash FROM ledger ORDER BY seq")]

    def add_checkpoint(
        self,
        records: int,
        head: bytes,
        document: bytes,
        signature: bytes,
        created: float,
        *,
        after: float | None,
    ) -> bool:
        """Store a checkpoint taken after the one of ``after`` (its time; None: the first).
        False, and nothing stored, when another node process stored one since: one daily
        checkpoint per provider, whichever process takes it."""
        with self.transaction() as db:
            self.database.serialise(db, "checkpoints")
            row = db.execute("SELECT MAX(created) FROM checkpoints").fetchone()
            newest = float(row[0]) if row and row[0] is not None else None
            if newest != after:
                return False
            db.execute(
                "INSERT INTO checkpoints (records, head, document, signature, created)"
                " VALUES (?,?,?,?,?)",
                (records, head, document, signature, created),
            )
            return True

    def last_checkpoint(self) -> tuple[int, bytes] | None:
        """(seq, signature) of the newest checkpoint."""
        with self.database.read() as db:
            row = db.execute(
                "SELECT seq, signature FROM checkpoints ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            return (int(row[0]), bytes(row[1])) if row else None

    def add_archive_stamp(
        self,
        *,
        records: int,
        head: bytes,
        checkpoint: int | None,
        previous: bytes,
        token: bytes,
        validation: Sequence[tuple[str, bytes]],
        created: float,
    ) -> bool:
        """Append a stamp to the archive chain if ``previous`` (SHA-256 of the newest token,
        ``GENESIS`` for the first) is still its end; False, and nothing stored, when another
        node process appended one meanwhile (the chain stays one line)."""
        with self.transaction() as db:
            self.database.serialise(db, "archive")
            row = db.execute(
                "SELECT token FROM archive_stamps ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            end = hashlib.sha256(blob(row[0])).digest() if row else GENESIS
            if end != previous:
                return False
            validation_set = self._put_validation_set(db, validation) if validation else None
            db.execute(
                "INSERT INTO archive_stamps (records, head, checkpoint, previous, token,"
                " validation_set, created) VALUES (?,?,?,?,?,?,?)",
                (records, head, checkpoint, previous, token, validation_set, created),
            )
            return True

    def archive_stamps(self) -> list[Row]:
        """Every archive stamp, oldest first."""
        with self.database.read() as db:
            return list(db.execute("SELECT * FROM archive_stamps ORDER BY seq"))

    def checkpoint_signature(self, seq: int) -> bytes | None:
        with self.database.read() as db:
            row = db.execute("SELECT signature FROM checkpoints WHERE seq = ?", (seq,)).fetchone()
            return bytes(row[0]) if row else None

    def last_checkpoint_time(self) -> float | None:
        with self.database.read() as db:
            row = db.execute("SELECT MAX(created) FROM checkpoints").fetchone()
            return float(row[0]) if row and row[0] is not None else None

    def checkpoints(self) -> list[tuple[int, int, bytes, bytes, bytes]]:
        """(seq, records, head, document, signature) of every checkpoint, oldest first."""
        with self.database.read() as db:
            return [
                (int(r[0]), int(r[1]), bytes(r[2]), bytes(r[3]), bytes(r[4]))
                for r in db.execute(
                    "SELECT seq, records, head, document, signature FROM checkpoints ORDER BY seq"
                )
            ]
