"""A kep-relay node as the suite's target: hs02, whose routes for the providers the suite
plays (hs01, and hs03 as a second) point at the suite's listener.

Its operator prepared what the non-delivery and relay-failure cases need: a closed account
(``CLOSED``), a mailbox whose quota is used up (``FULL``, filled before the node starts) under a
policy that refuses on full mailboxes, and short relay and evidence timeouts.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

from interop.pki.devpki import generate
from relay import mesh
from relay.keys import write_pki
from relay.mailbox import Mailboxes
from tests.relay.gateways import Gateway, free_port

TARGET, SUITE, SECOND = "hs02", "hs01", "hs03"
FULL, CLOSED = "dolu.kutu@hs02.kep.tr", "kapali.hesap@hs02.kep.tr"
RELAY_TIMEOUT = 6.0  # seconds: the relay-failure case keeps the suite's listener closed past it
# Seconds: the case that withholds delivery evidence waits past it (every other Dispatch the
# suite takes without answering gets its RelayREMMDFailure too, which no case minds).
EVIDENCE_TIMEOUT = 5.0
# Quick retries, so a case that makes the target retry ends in a moment.
TIMERS = {
    "retry_initial": "0.2s",
    "retry_max": "1s",
    "queue_poll": "0.1s",
    "relay_timeout": f"{RELAY_TIMEOUT:g}s",
    "evidence_timeout": f"{EVIDENCE_TIMEOUT:g}s",
}
# Beside the development PKI's users (listing accounts replaces the PKI's own list).
PREPARED = f"""
[[accounts]]
address = "{CLOSED}"
state = "closed"

[[accounts]]
address = "{FULL}"
quota_mib = 0.001
"""


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
    users = "".join(
        f'\n[[accounts]]\naddress = "{u.address}"\n' for u in pki.users if u.provider_id == TARGET
    )
    text = mesh.node_toml(routes, node, timers=TIMERS, extra=users + PREPARED)
    # The policy that refuses on full mailboxes (§4 R-GW 2; the default keeps receiving).
    text = text.replace("[node]\n", "[node]\nrefuse_when_full = true\n", 1)
    routes.config(TARGET).write_text(text)
    gateway = Gateway(TARGET, root, node.peer_port, node.submission_port, node.monitoring_port)
    # The full mailbox's quota (about 1 KiB) used up before the node starts.
    Mailboxes(gateway.data / "mail", []).put(FULL, "INBOX", "filled", b"x" * 4096)
    return gateway
