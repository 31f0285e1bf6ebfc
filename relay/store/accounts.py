"""Accounts managed from the command line, and who may sign for them, with history (§1)."""

from __future__ import annotations

from relay.store.base import StoreBase
from relay.store.database import Row


class AccountQueries(StoreBase):
    def account_row(self, address: str) -> Row | None:
        with self.database.read() as db:
            row: Row | None = db.execute(
                "SELECT * FROM accounts WHERE address = ?", (address.lower(),)
            ).fetchone()
            return row

    def account_rows(self) -> list[Row]:
        with self.database.read() as db:
            return list(db.execute("SELECT * FROM accounts ORDER BY address"))

    def put_account(
        self, address: str, type: str, state: str, quota: int, etebligat: bool = False
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO accounts (address, type, state, quota, updated, etebligat)"
                " VALUES (?,?,?,?,?,?) ON CONFLICT(address) DO UPDATE SET type = excluded.type,"
                " state = excluded.state, quota = excluded.quota, updated = excluded.updated,"
                " etebligat = excluded.etebligat",
                (address.lower(), type, state, quota, self.clock(), int(etebligat)),
            )

    def allow_signer(self, address: str, number: str, role: str, at: float) -> bool:
        """From ``at`` on, ``number`` may sign for ``address`` as ``role``; a new holder ends
        the previous one. False when it already may (nothing is recorded twice)."""
        with self.transaction() as db:
            open_rows = db.execute(
                "SELECT number FROM account_signers WHERE address = ? AND role = ?"
                " AND until IS NULL",
                (address.lower(), role),
            ).fetchall()
            if any(r["number"] == number for r in open_rows):
                return False
            if role == "holder":
                db.execute(
                    "UPDATE account_signers SET until = ? WHERE address = ? AND role = 'holder'"
                    " AND until IS NULL",
                    (at, address.lower()),
                )
            db.execute(
                "INSERT INTO account_signers (address, number, role, since) VALUES (?,?,?,?)",
                (address.lower(), number, role, at),
            )
            return True

    def end_signer(self, address: str, number: str, role: str, at: float) -> bool:
        """From ``at`` on, ``number`` no longer signs for ``address`` as ``role`` (the record
        of when it did stays). False when it did not."""
        with self.transaction() as db:
            changed: int = db.execute(
                "UPDATE account_signers SET until = ? WHERE address = ? AND number = ?"
                " AND role = ? AND until IS NULL",
                (at, address.lower(), number, role),
            ).rowcount
            return changed > 0

    def signers_at(self, address: str, at: float) -> dict[str, str]:
        """Number → role of everyone who could sign for ``address`` at ``at``."""
        with self.database.read() as db:
            rows = db.execute(
                "SELECT number, role FROM account_signers WHERE address = ? AND since <= ?"
                " AND (until IS NULL OR until > ?)",
                (address.lower(), at, at),
            )
            return {str(r["number"]): str(r["role"]) for r in rows}

    def signer_history(self, address: str) -> list[Row]:
        with self.database.read() as db:
            return list(
                db.execute(
                    "SELECT * FROM account_signers WHERE address = ? ORDER BY since, number",
                    (address.lower(),),
                )
            )
