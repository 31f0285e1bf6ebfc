"""SMTP to peer gateways with aiosmtplib: mutual TLS, raw bytes, a small pool per peer.

The message goes out exactly as it lies in the spool (aiosmtplib only dot-stuffs it), so
signatures over it stay valid. The peer's TLS certificate must chain to the trust list's TLS
CAs (checked by OpenSSL) and map to the provider we meant to reach (checked here with
``interop``'s validator and the provider's TLS names), whatever address the route gave.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import defaultdict

import aiosmtplib
import structlog
from cryptography import x509

from relay.context import NodeContext
from relay.errors import RouteTrouble
from relay.handshakes import count_failures
from relay.transport.base import Entry, Outcome, Result
from relay.transport.mx import MX_PORT, Resolver, candidates, resolve_mx

log = structlog.get_logger("kep.smtp_out")


class SmtpTransport:
    def __init__(
        self,
        context: NodeContext,
        per_peer: int = 4,
        timeout: float = 60.0,
        resolver: Resolver = resolve_mx,
    ) -> None:
        self.context = context
        self.resolver = resolver
        self.timeout = timeout
        handshakes = context.metrics.tls_handshakes
        self._tls = count_failures(
            context.client_tls(), lambda result: handshakes.labels("outbound", "none", result).inc()
        )
        # Host names are checked against the trust list below, not against the route address.
        self._tls.check_hostname = False
        self._tls.verify_mode = ssl.CERT_REQUIRED
        self._idle: dict[str, list[aiosmtplib.SMTP]] = defaultdict(list)
        self._slots: dict[str, asyncio.Semaphore] = defaultdict(lambda: asyncio.Semaphore(per_peer))

    async def _connect(self, peer: str) -> aiosmtplib.SMTP:
        entry = self.context.verifiers.trust.get(peer)
        if entry is None:
            raise ConnectionError(f"{peer} is not in the trust list")
        route = self.context.routes.get(peer)
        peer_config = self.context.config.peer(peer)
        mx_port = peer_config.mx_port if peer_config else MX_PORT
        problems = []
        for host, port in await candidates(route, entry.provider.domain, self.resolver, mx_port):
            try:
                return await self._connect_to(peer, host, port)
            except (aiosmtplib.SMTPException, OSError, ConnectionError, ssl.SSLError) as exc:
                problems.append(f"{host}:{port}: {exc}")
        raise ConnectionError(f"no gateway of {peer} answered: {'; '.join(problems)}")

    async def _connect_to(self, peer: str, host: str, port: int) -> aiosmtplib.SMTP:
        client = aiosmtplib.SMTP(
            hostname=host,
            port=port,
            use_tls=True,
            tls_context=self._tls,
            timeout=self.timeout,
            local_hostname=self.context.provider.domain,
        )
        await client.connect()
        ssl_object = client.transport.get_extra_info("ssl_object") if client.transport else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        entry = self.context.verifiers.trust.get(peer)
        if der is None or entry is None:
            client.close()
            raise ConnectionError(f"{peer}: no TLS certificate")
        check = self.context.verifiers.tls(peer).validate(
            x509.load_der_x509_certificate(der), [], self.context.clock(), entry.tls_names
        )
        version = ssl_object.version() if ssl_object else None
        self.context.metrics.tls_handshakes.labels(
            "outbound", version or "unknown", "accepted" if check.ok else "refused"
        ).inc()
        if not check.ok:
            client.close()
            raise ConnectionError(
                f"{peer} at {host}:{port} is not who it should be: {check.detail}"
            )
        return client

    async def deliver(self, entry: Entry) -> Result:
        async with self._slots[entry.peer]:
            client = None
            try:
                client = self._idle[entry.peer].pop() if self._idle[entry.peer] else None
                if client is None or not client.is_connected:
                    client = await self._connect(entry.peer)
                data = await asyncio.to_thread(entry.path.read_bytes)
                errors, reply = await client.sendmail(
                    entry.mail_from, list(entry.rcpt_to), data, mail_options=[f"SIZE={len(data)}"]
                )
                if errors:
                    first = next(iter(errors.values()))
                    outcome = Outcome.PERMANENT if first.code >= 500 else Outcome.TEMPORARY
                    return Result(outcome, f"{first.code} {first.message}")
                self._idle[entry.peer].append(client)
                client = None
                return Result(Outcome.DELIVERED, f"250 {reply}")  # aiosmtplib gives the text
            except aiosmtplib.SMTPResponseException as exc:
                outcome = Outcome.PERMANENT if exc.code >= 500 else Outcome.TEMPORARY
                return Result(outcome, f"{exc.code} {exc.message}")
            except (aiosmtplib.SMTPException, OSError, ConnectionError, ssl.SSLError) as exc:
                return Result(Outcome.TEMPORARY, f"{type(exc).__name__}: {exc}")
            except RouteTrouble as exc:  # DNS could not answer: the next attempt may
                return Result(Outcome.TEMPORARY, exc.detail)
            finally:
                if client is not None:
                    client.close()

    async def close(self) -> None:
        for clients in self._idle.values():
            for client in clients:
                try:
                    await client.quit()
                except (aiosmtplib.SMTPException, OSError):
                    client.close()
        self._idle.clear()
