"""Routes to peers: a configured host:port, or the provider domain's MX records (dnspython).

MX hosts are tried in preference order (RFC 5321 §5.1), on the port configured for MX routes
(implicit TLS, profile choice: the peer listener speaks TLS from the first byte).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import dns.asyncresolver
import dns.exception
import dns.resolver

MX_PORT = 465  # implicit TLS (RFC 8314), as the peer listener serves it

Resolver = Callable[[str], Awaitable[list[tuple[int, str]]]]


async def resolve_mx(domain: str) -> list[tuple[int, str]]:
    """(preference, host) pairs; an empty list when the domain has none or DNS fails."""
    try:
        answer = await dns.asyncresolver.resolve(domain, "MX", lifetime=10.0)
    except (dns.exception.DNSException, dns.resolver.NoAnswer):
        return []
    return [(int(r.preference), str(r.exchange).rstrip(".")) for r in answer]


async def candidates(
    route: tuple[str, int] | None, domain: str, resolver: Resolver = resolve_mx, port: int = MX_PORT
) -> list[tuple[str, int]]:
    if route is not None:
        return [route]
    records = sorted(await resolver(domain))
    # RFC 5321 §5.1: with no MX, the domain itself is the host.
    return [(host, port) for _preference, host in records] or [(domain, port)]
