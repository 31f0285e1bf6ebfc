"""Routes by MX records (dnspython): against a small DNS server in the test (this machine has
no DNS of its own) that answers as real ones do, and with a resolver stub for delivery."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import dns.asyncresolver
import dns.message
import dns.rcode
import dns.rrset
import pytest

from relay.config_file import from_mapping
from relay.context import build_context
from relay.errors import RouteTrouble
from relay.transport.base import Entry, Outcome
from relay.transport.mx import candidates, resolve_mx
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
            result = await transport.send(entry)
            await transport.close()
            return result.outcome

        assert asyncio.run(go()) is Outcome.DELIVERED
    finally:
        mesh.stop()


class _DnsServer(asyncio.DatagramProtocol):
    """Answers every MX query the way ``mode`` says (dnspython builds the wire format)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        query = dns.message.from_wire(data)
        if self.mode == "silent":
            return
        response = dns.message.make_response(query)
        if self.mode == "servfail":
            response.set_rcode(dns.rcode.SERVFAIL)
        elif self.mode == "nxdomain":
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif self.mode == "mx":
            name = query.question[0].name
            response.answer.append(
                dns.rrset.from_text(
                    name, 300, "IN", "MX", "20 mx2.hs02.kep.tr.", "10 mx1.hs02.kep.tr."
                )
            )
        assert self.transport is not None
        self.transport.sendto(response.to_wire(), addr)


async def _lookup(mode: str) -> list[tuple[int, str]]:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _DnsServer(mode), local_addr=("127.0.0.1", 0)
    )
    try:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = ["127.0.0.1"]
        resolver.port = transport.get_extra_info("sockname")[1]
        resolver.timeout = 0.5
        return await resolve_mx("hs02.kep.tr", resolver, lifetime=1.5)
    finally:
        transport.close()


def test_mx_records_are_read() -> None:
    assert sorted(asyncio.run(_lookup("mx"))) == [(10, "mx1.hs02.kep.tr"), (20, "mx2.hs02.kep.tr")]


@pytest.mark.parametrize("mode", ["nxdomain", "noanswer"])
def test_a_domain_without_mx_falls_back_to_itself(mode: str) -> None:
    # RFC 5321 §5.1: only DNS saying "no MX" makes the domain its own host.
    assert asyncio.run(_lookup(mode)) == []


@pytest.mark.parametrize("mode", ["servfail", "silent"])
def test_a_failed_lookup_is_temporary_not_no_mx(mode: str) -> None:
    with pytest.raises(RouteTrouble):
        asyncio.run(_lookup(mode))


def test_delivery_waits_when_dns_fails(tmp_path: Path) -> None:
    config = from_mapping(
        {
            "node": {"provider": "hs01", "dev_pki": "pki", "data_dir": "client"},
            "peers": {"hs02": {"route": "mx"}},
        },
        "test",
        tmp_path,
    )
    context = build_context(config)
    tried: list[str] = []

    async def failing(domain: str) -> list[tuple[int, str]]:
        tried.append(domain)
        raise RouteTrouble(f"MX lookup of {domain} failed: SERVFAIL")

    async def go() -> tuple[Outcome, str]:
        transport = SmtpTransport(context, resolver=failing, timeout=5)
        entry = Entry("q1", "hs02", "a@hs01.kep.tr", ("b@hs02.kep.tr",), tmp_path / "none", 1)
        result = await transport.send(entry)
        await transport.close()
        return result.outcome, result.reply

    outcome, reply = asyncio.run(go())
    # Deferred, and the domain itself was not tried as if it had no MX.
    assert outcome is Outcome.TEMPORARY and "SERVFAIL" in reply
    assert tried == ["hs02.kep.tr"]
    context.store.close()
