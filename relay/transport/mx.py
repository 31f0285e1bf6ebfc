"""Routes to peers: a configured host:port, or the provider domain's MX records (dnspython).

MX hosts are tried in preference order (RFC 5321 §5.1), on the port configured for MX routes
(implicit TLS, profile choice: the peer listener speaks TLS from the first byte). Only an
answer that the domain has no MX (NXDOMAIN, or no MX records) falls back to the domain itself;
a lookup that failed (timeout, SERVFAIL, no name server answered) is temporary trouble, and the
message waits for the next attempt (RFC 5321 §5.1: "the SMTP client SHOULD ... queue the
message and retry later" when the DNS lookup fails temporarily).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import dns.asyncresolver
import dns.exception
import dns.resolver

from relay.errors import RouteTrouble

MX_PORT = 465  # implicit TLS (RFC 8314), as the peer listener serves it
LOOKUP_LIFETIME = 10.0  # seconds for one MX lookup, every retry of the resolver included

Resolver = Callable[[str], Awaitable[list[tuple[int, str]]]]


async def resolve_mx(
    domain: str,
    resolver: dns.asyncresolver.Resolver | None = None,
    lifetime: float = LOOKUP_LIFETIME,
) -> list[tuple[int, str]]:
    """(preference, host) pairs; empty when DNS says the domain has no MX; ``RouteTrouble``
    when DNS could not say."""
    try:
        answer = await (resolver or dns.asyncresolver.get_default_resolver()).resolve(
            domain, "MX", lifetime=lifetime
        )
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except dns.exception.DNSException as exc:  # timeout, SERVFAIL, no name servers
        raise RouteTrouble(f"MX lookup of {domain} failed: {exc}") from exc
    return [(int(r.preference), str(r.exchange).rstrip(".")) for r in answer]


async def candidates(
    route: tuple[str, int] | None, domain: str, resolver: Resolver = resolve_mx, port: int = MX_PORT
) -> list[tuple[str, int]]:
    if route is not None:
        return [route]
    records = sorted(await resolver(domain))
    # RFC 5321 §5.1: with no MX, the domain itself is the host.
    return [(host, port) for _preference, host in records] or [(domain, port)]
