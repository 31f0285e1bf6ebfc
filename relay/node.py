"""A running node process: listeners, processing, the queue manager, claims, and draining.

Start-up recovers: temporaries of unacknowledged transactions are removed, spool files no row
points at are swept, and rows a crash left ``sending`` go back to ``queued``. Processing is
replayed from the store, so a message acknowledged before a crash is finished exactly once.
SIGTERM drains: listeners close, transactions in flight finish, processing stops between
messages (those begun finish), and the process exits.
The monitoring listener (``relay.monitoring``) answers until the end, reporting not ready
while the node drains.
SIGHUP reads the configuration file again and applies what may change while the node runs
(``relay.reload``); CRLs are fetched and installed as they come (``relay.crls``: node process 1,
or the node alone, fetches; every node process installs what is kept).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import signal
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event

import structlog
from cryptography import x509

from interop.errors import KepError
from relay import ledger, reload
from relay.config import Listener
from relay.context import NodeContext
from relay.crls import KEPT_CHECK, CrlRefresher, locations
from relay.errors import is_environmental
from relay.handshakes import count_failures
from relay.lifecycle import Kind, Superseded
from relay.metrics import register_state
from relay.monitoring import MonitoringListener, Probes, heartbeat_check, storage_writable
from relay.readings import READER_FIRST, Received
from relay.smtp.server import ConnectionLimiter, Intake, KepSMTP, SessionLimits
from relay.stages import evidence_in, outbound, quarantine, retention, rgw, sgw
from relay.stages.intake import PeerIntake, SubmissionIntake
from relay.steps import ON_THREADS, FollowedBy, Steps
from relay.store import MessageRow
from relay.transport.base import Transport
from relay.transport.smtp import SmtpTransport

log = structlog.get_logger("kep.node")

# Each stage is written in steps (relay.steps): the node runs a small message's CPU steps on
# the event loop's thread, and its blocking steps there too or on threads ([node] small_work);
# a large message's blocking steps on threads. The node reads each message it claims in the
# claim's own step, and gives the stage what it read.
Processor = Callable[[NodeContext, MessageRow, Steps, Received | None], Awaitable[None]]
PROCESSORS: dict[Kind, Processor] = {
    Kind.DISPATCH_IN: rgw.process_dispatch,
    Kind.EVIDENCE_IN: evidence_in.process_evidence,
    Kind.SUBMISSION: sgw.process_submission,
}
PROCESSING_AT_ONCE = 2  # received messages one node process works on at the same time
# Messages a claim names beyond those it may take (``Readings.waiting``): one this process read
# may have been taken meanwhile by an operator's command.
NAMED_BEYOND = 8
DRAIN_GRACE = 30.0  # seconds transactions in flight get to finish on SIGTERM


def recover(context: NodeContext) -> None:
    """At start: what this node process left behind when it last stopped (under its name)."""
    removed = context.spool.clean_temporaries(context.now())
    swept = context.spool.sweep(context.store.known_ids, context.now())
    reset = context.store.recover(context.owner)
    retention.sweep(context)  # copies whose obligations were met before a crash (§7)
    if removed or swept or reset:
        log.info("recovered", temporaries=removed, orphans=swept, reclaimed=reset)


def processing_failed(context: NodeContext, row: MessageRow, exc: BaseException) -> None:
    """After a stage raised on ``row``: retry later; trouble in the message itself counts, and
    at ``limits.max_processing_attempts`` the message is put aside with evidence for its sender
    (``relay.stages.quarantine``), so nothing is retried for ever."""
    context.metrics.processing_failures.labels(row.kind).inc()
    context.metrics.failed(exc)
    environmental = is_environmental(exc)
    log.error(
        "processing_failed",
        queue_id=row.id,
        remmd_id=row.remmd_id,
        peer=row.peer or context.provider.id,
        kind=row.kind,
        environmental=environmental,
        exc_info=exc,
    )
    try:
        attempts = context.store.processing_failed(
            row,
            counted=not environmental,
            retry_at=context.now() + outbound.backoff(context, row.attempts + 1),
            detail=f"{type(exc).__name__}: {exc}",
        )
        # Input known to be malformed cannot pass on a later try: no need to wait for it.
        malformed = isinstance(exc, KepError) and exc.permanent
        spent = attempts >= context.config.limits.max_processing_attempts
        if attempts and not environmental and (malformed or spent):
            quarantine.put_aside(context, row, exc)
    except Exception:  # the store is in trouble too: the row stays received, tried again
        log.exception("processing_failure_not_recorded", queue_id=row.id, kind=row.kind)


@dataclass(frozen=True)
class Sibling:
    """What a node process shares with its supervisor: its number among ``count``, a flag it
    sets while it serves (readiness) and its event loop's last beat (liveness)."""

    index: int
    count: int
    ready: Event
    beat: Synchronized[float]
    supervisor: int  # its pid: a node process whose supervisor is gone stops


class Node:
    def __init__(
        self,
        context: NodeContext,
        transport: Transport | None = None,
        sibling: Sibling | None = None,
    ) -> None:
        self.context = context
        # One of several node processes of this machine (relay.processes), or alone.
        self.sibling = sibling
        self.transport = transport or SmtpTransport(context)
        self.work = asyncio.Event()
        self.outgoing = asyncio.Event()
        self.stopping = asyncio.Event()
        self.servers: list[asyncio.Server] = []
        self.limiter = ConnectionLimiter(
            context.config.limits.max_connections, context.config.limits.max_connections_per_peer
        )
        self.beat = time.monotonic()
        self.monitoring: MonitoringListener | None = None
        self.tls_certificate = x509.load_pem_x509_certificate(context.tls_cert.read_bytes())
        self.hangups = asyncio.Event()
        self.crls_due = asyncio.Event()
        self.crls_installed = context.crls.generation
        # One node process of a machine fetches CRLs; the others read what it keeps.
        self.crl_refresher = (
            CrlRefresher(
                context.crls,
                lambda where, result: context.metrics.crl_fetches.labels(where, result).inc(),
                context.clock,
            )
            if sibling is None or sibling.index == 1
            else None
        )

    def wake(self) -> None:
        self.work.set()
        self.outgoing.set()

    async def _listen(
        self, name: str, listener: Listener, intake: Intake, tls: ssl.SSLContext | None
    ) -> None:
        timers = self.context.config.timers
        if tls is not None:
            handshakes = self.context.metrics.tls_handshakes
            count_failures(tls, lambda result: handshakes.labels(name, "none", result).inc())

        limits = self.context.config.limits
        session = SessionLimits(
            command_timeout=timers.command_timeout,
            data_timeout=timers.data_timeout,
            min_transfer_rate=limits.min_transfer_rate,
            slow_transfer_limit=timers.slow_transfer_limit,
            max_junk_commands=limits.max_junk_commands,
        )

        def factory() -> KepSMTP:
            return KepSMTP(
                intake,
                limits=session,
                limiter=self.limiter,
                hostname=self.context.peer_tls_name(self.context.provider.id),
            )

        server = await asyncio.get_running_loop().create_server(
            factory,
            listener.host,
            listener.port,
            ssl=tls,
            # The machine's node processes share the port; alone, a second node on it is an
            # operator's mistake and fails to start.
            reuse_port=self.sibling is not None,
        )
        self.servers.append(server)
        log.info(
            "listening", listener=name, host=listener.host, port=listener.port, tls=tls is not None
        )

    async def start(self) -> None:
        recover(self.context)
        config = self.context.config
        self.start_monitoring()
        await self._listen(
            "peer",
            config.peer_listener,
            PeerIntake(self.context, self.wake),
            self.context.server_tls(),
        )
        await self._listen(
            "submission",
            config.submission_listener,
            SubmissionIntake(self.context, self.wake),
            self.context.server_tls() if config.submission_listener.require_tls else None,
        )
        self.wake()

    def start_monitoring(self) -> None:
        """Metrics of state read at scrape time, and the monitoring listener if configured;
        a node process under a supervisor leaves both to it (``relay.processes``)."""
        context, config = self.context, self.context.config
        if self.sibling is not None:
            return
        context.metrics.register_process()
        register_state(context.metrics.registry, context)
        listener = config.monitoring_listener
        if listener is None:
            return
        self.monitoring = MonitoringListener(
            listener.host, listener.port, context.metrics.registry, self.probes()
        )
        self.monitoring.start()
        log.info("listening", listener="monitoring", host=listener.host, port=self.monitoring.port)

    def probes(self) -> Probes:
        context = self.context

        def pki() -> str | None:
            now = context.clock()
            own = (("process", context.process.certificate), ("TLS", self.tls_certificate))
            for role, cert in own:
                if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
                    return f"the {role} certificate is not valid now"
            return None

        def listening() -> str | None:
            return None if len(self.servers) == 2 else "the SMTP listeners are not up yet"

        def draining() -> str | None:
            return "draining after SIGTERM" if self.stopping.is_set() else None

        return Probes(
            alive={"event_loop": heartbeat_check(lambda: self.beat)},
            ready={
                "storage": storage_writable(context.config.data_dir, context.store.url),
                "pki": pki,
                "listeners": listening,
                "draining": draining,
            },
        )

    async def heartbeat(self) -> None:
        """Every second: the event loop's beat (liveness) and the gauges of this process."""
        metrics = self.context.metrics
        while True:
            self.beat = time.monotonic()
            metrics.connections_open.set(len(self.limiter.open))
            metrics.draining.set(1 if self.stopping.is_set() else 0)
            if self.sibling is not None:
                self.sibling.beat.value = self.beat
                if os.getppid() != self.sibling.supervisor and not self.stopping.is_set():
                    log.error("supervisor_gone")  # killed: drain, and leave the port
                    self.stopping.set()
            await asyncio.sleep(1.0)

    async def process_loop(self) -> None:
        """Claim received messages and process them, several at once so both the event loop
        and the crypto work stay busy; never more claimed than there are free slots, so what
        this process cannot start now stays for the node's other processes. A busy slot claims
        its own next message (``process_slot``); this loop fills the slots that fell idle. Each
        message commits its own transaction, so the order they finish in does not matter."""
        free = self.processing_slots()
        room = asyncio.Event()
        tasks: set[asyncio.Task[None]] = set()
        context = self.context
        while not self.stopping.is_set():
            if free == 0:
                room.clear()
                await room.wait()
                continue
            try:
                claimed = await context.small_steps.blocking(self.claim, free)
            except Exception as exc:  # the store in trouble (disk, locks): look again later
                context.metrics.failed(exc)
                log.exception("processing_loop_failed")
                await asyncio.sleep(context.config.timers.queue_poll)
                continue
            for row, received in claimed:
                free -= 1
                task = asyncio.create_task(self.process_slot(row, received))
                tasks.add(task)

                def finished(done: asyncio.Task[None]) -> None:
                    nonlocal free
                    tasks.discard(done)
                    free += 1
                    room.set()

                task.add_done_callback(finished)
            if not claimed:
                self.work.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.work.wait(), context.config.timers.queue_poll)
        await asyncio.gather(*tasks, return_exceptions=True)  # draining: let them finish

    def claim(self, free: int) -> list[tuple[MessageRow, Received | None]]:
        """Up to ``free`` received messages claimed for this process, each read as its stage
        reads it (blocking: one step for the claim and the reads, small work); None where
        the file could not be read now: the stage reads it again, and fails as it would."""
        context = self.context
        now = context.now()
        # Those this process read as they arrived first, before any other process may take
        # them (relay.readings.READER_FIRST), unless older ones wait.
        mine = context.readings.waiting(now, free + NAMED_BEYOND)
        lease = context.config.store.lease
        rows = context.store.claim_received(context.owner, now, lease, free, mine)
        if len(rows) < free:  # nothing else to do: take up what waits for a busier process
            rows += context.store.claim_awaited(
                context.owner, now, lease, free - len(rows), READER_FIRST
            )
        claimed: list[tuple[MessageRow, Received | None]] = []
        for row in rows:
            if row.kind not in PROCESSORS:
                continue
            try:
                claimed.append((row, context.receive(row)))
            except OSError:
                claimed.append((row, None))
        return claimed

    def claim_next(self) -> list[tuple[MessageRow, Received | None]]:
        """A busy slot's next message (``claim`` of one), right after the last step of the
        message it finished, where that step ran; none while the node drains. Never raises: the
        store in trouble only means the slot goes back to the processing loop, which claims
        again."""
        if self.stopping.is_set():
            return []
        try:
            return self.claim(1)
        except Exception as exc:
            self.context.metrics.failed(exc)
            # This runs in a copy of the finished message's logging context (FollowedBy): the
            # line is the slot's, not that message's.
            structlog.contextvars.unbind_contextvars("queue_id", "remmd_id", "peer")
            log.warning("claim_failed", error=f"{type(exc).__name__}: {exc}")
            return []

    async def process_slot(self, row: MessageRow, received: Received | None) -> None:
        """One processing slot: ``row``, then each message the slot claimed after the last step
        of the one before (``relay.steps.FollowedBy``), until it claimed none. Between two, the
        event loop has its turn: a small message's steps may all run in place, awaiting
        nothing."""
        claimed = [(row, received)]
        while claimed:
            row, received = claimed[0]
            steps = FollowedBy(self.claim_next, self.steps_for(received))
            await self.process_one(row, received, steps)
            claimed = steps.followed or []
            if claimed:
                await asyncio.sleep(0)

    def steps_for(self, received: Received | None) -> Steps:
        """Where a message's steps run: a small one's as ``[node] small_work`` says, when its
        signing asks no other machine (a remote TSA); else the blocking ones on threads."""
        context = self.context
        if received is not None and received.small and context.crypto.signs_in_process:
            return context.small_steps
        return ON_THREADS

    def processing_slots(self) -> int:
        # While one is verified or signed (on the event loop's thread, holding the
        # interpreter), the other may read, deliver or commit on a thread (a large message,
        # or small work on threads); more only queue behind the one interpreter lock.
        return PROCESSING_AT_ONCE

    async def process_one(
        self, row: MessageRow, received: Received | None = None, steps: Steps = ON_THREADS
    ) -> None:
        try:
            with structlog.contextvars.bound_contextvars(
                queue_id=row.id,
                remmd_id=row.remmd_id,
                peer=row.peer or self.context.provider.id,
            ):
                await PROCESSORS[row.kind](self.context, row, steps, received)
        except Superseded:  # this process stalled past its lease; another finished the work
            self.context.claim_lost(row.kind, row.id)
        except Exception as exc:  # one bad message must not stop the node
            await asyncio.to_thread(processing_failed, self.context, row, exc)
        self.outgoing.set()

    async def keep_claims(self) -> None:
        """Renew this process's leases (three times a lease), and take up the work of node
        processes whose leases ran out (a process that died; ``Store.recover``)."""
        context, lease = self.context, self.context.config.store.lease
        while True:
            await asyncio.sleep(lease / 3)
            try:
                await asyncio.to_thread(context.store.renew, context.owner, context.now(), lease)
                taken = await asyncio.to_thread(context.store.recover)
            except Exception as exc:  # the store in trouble: the next pass tries again
                context.metrics.failed(exc)
                log.exception("lease_renewal_failed")
                continue
            if taken:
                context.metrics.claims_recovered.inc(taken)
                log.warning("claims_recovered", count=taken)
                self.wake()

    async def keep_crls(self) -> None:
        """Fetch the CRLs that are due (the fetching process), and install what the kept
        folder holds that this process does not use yet; look again when the next location
        is due, after ``KEPT_CHECK`` at most, or at once after a SIGHUP."""
        context, refresher = self.context, self.crl_refresher
        if refresher is not None:
            refresher.configure(context.config.crl, locations(context.verifiers.trust))
        while True:
            self.crls_due.clear()
            try:
                if refresher is not None:
                    await refresher.refresh()
                await asyncio.to_thread(context.crls.current)
            except Exception:  # a bug, or the data folder gone: the next turn tries again
                log.exception("crl_refresh_failed")
            if context.crls.generation != self.crls_installed:
                self.crls_installed = context.crls.generation
                context.use_crls()
                log.info("crls_installed", crls=len(context.verifiers.revocation.crls))
            wait = KEPT_CHECK
            due = refresher.due_in() if refresher is not None else None
            if due is not None:
                wait = min(wait, max(0.0, due))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.crls_due.wait(), wait)

    async def reload_on_hangup(self) -> None:
        """SIGHUP: the configuration file read again (on a thread) and applied (here)."""
        while True:
            await self.hangups.wait()
            self.hangups.clear()
            try:
                prepared = await asyncio.to_thread(reload.prepare, self.context)
                if prepared is None:
                    continue
                reload.apply(self.context, prepared)
            except Exception:  # a bug: logged, and the next SIGHUP is still heard
                reload.failed(self.context.config.source)
                continue
            self.crls_installed = self.context.crls.generation
            if self.crl_refresher is not None:  # new locations, settings; every one fetched now
                self.crl_refresher.configure(
                    self.context.config.crl, locations(self.context.verifiers.trust)
                )
            self.crls_due.set()

    async def send_loop(self) -> None:
        """Send what is due, pass after pass; between passes, housekeeping (timers, the daily
        ledger checkpoint, removing content whose obligations are met) at most once per
        ``timers.queue_poll``, however often sends and new messages wake the queue."""
        loop = asyncio.get_running_loop()
        housekept: float | None = None
        while not self.stopping.is_set():
            self.outgoing.clear()
            poll = self.context.config.timers.queue_poll
            try:
                tried = await outbound.send_due(self.context, self.transport)
                if housekept is None or loop.time() - housekept >= poll:
                    housekept = loop.time()
                    await asyncio.to_thread(self.housekeeping)
            except Exception as exc:  # the store or the TSA in trouble: the loop goes on
                self.context.metrics.failed(exc)
                log.exception("sending_loop_failed")
                tried = 0
            if not tried:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.outgoing.wait(), poll)

    def housekeeping(self) -> None:
        """What the queue manager does besides sending (blocking: one hand-off for all)."""
        outbound.check_timers(self.context)
        ledger.take_if_due(self.context)  # §7: at least daily
        retention.sweep(self.context)  # §7: content not kept

    async def run(
        self, signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)
    ) -> None:
        loop = asyncio.get_running_loop()
        # Threads for processing, intake checks, commits and spool reads (all of them block).
        loop.set_default_executor(
            concurrent.futures.ThreadPoolExecutor(max_workers=self.processing_slots() + 8)
        )
        await self.start()
        for sig in signals:
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self.hangups.set)
        if reload.held_hangup():  # one came while the node was starting
            self.hangups.set()
        if self.sibling is not None:
            self.sibling.ready.set()
        helpers = [
            asyncio.create_task(self.heartbeat()),
            asyncio.create_task(self.keep_claims()),
            asyncio.create_task(self.keep_crls()),
            asyncio.create_task(self.reload_on_hangup()),
        ]
        workers = [asyncio.create_task(self.process_loop()), asyncio.create_task(self.send_loop())]
        await self.stopping.wait()
        await self.drain(workers)
        for helper in helpers:
            helper.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        if self.crl_refresher is not None:
            await self.crl_refresher.aclose()

    async def drain(self, workers: list[asyncio.Task[None]]) -> None:
        log.info("draining")
        if self.sibling is not None:
            self.sibling.ready.clear()
        for server in self.servers:
            server.close()  # stop accepting
        deadline = asyncio.get_running_loop().time() + DRAIN_GRACE
        while self.limiter.open and asyncio.get_running_loop().time() < deadline:
            for connection in list(self.limiter.open):
                connection.close_if_idle()  # idle sessions go; transactions in flight finish
            await asyncio.sleep(0.05)
        self.work.set()
        self.outgoing.set()
        await asyncio.gather(*workers, return_exceptions=True)
        await self.transport.close()
        await asyncio.to_thread(self.context.crypto.close)
        await asyncio.to_thread(self.context.stamping.close)
        if self.monitoring is not None:
            self.monitoring.stop()
        self.context.store.close()
        log.info("stopped")
