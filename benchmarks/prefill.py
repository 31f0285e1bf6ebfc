"""What a node holds after months of traffic, made in seconds before a benchmark starts it.

Issue 13, requirement 2: the cost of a Dispatch must not grow with what the node holds. A
benchmark measures that by starting its node on a data folder and a store filled beforehand:

* ``fill_mailboxes``: each address's Maildir folder with ``count`` messages, named as
  ``Mailboxes.put`` names them (``<time>.<queue id>-<index>.<host>,S=<size>`` in ``new/``), a
  share of them read (moved to ``cur/`` with the Seen flag, as an IMAP server does). The
  files are small and written without fsync: what costs a delivery is how many names a folder
  holds, not their bytes, and a benchmark that waits for 150,000 fsyncs measures the disk.
* ``fill_store``: ``evidence`` evidence rows with what the schema goes with them, as a node that
  both sends and receives leaves them (each exchange done, its spool files gone): half in
  Dispatches received (``dispatch-in`` processed, Relay and Delivery evidence issued, two
  ``evidence-out`` sent), half in its own users' submissions (``submission`` processed,
  SubmissionAcceptance for the sender and inside the ``dispatch-out`` sent, its timer done, the
  peer's Relay and Delivery evidence received in two ``evidence-in`` processed). Every evidence
  is a ledger record: the chain is a real one, so the node's checkpoints and ``ledger verify``
  go on as usual. The evidence XML is a short stand-in (``xml_bytes``): queries read it by
  key, never by scanning it. Rows go in through the store's own database connection, in bulk:
  ``executemany`` on SQLite, ``COPY`` on PostgreSQL, which is then analysed (autovacuum would
  have done so long before a store held a million rows; SQLite's node never analyses).

Both run before the node starts, on the folder and the store it will open.
"""

from __future__ import annotations

import hashlib
import json
import operator
import os
import secrets
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from interop.evidence.codes import Event, EvidenceType
from relay.lifecycle import Kind, State
from relay.store import GENESIS, Store, blob, ledger_hash
from relay.store.database import PostgresDatabase, SqliteDatabase

BATCH = 20_000  # rows per executemany or per COPY flush: bounded memory, few round trips
DAY = 86_400.0
SQLITE_CACHE_KIB = 256 * 1024  # while filling only: the node's own connection keeps its default
# A received message's bytes: enough to be a message, small enough to write 150,000 fast.
STUB = b"From: prefill@hs01.kep.tr\r\nSubject: prefill\r\n\r\nx\r\n"

MESSAGE_COLUMNS = (
    "id", "kind", "peer", "remmd_id", "mail_from", "rcpt_to", "size", "sha256", "state",
    "created", "updated", "attempts", "next_attempt", "parent", "sent_at", "headers",
    "content_gone", "fence",
)  # fmt: skip
EVIDENCE_COLUMNS = (
    "id", "direction", "remmd_id", "type", "event", "recipient", "sender", "issuer",
    "message_id", "envelope_id", "xml", "created", "validation_set",
)  # fmt: skip
LEDGER_COLUMNS = ("seq", "evidence_id", "prev_hash", "hash", "created")
_IN_MESSAGE_ORDER = operator.itemgetter(*MESSAGE_COLUMNS)
_IN_EVIDENCE_ORDER = operator.itemgetter(*EVIDENCE_COLUMNS)
TIMER_COLUMNS = (
    "dispatch_id", "remmd_id", "peer", "relay_deadline", "evidence_deadline", "done"
)  # fmt: skip


def _queue_id() -> str:
    return secrets.token_hex(12)  # as relay.spool.new_id


def maildir_name(when: float, key: str, host: str, size: int, *, seen: bool) -> str:
    """The name ``Mailboxes.put`` gives a message filed under ``key``; a read one as an IMAP
    server renames it in ``cur/`` (Maildir's ``:2,`` info with the Seen flag)."""
    name = f"{int(when)}.{key}.{host},S={size}"
    return f"{name}:2,S" if seen else name


def fill_mailboxes(
    mail_root: Path,
    addresses: Iterable[str],
    count: int,
    *,
    now: float,
    folder: str = "",
    read_share: float = 0.5,
    host: str = "prefill",
) -> int:
    """``count`` messages in each address's Maildir folder (``folder``: "" for INBOX,
    ".Delil", ".Sent"), one a minute back from ``now``, the oldest ``read_share`` of them read;
    returns how many files were written."""
    written = 0
    for address in addresses:
        base = mail_root / address.lower() / folder
        for sub in ("tmp", "new", "cur"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        read = int(count * read_share)
        for i in range(count):
            seen = i < read
            name = maildir_name(
                now - (count - i) * 60.0, f"{_queue_id()}-1", host, len(STUB), seen=seen
            )
            _write(base / ("cur" if seen else "new") / name, STUB)
            written += 1
    return written


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class Parties:
    """Who the pre-filled exchanges are between: this node's provider, one peer, the users."""

    provider: str = "hs02"
    peer: str = "hs01"
    users: Sequence[str] = (
        "ayse.demir@hs02.kep.tr", "ali.yilmaz@hs02.kep.tr", "0123456789012345@hs02.kep.tr"
    )  # fmt: skip
    peer_user: str = "ali.yilmaz@hs01.kep.tr"


@dataclass
class _Rows:
    """One exchange's rows, each a tuple in its table's column order."""

    messages: list[tuple[Any, ...]]
    evidence: list[tuple[Any, ...]]
    timers: list[tuple[Any, ...]]


def _message(kind: Kind, state: State, when: float, **values: Any) -> tuple[Any, ...]:
    """A messages row done with: its spool file gone, claimed once, sent once if it went out."""
    sent = kind in (Kind.DISPATCH_OUT, Kind.EVIDENCE_OUT)
    row = {
        "id": _queue_id(),
        "kind": str(kind),
        "size": 4096,
        "sha256": "0" * 64,
        "state": str(state),
        "created": when,
        "updated": when + 5.0,
        "attempts": 1 if sent else 0,
        "next_attempt": when,
        "parent": None,
        "sent_at": when + 2.0 if sent else None,
        "headers": None,
        "content_gone": 1,
        "fence": 1,
    } | values
    row["rcpt_to"] = f'["{row["rcpt_to"]}"]'  # a JSON list of one address
    return _IN_MESSAGE_ORDER(row)  # type: ignore[no-any-return]


def _evidence(kind: EvidenceType, event: Event, **values: Any) -> tuple[Any, ...]:
    row = {"id": f"pre-{secrets.token_hex(16)}", "type": kind.value, "event": event.value}
    return _IN_EVIDENCE_ORDER(row | values)  # type: ignore[no-any-return]


RELAY = (EvidenceType.RelayREMMDAcceptanceRejection, Event.Acceptance)
DELIVERY = (EvidenceType.DeliveryNonDeliveryToRecipient, Event.Delivery)
SUBMISSION = (EvidenceType.SubmissionAcceptanceRejection, Event.Acceptance)


def _received(n: int, parties: Parties, when: float, common: dict[str, Any]) -> _Rows:
    """A Dispatch from the peer, delivered: Relay and Delivery evidence sent back."""
    user = parties.users[n % len(parties.users)]
    remmd = f"pre-{n}-{secrets.token_hex(6)}@{parties.peer}.kep.tr"
    dispatch = _message(
        Kind.DISPATCH_IN, State.PROCESSED, when,
        peer=parties.peer, remmd_id=remmd, mail_from=parties.peer_user, rcpt_to=user,
    )  # fmt: skip
    headers = json.dumps({"dispatch_message_id": f"<{remmd}>", "ileti_tip": "standart"})
    rows = _Rows([dispatch], [], [])
    about = {
        "direction": "issued", "remmd_id": remmd, "recipient": user, "sender": parties.peer_user,
        "issuer": parties.provider, "message_id": dispatch[0], "created": when + 1.0, **common,
    }  # fmt: skip
    for kind, event in (RELAY, DELIVERY):
        out = _message(
            Kind.EVIDENCE_OUT, State.SENT, when + 1.0,
            peer=parties.peer, remmd_id=remmd, mail_from=parties.provider,
            rcpt_to=parties.peer_user, parent=dispatch[0], headers=headers,
        )  # fmt: skip
        rows.messages.append(out)
        rows.evidence.append(_evidence(kind, event, envelope_id=out[0], **about))
    return rows


def _sent(n: int, parties: Parties, when: float, common: dict[str, Any]) -> _Rows:
    """A user's submission, relayed to the peer, whose Relay and Delivery evidence came."""
    user = parties.users[n % len(parties.users)]
    queue_id = _queue_id()
    remmd = f"{queue_id}@{parties.provider}.kep.tr"
    who = {"remmd_id": remmd, "mail_from": user, "rcpt_to": parties.peer_user}
    submission = _message(Kind.SUBMISSION, State.PROCESSED, when, id=queue_id, peer=None, **who)
    dispatch = _message(
        Kind.DISPATCH_OUT, State.SENT, when, peer=parties.peer, parent=queue_id, **who
    )
    timer = (dispatch[0], remmd, parties.peer, None, when + DAY, 1)
    rows = _Rows([submission, dispatch], [], [timer])
    issued = {
        "direction": "issued", "remmd_id": remmd, "recipient": None, "sender": user,
        "issuer": parties.provider, "created": when, **common,
    }  # fmt: skip
    # The sender's copy (filed in Delil) and the one inside the Dispatch.
    for message_id, envelope_id in ((queue_id, f"{queue_id}-n0"), (dispatch[0], None)):
        rows.evidence.append(
            _evidence(*SUBMISSION, message_id=message_id, envelope_id=envelope_id, **issued)
        )
    received = {
        "direction": "received", "remmd_id": remmd, "recipient": parties.peer_user,
        "sender": user, "issuer": parties.peer, "message_id": dispatch[0],
        "created": when + 3.0, **common,
    }  # fmt: skip
    for kind, event in (RELAY, DELIVERY):
        note = _message(
            Kind.EVIDENCE_IN, State.PROCESSED, when + 3.0,
            peer=parties.peer, remmd_id=remmd, mail_from=parties.peer, rcpt_to=user,
        )  # fmt: skip
        rows.messages.append(note)
        rows.evidence.append(_evidence(kind, event, envelope_id=note[0], **received))
    return rows


def _exchanges(count: int, parties: Parties, now: float, common: dict[str, Any]) -> Iterator[_Rows]:
    """Exchanges, alternately received and sent, until ``count`` evidence rows are made;
    spread evenly over the last year, oldest first."""
    made, n = 0, 0
    while made < count:
        when = now - 365 * DAY * (1 - made / count)
        rows = (_received if n % 2 == 0 else _sent)(n, parties, when, common)
        rows.evidence = rows.evidence[: count - made]
        made += len(rows.evidence)
        n += 1
        yield rows


@dataclass(frozen=True, slots=True)
class Filled:
    messages: int
    evidence: int
    timers: int

    def describe(self) -> str:
        return f"{self.evidence} evidence, {self.messages} messages, {self.timers} timers"


def fill_store(
    url: str, evidence: int, *, now: float, parties: Parties | None = None, xml_bytes: int = 512
) -> Filled:
    """``evidence`` evidence rows (and their messages, ledger records and timers) added to the
    store at ``url`` (made, or brought up to date, first); returns what was added."""
    parties = parties or Parties()
    xml = b"<prefill/>".ljust(xml_bytes, b" ")
    # Durability is no concern while filling: a failed fill is made again.
    store = Store(url, synchronous="OFF")
    try:
        if isinstance(store.database, SqliteDatabase):  # random keys: index pages in memory
            store.database.db.execute(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
        common = {"xml": xml, "validation_set": _validation_set(store)}
        with store.transaction() as db:
            last = db.execute("SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1").fetchone()
        chain = (int(last[0]), blob(last[1])) if last else (0, GENESIS)
        totals = [0, 0, 0]
        batches = _batched(_exchanges(evidence, parties, now, common), BATCH // 6)
        for batch in batches:
            messages = [m for rows in batch for m in rows.messages]
            records = [e for rows in batch for e in rows.evidence]
            timers = [t for rows in batch for t in rows.timers]
            ledger, chain = _ledger(records, chain, xml)
            _insert(store, "messages", MESSAGE_COLUMNS, messages)
            _insert(store, "evidence", EVIDENCE_COLUMNS, records)
            _insert(store, "ledger", LEDGER_COLUMNS, ledger)
            _insert(store, "timers", TIMER_COLUMNS, timers)
            totals = [totals[0] + len(messages), totals[1] + len(records), totals[2] + len(timers)]
        if isinstance(store.database, PostgresDatabase):
            with store.database.pool.connection() as connection:
                connection.execute("ANALYZE")
        return Filled(*totals)
    finally:
        store.close()


def _batched(items: Iterable[_Rows], size: int) -> Iterator[list[_Rows]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def _ledger(
    records: Sequence[tuple[Any, ...]], chain: tuple[int, bytes], xml: bytes
) -> tuple[list[tuple[Any, ...]], tuple[int, bytes]]:
    """The ledger records of ``records`` after ``chain`` (last seq, last hash)."""
    seq, prev = chain
    rows = []
    for record in records:
        seq += 1
        digest = ledger_hash(prev, record[0], xml)
        rows.append((seq, record[0], prev, digest, record[11]))
        prev = digest
    return rows, (seq, prev)


def _validation_set(store: Store) -> bytes:
    """One validation set for every pre-filled evidence (as for the evidence a node issues:
    its own chain and CRLs, the same each time), stored as ``add_evidence`` stores one."""
    der = b"prefill certificate"
    member = hashlib.sha256(der).digest()
    set_id = hashlib.sha256(member).digest()
    with store.transaction() as db:
        db.execute(
            "INSERT INTO validation_objects (sha256, kind, der) VALUES (?,?,?)"
            " ON CONFLICT DO NOTHING",
            (member, "certificate", der),
        )
        db.execute(
            "INSERT INTO validation_sets (id, members) VALUES (?,?) ON CONFLICT DO NOTHING",
            (set_id, member),
        )
    return set_id


def _insert(store: Store, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
    if not rows:
        return
    if isinstance(store.database, PostgresDatabase):
        with store.database.pool.connection() as connection, connection.cursor() as cursor:
            names = ", ".join(columns)
            with cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        return
    marks = ", ".join("?" * len(columns))
    query = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"  # noqa: S608
    with store.transaction() as db:
        db.executemany(query, rows)


def prefill_node(
    data_dir: Path,
    store_url: str | None,
    *,
    mailbox: int,
    evidence: int,
    addresses: Sequence[str],
    now: float | None = None,
) -> str:
    """Before a node starts on ``data_dir`` (its Maildir under ``mail/``) and ``store_url``
    (None: the SQLite default, ``state.sqlite3`` in the data folder): ``mailbox`` messages in
    each of ``addresses``' INBOX and ``evidence`` evidence rows in the store, the users' own
    being ``addresses``. Returns what was done, for the run's description."""
    now = time.time() if now is None else now
    done = []
    if mailbox:
        start = time.perf_counter()
        fill_mailboxes(data_dir / "mail", addresses, mailbox, now=now)
        done.append(
            f"{mailbox} messages in each of {len(addresses)} INBOXes"
            f" ({time.perf_counter() - start:.0f} s)"
        )
    if evidence:
        start = time.perf_counter()
        url = store_url or f"sqlite:///{data_dir / 'state.sqlite3'}"
        filled = fill_store(url, evidence, now=now, parties=Parties(users=tuple(addresses)))
        done.append(f"{filled.describe()} in the store ({time.perf_counter() - start:.0f} s)")
    return "; ".join(done) or "nothing"
