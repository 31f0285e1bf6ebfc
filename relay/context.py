"""Everything a running node holds, built once from its configuration.

Keys and certificates are read here through ``relay.keys`` (the one module that reads
private keys); stages get ready values: the signer, the verifiers, TLS contexts, routes,
mailboxes, the spool and the store.

Trust, CRLs and accounts may change while the node runs (a CRL fetched, SIGHUP:
``relay.crls``, ``relay.reload``): stages read ``context.verifiers`` and
``context.mailboxes`` each time they need them, and ``use_verifiers`` switches every holder at
once; a check already running finishes with what it had.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from interop.pki.devpki import DevPki, DevUser, generate, tls_host
from interop.pki.signer import Signer
from interop.providers import BUILTIN_PROVIDERS, ETEBLIGAT_PROVIDER, Provider
from interop.revocation import RevocationData
from interop.trust import TrustList
from interop.verifiers import Verifiers
from relay.config import NodeConfig
from relay.crls import FOLDER as CRL_FOLDER
from relay.crls import HeldCrls, KeptCrls
from relay.crypto import (
    Crypto,
    LocalCrypto,
    configured_trust,
    dev_crypto,
    dev_verifiers,
    local_crypto,
)
from relay.keys import (
    DEV_WARNING,
    ensure_dev_pki,
    read_pki,
)
from relay.mailbox import Account, AccountState, AccountType, Mailboxes
from relay.metrics import Metrics
from relay.readings import READ_WHOLE, Readings, Received, receive
from relay.spool import Spool
from relay.steps import IN_TURN, ON_THREADS, Steps
from relay.store import MessageRow, Store, open_database
from relay.tsa import Stamping

Clock = Callable[[], dt.datetime]
log = structlog.get_logger("kep.node")

# Seconds a node waits at start for a PostgreSQL store that is not there yet (started with it).
STORE_WAIT = 30.0


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class NodeContext:
    config: NodeConfig
    provider: Provider
    process: Signer
    # Time-stamps for what the node's own process signs (Dispatches, checkpoints); the crypto
    # workers have their own (relay/tsa.py Stamping).
    stamping: Stamping
    verifiers: Verifiers
    tls_cert: Path
    tls_key: Path
    tls_cafile: Path
    routes: dict[str, tuple[str, int] | None]
    mailboxes: Mailboxes
    spool: Spool
    store: Store
    # Verifying and signing (relay/crypto.py), in this process.
    crypto: Crypto
    # The CRLs held: the configuration's and those fetched and kept (relay/crls.py).
    crls: HeldCrls
    clock: Clock = utc_now
    metrics: Metrics = field(default_factory=Metrics)
    # The name this node process claims work under (relay.store.messages): "node/index".
    owner: str = "node/1"
    # Intake's readings of the envelopes it accepted, for this process's verifier.
    readings: Readings = field(default_factory=Readings)
    _validation: list[tuple[str, bytes]] | None = field(default=None, repr=False)
    # Every TLS context made, so TLS CAs added to the trust list reach them (trust_tls_cas).
    _tls_contexts: list[ssl.SSLContext] = field(default_factory=list, repr=False)

    def server_tls(self) -> ssl.SSLContext:
        """Mutual TLS for the peer listener: a client certificate is required (§2)."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.tls_cafile))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_cert_chain(str(self.tls_cert), str(self.tls_key))
        self._tls_contexts.append(context)
        return context

    def client_tls(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.tls_cafile))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(self.tls_cert), str(self.tls_key))
        self._tls_contexts.append(context)
        return context

    def use_verifiers(self, verifiers: Verifiers) -> None:
        """From now on every check uses ``verifiers`` (trust or CRLs changed): the stages,
        the crypto calls, the TSA client's token check, and the validation material kept with
        new evidence (profile §7). Call it on the event loop's thread."""
        self.verifiers = verifiers
        self.crypto.verifiers = verifiers
        self.stamping.use_validator(verifiers.tsa)
        self._validation = None

    def use_crls(self) -> None:
        """The CRLs held now (``crls``) with the trust list in use."""
        current = self.verifiers
        revocation = RevocationData.of(self.crls.current(), require=current.revocation.require)
        self.use_verifiers(Verifiers(current.trust, revocation))

    def trust_tls_cas(self, trust: TrustList) -> None:
        """The TLS CAs of ``trust`` into every TLS context made (SIGHUP): a CA added is
        accepted in handshakes from now on. OpenSSL cannot drop a CA from a context, so one
        removed stays in its list until a restart; its certificates still map to no provider
        in the trust-list check after every handshake (``PeerIntake.identify``, the transport),
        which refuses them. Call it on the event loop's thread."""
        pem = "".join(c.public_bytes(Encoding.PEM).decode() for e in trust for c in e.tls_cas)
        for context in self._tls_contexts:
            context.load_verify_locations(cadata=pem)

    def peer_tls_name(self, provider_id: str) -> str:
        entry = self.verifiers.trust.get(provider_id)
        return entry.tls_names[0] if entry else tls_host(provider_id)

    def now(self) -> float:
        """The node's one clock, as seconds since the epoch (deadlines, back-off, records)."""
        return self.clock().timestamp()

    def validation_material(self) -> list[tuple[str, bytes]]:
        """(kind, DER) of what verifying this node's own evidence needs offline (profile §7):
        its process certificate's chain and its CAs, the TSAs' roots, and the CRLs of all of
        them that the node holds. The same for every evidence until the trust changes."""
        if self._validation is None:
            own = self.verifiers.trust.get(self.provider.id)
            certificates = [
                *self.process.certificates,
                *(own.process_cas if own else ()),
                *self.verifiers.trust.tsa_cas,
            ]
            if self.stamping.local is not None:
                certificates += self.stamping.local.signer.certificates
            issuers = {c.subject for c in certificates}
            material = {c.public_bytes(Encoding.DER): "certificate" for c in certificates}
            for crl in self.verifiers.revocation.crls:
                if crl.issuer in issuers:
                    material[crl.public_bytes(Encoding.DER)] = "crl"
            self._validation = [(kind, der) for der, kind in material.items()]
        return self._validation

    def fresh_until(self, row: MessageRow) -> float | None:
        """Until when files written for ``row`` (claimed by this process) need no search for
        an earlier attempt's copy (``MessageRow.first_claim_until``); None: search."""
        return row.first_claim_until(self.owner, self.config.store.lease)

    def receive(self, row: MessageRow) -> Received:
        """The received message ``row`` as its stage reads it (blocking): a small one's bytes
        held in the store (``Store.holds_content``; else, or when an earlier release wrote
        one, its spool file read whole), a large one's spool file, with intake's reading of
        it when this process kept one that still describes them (``relay.readings``). Raises
        ``OSError``."""
        reading = self.readings.take(row.id, self.now())
        return receive(self.spool.path(row.id), reading, self.held(row))

    def held(self, row: MessageRow) -> bytes | None:
        """The bytes the store holds for ``row`` (blocking), asked for only where it may hold
        them: a message of up to ``READ_WHOLE`` where the store keeps content
        (``Store.holds_content``). None: its spool file has them."""
        if row.size <= READ_WHOLE and self.store.holds_content:
            return self.store.content(row.id)
        return None

    @property
    def small_steps(self) -> Steps:
        """Where a small message's disk and store work runs (``[node] small_work``): on the
        event loop's thread, each step in turn with the connections, or on threads
        (``relay.steps`` says why)."""
        return IN_TURN if self.config.small_work == "loop" else ON_THREADS

    def claim_lost(self, kind: str, queue_id: str) -> None:
        """This process stalled past its lease and another took the message over: its late
        write was refused (``Superseded``), so nothing is done twice; count and say so."""
        self.metrics.claims_lost.labels(kind).inc()
        log.warning("claim_lost", queue_id=queue_id, kind=kind)

    def stamp_function(self) -> Callable[[bytes], bytes] | None:
        """Stamps a signature value now; raises ``TsaUnavailable`` when no token can be had."""
        return self.stamping.function(self.clock())


def build_context(
    config: NodeConfig, clock: Clock = utc_now, index: int = 1, owner: str | None = None
) -> NodeContext:
    """The context of node process ``index`` (1…``config.processes``), claiming work as
    ``owner`` (default ``name/index``; an operator's command claims under a name of its own,
    so no node process takes its claim for one of its own)."""
    data = config.data_dir
    data.mkdir(parents=True, exist_ok=True)
    owner = owner or f"{config.name}/{index}"
    if config.dev_pki is not None:
        return _dev_context(config, clock, owner)
    return _configured_context(config, clock, owner)


def config_accounts(config: NodeConfig, pki: DevPki | None) -> list[Account]:
    """The accounts the configuration gives ([[accounts]]; with a development PKI and none
    listed, the PKI's users of this provider)."""
    accounts = _accounts_from_config(config)
    if pki is None:
        return accounts
    return _with_dev_signers(accounts, pki) or [
        _dev_account(u, config.limits.default_quota)
        for u in pki.users
        if u.provider_id == config.provider.id
    ]


def _accounts_from_config(config: NodeConfig) -> list[Account]:
    return [
        Account(
            a.address.lower(),
            AccountType(a.type),
            AccountState(a.state),
            a.quota or config.limits.default_quota,
            holder=a.holder,
            operators=a.operators,
            etebligat=a.etebligat,
        )
        for a in config.accounts
    ]


def _dev_account(user: DevUser, quota: int) -> Account:
    """A development user's account: a person's held by its certificate's number, a legal
    person's (MERSİS) with that number as its operator; hs01's legal person is the public body
    the development PKI authorises for eTebligat."""
    return Account(
        user.address,
        AccountType.SEND_RECEIVE,
        AccountState.ACTIVE,
        quota,
        holder=None if user.legal_person else user.number or None,
        operators=(user.number,) if user.legal_person and user.number else (),
        etebligat=user.legal_person and user.provider_id == ETEBLIGAT_PROVIDER,
    )


def _with_dev_signers(accounts: list[Account], pki: DevPki) -> list[Account]:
    """Configured accounts of development users that name no signer get the user's number,
    so a configuration listing accounts (their types, states, quotas) still works with the
    development PKI's users."""
    users = {u.address: u for u in pki.users}

    def filled(account: Account) -> Account:
        user = users.get(account.address)
        if user is None or account.signers():
            return account
        dev = _dev_account(user, account.quota)
        return dataclasses.replace(account, holder=dev.holder, operators=dev.operators)

    return [filled(a) for a in accounts]


def _dev_context(config: NodeConfig, clock: Clock, owner: str) -> NodeContext:
    assert config.dev_pki is not None
    folder = config.dev_pki
    # Every built-in provider, so other nodes' configurations can share this folder.
    providers = sorted({*BUILTIN_PROVIDERS, config.provider.id, *(p.id for p in config.peers)})
    if ensure_dev_pki(folder, lambda: generate(clock(), providers)):
        log.warning("development_pki_made", folder=str(folder), note=DEV_WARNING)
    pki = read_pki(folder)
    crypto = dev_crypto(config, pki, instance=os.getpid())
    return _node_context(
        config,
        clock,
        crypto,
        config_accounts(config, pki),
        tls=(
            folder / "providers" / config.provider.id / "tls.crt",
            folder / "providers" / config.provider.id / "tls.key",
            folder / "ca" / "tls-ca.crt",
        ),
        owner=owner,
    )


def verifiers_for(config: NodeConfig) -> Verifiers:
    """The verifiers a node with ``config`` uses (for the operator tools' ``--config``):
    its trust, the configuration's CRLs and those the node fetched and kept."""
    if config.dev_pki is not None:
        configured = dev_verifiers(config, read_pki(config.dev_pki))
    else:
        configured = Verifiers(*configured_trust(config))
    held = held_crls(config, configured.revocation.crls)
    return Verifiers(
        configured.trust, RevocationData.of(held.current(), require=config.require_crl)
    )


def held_crls(
    config: NodeConfig, configured: tuple[x509.CertificateRevocationList, ...]
) -> HeldCrls:
    """The configuration's CRLs and the kept ones of ``config``'s data folder."""
    return HeldCrls(configured, KeptCrls(config.data_dir / CRL_FOLDER))


def tls_cas_file(config: NodeConfig, trust: TrustList) -> Path:
    """The TLS CAs of ``trust`` in one PEM file of the data folder (a production node's TLS
    contexts load it)."""
    run = config.data_dir / "run"
    run.mkdir(parents=True, exist_ok=True)
    cafile = run / "tls-cas.pem"
    # Written aside and renamed: the node's other processes may be reading it.
    aside = run / f"tls-cas.pem.{os.getpid()}"
    aside.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for e in trust for c in e.tls_cas))
    aside.replace(cafile)
    return cafile


def _configured_context(config: NodeConfig, clock: Clock, owner: str) -> NodeContext:
    identity = config.identity
    assert identity is not None
    crypto = local_crypto(config, instance=os.getpid())
    cafile = tls_cas_file(config, crypto.verifiers.trust)
    return _node_context(
        config,
        clock,
        crypto,
        _accounts_from_config(config),
        tls=(identity.tls_cert, identity.tls_key, cafile),
        owner=owner,
    )


def _node_context(
    config: NodeConfig,
    clock: Clock,
    crypto: LocalCrypto,
    accounts: list[Account],
    *,
    tls: tuple[Path, Path, Path],  # certificate, key, CA bundle of the peers' TLS CAs
    owner: str,
) -> NodeContext:
    store = Store(
        open_database(
            config.store_url,
            synchronous=config.store.sqlite_synchronous,
            connections=config.store.connections,
            retry_for=STORE_WAIT,
        ),
        clock=lambda: clock().timestamp(),
    )
    context = NodeContext(
        config=config,
        provider=config.provider,
        process=crypto.process,
        stamping=crypto.stamping,
        verifiers=crypto.verifiers,
        tls_cert=tls[0],
        tls_key=tls[1],
        tls_cafile=tls[2],
        routes={p.id: p.route for p in config.peers},
        mailboxes=Mailboxes(
            config.data_dir / "mail", accounts, store, clock=lambda: clock().timestamp()
        ),
        spool=Spool(config.data_dir / "spool", owner),
        store=store,
        crypto=crypto,
        crls=held_crls(config, crypto.verifiers.revocation.crls),
        clock=clock,
        owner=owner,
    )
    context.use_crls()  # those fetched by an earlier run are used from the start
    return context
