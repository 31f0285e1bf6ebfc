"""Signature work of a node process: verifying envelopes, signing evidence, signing Evidence
messages.

These are pure ``interop`` calls and most of the CPU a node spends per message. Each node
process does its own, in its own process, for the messages it claimed: ``[node] processes``
is how a machine's cores are used. (Worker processes fed through pickles were measured against
this and were no cheaper per Dispatch; the README's Benchmarks has the figures.)
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Sequence

import structlog

from interop.cms.timestamp import LocalTsa
from interop.envelope.build import write_evidence_message
from interop.envelope.verify import EnvelopeVerification, verify_envelope
from interop.errors import ConfigurationError
from interop.evidence.model import Evidence
from interop.evidence.xades import sign_evidence
from interop.pki.devpki import DevPki
from interop.pki.signer import Signer
from interop.providers import BUILTIN_DIRECTORY, Provider
from interop.revocation import RevocationData
from interop.trust import ProviderTrust, TrustList
from interop.verifiers import Verifiers
from relay.config import NodeConfig
from relay.keys import load_certificates, load_crls, load_signer, read_pki, trust_from_pki
from relay.readings import Received
from relay.tsa import Stamping

log = structlog.get_logger("kep.crypto")


class LocalCrypto:
    """The calls, in the calling process."""

    def __init__(
        self, provider: Provider, process: Signer, stamping: Stamping, verifiers: Verifiers
    ) -> None:
        self.provider = provider
        self.process = process
        self.stamping = stamping
        self.verifiers = verifiers

    def verify_envelope(
        self, received: Received, now: dt.datetime, peer: str | None
    ) -> EnvelopeVerification:
        """Raises ``KepError`` when the envelope cannot be read at all. Intake's reading, when
        ``received`` has one, spares reading the structure and delil.xml again; a small
        message is verified from its bytes, a large one streamed from its file."""
        with received.open() as stream:
            reading = received.reading
            if reading is None:
                return verify_envelope(stream, self.verifiers, now, peer=peer)
            return verify_envelope(
                stream,
                self.verifiers,
                now,
                peer=peer,
                envelope=reading.envelope,
                evidence_read=reading.evidence,
            )

    @property
    def signs_in_process(self) -> bool:
        """Whether signing needs nothing but this process's CPU: no remote TSA to ask."""
        return self.stamping.remote is None

    def sign_evidence(self, evidence: Evidence, now: dt.datetime) -> bytes:
        """XAdES-T when a TSA is configured (profile §5), else XAdES-BES."""
        return sign_evidence(evidence, self.process, now, timestamp=self.stamping.function(now))

    def evidence_message(
        self, evidence: Evidence, xml: bytes, now: dt.datetime, **headers: str | None
    ) -> bytes:
        """An Evidence message about ``evidence`` (signed ``xml``), time-stamped when a TSA
        is configured; ``headers``: ``write_evidence_message``'s keyword arguments."""
        out = io.BytesIO()
        write_evidence_message(
            out,
            evidence,
            xml,
            self.process,
            now,
            message_id=f"<{evidence.identifier}@{self.provider.domain}>",
            issuer_id=self.provider.id,
            timestamp=self.stamping.function(now),
            **headers,  # type: ignore[arg-type]
        )
        return out.getvalue()

    def issue_messages(
        self, evidence: Sequence[Evidence], now: dt.datetime, **headers: str | None
    ) -> list[tuple[bytes, bytes]]:
        """For each evidence: its signed XML and an Evidence message carrying it."""
        signed = []
        for e in evidence:
            xml = self.sign_evidence(e, now)
            signed.append((xml, self.evidence_message(e, xml, now, **headers)))
        return signed

    def close(self) -> None:
        self.stamping.close()


# -- reading the node's key material ---------------------------------------------------------


def dev_crypto(config: NodeConfig, pki: DevPki, instance: int) -> LocalCrypto:
    assert config.dev_pki is not None
    me = pki.providers.get(config.provider.id)
    if me is None:
        raise ConfigurationError(
            f"{config.source}: node.dev_pki {config.dev_pki} has no certificates for "
            f"{config.provider.id}"
        )
    verifiers = dev_verifiers(config, pki)
    stamping = Stamping(
        local=LocalTsa(pki.tsa, instance), remote=config.tsa, validator=verifiers.tsa
    )
    return LocalCrypto(config.provider, me.process, stamping, verifiers)


def dev_verifiers(config: NodeConfig, pki: DevPki) -> Verifiers:
    return Verifiers(
        trust_from_pki(
            pki,
            {p.id: p.message_limit for p in config.peers},
            {p.id: p.crl_urls for p in config.peers},
            config.crl_urls,
        ),
        RevocationData.of(pki.crls, require=config.require_crl),
    )


def local_crypto(config: NodeConfig, instance: int) -> LocalCrypto:
    """The node's signing keys and trust, as the node reads them (and each crypto worker).

    ``instance`` tells apart the processes that time-stamp with the node's TSA key.
    """
    if config.dev_pki is not None:
        return dev_crypto(config, read_pki(config.dev_pki), instance)
    identity = config.identity
    assert identity is not None
    process = load_signer(identity.process_cert, identity.process_key)
    trust, revocation = configured_trust(config)
    local = None
    if identity.tsa_cert and identity.tsa_key:
        local = LocalTsa(load_signer(identity.tsa_cert, identity.tsa_key), instance)
    verifiers = Verifiers(trust, revocation)
    stamping = Stamping(local=local, remote=config.tsa, validator=verifiers.tsa)
    return LocalCrypto(config.provider, process, stamping, verifiers)


def configured_trust(config: NodeConfig) -> tuple[TrustList, RevocationData]:
    """The trust list and revocation data of a configuration without dev PKI."""
    entries = []
    for peer in config.peers:
        provider = BUILTIN_DIRECTORY.get(peer.id) or Provider(
            peer.id, peer.domain or f"{peer.id}.kep.tr"
        )
        try:
            entries.append(
                ProviderTrust(
                    provider,
                    load_certificates(peer.process_cas),
                    load_certificates(peer.tls_cas),
                    peer.tls_names,
                    message_limit=peer.message_limit,
                    crl_locations=peer.crl_urls,
                )
            )
        except ConfigurationError as exc:  # name the file and the table, as every key does
            raise ConfigurationError(f"{config.source}: peers.{peer.id}: {exc.detail}") from exc
    if not any(e.id == config.provider.id for e in entries):
        raise ConfigurationError(
            f"{config.source}: [peers.{config.provider.id}] must describe this node too"
        )
    trust = TrustList.build(
        entries,
        load_certificates(config.user_cas),
        load_certificates(config.tsa_cas),
        config.crl_urls,
    )
    return trust, RevocationData.of(load_crls(config.crls), require=config.require_crl)


Crypto = LocalCrypto
