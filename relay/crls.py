"""CRLs fetched from where the trust list says, kept on disk, refreshed before they run out.

Takes: the trust list's CRL locations (``TrustList.crl_locations`` for the user and TSA
roots, ``ProviderTrust.crl_locations`` for a provider's process and TLS CAs), the CRLs of the
configuration (``[trust] crls`` files, or the development PKI's) and the node's clock.

Promises:

* a fetched CRL is held only when it is a complete CRL signed by one of the CAs its location
  is for, and later than the one held for that CA (``interop.revocation``: ``read_crl``,
  ``incomplete``, ``issued_by``, ``supersedes``). An older CRL never replaces a newer one;
* it is kept in ``data_dir/crls/`` (one DER file per CA, written aside, synced, renamed, the
  folder synced) before any process uses it; a node that starts, or cannot reach a location,
  uses what is kept there;
* each location is fetched again after ``[crl] refresh_fraction`` of the time its CA's newest
  CRL has left, between ``min_interval`` and ``max_interval``; after a failure, after a
  back-off from ``retry_initial`` doubling to ``retry_max`` (``relay.crl_fetch``).

On failure nothing held changes: the failure is counted (``kep_crl_fetches_total``), logged
(``crl_fetch_failed``) and tried again after its back-off. Failing closed stays
``interop.revocation``'s: past the held CRL's nextUpdate, certificates of its CA are refused
(unless ``[trust] require_crl = false``).

Processes: one node process per machine fetches (node process 1, or the node alone:
``relay.node``); every node process, that one included, looks at the kept folder every
``KEPT_CHECK`` seconds and installs what changed into its verifiers without a restart
(``NodeContext.use_crls``). Machines sharing a data folder each fetch, and share the kept
files: a lock on ``crls/.lock`` keeps two of them from replacing a later CRL by an earlier one.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import hashlib
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from interop.errors import MalformedInput
from interop.revocation import (
    CRL,
    crl_number,
    incomplete,
    issued_by,
    newest_by_issuer,
    read_crl,
    supersedes,
)
from interop.trust import TrustList
from relay.crl_fetch import CrlFetcher, CrlSettings, CrlUnavailable, label
from relay.spool import fsync_dir

log = structlog.get_logger("kep.crls")

# How often a node process looks at the kept folder for CRLs another process fetched (one
# stat of a few files): a new CRL is in use by every node process within this many seconds.
KEPT_CHECK = 5.0
FOLDER = "crls"  # under the data folder
# Outcomes of a fetch that leave the location in good standing (kep_crl_fetches_total).
SUCCESSES = frozenset({"new", "unchanged", "older"})

_SHA256 = hashes.SHA256()
Count = Callable[[str, str], None]  # (location label, result)


@dataclass(frozen=True, slots=True)
class CrlLocation:
    """A URL and the CAs whose CRLs it may give (a CRL of any other is refused)."""

    url: str
    cas: tuple[x509.Certificate, ...]

    @property
    def label(self) -> str:
        return label(self.url)


def locations(trust: TrustList) -> tuple[CrlLocation, ...]:
    """Every CRL location of ``trust``; a URL named in several places is one location, for
    all the CAs of those places."""
    found: dict[str, list[x509.Certificate]] = {}
    for entry in trust:
        for url in entry.crl_locations:
            found.setdefault(url, []).extend((*entry.process_cas, *entry.tls_cas))
    for url in trust.crl_locations:
        found.setdefault(url, []).extend((*trust.user_cas, *trust.tsa_cas))
    return tuple(CrlLocation(url, tuple(_unique(cas))) for url, cas in found.items())


def _unique(cas: Iterable[x509.Certificate]) -> Iterator[x509.Certificate]:
    seen: set[bytes] = set()
    for ca in cas:
        if ca.fingerprint(_SHA256) not in seen:
            seen.add(ca.fingerprint(_SHA256))
            yield ca


class KeptCrls:
    """The folder of fetched CRLs: the latest of each CA, ``<issuer hash>.crl`` in DER.

    Never created by reading: an operator tool opening a node's data folder finds it or not.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, issuer: x509.Name) -> Path:
        return self.folder / f"{hashlib.sha256(issuer.public_bytes()).hexdigest()[:32]}.crl"

    def signature(self) -> tuple[tuple[str, int, int], ...]:
        """What changes when a kept file is written: names, sizes and modification times."""
        try:
            with os.scandir(self.folder) as entries:
                found = []
                for entry in entries:
                    if entry.name.endswith(".crl"):
                        with contextlib.suppress(FileNotFoundError):
                            stat = entry.stat()
                            found.append((entry.name, stat.st_size, stat.st_mtime_ns))
        except FileNotFoundError:
            return ()
        return tuple(sorted(found))

    def read(self) -> list[CRL]:
        """Every kept CRL, checked again as it is read; one that does not read is moved
        aside (``.unreadable``) and logged, never used and never a reason to stop."""
        crls = []
        for name, _size, _mtime in self.signature():
            path = self.folder / name
            try:
                crls.append(read_crl(path.read_bytes()))
            except FileNotFoundError:
                continue  # replaced meanwhile; the next look finds the new one
            except (MalformedInput, OSError) as exc:
                with contextlib.suppress(OSError):
                    path.replace(path.with_name(name + ".unreadable"))
                log.error("crl_kept_unreadable", file=str(path), detail=str(exc))
        return crls

    def keep(self, crl: CRL) -> bool:
        """Keep ``crl`` unless the kept one of its issuer is the same or later (True when
        kept). Durable when it returns: the file, then the folder, synced."""
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.path(crl.issuer)
        with (self.folder / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # other machines on a shared data folder
            try:
                held = read_crl(target.read_bytes())
            except (FileNotFoundError, MalformedInput):
                held = None
            if held is not None and not supersedes(crl, held):
                return False
            aside = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            with aside.open("wb") as out:
                out.write(crl.public_bytes(Encoding.DER))
                out.flush()
                os.fsync(out.fileno())
            aside.replace(target)
            fsync_dir(self.folder)
        return True


class HeldCrls:
    """The CRLs one process holds: the configuration's and the kept ones.

    ``current()`` reads the kept folder again only when it changed; ``generation`` grows
    each time what is held changes, so a process knows when to install it. Safe from any
    thread (the monitoring listener reads it at scrape time).
    """

    def __init__(self, configured: Sequence[CRL], kept: KeptCrls) -> None:
        self.kept = kept
        self.generation = 0
        self._lock = threading.Lock()
        self._configured = tuple(configured)
        self._signature: tuple[tuple[str, int, int], ...] | None = None
        self._kept: tuple[CRL, ...] = ()
        self._all: tuple[CRL, ...] = ()
        self._prints: tuple[bytes, ...] = ()

    @property
    def configured(self) -> tuple[CRL, ...]:
        return self._configured

    def configure(self, configured: Sequence[CRL]) -> None:
        """The configuration's CRLs from now on (SIGHUP)."""
        with self._lock:
            self._configured = tuple(configured)
            self._merge()

    def current(self) -> tuple[CRL, ...]:
        with self._lock:
            signature = self.kept.signature()
            if signature != self._signature:
                self._signature = signature
                self._kept = tuple(self.kept.read())
                self._merge()
            return self._all

    def _merge(self) -> None:
        merged = {c.fingerprint(_SHA256): c for c in (*self._configured, *self._kept)}
        if tuple(merged) != self._prints:
            self._prints = tuple(merged)
            self._all = tuple(merged.values())
            self.generation += 1

    def newest(self, issuer: x509.Name) -> CRL | None:
        return newest_by_issuer(self.current()).get(issuer)


@dataclass
class _Schedule:
    due: float = 0.0  # node clock, seconds since the epoch; 0: at once
    failures: int = 0  # in a row


@dataclass(frozen=True, slots=True)
class _Outcome:
    result: str  # a kep_crl_fetches_total result: SUCCESSES, or why not
    detail: str = ""
    crl: CRL | None = None  # the newest CRL of the issuer once judged
    kept: bool = False  # a new CRL was kept


class CrlRefresher:
    """Fetches every location when it is due and keeps what is new (the fetching process).

    ``refresh()`` fetches the locations due now, one after another, and returns how many
    new CRLs it kept; ``due_in()`` says how long until the next is due. ``transport`` is for
    tests (``httpx.MockTransport``).
    """

    def __init__(
        self,
        held: HeldCrls,
        count: Count,
        clock: Callable[[], dt.datetime],
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.held = held
        self.count = count
        self.clock = clock
        self.transport = transport
        self.settings = CrlSettings()
        self.locations: tuple[CrlLocation, ...] = ()
        self._schedule: dict[str, _Schedule] = {}
        self._fetcher: CrlFetcher | None = None

    def configure(self, settings: CrlSettings, found: Sequence[CrlLocation]) -> None:
        """Settings and locations (at start, and at SIGHUP): every location is due now."""
        self.settings = settings
        self.locations = tuple(found)
        self._schedule = {location.url: _Schedule() for location in found}

    def due_in(self) -> float | None:
        """Seconds until the next location is due (0 or less: now); None: no location."""
        if not self._schedule:
            return None
        return min(s.due for s in self._schedule.values()) - self.clock().timestamp()

    async def refresh(self) -> int:
        kept = 0
        for location in self.locations:
            schedule = self._schedule.get(location.url)  # None: gone at a SIGHUP meanwhile
            if schedule is not None and schedule.due <= self.clock().timestamp():
                kept += await self._refresh(location, schedule)
        return kept

    async def aclose(self) -> None:
        if self._fetcher is not None:
            await self._fetcher.aclose()
            self._fetcher = None

    async def _refresh(self, location: CrlLocation, schedule: _Schedule) -> int:
        if self._fetcher is not None and self._fetcher.settings != self.settings:
            await self.aclose()  # [crl] changed at a SIGHUP: a client with the new limits
        if self._fetcher is None:
            self._fetcher = CrlFetcher(self.settings, self.transport)
        try:
            data = await self._fetcher.get(location.url)
        except CrlUnavailable as exc:
            outcome = _Outcome(exc.why, exc.detail)
        else:
            outcome = await asyncio.to_thread(self._judge, location, data)
        self.count(location.label, outcome.result)
        now = self.clock()
        if outcome.result not in SUCCESSES:
            schedule.failures += 1
            retry = self.settings.retry(schedule.failures)
            schedule.due = now.timestamp() + retry
            log.warning(
                "crl_fetch_failed",
                location=location.label,
                why=outcome.result,
                detail=outcome.detail,
                failures=schedule.failures,
                retry_in=retry,
            )
            return int(outcome.kept)
        schedule.failures = 0
        assert outcome.crl is not None
        next_update = outcome.crl.next_update_utc
        left = (next_update - now).total_seconds() if next_update else self.settings.max_interval
        schedule.due = now.timestamp() + self.settings.interval(left)
        if not outcome.kept:
            return 0
        log.info(
            "crl_fetched",
            location=location.label,
            issuer=outcome.crl.issuer.rfc4514_string(),
            number=crl_number(outcome.crl),
            this_update=outcome.crl.last_update_utc.isoformat(),
            next_update=next_update.isoformat() if next_update else None,
        )
        return 1

    def _judge(self, location: CrlLocation, data: bytes) -> _Outcome:
        """What the bytes a location served are, kept when later than what is held (on a
        thread: reading and checking a large CRL takes a while)."""
        try:
            crl = read_crl(data)
        except MalformedInput as exc:
            return _Outcome("unreadable", exc.detail)
        problem = incomplete(crl)
        if problem is not None:
            return _Outcome("incomplete", f"{problem}: only complete CRLs are held")
        if issued_by(crl, location.cas) is None:
            return _Outcome(
                "wrong_issuer",
                f"a CRL of {crl.issuer.rfc4514_string()} not signed by a CA this location is for",
            )
        held = self.held.newest(crl.issuer)
        if held is not None and not supersedes(crl, held):
            newest, result, kept = held, "older" if supersedes(held, crl) else "unchanged", False
        else:
            try:
                kept = self.held.kept.keep(crl)
            except OSError as exc:
                return _Outcome("storage", f"cannot be kept: {exc}")
            self.held.current()  # read back: what every process uses is what is kept
            newest, result = crl, "new" if kept else "unchanged"
        next_update = newest.next_update_utc
        if next_update is not None and next_update <= self.clock():
            # The CA is late: nothing it serves is of use for verifying now.
            return _Outcome(
                "stale",
                f"the newest CRL's nextUpdate {next_update.isoformat()} has passed",
                newest,
                kept,
            )
        return _Outcome(result, crl=newest, kept=kept)
