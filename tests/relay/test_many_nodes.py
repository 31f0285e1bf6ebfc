"""Many node processes, one provider (issue: many nodes): N processes of one machine on
SQLite, and three nodes as on three machines on one PostgreSQL database, with traffic through
all of them and ``kill -9`` at random moments. Every message is delivered exactly once,
every evidence issued exactly once with one EvidenceIdentifier, the ledger verifies, and what
a dead node held is finished by the others within its lease."""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

from relay.config import embedded_default
from relay.node import Sibling
from relay.processes import WATCHDOG, Supervisor, _Child
from tests.helpers import postgres_database
from tests.relay.gateways import Gateway, add_nodes, get, make_mesh, scrape, value, wait_for
from tests.relay.traffic import assert_exactly_once, killer, submit, wait_delivered

TIMERS = {"relay_timeout": "1h", "evidence_timeout": "1h"}
LEASE = "5s"


def _seeded() -> random.Random:
    seed = int(os.environ.get("KEP_CRASH_SEED", time.time_ns() % 1_000_000))
    print(f"KEP_CRASH_SEED={seed}")  # shown when the test fails: the run can be repeated
    return random.Random(seed)  # noqa: S311 (moments to kill at, not secrets)


def _signal_node_process(gateway: Gateway, sig: int, avoid: set[int]) -> Callable[[], None]:
    def send() -> None:
        pid = next(p for p in gateway.node_processes() if p not in avoid)
        avoid.add(pid)
        os.kill(pid, sig)

    return send


def test_node_processes_of_one_machine_share_the_work_and_survive_kill_9(
    tmp_path: Path,
) -> None:
    mesh = make_mesh(
        tmp_path,
        ["hs01", "hs02"],
        timers=TIMERS,
        processes={"hs02": 3},
        extra={"hs02": f'[store]\nlease = "{LEASE}"\n'},
    )
    hs01, hs02 = mesh["hs01"], mesh["hs02"]
    hs01.start()
    hs02.start()
    wait_for(lambda: get(hs02, "/readyz")[0] == 200, what="hs02's three node processes ready")
    first = hs02.node_processes()
    assert len(first) == 3
    rng = _seeded()
    touched: set[int] = set()
    frozen: set[int] = set()
    sent: list[str] = []
    try:
        # One node process killed (its supervisor starts it again; it takes back its own
        # claims at once); another frozen for good (SIGSTOP: alive, silent, holding its
        # claims): the others take its work over when its lease runs out.
        kill_at, freeze_at = sorted(rng.sample(range(10, 80), 2))
        submit(
            mesh,
            hs01,
            90,
            sent,
            during={
                kill_at: _signal_node_process(hs02, signal.SIGKILL, touched),
                freeze_at: _signal_node_process(hs02, signal.SIGSTOP, frozen),
            },
        )
        wait_delivered(hs01, len(sent))
        assert_exactly_once(hs01, hs02, sent)
        # The killed one was started again; the frozen one, silent for longer than the
        # watchdog allows, was killed and started again too.
        wait_for(
            lambda: len(set(hs02.node_processes()) - touched - frozen) == 3,
            timeout=60,
            what="the killed and the hung node process replaced",
        )
        assert value(scrape(hs02), "kep_node_processes") == 3
        wait_for(lambda: get(hs02, "/readyz")[0] == 200, what="hs02 ready again")
        assert hs02.stop(signal.SIGTERM) == 0  # every node process drained
        log = hs02.log.read_text()
        assert '"node_process_hung"' in log and '"node_process_died"' in log
    finally:
        mesh.stop()


def test_three_nodes_on_one_postgresql_one_dies_for_good_then_another(tmp_path: Path) -> None:
    mesh = make_mesh(tmp_path, ["hs01", "hs02"], timers=TIMERS)
    rng = _seeded()
    with postgres_database() as url:
        # Node a, the one that lives, keeps a small message's work on threads; b and c on
        # their event loops (the default): both ways share one store and each other's work.
        a, b, c = add_nodes(
            mesh,
            "hs02",
            ["hs02-a", "hs02-b", "hs02-c"],
            url,
            lease=LEASE,
            small_work={"hs02-a": "threads"},
        )
        hs01 = mesh["hs01"]
        try:
            hs01.start()
            for node in (a, b, c):
                node.start()
            # hs01 routes to node a; every node claims what any of them received, so all
            # three verify, deliver, sign and send. Node c dies, then node b: never started
            # again. Node a finishes their work.
            sent: list[str] = []
            kill_c, kill_b = sorted(rng.sample(range(10, 110), 2))
            submit(mesh, hs01, 120, sent, during={kill_c: killer(c), kill_b: killer(b)})
            wait_delivered(hs01, len(sent))
            assert_exactly_once(hs01, a, sent)
            assert 'small_work = "threads"' in a.config.read_text()

            # The dead nodes' leases run out and node a takes their claims over. A claim a
            # dead node took just before it died (an Evidence message it had sent, say) may
            # still be in its lease when hs01 already has everything: wait out the lease.
            def only_a_holds() -> bool:
                holders = a.query("SELECT DISTINCT owner FROM messages WHERE owner IS NOT NULL")
                return {h for (h,) in holders} <= {"hs02-a/1"}

            wait_for(only_a_holds, timeout=30, what="node a holding every claim left")
        finally:
            mesh.stop()


def test_node_processes_leave_when_their_supervisor_is_killed(tmp_path: Path) -> None:
    mesh = make_mesh(tmp_path, ["hs01", "hs02"], processes={"hs02": 2})
    hs02 = mesh["hs02"]
    hs02.start()
    wait_for(lambda: get(hs02, "/readyz")[0] == 200, what="hs02 ready")
    children = hs02.node_processes()
    assert len(children) == 2
    hs02.stop(signal.SIGKILL)

    def gone() -> bool:
        return not any(Path(f"/proc/{pid}").exists() for pid in children)

    # Otherwise they would hold the ports for ever, and a new supervisor could not serve.
    wait_for(gone, timeout=30, what="the orphaned node processes to leave")
    hs02.start()
    wait_for(lambda: get(hs02, "/readyz")[0] == 200, what="hs02 ready again")
    mesh.stop()


def test_the_watchdog_kills_a_hung_node_process_but_not_one_still_starting() -> None:
    """A node process still starting (a database not there yet, retried for 30 s) has not
    beaten yet; only one that serves and then falls silent is hung (a regression: the watchdog
    watched from the spawn, so a slow start was killed and started again for ever)."""
    supervisor = Supervisor(embedded_default())
    spawn = supervisor.spawn
    silent_since = time.monotonic() - 2 * WATCHDOG
    sibling = Sibling(1, 1, spawn.Event(), spawn.Value("d", silent_since), os.getpid())
    process = spawn.Process(target=time.sleep, args=(120,))
    process.start()
    try:
        supervisor.children[1] = _Child(sibling, process, silent_since)
        supervisor._watch()
        assert process.is_alive()  # starting: left alone
        sibling.ready.set()  # serving, and silent for twice the watchdog's limit
        supervisor._watch()
        process.join(10)
        assert not process.is_alive()
    finally:
        process.kill()
        process.join()
