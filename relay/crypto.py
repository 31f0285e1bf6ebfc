"""Signature work of a node: verifying envelopes, signing evidence, signing Evidence messages.

These are pure ``interop`` calls and most of the CPU a node spends per message. One Python
process runs Python code on one core at a time, so by default they run on worker processes
(``[limits] crypto_workers``, the number of CPUs; 0 keeps them in the node's process). A
worker holds only keys, certificates and CRLs, built from the node's configuration as the node
builds them; it reads a spool file it is named and returns values. It never writes: files,
the store and the ledger stay with the node, so a worker that dies, or outlives a node that
was killed, cannot file, queue or record anything twice. Workers leave when their node is gone.

Both kinds offer the same calls, so stages do not know which one they use.
"""

from __future__ import annotations

import concurrent.futures
import copyreg
import datetime as dt
import io
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import structlog
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

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
from relay.pkidir import load_certificates, load_crls, load_signer, read_pki, trust_from_pki
from relay.tsa import Stamping

log = structlog.get_logger("kep.crypto")


def _certificate(der: bytes) -> x509.Certificate:
    return x509.load_der_x509_certificate(der)


def _reduce_certificate(cert: x509.Certificate) -> tuple[Any, tuple[bytes]]:
    return _certificate, (cert.public_bytes(Encoding.DER),)


def _crl(der: bytes) -> x509.CertificateRevocationList:
    return x509.load_der_x509_crl(der)


def _reduce_crl(crl: x509.CertificateRevocationList) -> tuple[Any, tuple[bytes]]:
    return _crl, (crl.public_bytes(Encoding.DER),)


# Results carry certificates (signers, chains) and the CRLs that were consulted; they travel
# between processes as DER.
copyreg.pickle(x509.Certificate, _reduce_certificate)
copyreg.pickle(x509.CertificateRevocationList, _reduce_crl)


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
        self, path: Path, now: dt.datetime, peer: str | None
    ) -> EnvelopeVerification:
        """Raises ``KepError`` when the envelope cannot be read at all."""
        with path.open("rb") as stream:
            return verify_envelope(stream, self.verifiers, now, peer=peer)

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

    def health(self) -> str | None:
        """What is wrong with the signature work, or None (in process: nothing can be)."""
        return None

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
        trust_from_pki(pki, {p.id: p.message_limit for p in config.peers}),
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
                )
            )
        except ConfigurationError as exc:  # name the file and the table, as every key does
            raise ConfigurationError(f"{config.source}: peers.{peer.id}: {exc.detail}") from exc
    if not any(e.id == config.provider.id for e in entries):
        raise ConfigurationError(
            f"{config.source}: [peers.{config.provider.id}] must describe this node too"
        )
    trust = TrustList.build(
        entries, load_certificates(config.user_cas), load_certificates(config.tsa_cas)
    )
    return trust, RevocationData.of(load_crls(config.crls), require=config.require_crl)


# -- worker processes -----------------------------------------------------------------------

_WORKER: dict[str, LocalCrypto] = {}  # in a worker process: what its initializer built
PARENT_CHECK = 1.0  # seconds between a worker's looks at whether its node is still there


def _start_worker(config: NodeConfig, node_pid: int) -> None:
    """Initializer of each worker: the node's keys and trust, and a watch on the node."""
    # The node decides when workers stop (on SIGTERM it drains first, then shuts them down).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _WORKER["crypto"] = local_crypto(config, instance=os.getpid())

    def watch() -> None:
        while os.getppid() == node_pid:
            time.sleep(PARENT_CHECK)
        os._exit(0)  # the node is gone (killed): nothing here is worth finishing

    threading.Thread(target=watch, name="node-watch", daemon=True).start()


def _local() -> LocalCrypto:
    return _WORKER["crypto"]


def _verify_envelope(path: Path, now: dt.datetime, peer: str | None) -> EnvelopeVerification:
    return _local().verify_envelope(path, now, peer)


def _sign_evidence(evidence: Evidence, now: dt.datetime) -> bytes:
    return _local().sign_evidence(evidence, now)


def _evidence_message(
    evidence: Evidence, xml: bytes, now: dt.datetime, headers: dict[str, str | None]
) -> bytes:
    return _local().evidence_message(evidence, xml, now, **headers)


def _issue_messages(
    evidence: Sequence[Evidence], now: dt.datetime, headers: dict[str, str | None]
) -> list[tuple[bytes, bytes]]:
    return _local().issue_messages(evidence, now, **headers)


def _ready() -> int:
    return os.getpid()


class PooledCrypto:
    """The calls on ``workers`` processes; called from the node's worker threads.

    ``on_lost`` is told each time the workers are lost and started again. After
    ``FAILING_AFTER`` losses with no call succeeding between them (workers that cannot start:
    key files gone, say), ``health`` says so, and the node reports itself not ready.
    """

    FAILING_AFTER = 3

    def __init__(
        self, config: NodeConfig, workers: int, on_lost: Callable[[], None] | None = None
    ) -> None:
        self._config = config
        self._workers = workers
        self._on_lost = on_lost
        self._lock = threading.Lock()
        self._losses_in_a_row = 0
        self._pool = self._new_pool()

    def _new_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=self._workers,
            # spawn: a fresh interpreter that inherits no sockets, locks or open store
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(self._config, os.getpid()),
        )
        for _ in range(self._workers):
            pool.submit(_ready)  # start them now, not on the first message
        return pool

    def _call(self, function: Any, *args: Any) -> Any:
        pool = self._pool
        try:
            result = pool.submit(function, *args).result()
        except BrokenProcessPool:
            # A worker died (killed, out of memory). The message this was for stays where it
            # was and is tried again; the pool is made anew for it and for everything after.
            with self._lock:
                if self._pool is pool:
                    self._losses_in_a_row += 1
                    log.error(
                        "crypto_workers_lost",
                        workers=self._workers,
                        in_a_row=self._losses_in_a_row,
                    )
                    if self._on_lost is not None:
                        self._on_lost()
                    self._pool = self._new_pool()
            raise
        self._losses_in_a_row = 0
        return result

    def health(self) -> str | None:
        if self._losses_in_a_row >= self.FAILING_AFTER:
            return (
                f"the crypto workers were lost {self._losses_in_a_row} times in a row "
                "(see crypto_workers_lost in the log)"
            )
        return None

    def verify_envelope(
        self, path: Path, now: dt.datetime, peer: str | None
    ) -> EnvelopeVerification:
        result: EnvelopeVerification = self._call(_verify_envelope, path, now, peer)
        return result

    def sign_evidence(self, evidence: Evidence, now: dt.datetime) -> bytes:
        signed: bytes = self._call(_sign_evidence, evidence, now)
        return signed

    def evidence_message(
        self, evidence: Evidence, xml: bytes, now: dt.datetime, **headers: str | None
    ) -> bytes:
        message: bytes = self._call(_evidence_message, evidence, xml, now, headers)
        return message

    def issue_messages(
        self, evidence: Sequence[Evidence], now: dt.datetime, **headers: str | None
    ) -> list[tuple[bytes, bytes]]:
        signed: list[tuple[bytes, bytes]] = self._call(
            _issue_messages, list(evidence), now, headers
        )
        return signed

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


Crypto = LocalCrypto | PooledCrypto
