"""Relay and evidence deadlines of Dispatches sent (§4)."""

from __future__ import annotations

from relay.store.base import StoreBase
from relay.store.database import Row, Tx


class TimerQueries(StoreBase):
    def set_timer(
        self,
        db: Tx,
        dispatch_id: str,
        remmd_id: str,
        peer: str,
        *,
        relay_deadline: float | None = None,
        evidence_deadline: float | None = None,
    ) -> None:
        db.execute(
            "INSERT INTO timers (dispatch_id, remmd_id, peer, relay_deadline, evidence_deadline)"
            " VALUES (?,?,?,?,?) ON CONFLICT(dispatch_id) DO UPDATE SET"
            " relay_deadline = excluded.relay_deadline,"
            " evidence_deadline = excluded.evidence_deadline",
            (dispatch_id, remmd_id, peer, relay_deadline, evidence_deadline),
        )

    def stop_timer(self, db: Tx, remmd_id: str, peer: str) -> None:
        db.execute("UPDATE timers SET done = 1 WHERE remmd_id = ? AND peer = ?", (remmd_id, peer))

    def timer(self, dispatch_id: str) -> Row | None:
        with self.database.read() as db:
            row: Row | None = db.execute(
                "SELECT * FROM timers WHERE dispatch_id = ?", (dispatch_id,)
            ).fetchone()
            return row

    def expired_timers(self, now: float) -> list[Row]:
        with self.database.read() as db:
            return list(
                db.execute(
                    "SELECT * FROM timers WHERE done = 0 AND ((relay_deadline IS NOT NULL AND"
                    " relay_deadline <= ?) OR (evidence_deadline IS NOT NULL AND"
                    " evidence_deadline <= ?))",
                    (now, now),
                )
            )
