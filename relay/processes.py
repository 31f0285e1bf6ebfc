"""N equal node processes on one machine (``[node] processes``), under one supervisor.

Each node process is a whole node: it listens on the same peer and submission ports as the
others (``SO_REUSEPORT``: the kernel spreads connections over them), claims its own work from
the shared store (``relay.store.messages``: leases and fencing tokens) and verifies and signs
for its own messages. Nothing passes between them but the store and the spool.

The supervisor does what must happen once per machine before they start (the store's
migrations, a development PKI made on first run), starts them, starts again one that dies
(it takes back its own claims at once, under the same name), serves the monitoring listener
for all of them (``prometheus_client``'s multiprocess mode: counters and histograms summed
over the processes, the store's state read once) and, on SIGTERM or SIGINT, has each drain and
waits for all. On SIGHUP it reads the configuration again (``relay.reload``) and, when that
loads, passes SIGHUP on to every node process that serves (one still starting gets it once it
serves), each of which reads it again itself; node processes started later are given what
was applied. One process (``processes = 1``) runs the node in the supervisor's place, with
nothing of this.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import time
from dataclasses import dataclass
from multiprocessing.context import SpawnProcess
from pathlib import Path
from types import FrameType

import structlog
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from relay import logs, reload, startup
from relay.config import NodeConfig
from relay.context import NodeContext, build_context
from relay.metrics import register_state
from relay.monitoring import MonitoringListener, Probes, storage_writable
from relay.node import Node, Sibling

log = structlog.get_logger("kep.node")

# A node process that dies sooner than this after starting is started again only after a
# back-off (doubling up to RESTART_BACKOFF_MAX), so a node that cannot start does not spin.
RESTART_QUICK_DEATH = 10.0
RESTART_BACKOFF_MAX = 60.0
# A serving node process whose event loop has not turned for this long is hung (a deadlock,
# a frozen VM page, SIGSTOP): killed and started again, as systemd's watchdog would. Until then
# it still takes its share of new connections, which wait; its claims pass to the others
# when its lease runs out ([store] lease).
WATCHDOG = 30.0
# How long the supervisor waits, after SIGTERM, for its node processes to drain; each has
# its own grace (relay.node.DRAIN_GRACE) and then stops its work where it stands.
STOP_WAIT = 120.0


@dataclass
class _Child:
    sibling: Sibling
    process: SpawnProcess
    started: float
    backoff: float = 0.0
    restart_at: float | None = None
    restarts: int = 0  # times it was started again
    reloads: int = 0  # the supervisor's reloads it has had (SIGHUP passed on)


def serve(config: NodeConfig, log_format: str | None = None) -> int:
    """Run the node: in this process, or as ``[node] processes`` node processes under a
    supervisor. Returns the exit code."""
    startup.check(config)  # what would stop every node process, said once (relay.startup)
    if config.processes > 1:
        return Supervisor(config, log_format).run()
    asyncio.run(Node(build_context(config)).run())
    return 0


def _child_main(config: NodeConfig, sibling: Sibling, log_format: str | None) -> None:
    """A node process's whole life (spawned: nothing of the supervisor's state comes along)."""
    reload.hold_hangups()  # the supervisor passes SIGHUP on only once it serves; to be safe
    logs.configure(log_format)
    logs.set_level(config.log_level)
    structlog.contextvars.bind_contextvars(process=sibling.index)
    # The supervisor answers signals from a terminal (Ctrl-C reaches the whole group):
    # SIGINT here would start a second, unordered drain.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    context = build_context(config, index=sibling.index)
    asyncio.run(Node(context, sibling=sibling).run(signals=(signal.SIGTERM,)))


def metrics_folder(config: NodeConfig) -> Path:
    """Where the node processes keep their metric values for the supervisor to sum: one
    folder per node, since nodes on several machines may share the data folder."""
    return config.data_dir / "run" / config.name / "metrics"


class Supervisor:
    def __init__(self, config: NodeConfig, log_format: str | None = None) -> None:
        self.config = config
        self.log_format = log_format
        self.spawn = multiprocessing.get_context("spawn")
        self.children: dict[int, _Child] = {}
        self.stopping = False
        self.monitor: MonitoringListener | None = None
        self.context: NodeContext | None = None  # the supervisor's: metrics, reloads
        self.hangup = False
        self.reloads = 0

    def prepare(self) -> None:
        """Once per machine, before any node process starts: the store brought up to date,
        the development PKI made if it is missing, a fresh folder for the metric values, and
        the monitoring listener for all the node processes."""
        folder = metrics_folder(self.config)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        # Read by prometheus_client when a node process imports it (spawned: a new import).
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
        context = build_context(self.config, index=0)
        self.context = context
        try:
            self.monitor = self._monitoring(context, folder)
        finally:
            context.store.close()
            context.stamping.close()

    def _monitoring(self, context: NodeContext, folder: Path) -> MonitoringListener | None:
        """The node processes' metrics summed, the store's state read once, and probes that
        ask every node process: ready when all serve, alive when all event loops turn."""
        listener = self.config.monitoring_listener
        if listener is None:
            return None
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(folder))  # type: ignore[no-untyped-call]
        register_state(registry, context)
        Gauge(
            "kep_node_processes",
            "Node processes running on this machine (of [node] processes)",
            registry=registry,
        ).set_function(lambda: sum(c.process.is_alive() for c in self.children.values()))

        def serving() -> str | None:
            down = [i for i, c in self.children.items() if not c.sibling.ready.is_set()]
            return f"node processes not serving: {down}" if down else None

        def turning() -> str | None:
            now = time.monotonic()
            silent = [
                i
                for i, c in self.children.items()
                if c.process.is_alive() and now - c.sibling.beat.value > WATCHDOG
            ]
            return f"node processes whose event loop is silent: {silent}" if silent else None

        probes = Probes(
            alive={"node_processes": turning},
            ready={
                "storage": storage_writable(self.config.data_dir, context.store.url),
                "node_processes": serving,
                "draining": lambda: "draining after SIGTERM" if self.stopping else None,
            },
        )
        monitor = MonitoringListener(listener.host, listener.port, registry, probes)
        monitor.start()
        log.info("listening", listener="monitoring", host=listener.host, port=monitor.port)
        return monitor

    def start(self, index: int) -> None:
        sibling = Sibling(
            index,
            self.config.processes,
            self.spawn.Event(),
            self.spawn.Value("d", time.monotonic()),
            os.getpid(),
        )
        process = self.spawn.Process(
            target=_child_main,
            args=(self.config, sibling, self.log_format),
            name=f"kep-relay node {index}",
        )
        process.start()
        old = self.children.get(index)
        child = _Child(sibling, process, time.monotonic(), reloads=self.reloads)
        if old is not None:
            child.backoff, child.restarts = old.backoff, old.restarts + 1
        self.children[index] = child
        log.info("node_process_started", process=index, pid=process.pid, restarts=child.restarts)

    def run(self) -> int:
        """Start every node process, keep them running until SIGTERM or SIGINT, then drain."""
        self.prepare()
        previous = {sig: signal.signal(sig, self._stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._hangup)
        self.hangup = reload.held_hangup()  # one that came while preparing
        try:
            for index in range(1, self.config.processes + 1):
                self.start(index)
            while not self.stopping:
                self._watch()
            return self._drain()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if self.monitor is not None:
                self.monitor.stop()

    def _stop(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping = True

    def _hangup(self, signum: int, _frame: FrameType | None) -> None:
        self.hangup = True

    def _reload(self) -> None:
        """SIGHUP: the configuration read again here; when it loads, what was applied is
        what node processes started from now on get, and every serving node process gets
        SIGHUP once for each reload it has not had."""
        if self.hangup and self.context is not None:
            self.hangup = False
            try:
                applied = reload.reload(self.context)
            except Exception:  # a bug: logged; the supervisor and its node processes go on
                reload.failed(self.config.source)
                applied = False
            if applied:
                self.config = self.context.config
                self.reloads += 1
        for child in self.children.values():
            if child.reloads < self.reloads and child.sibling.ready.is_set():
                child.reloads = self.reloads
                if child.process.pid is not None and child.process.is_alive():
                    os.kill(child.process.pid, signal.SIGHUP)

    def _watch(self) -> None:
        """Wait a second for a node process to end; start again one that did (not while
        stopping), after its back-off when it died soon after starting."""
        self._reload()
        live = {c.process.sentinel: c for c in self.children.values() if c.restart_at is None}
        ended = multiprocessing.connection.wait(list(live), timeout=1.0)
        now = time.monotonic()
        for sentinel in ended:
            child = live[sentinel]  # type: ignore[index]  # wait() returns what it was given
            child.process.join()
            child.sibling.ready.clear()
            if child.process.pid is not None:
                mark_process_dead(child.process.pid)  # type: ignore[no-untyped-call]
            if self.stopping:
                continue
            quick = now - child.started < RESTART_QUICK_DEATH
            child.backoff = min(RESTART_BACKOFF_MAX, max(1.0, child.backoff * 2)) if quick else 0.0
            child.restart_at = now + child.backoff
            log.error(
                "node_process_died",
                process=child.sibling.index,
                exit_code=child.process.exitcode,
                restart_in=child.backoff,
            )
        for index, child in list(self.children.items()):
            if not self.stopping and child.restart_at is not None and child.restart_at <= now:
                self.start(index)
            elif (
                child.restart_at is None
                # Serving: a start that takes long (a database not there yet) is not a hang.
                and child.sibling.ready.is_set()
                and now - child.sibling.beat.value > WATCHDOG
            ):
                log.error("node_process_hung", process=index, silent=now - child.sibling.beat.value)
                child.process.kill()  # its end is seen, and it is started again, next turn

    def _drain(self) -> int:
        log.info("node_processes_draining", processes=len(self.children))
        for child in self.children.values():
            if child.process.is_alive():
                child.process.terminate()  # SIGTERM: each drains (relay.node.Node.drain)
        deadline = time.monotonic() + STOP_WAIT
        code = 0
        for child in self.children.values():
            child.process.join(max(0.0, deadline - time.monotonic()))
            if child.process.is_alive():
                log.error("node_process_not_stopping", process=child.sibling.index)
                child.process.kill()
                child.process.join()
                code = 1
        log.info("node_processes_stopped", exit_code=code)
        return code
