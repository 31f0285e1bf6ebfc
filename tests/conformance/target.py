"""A kep-relay node as the suite's target: hs02, whose routes for the providers the suite
plays (hs01, and hs03 as a second) point at the suite's listener."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

from interop.pki.devpki import generate
from relay import mesh
from relay.keys import write_pki
from tests.relay.gateways import Gateway, free_port

TARGET, SUITE, SECOND = "hs02", "hs01", "hs03"
# Quick retries, so a case that makes the target retry ends in a moment.
TIMERS = {"retry_initial": "0.2s", "retry_max": "1s", "queue_poll": "0.1s"}


def make_target(root: Path, listen_port: int, second_port: int) -> Gateway:
    """The configuration of hs02 in ``root`` (not started), a PKI of hs01-hs03 in root/pki;
    its route for hs01 reaches ``listen_port``, for hs03 ``second_port``."""
    providers = [SUITE, TARGET, SECOND]
    pki = generate(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5), providers)
    write_pki(pki, root / "pki")
    nodes = tuple(mesh.MeshNode(p, free_port(), free_port(), free_port()) for p in providers)
    # The target reaches the providers the suite plays at the suite's listener.
    routes = mesh.Mesh(
        root,
        tuple(
            dataclasses.replace(n, peer_port={SUITE: listen_port, SECOND: second_port}[n.provider])
            if n.provider != TARGET
            else n
            for n in nodes
        ),
    )
    node = routes.node(TARGET)
    routes.config(TARGET).write_text(mesh.node_toml(routes, node, timers=TIMERS))
    return Gateway(TARGET, root, node.peer_port, node.submission_port, node.monitoring_port)
