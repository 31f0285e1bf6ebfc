"""kill -9 during traffic: nothing lost, nothing doubled, ledgers intact (profile §2, §7)."""

from __future__ import annotations

from pathlib import Path

from tests.relay.gateways import make_mesh
from tests.relay.traffic import assert_exactly_once, killer, submit, wait_delivered


def test_kill_9_loses_and_doubles_nothing(tmp_path: Path) -> None:
    mesh = make_mesh(
        tmp_path, ["hs01", "hs02"], timers={"relay_timeout": "1h", "evidence_timeout": "1h"}
    )
    hs01, hs02 = mesh["hs01"], mesh["hs02"]
    hs01.start()
    hs02.start()
    sent: list[str] = []
    try:
        submit(mesh, hs01, 120, sent)
        # Both die while submissions, Dispatches and evidence are in flight.
        killer(hs02)()
        killer(hs01)()
        hs01.start()
        hs02.start()
        # hs02 dies again in the middle of the next batch and stays down for a while.
        submit(mesh, hs01, 120, sent, during={40: killer(hs02)})
        killer(hs01)()
        hs01.start()
        hs02.start()
        wait_delivered(hs01, len(sent))
        assert_exactly_once(hs01, hs02, sent)
    finally:
        mesh.stop()
