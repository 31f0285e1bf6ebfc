"""Routes by MX records (dnspython), with a resolver stub: this machine has no DNS."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from relay.config import from_mapping
from relay.context import build_context
from relay.transport.base import Entry, Outcome
from relay.transport.mx import candidates
from relay.transport.smtp import SmtpTransport
from tests.helpers import make_dispatch
from tests.relay.gateways import make_mesh


def test_candidates_in_preference_order() -> None:
    async def resolver(domain: str) -> list[tuple[int, str]]:
        assert domain == "hs02.kep.tr"
        return [(20, "mx2.hs02.kep.tr"), (10, "mx1.hs02.kep.tr")]

    async def none(domain: str) -> list[tuple[int, str]]:
        return []

    assert asyncio.run(candidates(None, "hs02.kep.tr", resolver, 465)) == [
        ("mx1.hs02.kep.tr", 465),
        ("mx2.hs02.kep.tr", 465),
    ]
    assert asyncio.run(candidates(None, "hs02.kep.tr", none, 465)) == [("hs02.kep.tr", 465)]
    assert asyncio.run(candidates(("127.0.0.1", 25), "hs02.kep.tr", resolver, 465)) == [
        ("127.0.0.1", 25)
    ]


def test_delivery_over_an_mx_route_skips_dead_hosts(tmp_path: Path) -> None:
    mesh = make_mesh(tmp_path, ["hs01", "hs02"])
    hs02 = mesh["hs02"]
    hs02.start()
    try:
        config = from_mapping(
            {
                "node": {
                    "provider": "hs01",
                    "dev_pki": str(tmp_path / "pki"),
                    "data_dir": str(tmp_path / "client"),
                },
                "peers": {"hs02": {"route": "mx", "mx_port": hs02.peer_port}},
            },
            "test",
            tmp_path,
        )
        assert config.peers[0] == dataclasses.replace(config.peers[0], route=None)
        context = build_context(config)

        async def resolver(domain: str) -> list[tuple[int, str]]:
            return [(10, "127.0.0.1"), (5, "dead.invalid")]

        exchange = make_dispatch(mesh.pki, now=mesh.pki.created)
        path = tmp_path / "dispatch.eml"
        path.write_bytes(exchange.dispatch)

        async def go() -> Outcome:
            transport = SmtpTransport(context, resolver=resolver, timeout=10)
            entry = Entry(
                "q1",
                "hs02",
                "ali.yilmaz@hs01.kep.tr",
                ("ayse.demir@hs02.kep.tr",),
                path,
                len(exchange.dispatch),
            )
            result = await transport.deliver(entry)
            await transport.close()
            return result.outcome

        assert asyncio.run(go()) is Outcome.DELIVERED
    finally:
        mesh.stop()
