"""Gateway benchmark against Postfix (issue target; run on demand, not in the test suite).

1. hs01 sends 5,000 Dispatches (4 KiB originals) over 20 mutual-TLS connections to a real
   hs02 node; timed from the first byte until hs02 has sent every Delivery evidence (to an
   evidence sink standing in for hs01). hs01, the load generator, shares the cores with hs02,
   so what it costs is measured and printed; by ``--sender`` it is:
   - ``lean`` (the default; ``benchmarks.lean_peer``): a process per connection, each a
     blocking TLS socket with hs01's client certificate, the Dispatches prepared before the
     window and pipelined; the evidence sink a process per connection that requires a client
     certificate. About 1 ms of CPU per Dispatch, sender and sink together.
   - ``postfix`` (``benchmarks.postfix_peer``): a private Postfix as hs01's MTA, the
     Dispatches in its queue before the window and released when it opens, relayed with hs01's
     TLS client certificate over reused connections; the evidence sink a second Postfix, an
     smtpd that requires client certificates and discards what it accepts. Shows that a real
     MTA carries the Dispatches byte for byte, but costs about 5 ms of CPU per Dispatch.
   - ``python``: the earlier load generator, aiosmtplib clients and an aiosmtpd sink in this
     process (3-6 ms of CPU per Dispatch).
   Whichever it is, how many Dispatches hs02 received byte for byte as built is checked (by
   the SHA-256 hs02 computed while spooling each).
2. In the same run, Debian's Postfix relays 5,000 4 KiB messages from smtp-source to
   smtp-sink over 20 sessions (a private instance in a temporary folder), timed until its queue
   is empty, with its CPU per message.
3. The peak RSS growth of an hs02 node and all its processes (each one's peak, summed) while
   it receives and delivers one 100 MiB Dispatch (sent by the Python client).

Prints both rates, the ratio (target >= 0.35, goal 0.5, with P-256 certificates), the CPU per
message of hs02, of Postfix relaying and of the load generator (hs01's sender and sink), and
the RSS growth (target <= 64 MiB above idle). Needs Postfix: benchmarks/install-postfix.sh
(root).

The hs02 node runs as configured by ``--processes`` (``[node] processes``: a supervisor and
that many node processes; 1: the node alone, no supervisor), ``--crypto-workers``
(``[limits] crypto_workers``: a pool of verifying and signing processes under each node
process; only for a release that still has the pool, written to the configuration only when
not 0) and ``--store`` (``[store] url``; a ``postgresql://`` URL names a server on which
each hs02 of the run gets a fresh database, ``kep_bench_<random>``, dropped afterwards).
``--prefill-mailbox N`` and ``--prefill-evidence N`` give hs02, before it starts, N messages in
each recipient's INBOX and N evidence rows (with their messages and ledger records) in its
store (``benchmarks.prefill``), for the cost of a Dispatch on a node that holds a lot (issue 13:
within 10 % of the empty case); the store probe counts only what the run adds.

CPU per Dispatch, for the node, is that of its whole process tree (supervisor, node
processes, crypto workers, multiprocessing's resource trackers) over the timed window: for
each process of the tree /proc/<pid>/stat's utime + stime, plus cutime + cstime (what its
reaped children used), at the start and at the end of the window (``benchmarks.procstat``),
so a process that exits during the window (a worker pool made anew, a node process started
again) is still counted through its parent. After a clean shutdown the tree's whole life
(start-up, run and drain) is read with wait4() as a cross-check. With PostgreSQL the server's
CPU (all its processes, less the benchmark's own polling backend) is printed apart, with
the database's commits and rows written per Dispatch. On a server whose autovacuum is off (a
CI server), ``--vacuum-every S`` runs VACUUM (ANALYZE) every S seconds in its place: the
store's claims are planned from statistics, as on a production server.

The load generator's CPU per Dispatch, over the same window: with ``--sender lean`` the
senders' and the sink's process trees, with ``--sender postfix`` the master process trees of
both Postfix instances (a daemon that exits after ``max_use`` requests is counted through
master's cutime) and this process's children in the window (postsuper and postqueue releasing
the queue), each counted as hs02's tree is; this process's own CPU (polling hs02's store) is
printed apart. With ``--sender python`` it is this process's: clients, sink and polling.
Postfix relaying plain mail is measured the same way: its master's tree, smtp-source and
smtp-sink apart.

Run:  .venv/bin/python -m benchmarks.bench_relay [--messages N] [--connections N]
          [--processes N] [--crypto-workers N] [--store URL] [--vacuum-every S]
          [--small-work loop|threads]
          [--sender lean|postfix|python] [--prefill-mailbox N] [--prefill-evidence N]
          [--profile DIR]
          [--skip-postfix] [--skip-large] [--log-dir DIR] [--json FILE]

The hs02 node itself (configuration, start, stop, the Dispatches, the store probe) is
``benchmarks.hs02``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import profile
from benchmarks.hs02 import (
    ROOT,
    Hs02,
    MiB,
    Setup,
    dispatch,
    hs02_node,
    joined_records,
    log_lines,
    received_digests,
    recipient_of,
    send_all,
)
from benchmarks.pgtemp import (
    Vacuumer,
    autovacuum_on,
)
from benchmarks.postfix_peer import (
    PlainRun,
    TreesCpu,
    bench_plain,
    check_bytes,
)
from benchmarks.postfix_peer import installed as postfix_installed
from benchmarks.procstat import (
    Proc,
    Snapshot,
    depth,
    machine_busy_seconds,
    read_proc,
    tree,
    tree_cpu_seconds,
)


def _role(procs: dict[int, Proc], pid: int, root: int, processes: int) -> str:
    """What a process of hs02's tree is, from where it sits in it."""
    if "resource_tracker" in procs[pid].cmdline:
        return "multiprocessing resource trackers"
    level = depth(procs, pid, root)
    if processes > 1:
        if level == 0:
            return "supervisor"
        if level == 1:
            return f"node process pid {pid}"
        return "crypto workers"
    return "node process" if level == 0 else "crypto workers"


@dataclass
class GatewayRun:
    setup: Setup
    count: int
    elapsed: float
    node_ms: float  # CPU per Dispatch, the node's whole process tree
    roles_ms: dict[str, float]  # the same, by process (and what exited during the window)
    loadgen_ms: float
    postgres_ms: float | None  # the PostgreSQL server's, less the benchmark's own polling
    processes_seen: dict[str, list[int]]  # pids that appeared or vanished during the window
    life_cpu_s: float | None = None
    exit_code: int | None = None
    states: dict[str, int] = field(default_factory=dict)
    sink_count: int = 0
    problems: list[str] = field(default_factory=list)
    log_counts: dict[str, int] = field(default_factory=dict)
    log_copy: str | None = None
    latencies: dict[str, float] = field(default_factory=dict)
    evidence_delays: dict[str, float] = field(default_factory=dict)  # StoreProbe's
    database_per_dispatch: dict[str, float] = field(default_factory=dict)
    vacuum_runs: int | None = None  # the stand-in for autovacuum, when asked for
    busy_cores: float = 0.0  # the machine's busy CPU over the window, in cores
    others_cores: float = 0.0  # of which not this benchmark's (other work on the machine)
    profile_table: str | None = None  # where the node processes' CPU went (--profile)
    sender: str = "python"  # hs01: lean processes, Postfix or this process (--sender)
    loadgen_parts_ms: dict[str, float] = field(default_factory=dict)  # loadgen_ms by part
    inject_s: float = 0.0  # handing the Dispatches to hs01 (postfix, lean), before the window
    polling_ms: float | None = None  # this process, polling hs02 (postfix, lean; else loadgen)
    left_in_queue: int = 0  # Postfix: messages still in hs01's queue after the window
    # Dispatches hs02 received byte for byte as one sent (by the SHA-256 it computed), and
    # how many it received.
    byte_exact: tuple[int, int] = (0, 0)

    @property
    def per_second(self) -> float:
        return self.count / self.elapsed


def _settle(hs02: Hs02, count: int, timeout: float = 120.0) -> dict[str, int]:
    """After the timed window: wait (untimed) until no work is left in hs02, so the counts of
    every kind and state can be checked."""
    deadline = time.monotonic() + timeout
    states: dict[str, int] = {}
    while time.monotonic() < deadline:
        states = hs02.probe.states()
        busy = sum(
            n for k, n in states.items() if k.split()[1] in ("received", "queued", "sending")
        )
        if not busy and hs02.sink.count >= states.get("evidence-out sent", 0):
            break
        time.sleep(0.5)
    return states


def _check(run: GatewayRun, states: dict[str, int], count: int) -> list[str]:
    expected = {"dispatch-in processed": count, "evidence-out sent": 2 * count}
    problems = [
        f"{key}: {states.get(key, 0)}, expected {n}"
        for key, n in expected.items()
        if states.get(key, 0) != n
    ]
    problems += [
        f"{key}: {n}, expected none" for key, n in states.items() if key not in expected and n
    ]
    if run.sink_count != states.get("evidence-out sent", 0):
        problems.append(
            f"the evidence sink received {run.sink_count} messages; the store says"
            f" {states.get('evidence-out sent', 0)} evidence messages were sent"
        )
    return problems


def _log_summary(log: Path) -> tuple[dict[str, int], list[str]]:
    """Warnings and errors in hs02's log, by level and event; lines that are not JSON."""
    counts: collections.Counter[str] = collections.Counter()
    other: list[str] = []
    for line in log_lines(log):
        if isinstance(line, str):
            other.append(line)
        elif line.get("level") in ("warning", "error", "critical", "exception"):
            counts[f"{line.get('level')} {line.get('event')}"] += 1
    return dict(counts), other


def _start_profile(setup: Setup, root: int) -> list[subprocess.Popen[bytes]]:
    """py-spy on each of hs02's node processes (benchmarks.profile), when asked for."""
    if setup.profile is None:
        return []
    procs = tree(root)
    nodes = [
        pid for pid in procs if _role(procs, pid, root, setup.processes).startswith("node process")
    ]
    for old in setup.profile.glob("node-*.folded"):
        old.unlink()
    return profile.record(nodes, profile.UNTIL_STOPPED, setup.profile)


def bench_gateway(count: int, connections: int, setup: Setup, sender: str = "python") -> GatewayRun:
    with hs02_node(setup, label="gateway", sender=sender, connections=connections) as hs02:
        print(f"    building {count} signed Dispatches …", flush=True)
        messages = [dispatch(hs02.pki, n, 4096) for n in range(count)]
        peer = hs02.peer
        injected = 0.0
        if peer is not None:
            print(f"    handing them to hs01 ({LOADING[sender]}) …", flush=True)
            injected = peer.load([(recipient_of(m), m) for m in messages])
        # hs01's load generator, what it is made of: process trees apart from this one.
        trees = peer.trees() if peer is not None else {}
        time.sleep(2)  # the workers are up
        root = hs02.node.pid
        postmaster = hs02.probe.postmaster
        poller = hs02.probe.backend
        before = Snapshot.take(root)
        pg_before = tree_cpu_seconds(postmaster) if postmaster else 0.0
        stats_before = hs02.probe.database_stats()
        hs02.probe.queries = 0
        polled = read_proc(poller) if poller else None
        poll_before = polled.own if polled else 0.0
        vacuumer = None
        if hs02.probe.pg is not None:
            if setup.vacuum_every:
                vacuumer = Vacuumer(hs02.probe.url, setup.vacuum_every)
                vacuumer.start()
            elif not autovacuum_on(hs02.probe.url):
                print(
                    "    NOTE: autovacuum is off on this PostgreSQL server and --vacuum-every"
                    " is not given: the store's tables are never analysed or vacuumed"
                )
        ours = os.times()
        loadgen_cpu = TreesCpu()
        loadgen_cpu.start(trees)
        machine = machine_busy_seconds()
        spies = _start_profile(setup, root)
        start = time.perf_counter()
        if peer is not None:
            peer.release()
        else:
            asyncio.run(send_all(messages, hs02.peer_port, hs02.client_tls, connections))
        while hs02.delivered() < count:
            if hs02.node.poll() is not None:
                raise SystemExit(f"hs02 exited with {hs02.node.returncode}: see {hs02.log}")
            trouble = peer.failed() if peer is not None else None
            if trouble:
                raise SystemExit(f"{trouble}; hs02's log: {hs02.log}")
            time.sleep(0.2)
        elapsed = time.perf_counter() - start
        profile.stop(spies)  # the samples cover the timed window, all its Dispatches
        used = os.times()
        loadgen_cpu.stop(trees)
        machine = machine_busy_seconds() - machine
        after = Snapshot.take(root)
        pg_after = tree_cpu_seconds(postmaster) if postmaster else 0.0
        polled = read_proc(poller) if poller else None
        poll_after = polled.own if polled else poll_before
        loadgen_parts = dict(loadgen_cpu.seconds)
        own = used.user + used.system - ours.user - ours.system
        polling: float | None = None  # this process's, when it is not the load generator
        if peer is not None:
            polling = own
            if sender == "postfix":
                loadgen_parts["postsuper and postqueue (releasing the queue)"] = (
                    used.children_user
                    + used.children_system
                    - ours.children_user
                    - ours.children_system
                )
        else:
            loadgen_parts["this process (clients, sink, polling hs02's store)"] = own
        loadgen = sum(loadgen_parts.values())

        roles: dict[str, float] = collections.defaultdict(float)
        for pid, proc in after.procs.items():
            start_own = before.procs[pid].own if pid in before.procs else 0.0
            roles[_role(after.procs, pid, root, setup.processes)] += proc.own - start_own
        total = after.total() - before.total()
        exited = total - sum(roles.values())
        if abs(exited) >= 0.01:
            roles["exited during the window (through their parents' cutime)"] = exited
        seen = {
            "appeared": sorted(set(after.procs) - set(before.procs)),
            "vanished": sorted(set(before.procs) - set(after.procs)),
        }
        per = 1000 / count
        run = GatewayRun(
            setup,
            count,
            elapsed,
            total * per,
            {k: v * per for k, v in sorted(roles.items())},
            loadgen * per,
            ((pg_after - pg_before) - (poll_after - poll_before)) * per if postmaster else None,
            seen,
            sender=sender,
            loadgen_parts_ms={k: v * per for k, v in loadgen_parts.items()},
            inject_s=injected,
            polling_ms=None if polling is None else polling * per,
        )
        ours_s = (
            run.node_ms + run.loadgen_ms + (run.polling_ms or 0.0) + (run.postgres_ms or 0.0)
        ) * (count / 1000)
        run.busy_cores = machine / elapsed
        if spies:
            assert setup.profile is not None
            run.profile_table = profile.per_dispatch(
                profile.areas(sorted(setup.profile.glob("node-*.folded"))),
                count,
                run.node_ms,
                len(spies),
            )
        run.others_cores = max(0.0, machine - ours_s) / elapsed
        with contextlib.suppress(OSError):
            run.latencies = hs02.latencies()
        print(f"    timed window done in {elapsed:.1f} s; checking every message …", flush=True)
        run.states = _settle(hs02, count)
        run.evidence_delays = hs02.probe.evidence_delays()
        if vacuumer is not None:
            run.vacuum_runs = vacuumer.stop()
        if stats_before:
            # All the work of the run (the window and what settling waited for); idle
            # backends report their counters within 10 s (PostgreSQL 15).
            time.sleep(11)
            stats_after = hs02.probe.database_stats()
            stats = {k: stats_after[k] - stats_before[k] for k in stats_after}
            stats["commits"] -= hs02.probe.queries  # the benchmark's own
            run.database_per_dispatch = {
                k: v if k.startswith("auto") else v / count for k, v in stats.items()
            }
        run.sink_count = hs02.sink.count
        if peer is not None:
            run.left_in_queue = peer.left()
        run.byte_exact = check_bytes(received_digests(hs02), messages)
    run.life_cpu_s, run.exit_code = hs02.life_cpu, hs02.exit_code
    run.problems = _check(run, run.states, count)
    exact, received = run.byte_exact
    if exact != received or received != count:
        run.problems.append(
            f"{exact} of the {received} Dispatches hs02 received are byte for byte one of the"
            f" {count} sent"
        )
    if run.left_in_queue:
        run.problems.append(f"{run.left_in_queue} messages left in hs01's Postfix queue")
    if run.exit_code != 0:
        run.problems.append(f"hs02 exited with {run.exit_code} after SIGTERM")
    run.log_counts, other = _log_summary(hs02.log_copy or hs02.log)
    if other:
        run.log_counts["lines that are not JSON"] = len(other)
        print("      lines of the log that are not JSON:", *other[:20], sep="\n        ")
    joined = joined_records(hs02.log_copy or hs02.log)
    if joined:
        run.log_counts["lines holding two or more records (interleaved writes)"] = joined
    run.log_copy = str(hs02.log_copy) if hs02.log_copy else None
    return run


HS01 = {
    "postfix": "Postfix as its MTA and as its evidence sink (benchmarks.postfix_peer)",
    "lean": "a lean process per connection and a lean evidence sink (benchmarks.lean_peer)",
    "python": "aiosmtplib clients and an aiosmtpd evidence sink in this process",
}
LOADING = {
    "postfix": "submitted to its Postfix with sendmail, held in the queue",
    "lean": "prepared and shared out to its sender processes, connected and waiting",
}
RATIO_TARGET, RATIO_GOAL = 0.35, 0.5
LOADGEN_TARGET_MS = 0.5  # the load generator's CPU per Dispatch, sender and sink together


def report_summary(run: GatewayRun, plain: PlainRun | None) -> None:
    """Both rates, their ratio, and the CPU per message of each side and of the load
    generator."""
    print("Summary")
    extra = f" + PostgreSQL {run.postgres_ms:.1f} ms" if run.postgres_ms is not None else ""
    print(
        f"  kep-relay (hs02, {run.setup.describe()}): {run.per_second:8.1f} Dispatches/s;"
        f" CPU per Dispatch {run.node_ms:.1f} ms{extra}"
    )
    if plain is not None:
        print(
            f"  Postfix relaying plain mail: {plain.per_second:8.1f} messages/s;"
            f" CPU per message {plain.postfix_ms:.2f} ms"
            f" (its load generator, smtp-source and smtp-sink:"
            f" {plain.source_ms + plain.sink_ms:.2f} ms)"
        )
        ratio = run.per_second / plain.per_second
        print(
            f"  ratio {ratio:.3f}: target >= {RATIO_TARGET}"
            f" {'met' if ratio >= RATIO_TARGET else 'NOT met'},"
            f" goal {RATIO_GOAL} {'met' if ratio >= RATIO_GOAL else 'not met'}"
        )
    polling = (
        f" (and this process polling hs02: {run.polling_ms:.2f} ms)"
        if run.polling_ms is not None
        else " (this process, polling hs02 included)"
    )
    met = "met" if run.loadgen_ms <= LOADGEN_TARGET_MS else "NOT met"
    print(
        f"  load generator (hs01: {run.sender}, sender and evidence sink):"
        f" {run.loadgen_ms:.2f} ms of CPU per Dispatch{polling};"
        f" target <= {LOADGEN_TARGET_MS} ms {met}"
    )


def report_gateway(run: GatewayRun) -> None:
    print(f"    hs02: {run.setup.describe()}")
    print(f"    kep-relay: {run.per_second:8.1f} messages/s ({run.count} in {run.elapsed:.1f} s)")
    print(f"      CPU per Dispatch, node, all its processes together: {run.node_ms:.1f} ms")
    for name, ms in run.roles_ms.items():
        print(f"        {name}: {ms:.1f} ms")
    if run.profile_table:
        print("      where it went (py-spy samples; the run's rate suffers from the sampling):")
        print("\n".join(f"        {line}" for line in run.profile_table.splitlines()))
    for what, pids in run.processes_seen.items():
        if pids:
            print(f"        processes that {what} during the window: {pids}")
    if run.postgres_ms is not None:
        print(
            "      CPU per Dispatch, PostgreSQL server (all its processes, less the"
            f" benchmark's polling): {run.postgres_ms:.1f} ms"
        )
    what = {"postfix": "Postfix", "lean": "lean processes"}.get(run.sender, "in this process")
    print(
        f"      CPU per Dispatch, load generator (hs01's sender and evidence sink, {what}):"
        f" {run.loadgen_ms:.2f} ms"
    )
    for name, ms in run.loadgen_parts_ms.items():
        print(f"        {name}: {ms:.2f} ms")
    if run.polling_ms is not None:
        print(f"      CPU per Dispatch, this process polling hs02's store: {run.polling_ms:.2f} ms")
    if run.sender != "python":
        print(
            f"      (handing the Dispatches to hs01, {LOADING[run.sender]}, before the window:"
            f" {run.inject_s:.1f} s)"
        )
    total = run.node_ms + run.loadgen_ms + (run.polling_ms or 0.0) + (run.postgres_ms or 0.0)
    cores = len(os.sched_getaffinity(0))
    print(
        f"      in all {total:.1f} ms: at most {cores * 1000 / total:.0f} messages/s"
        f" on this machine's {cores} cores"
    )
    print(
        f"      the machine was {run.busy_cores:.2f} of {cores} cores busy over the window,"
        f" {run.others_cores:.2f} of them with work not of this benchmark"
    )
    if run.life_cpu_s is not None:
        print(
            f"      node's whole life (start-up, run, drain; wait4 after a clean stop):"
            f" {run.life_cpu_s:.1f} s CPU,"
            f" of which the timed window {run.node_ms * run.count / 1000:.1f} s"
        )
    if run.latencies:
        print(
            f"      mean SMTP acceptance (MAIL FROM to the 250 after DATA):"
            f" {run.latencies['acceptance_ms']:.1f} ms; mean acceptance to mailbox:"
            f" {run.latencies['delivery_ms'] / 1000:.1f} s"
        )
    if run.evidence_delays:
        delays = run.evidence_delays
        print(
            f"      Evidence messages: queued to sent mean {delays['queued_mean_s']:.2f} s,"
            f" 95 % within {delays['queued_p95_s']:.2f} s; Dispatch accepted to its evidence"
            f" sent mean {delays['accepted_to_sent_s']:.1f} s"
        )
    if run.database_per_dispatch:
        figures = ", ".join(f"{v:.1f} {k}" for k, v in run.database_per_dispatch.items())
        print(f"      PostgreSQL per Dispatch (autovacuum: during the run): {figures}")
    if run.vacuum_runs is not None:
        print(f"      VACUUM (ANALYZE) by the benchmark: {run.vacuum_runs} times")
    print(f"      store afterwards: {run.states}; evidence sink received {run.sink_count}")
    exact, received = run.byte_exact
    print(f"      Dispatches received byte for byte as built (SHA-256): {exact} of {received}")
    for problem in run.problems:
        print(f"      PROBLEM: {problem}")
    if run.log_counts:
        print(f"      log warnings/errors: {run.log_counts}")
    if run.log_copy:
        print(f"      log kept: {run.log_copy}")


def _kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _family(pid: int) -> list[int]:
    """The node and every process under it (supervisor, node processes, crypto workers)."""
    return list(tree(pid))


def bench_large(size_mib: int, setup: Setup) -> float:
    """Peak RSS growth of the node's processes together (each one's peak, summed)."""
    # The limit allows for the original's base64 and MIME overhead.
    with hs02_node(setup, limit_mib=size_mib + 10, label="large") as hs02:
        message = dispatch(hs02.pki, 0, size_mib * MiB)
        time.sleep(2)  # the workers are up
        family = _family(hs02.node.pid)
        idle = {pid: _kib(pid, "VmRSS") for pid in family}
        for pid in family:
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset the peak-RSS mark
        asyncio.run(send_all([message], hs02.peer_port, hs02.client_tls, 1))
        while hs02.delivered() < 1:
            time.sleep(0.2)
        return sum(_kib(pid, "VmHWM") - idle[pid] for pid in family) / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--size-mib", type=int, default=100)
    parser.add_argument("--processes", type=int, default=1, help="hs02's [node] processes")
    parser.add_argument(
        "--crypto-workers", type=int, default=0, help="hs02's [limits] crypto_workers"
    )
    parser.add_argument(
        "--store",
        default=None,
        help="hs02's [store] url (default: SQLite in its data folder); for postgresql://…"
        " each hs02 gets a fresh database kep_bench_<random> on that server, dropped after",
    )
    parser.add_argument(
        "--vacuum-every",
        type=float,
        default=0.0,
        help="PostgreSQL: VACUUM (ANALYZE) the store every this many seconds, standing in for"
        " autovacuum on a server where it is off (0: never)",
    )
    parser.add_argument(
        "--prefill-mailbox", type=int, default=0, help="messages in each INBOX before hs02 starts"
    )
    parser.add_argument(
        "--prefill-evidence", type=int, default=0, help="evidence rows before hs02 starts"
    )
    parser.add_argument(
        "--sender",
        choices=("postfix", "lean", "python"),
        default=None,
        help="hs01: lean sender processes and evidence sink (the default, the cheapest), Postfix"
        " as its MTA and evidence sink, or the earlier Python clients and sink in this process",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="py-spy hs02's node processes into this folder and print where their CPU went"
        " (pip install -e '.[bench]')",
    )
    parser.add_argument(
        "--small-work",
        choices=("loop", "threads"),
        default=None,
        help="hs02's [node] small_work (default: the node's own default)",
    )
    parser.add_argument("--skip-postfix", action="store_true", help="no Postfix half")
    parser.add_argument("--skip-large", action="store_true", help="no 100 MiB RSS part")
    parser.add_argument("--log-dir", type=Path, default=None, help="keep hs02's logs here")
    parser.add_argument("--json", type=Path, default=None, help="append the figures here")
    args = parser.parse_args()
    setup = Setup(
        args.processes,
        args.crypto_workers,
        args.store,
        args.log_dir,
        args.vacuum_every,
        args.prefill_mailbox,
        args.prefill_evidence,
        args.profile,
        args.small_work,
    )
    sender = args.sender or "lean"
    if sender == "postfix" and not postfix_installed():
        raise SystemExit(
            "--sender postfix: Postfix is not installed (benchmarks/install-postfix.sh)"
        )
    print(
        f"(1) {args.messages} Dispatches of 4 KiB over {args.connections} mutual-TLS connections"
        f" to hs02, until every Delivery evidence has left hs02; hs01: {HS01[sender]}"
    )
    run = bench_gateway(args.messages, args.connections, setup, sender)
    report_gateway(run)
    record: dict[str, Any] = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "argv": sys.argv[1:],
        "code": str(ROOT),
        "setup": setup.describe(),
        "messages": run.count,
        "elapsed_s": round(run.elapsed, 2),
        "per_second": round(run.per_second, 2),
        "node_ms": round(run.node_ms, 2),
        "roles_ms": {k: round(v, 2) for k, v in run.roles_ms.items()},
        "postgres_ms": None if run.postgres_ms is None else round(run.postgres_ms, 2),
        "loadgen_ms": round(run.loadgen_ms, 2),
        "life_cpu_s": run.life_cpu_s,
        "states": run.states,
        "sink": run.sink_count,
        "problems": run.problems,
        "log": run.log_counts,
        "processes_seen": run.processes_seen,
        "latencies_ms": {k: round(v, 1) for k, v in run.latencies.items()},
        "evidence_delays": {k: round(v, 3) for k, v in run.evidence_delays.items()},
        "vacuum_runs": run.vacuum_runs,
        "database_per_dispatch": {k: round(v, 2) for k, v in run.database_per_dispatch.items()},
        "busy_cores": round(run.busy_cores, 2),
        "others_cores": round(run.others_cores, 2),
        "sender": run.sender,
        "loadgen_parts_ms": {k: round(v, 3) for k, v in run.loadgen_parts_ms.items()},
        "polling_ms": None if run.polling_ms is None else round(run.polling_ms, 3),
        "byte_exact": list(run.byte_exact),
    }
    plain: PlainRun | None = None
    if not args.skip_postfix:
        print(
            f"(2) Postfix relaying {args.messages} 4 KiB messages,"
            f" smtp-source → postfix → smtp-sink over {args.connections} sessions"
        )
        if postfix_installed():
            plain = bench_plain(args.messages, args.connections)
            record["postfix_per_second"] = round(plain.per_second, 1)
            record["postfix_ms"] = round(plain.postfix_ms, 3)
            record["postfix_loadgen_ms"] = round(plain.source_ms + plain.sink_ms, 3)
            record["ratio"] = round(run.per_second / plain.per_second, 3)
            print(
                f"    Postfix: {plain.per_second:8.1f} messages/s ({plain.count} in"
                f" {plain.elapsed:.1f} s); CPU per message: Postfix {plain.postfix_ms:.2f} ms,"
                f" smtp-source {plain.source_ms:.2f} ms, smtp-sink {plain.sink_ms:.2f} ms"
            )
        else:
            print("    Postfix is not installed: run benchmarks/install-postfix.sh (as root)")
    if not args.skip_large:
        print(f"(3) one {args.size_mib} MiB Dispatch received and delivered by hs02")
        growth = bench_large(args.size_mib, setup)
        record["large_rss_mib"] = round(growth, 1)
        print(
            f"    {growth:.1f} MiB peak RSS above idle   target <= 64 MiB: "
            f"{'met' if growth <= 64 else 'NOT met'}"
        )
    report_summary(run, plain)
    if args.json is not None:
        with args.json.open("a") as out:
            out.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
