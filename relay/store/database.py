"""The two databases a store can live in, behind one small interface.

``sqlite:///path`` (the embedded default: one file on one machine, shared by that machine's
node processes through SQLite's own locking) and ``postgresql://…`` (every node of a provider,
on any machine). The store's queries are written once, in the SQL both speak, with ``?``
placeholders; what differs is said here and nowhere else:

* a write transaction: SQLite's ``BEGIN IMMEDIATE`` takes the database's one write lock, so
  writers are serialised across processes; PostgreSQL runs them side by side and the store
  serialises what must be (``serialise``: the ledger's hash chain) with a transaction-scoped
  advisory lock;
* claiming work: ``FOR UPDATE SKIP LOCKED`` on PostgreSQL (``skip_locked``), nothing on SQLite,
  whose writers never overlap;
* placeholders (``%s`` for psycopg) and column types (``schema.py``);
* whether what a deleted row held can be made unreadable from the database's files
  (``forgets_deleted``, ``purge``): SQLite zeroes deleted content and can empty its
  write-ahead log; PostgreSQL keeps a deleted row's bytes in its table's pages until they
  are vacuumed and written over, so a message's content, which must go for good (profile §7),
  is not held there.

Inside a thread's transaction, reads on that thread see the transaction's own writes on both,
as one SQLite connection under a re-entrant lock always did.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg_pool import ConnectionPool

from interop.errors import ConfigurationError

Params = Sequence[Any] | Mapping[str, Any]


class Row(Sequence[Any]):
    """One result row: values by position or by column name (like ``sqlite3.Row``)."""

    __slots__ = ("_names", "_values")

    def __init__(self, names: Mapping[str, int], values: Sequence[Any]) -> None:
        self._names = names
        self._values = tuple(values)

    def __getitem__(self, key: int | str) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            return self._values[self._names[key]]
        return self._values[key]

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def keys(self) -> list[str]:
        return list(self._names)

    def __repr__(self) -> str:
        return f"Row({dict(zip(self._names, self._values, strict=True))!r})"


@functools.lru_cache(maxsize=512)
def _columns(names: tuple[str, ...]) -> Mapping[str, int]:
    return {name: i for i, name in enumerate(names)}


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Tx(Protocol):
    """A transaction (or, from ``Database.read``, a reading session) the store's queries run in."""

    def execute(self, sql: str, params: Params = ()) -> Cursor: ...
    def executemany(self, sql: str, rows: Sequence[Params]) -> Cursor: ...


def is_database_error(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.Error | psycopg.Error)


def is_duplicate(exc: BaseException) -> bool:
    """A row whose unique key another transaction committed first."""
    return isinstance(exc, sqlite3.IntegrityError | psycopg.errors.UniqueViolation)


def is_database_trouble(exc: BaseException) -> bool:
    """The database in temporary trouble (busy, locked, unreachable, a serialisation conflict,
    a disk that is full): the work is tried again, never given up."""
    if isinstance(exc, sqlite3.OperationalError):
        return True  # locked, busy, disk full, I/O error
    return isinstance(
        exc,
        psycopg.OperationalError  # connection lost, server shutting down, admin shutdown
        | psycopg.errors.SerializationFailure
        | psycopg.errors.DeadlockDetected
        | psycopg.errors.LockNotAvailable
        | psycopg.errors.QueryCanceled
        | psycopg.errors.InsufficientResources
        | psycopg.errors.ReadOnlySqlTransaction,  # a replica promoted, a failover under way
    )  # the pool's PoolTimeout is an OperationalError too


class Database:
    """What the store needs of a database; ``open_database`` picks the kind from the URL."""

    dialect: str
    skip_locked: str  # appended to a claim's inner SELECT
    where: str  # the database, for logs and metrics, without a password

    def transaction(self, *, durable: bool = True) -> Any:  # a context manager yielding Tx
        """A write transaction. ``durable=False``: one whose loss in a power failure costs
        nothing (a claim: ``relay.store.messages``); where the database allows, its commit
        does not wait for the disk."""
        raise NotImplementedError

    def read(self) -> Any:  # a context manager yielding Tx
        raise NotImplementedError

    def serialise(self, tx: Tx, what: str) -> None:
        """Hold ``what`` (a name) exclusively until ``tx`` ends: one writer at a time."""
        raise NotImplementedError

    # Whether what deleted rows held can be made unreadable from the database's files
    # (``purge``); only such a database holds a message's content (profile §7).
    forgets_deleted = False

    def purge(self) -> bool:
        """Make what rows deleted so far held unreadable from the database's files, if that
        can be done now without waiting for another process; whether it was."""
        return False

    def close(self) -> None:
        raise NotImplementedError


def _sqlite_row(cursor: sqlite3.Cursor, values: tuple[Any, ...]) -> Row:
    return Row(_columns(tuple(d[0] for d in cursor.description)), values)


# SQLite's settings that sync the WAL at every commit; a transaction that need not be durable
# commits as NORMAL instead, which syncs at checkpoints only. The WAL is written in order, so
# the next durable commit's sync takes every earlier one to the disk with it; only a power
# failure or a crash of the machine before it loses the transaction, and that stops every node
# process sharing the file too.
_SYNCING = {"FULL", "EXTRA", "2", "3"}


class SqliteDatabase(Database):
    """One connection per process, under one re-entrant lock; WAL, so readers of other
    processes (metrics, the operator tools) see the last commit alongside; ``busy`` seconds of
    waiting for another process's write lock before a write gives up (and the caller retries,
    4xx). A transaction that need not be durable commits without syncing (``_SYNCING``)."""

    dialect = "sqlite"
    skip_locked = ""
    forgets_deleted = True

    def __init__(self, path: Path, synchronous: str = "FULL", busy: float = 10.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.where = str(path)
        self.busy = busy
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=busy)
        self.db.row_factory = _sqlite_row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={synchronous}")
        self.db.execute("PRAGMA foreign_keys=ON")
        # Deleted content is overwritten with zeros in its pages, not left in free ones.
        self.db.execute("PRAGMA secure_delete=ON")
        self.synchronous = synchronous
        self._syncs_every_commit = synchronous.upper() in _SYNCING
        self._lock = threading.RLock()

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[Tx]:
        with self._lock:
            relaxed = not durable and self._syncs_every_commit
            if relaxed:
                self.db.execute("PRAGMA synchronous=NORMAL")
            try:
                self.db.execute("BEGIN IMMEDIATE")
                try:
                    yield self.db
                except BaseException:
                    self.db.execute("ROLLBACK")
                    raise
                self.db.execute("COMMIT")
            finally:
                if relaxed:
                    self.db.execute(f"PRAGMA synchronous={self.synchronous}")

    @contextmanager
    def read(self) -> Iterator[Tx]:
        with self._lock:
            yield self.db

    def serialise(self, tx: Tx, what: str) -> None:
        """Nothing to do: ``BEGIN IMMEDIATE`` holds the whole database."""

    def purge(self) -> bool:
        """Deleted rows are zeroed in their pages (``secure_delete``), but the write-ahead log
        holds those pages as they were until every frame is copied into the database and the
        log is emptied (a ``TRUNCATE`` checkpoint). That needs no other process reading or
        writing: tried without waiting for one (when one is, it copies what it can, like the
        checkpoints SQLite makes itself)."""
        with self._lock:
            self.db.execute("PRAGMA busy_timeout=0")
            try:
                busy = self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            except sqlite3.OperationalError:  # another process is checkpointing: later
                return False
            finally:
                self.db.execute(f"PRAGMA busy_timeout={int(self.busy * 1000)}")
        return int(busy) == 0

    def close(self) -> None:
        self.db.close()


@functools.lru_cache(maxsize=1024)
def psycopg_sql(sql: str) -> str:
    """The same query with psycopg's placeholders (no query of ours has ``?`` in a literal)."""
    return sql.replace("%", "%%").replace("?", "%s")


class _PostgresTx:
    def __init__(self, connection: Any) -> None:
        self.connection = connection

    def execute(self, sql: str, params: Params = ()) -> Cursor:
        # Always with parameters (even none): psycopg_sql doubled every "%" for them.
        cursor: Cursor = self.connection.execute(psycopg_sql(sql), params)
        return cursor

    def executemany(self, sql: str, rows: Sequence[Params]) -> Cursor:
        cursor = self.connection.cursor()
        cursor.executemany(psycopg_sql(sql), rows)
        return cursor  # type: ignore[no-any-return]


def _postgres_rows(cursor: Any) -> Callable[[Sequence[Any]], Row]:
    names = _columns(tuple(c.name for c in cursor.description or ()))
    return lambda values: Row(names, values)


class PostgresDatabase(Database):
    """A pool of connections (psycopg 3): each transaction and each read takes one.

    A thread inside a transaction reads through that transaction's connection, so it sees its
    own writes; every other read sees the last commit (READ COMMITTED).
    """

    dialect = "postgresql"
    skip_locked = " FOR UPDATE SKIP LOCKED"

    def __init__(self, url: str, connections: int = 8, timeout: float = 10.0) -> None:
        self.url = url
        self.where = redact(url)
        self.pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max(2, connections),
            timeout=timeout,
            kwargs={"autocommit": True, "row_factory": _postgres_rows},
            open=False,
            name="kep-store",
        )
        self.pool.open(wait=True, timeout=timeout)
        self._current = threading.local()

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[Tx]:
        # Always durable here: with nodes on other machines, a claim the server lost in a
        # crash could be taken again while its holder still works on it.
        if getattr(self._current, "tx", None) is not None:
            raise RuntimeError("a store transaction inside another one")
        with self.pool.connection() as connection, connection.transaction():
            tx = _PostgresTx(connection)
            self._current.tx = tx
            try:
                yield tx
            finally:
                self._current.tx = None

    @contextmanager
    def read(self) -> Iterator[Tx]:
        current = getattr(self._current, "tx", None)
        if current is not None:
            yield current
            return
        with self.pool.connection() as connection:
            yield _PostgresTx(connection)

    def serialise(self, tx: Tx, what: str) -> None:
        tx.execute("SELECT pg_advisory_xact_lock(?)", (_lock_key(what),))

    def close(self) -> None:
        self.pool.close()


def _lock_key(name: str) -> int:
    """A stable 64-bit advisory lock key for ``name`` (the same on every node)."""
    return (0x4B45_5000 << 32) | zlib.crc32(name.encode())


def redact(url: str) -> str:
    """``url`` without its password (in the user part, or libpq's ``password=`` parameter),
    for logs and ``kep-relay config show``."""
    parts = urlsplit(url)
    items = parts.query.split("&") if parts.query else []
    hidden = [f"{i.partition('=')[0]}=***" if _is_password(i) else i for i in items]
    if parts.password is None and hidden == items:
        return url
    if parts.password is not None:
        user, _, host = parts.netloc.rpartition("@")
        parts = parts._replace(netloc=f"{user.partition(':')[0]}:***@{host}")
    return urlunsplit(parts._replace(query="&".join(hidden)))


def _is_password(parameter: str) -> bool:
    return parameter.partition("=")[0].strip().lower() == "password"


def sqlite_path(url: str) -> Path:
    """The file of a ``sqlite:///…`` URL (``sqlite:///rel/path`` is relative, as in SQLAlchemy;
    ``sqlite:////abs/path`` absolute)."""
    path = url.removeprefix("sqlite:///")
    if not path:
        raise ConfigurationError(f"{url!r}: no database file named")
    return Path(path)


def open_database(
    url: str, *, synchronous: str = "FULL", connections: int = 8, retry_for: float = 0.0
) -> Database:
    """The database at ``url``; ``retry_for`` seconds of waiting for a PostgreSQL server that
    is not there yet (a node started with its database)."""
    if url.startswith("sqlite:///"):
        return SqliteDatabase(sqlite_path(url), synchronous)
    if url.startswith(("postgresql://", "postgres://")):
        deadline = time.monotonic() + retry_for
        while True:
            try:
                return PostgresDatabase(url, connections)
            except Exception:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(1.0)
    raise ConfigurationError(
        f"[store] url: {redact(url)!r} is neither sqlite:///… nor postgresql://…"
    )
