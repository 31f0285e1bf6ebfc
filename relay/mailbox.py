"""Accounts and their Maildirs (KEP-DOMAIN.md "Mailbox quota", "Account types", "states").

Each account has a Maildir++ tree: the root is INBOX, ``.Sent`` and ``.Delil`` (evidence) are
folders beside it. Delivery is idempotent: a message is filed under a name its caller derives
from what it is (queue id and recipient), so a stage replayed after a crash finds the file
already there instead of filing a second copy.

Finding it costs a listing of the folder (``find``), whose cost grows with what the folder
holds, so it is done only when an earlier attempt may have filed it (docs/architecture.md,
"The store"). A stage files only while it holds a claim on the message its keys come from,
and every claim of a message adds one to its fencing token (``relay.store.messages``). A stage
holding the message's first claim (token 1) with half its lease still to run
(``MessageRow.first_claim_until``) is the only attempt there has been and the only one there can
be meanwhile: none before it (a crash, a failed run or a takeover is always followed by a new
claim, with a higher token) and none beside it (no one takes a claim over before its lease
runs out). Such a stage passes ``fresh_until``, files each key once, and ``put`` writes without
looking: one file, one rename, whatever the folder holds. Every other filing searches first,
in ``new/`` and ``cur/``, for a name containing ``.<key>.``, whatever flags a reader (an IMAP
server) added when it moved the message: the replay after a crash, a failed run or a
takeover, and work done under a claim that is not a message's first (a send, a timer) or under
none (a retrieval). A crash between the rename and the stage's commit leaves the file (durable
before the commit: nothing is lost) and a claim whose next holder has a higher token, so the
replay searches, finds it and files nothing twice. What is left is what was left before: a
process frozen for longer than half a lease between reading the clock and the rename may file
a copy beside its successor's, as one frozen between ``find`` and the rename always could.
"""

from __future__ import annotations

import enum
import os
import re
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from interop.limits import STREAM_CHUNK
from relay.spool import fsync_dir
from relay.store.database import Row

FOLDERS = {"INBOX": "", "Sent": ".Sent", "Delil": ".Delil"}
_SIZE_FIELD = re.compile(r",S=(\d{1,15})(?=,|$)")


def _size_in_name(name: str) -> int | None:
    """The Maildir++ size field of a message's name (``…,S=1234:2,S``), if it has one."""
    found = _SIZE_FIELD.search(name.partition(":")[0])
    return int(found.group(1)) if found else None


def _filed_bytes(directory: Path) -> int:
    """The size of the messages in one Maildir new/ or cur/ directory."""
    total = 0
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                size = _size_in_name(entry.name)
                total += size if size is not None else _file_size(entry)
    except FileNotFoundError:
        return 0
    return total


def _file_size(entry: os.DirEntry[str]) -> int:
    try:  # a reader may move or delete the message meanwhile
        return entry.stat().st_size if entry.is_file() else 0
    except FileNotFoundError:
        return 0


class AccountType(enum.Enum):
    SEND_RECEIVE = "send-receive"  # gönderici/alıcı
    RECEIVE_ONLY = "receive-only"  # sadece alıcı


class AccountState(enum.Enum):
    ACTIVE = "active"  # aktif
    PENDING = "pending"  # aktivasyon bekliyor: cannot send
    CLOSED = "closed"  # kapalı: neither sends nor receives, stays readable


class SignerRole(enum.Enum):
    HOLDER = "holder"  # a natural person's account: its holder
    OPERATOR = "operator"  # a legal person's account: an authorised operator (işlem yetkilisi)


@dataclass(frozen=True, slots=True)
class Account:
    address: str
    type: AccountType
    state: AccountState
    quota: int
    # Who may sign for it (INTEROP-PROFILE.md §1 "Account holders"): TC Kimlik No or YKN.
    holder: str | None = None
    operators: tuple[str, ...] = ()
    etebligat: bool = False  # authorised to send eTebligat (a public body; §4 S-GW 1)

    def signers(self) -> dict[str, SignerRole]:
        found = {number: SignerRole.OPERATOR for number in self.operators}
        if self.holder:
            found[self.holder] = SignerRole.HOLDER
        return found


class AccountSource(Protocol):
    def account_row(self, address: str) -> Row | None: ...

    def signers_at(self, address: str, at: float) -> dict[str, str]: ...


def _write_synced(path: str, source: BinaryIO | bytes) -> int:
    """Write ``source`` into a new file at ``path`` and sync it; returns its size."""
    with open(path, "wb") as out:
        if isinstance(source, bytes):
            out.write(source)
        else:
            source.seek(0)
            while block := source.read(STREAM_CHUNK):
                out.write(block)
        out.flush()
        os.fsync(out.fileno())
        return out.tell()


class Mailboxes:
    """Accounts from the configuration file, overridden by those managed in the store."""

    def __init__(
        self,
        root: Path,
        accounts: Iterable[Account],
        store: AccountSource | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = root
        self.clock = clock
        self.accounts = {a.address.lower(): a for a in accounts}
        self.store = store
        # Maildir names carry the host's name (read once: a system call each time otherwise),
        # and folders made once need not be made again for each message (``_ready``).
        self._host = socket.gethostname()
        self._made: set[str] = set()

    def use_accounts(self, accounts: Iterable[Account]) -> None:
        """The configuration's accounts from now on (SIGHUP); the store's still override."""
        self.accounts = {a.address.lower(): a for a in accounts}

    def account(self, address: str) -> Account | None:
        """The account now: a stored one (with today's signers) or the configuration's."""
        if self.store is not None:
            row = self.store.account_row(address)
            if row is not None:
                signers = self.store.signers_at(address, self.clock())
                holders = [n for n, role in signers.items() if role == SignerRole.HOLDER.value]
                return Account(
                    str(row["address"]),
                    AccountType(str(row["type"])),
                    AccountState(str(row["state"])),
                    int(str(row["quota"])),
                    holder=holders[0] if holders else None,
                    operators=tuple(
                        sorted(n for n, r in signers.items() if r == SignerRole.OPERATOR.value)
                    ),
                    etebligat=bool(row["etebligat"]),
                )
        return self.accounts.get(address.lower())

    def signers_at(self, address: str, at: float) -> dict[str, SignerRole]:
        """Who could sign for ``address`` at ``at`` (a timestamp): a stored account's history
        is kept (profile §1: judged against the operators of that moment); an account of the
        configuration file has the signers the file names."""
        if self.store is not None and self.store.account_row(address) is not None:
            return {n: SignerRole(r) for n, r in self.store.signers_at(address, at).items()}
        account = self.accounts.get(address.lower())
        return account.signers() if account is not None else {}

    def folder(self, address: str, folder: str = "INBOX") -> Path:
        return self.root / address.lower() / FOLDERS[folder]

    def usage(self, address: str) -> int:
        """Bytes filed for ``address``: the messages in new/ and cur/ of INBOX and of every
        Maildir++ folder (tmp/ holds nothing filed yet). Sizes are read from the Maildir++
        ``,S=<size>`` field of each name, so a large mailbox costs one directory listing per
        folder and no ``stat`` per message; a name without it (filed by other software) is
        stat'ed."""
        base = self.root / address.lower()
        try:
            with os.scandir(base) as entries:
                folders = [base] + [
                    Path(e.path) for e in entries if e.name.startswith(".") and e.is_dir()
                ]
        except FileNotFoundError:
            return 0
        return sum(_filed_bytes(folder / sub) for folder in folders for sub in ("new", "cur"))

    def is_full(self, account: Account) -> bool:
        return self.usage(account.address) >= account.quota

    def why_cannot_send(self, address: str) -> str | None:
        """None when the account may send; otherwise the reason, for rejection evidence."""
        account = self.account(address)
        if account is None:
            return f"{address} has no account at this provider"
        if account.type is AccountType.RECEIVE_ONLY:
            return f"{address} is a receive-only account"
        if account.state is AccountState.CLOSED:
            return f"{address} is closed"
        if account.state is AccountState.PENDING:
            return f"{address} is waiting for activation"
        if self.is_full(account):
            return f"the mailbox of {address} is full; it may receive but not send"
        return None

    def put(
        self,
        address: str,
        folder: str,
        key: str,
        source: BinaryIO | bytes,
        *,
        fresh_until: float | None = None,
    ) -> Path:
        """File a message; idempotent for the same ``key``. Returns the file's path.

        ``fresh_until``: the caller's word that, until then (this clock), no attempt at this
        filing can have been made before and none can start elsewhere (it holds the first
        claim on the message the key is derived from: ``MessageRow.first_claim_until``), and
        that it files this key once. Then no copy can be there and the folder is not
        searched, so filing costs the same in a folder of 50,000 messages as in an empty one.
        Without it (a replay, a takeover, a caller holding no first claim) the folder is
        searched first (``find``) and an earlier copy, wherever a reader moved it, is
        returned instead of a second one."""
        base = self._ready(address, folder)
        existing = self.earlier(address, folder, key, fresh_until)
        if existing is not None:
            return existing
        stem = f"{int(self.clock())}.{key}.{self._host}"
        tmp = os.path.join(base, "tmp", stem)
        try:
            size = _write_synced(tmp, source)
        except FileNotFoundError:  # the folder was removed since this process made it
            self._made.discard(base)
            self._ready(address, folder)
            size = _write_synced(tmp, source)
        new = os.path.join(base, "new")
        final = os.path.join(new, f"{stem},S={size}")
        os.replace(tmp, final)
        fsync_dir(new)
        return Path(final)

    def _ready(self, address: str, folder: str) -> str:
        """The Maildir folder's path, its ``tmp``, ``new`` and ``cur`` made if this process has
        not made them yet (three ``mkdir`` calls and their errors per message otherwise)."""
        base = str(self.folder(address, folder))
        if base not in self._made:
            for sub in ("tmp", "new", "cur"):
                os.makedirs(os.path.join(base, sub), exist_ok=True)
            self._made.add(base)
        return base

    def earlier(
        self, address: str, folder: str, key: str, fresh_until: float | None = None
    ) -> Path | None:
        """The copy an earlier attempt filed under ``key``, looked for only when there may
        have been one: not before ``fresh_until`` (``put``)."""
        if fresh_until is not None and self.clock() < fresh_until:
            return None
        return self.find(address, folder, key)

    def find(self, address: str, folder: str, key: str) -> Path | None:
        """The message filed under ``key``, if any, in ``new/`` or, moved there by a reader
        (with flags added to its name), in ``cur/``. Names are read with ``os.scandir`` and
        compared as strings: one pass over the folder, no object per message; still, its cost
        grows with the folder (about 0.35 µs a message), so filing calls it only when an
        earlier attempt may have filed (``earlier``)."""
        base = self.folder(address, folder)
        needle = f".{key}."
        for sub in ("new", "cur"):
            try:
                with os.scandir(base / sub) as entries:
                    for entry in entries:
                        if needle in entry.name:
                            return base / sub / entry.name
            except FileNotFoundError:
                continue
        return None

    def list(self, address: str, folder: str = "INBOX") -> list[tuple[Path, bool]]:
        """(path, read) for each message, in the order they were filed (each file is written
        once, so its modification time is its filing time; names break ties). Names alone
        are not that order: they begin with the second only, then a key."""
        base = self.folder(address, folder)
        found: list[tuple[int, str, Path, bool]] = []
        for sub in ("new", "cur"):
            try:
                with os.scandir(base / sub) as entries:
                    for entry in entries:
                        try:
                            filed = entry.stat().st_mtime_ns
                        except FileNotFoundError:  # a reader moved it meanwhile: in cur/
                            continue
                        flags = entry.name.split(":2,")[-1] if ":2," in entry.name else ""
                        seen = sub == "cur" and "S" in flags
                        found.append((filed, entry.name, Path(entry.path), seen))
            except FileNotFoundError:
                continue
        return [(path, seen) for _, _, path, seen in sorted(found)]

    def mark_read(self, path: Path) -> Path:
        """Move to cur/ with the Seen flag (Maildir)."""
        name = path.name.split(":2,")[0] + ":2,S"
        target = path.parent.parent / "cur" / name
        if path != target:
            os.replace(path, target)
            fsync_dir(target.parent)
        return target
