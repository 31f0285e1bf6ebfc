"""A fresh PostgreSQL database for one benchmark run, and the server's CPU time.

``fresh_database(url)`` creates ``kep_bench_<random>`` on the server of ``url`` (whose own
database is only used to connect), yields the URL of the new one, and drops it afterwards
(``WITH (FORCE)``: connections a crashed node left behind do not keep it).

``server_cpu_seconds(root)`` is the CPU time of a local server: the postmaster and every
process under it, with what exited processes used (``cutime``/``cstime``: a backend that
closed, an autovacuum worker) through the postmaster, which reaps them.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from benchmarks.procstat import tree_cpu_seconds


def is_postgres(url: str | None) -> bool:
    return url is not None and url.startswith(("postgresql://", "postgres://"))


@contextlib.contextmanager
def fresh_database(url: str, prefix: str = "kep_bench") -> Iterator[str]:
    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield urlunsplit(urlsplit(url)._replace(path="/" + name))
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def postmaster_pid(connection: psycopg.Connection[tuple[object, ...]]) -> int | None:
    """The postmaster of ``connection``'s server, when it runs on this machine."""
    row = connection.execute("SELECT pg_backend_pid()").fetchone()
    if row is None:
        return None
    try:
        with open(f"/proc/{int(str(row[0]))}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return None  # a server on another machine


def backend_pid(connection: psycopg.Connection[tuple[object, ...]]) -> int:
    row = connection.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    return int(str(row[0]))


def server_cpu_seconds(postmaster: int) -> float:
    return tree_cpu_seconds(postmaster)


def autovacuum_on(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as connection:
        row = connection.execute("SHOW autovacuum").fetchone()
        return row is not None and str(row[0]) == "on"


class Vacuumer:
    """Stands in for autovacuum on a server where it is off (``autovacuum = off``, as on a CI
    server): ``VACUUM (ANALYZE)`` of the whole database every ``every`` seconds, on a
    connection of its own, so the planner has statistics and dead rows are reclaimed as on a
    production server. Its work is the server's CPU, counted with it."""

    def __init__(self, url: str, every: float) -> None:
        self.url = url
        self.every = every
        self.runs = 0
        self.seconds = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vacuumer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as connection:
            while not self._stop.wait(self.every):
                began = time.perf_counter()
                connection.execute("VACUUM (ANALYZE)")
                self.seconds += time.perf_counter() - began
                self.runs += 1

    def stop(self) -> int:
        """Stop; returns how many times it ran."""
        self._stop.set()
        self._thread.join()
        return self.runs
