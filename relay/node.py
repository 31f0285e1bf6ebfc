"""The running node: listeners, processing, the queue manager, crypto workers, and draining.

Start-up recovers: temporaries of unacknowledged transactions are removed, spool files no row
points at are swept, and rows a crash left ``sending`` go back to ``queued``. Processing is
replayed from the store, so a message acknowledged before a crash is finished exactly once.
SIGTERM drains: listeners close, transactions in flight finish, processing stops between
messages (those begun finish), then the crypto workers (``relay.crypto``) are shut down.
The monitoring listener (``relay.monitoring``) answers until the end, reporting not ready
while the node drains.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import signal
import ssl
import time
from collections.abc import Callable

import structlog
from cryptography import x509
from prometheus_client import Gauge

from interop.errors import KepError
from relay import ledger
from relay.config import Listener, NodeConfig
from relay.context import NodeContext, build_context
from relay.crypto import PooledCrypto
from relay.errors import is_environmental
from relay.handshakes import count_failures
from relay.lifecycle import Kind
from relay.metrics import StateCollector, certificates_of
from relay.monitoring import MonitoringListener, Probes, heartbeat_check, storage_writable
from relay.smtp.server import ConnectionLimiter, Intake, KepSMTP, SessionLimits
from relay.stages import evidence_in, outbound, quarantine, retention, rgw, sgw
from relay.stages.intake import PeerIntake, SubmissionIntake
from relay.store import MessageRow
from relay.transport.base import Transport
from relay.transport.smtp import SmtpTransport

log = structlog.get_logger("kep.node")

PROCESSORS: dict[Kind, Callable[[NodeContext, MessageRow], None]] = {
    Kind.DISPATCH_IN: rgw.process_dispatch,
    Kind.EVIDENCE_IN: evidence_in.process_evidence,
    Kind.SUBMISSION: sgw.process_submission,
}
DRAIN_GRACE = 30.0  # seconds transactions in flight get to finish on SIGTERM


def recover(context: NodeContext) -> None:
    removed = context.spool.clean_temporaries()
    swept = context.spool.sweep(context.store.spool_ids())
    reset = context.store.recover()
    retention.sweep(context)  # copies whose obligations were met before a crash (§7)
    if removed or swept or reset:
        log.info("recovered", temporaries=removed, orphans=swept, requeued=reset)


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
            row.id,
            counted=not environmental,
            retry_at=context.now() + outbound.backoff(context, row.attempts + 1),
            detail=f"{type(exc).__name__}: {exc}",
        )
        # Input known to be malformed cannot pass on a later try: no need to wait for it.
        malformed = isinstance(exc, KepError) and exc.permanent
        spent = attempts >= context.config.limits.max_processing_attempts
        if not environmental and (malformed or spent):
            quarantine.put_aside(context, row, exc)
    except Exception:  # the store is in trouble too: the row stays received, tried again
        log.exception("processing_failure_not_recorded", queue_id=row.id, kind=row.kind)


class Node:
    def __init__(self, context: NodeContext, transport: Transport | None = None) -> None:
        self.context = context
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
            factory, listener.host, listener.port, ssl=tls
        )
        self.servers.append(server)
        log.info(
            "listening", listener=name, host=listener.host, port=listener.port, tls=tls is not None
        )

    async def start(self) -> None:
        recover(self.context)
        config = self.context.config
        if config.limits.crypto_workers > 0:
            self.context.crypto = PooledCrypto(
                config,
                config.limits.crypto_workers,
                on_lost=self.context.metrics.crypto_workers_lost.inc,
            )
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
        """Metrics of state read at scrape time, and the monitoring listener if configured."""
        context, config = self.context, self.context.config
        metrics = context.metrics
        metrics.register_process()
        own = [("process", context.process.certificate)]
        own.append(("tls", self.tls_certificate))
        if context.stamping.local is not None:
            own.append(("tsa", context.stamping.local.signer.certificate))
        trust = context.verifiers.trust
        metrics.registry.register(
            StateCollector(
                provider=context.provider.id,
                database=context.store.path,
                data_dir=config.data_dir,
                peers=[e.id for e in trust if e.id != context.provider.id],
                certificates=certificates_of(context.provider.id, own, trust),
                clock=context.now,
            )
        )
        Gauge(
            "kep_smtp_connections_open",
            "SMTP connections open on the peer and submission listeners",
            registry=metrics.registry,
        ).set_function(lambda: len(self.limiter.open))
        Gauge(
            "kep_node_draining",
            "1 while the node drains after SIGTERM",
            registry=metrics.registry,
        ).set_function(lambda: 1 if self.stopping.is_set() else 0)
        listener = config.monitoring_listener
        if listener is None:
            return
        self.monitoring = MonitoringListener(
            listener.host, listener.port, metrics.registry, self.probes()
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

        def crypto() -> str | None:
            return context.crypto.health()  # looked up now: start() may have replaced it

        return Probes(
            alive={"event_loop": heartbeat_check(lambda: self.beat)},
            ready={
                "storage": storage_writable(context.config.data_dir, context.store.path),
                "pki": pki,
                "listeners": listening,
                "crypto": crypto,
                "draining": draining,
            },
        )

    async def heartbeat(self) -> None:
        while True:
            self.beat = time.monotonic()
            await asyncio.sleep(1.0)

    async def process_loop(self) -> None:
        """Process received messages, several at once so the crypto workers stay busy.

        A message is processed by one task at a time (``busy``); each commits its own
        transaction, so the order they finish in does not matter.
        """
        slots = asyncio.Semaphore(self.processing_slots())
        busy: set[str] = set()
        tasks: set[asyncio.Task[None]] = set()
        while not self.stopping.is_set():
            try:
                due = await asyncio.to_thread(self.context.store.received_due, self.context.now())
            except Exception:  # the store in trouble (disk, locks): look again later
                log.exception("processing_loop_failed")
                await asyncio.sleep(self.context.config.timers.queue_poll)
                continue
            rows = [r for r in due if r.kind in PROCESSORS and r.id not in busy]
            for row in rows:
                await slots.acquire()
                if self.stopping.is_set():
                    slots.release()
                    break
                busy.add(row.id)
                task = asyncio.create_task(self.process_one(row))
                tasks.add(task)

                def finished(done: asyncio.Task[None], row_id: str = row.id) -> None:
                    tasks.discard(done)
                    busy.discard(row_id)
                    slots.release()

                task.add_done_callback(finished)
            if not rows:
                self.work.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.work.wait(), self.context.config.timers.queue_poll)
        await asyncio.gather(*tasks, return_exceptions=True)  # draining: let them finish

    def processing_slots(self) -> int:
        # Four per worker: while one is verified or signed, the others write, deliver and
        # commit (measured: more than two per worker keeps both cores busier).
        return max(2, 4 * self.context.config.limits.crypto_workers)

    async def process_one(self, row: MessageRow) -> None:
        try:
            with structlog.contextvars.bound_contextvars(
                queue_id=row.id,
                remmd_id=row.remmd_id,
                peer=row.peer or self.context.provider.id,
            ):
                await asyncio.to_thread(PROCESSORS[row.kind], self.context, row)
        except Exception as exc:  # one bad message must not stop the node
            await asyncio.to_thread(processing_failed, self.context, row, exc)
            await asyncio.sleep(1)  # the row stays busy a moment, even if nothing was recorded
        self.outgoing.set()

    async def send_loop(self) -> None:
        while not self.stopping.is_set():
            self.outgoing.clear()
            try:
                tried = await outbound.send_due(self.context, self.transport)
                await asyncio.to_thread(outbound.check_timers, self.context)
                await asyncio.to_thread(ledger.take_if_due, self.context)  # §7: at least daily
                await asyncio.to_thread(retention.sweep, self.context)  # §7: content not kept
            except Exception as exc:  # the store or the TSA in trouble: the loop goes on
                self.context.metrics.failed(exc)
                log.exception("sending_loop_failed")
                tried = 0
            if not tried:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self.outgoing.wait(), self.context.config.timers.queue_poll
                    )

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        # Threads for processing, intake checks, commits and spool reads (all of them block).
        loop.set_default_executor(
            concurrent.futures.ThreadPoolExecutor(max_workers=self.processing_slots() + 8)
        )
        await self.start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        beat = asyncio.create_task(self.heartbeat())
        workers = [asyncio.create_task(self.process_loop()), asyncio.create_task(self.send_loop())]
        await self.stopping.wait()
        await self.drain(workers)
        beat.cancel()

    async def drain(self, workers: list[asyncio.Task[None]]) -> None:
        log.info("draining")
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


def serve(config: NodeConfig) -> None:
    context = build_context(config)
    asyncio.run(Node(context).run())
