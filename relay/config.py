"""Node configuration: the frozen dataclasses a node runs with (config/README.md describes
every key), and the embedded default. ``relay.config_file`` reads them from TOML.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from interop.errors import ConfigurationError
from interop.limits import DEFAULT_LIMITS, KNOWN_OWN_LIMITS, MiB
from interop.providers import BUILTIN_DIRECTORY, Provider
from interop.reasons import Reason
from relay.crl_fetch import CrlSettings
from relay.tsa import TsaClientConfig

MAX_PROCESSES = 64
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True, slots=True)
class Listener:
    host: str
    port: int
    # Submission only: mutual TLS with the provider's own systems, or plain on loopback.
    require_tls: bool = True


@dataclass(frozen=True, slots=True)
class PeerConfig:
    id: str
    route: tuple[str, int] | None  # None: MX discovery
    mx_port: int = 465  # port on MX hosts (implicit TLS, like the peer listener)
    process_cas: tuple[Path, ...] = ()
    tls_cas: tuple[Path, ...] = ()
    tls_names: tuple[str, ...] = ()
    message_limit: int = DEFAULT_LIMITS.cross_provider_message
    domain: str = ""
    crl_urls: tuple[str, ...] = ()  # where its CAs' CRLs are published (relay.crls)


@dataclass(frozen=True, slots=True)
class Identity:
    process_cert: Path
    process_key: Path
    tls_cert: Path
    tls_key: Path
    tsa_cert: Path | None = None
    tsa_key: Path | None = None


@dataclass(frozen=True, slots=True)
class Timers:
    # INTEROP-PROFILE.md §4: relay and evidence timeouts default to 24 h (profile choice).
    relay_timeout: float = 24 * 3600.0
    evidence_timeout: float = 24 * 3600.0
    # §4: back-off from 1 min doubling to 30 min.
    retry_initial: float = 60.0
    retry_max: float = 1800.0
    # RFC 5321 §4.5.3.2: 5 min for commands, 10 min between DATA blocks; idle peers are cut.
    command_timeout: float = 300.0
    data_timeout: float = 600.0
    # How long a DATA transfer may run below limits.min_transfer_rate before it is cut with
    # 421 4.4.2 (a peer trickling bytes would otherwise hold a connection slot for ever).
    slow_transfer_limit: float = 60.0
    # An Evidence message a peer has not accepted by then is given up (state ``expired``,
    # kep_messages_expired_total): Postfix's maximal_queue_lifetime is 5 days too.
    evidence_lifetime: float = 5 * 86400.0
    # How often the queue manager looks for due work when nothing wakes it.
    queue_poll: float = 1.0


@dataclass(frozen=True, slots=True)
class Limits:
    max_connections: int = 200
    max_connections_per_peer: int = 40
    # SMTP connections the node (its processes together, each at least one) opens to one peer
    # at a time. aiosmtplib does not pipeline: each message waits for four replies in turn,
    # each for a turn of a busy event loop, so under load these are what keeps Evidence
    # messages leaving as fast as they are made (measured: 8 left them queued 7 s, 32 for
    # 0.4 s; README, Benchmarks). Below what a peer's MTA allows one client (Postfix: 50).
    sending_connections_per_peer: int = 32
    max_recipients: int = 1000
    # Same-provider limit of this provider (hs01: 100 MiB per KEP-DOMAIN.md); peers' in [peers].
    own_message_limit: int = DEFAULT_LIMITS.cross_provider_message
    default_quota: int = 100 * MiB  # KEP-DOMAIN.md: 100 MB free per account
    # Bytes per second below which a DATA transfer counts as slow (timers.slow_transfer_limit);
    # Postfix's smtpd_min_data_rate is 500. A 25 MiB envelope at the floor takes 15 hours.
    min_transfer_rate: int = 500
    # NOOP, RSET, HELP, VRFY, EXPN, HELO and EHLO since the last message accepted; beyond it the
    # session is cut with 421 4.4.2. A client needs one or two between transactions (Postfix
    # counts the same "junk" commands: smtpd_junk_command_limit).
    max_junk_commands: int = 20
    # Times processing a received message may fail on something in the message before it is put
    # aside (state ``quarantined``) and its sender gets evidence; trouble of the machine (disk,
    # database) retries without counting.
    max_processing_attempts: int = 5


@dataclass(frozen=True, slots=True)
class StoreConfig:
    # sqlite:///path (the embedded default: data_dir/state.sqlite3) or postgresql://…
    # (every node of the provider, on any machine; docs/deployment.md).
    url: str | None = None
    # SQLite's synchronous setting: FULL (the default) syncs every commit but a claim's
    # (relay.store.messages: losing one costs nothing).
    sqlite_synchronous: str = "FULL"
    # How long a node process's claim on a message lasts unless renewed (every third of it):
    # a dead process's messages are taken up by the others this long after its last renewal.
    lease: float = 60.0
    # PostgreSQL connections per node process (one per processing slot and a few more).
    connections: int = 12

    def url_for(self, data_dir: Path) -> str:
        return self.url or f"sqlite:///{data_dir / 'state.sqlite3'}"


@dataclass(frozen=True, slots=True)
class Retention:
    # INTEROP-PROFILE.md §7: the gateway's copy of a message goes as soon as its obligations
    # are met; an operator may keep copies this many days longer (default: not at all).
    keep_content_days: float = 0.0


@dataclass(frozen=True, slots=True)
class AccountConfig:
    address: str
    type: str = "send-receive"  # or "receive-only"
    state: str = "active"  # or "pending", "closed"
    quota: int | None = None
    # Who may sign for it (profile §1): the holder's TC Kimlik No or YKN for a person, the
    # authorised operators' for a legal person.
    holder: str | None = None
    operators: tuple[str, ...] = ()
    etebligat: bool = False  # may send eTebligat (an authorised public body; §4)


@dataclass(frozen=True, slots=True)
class NodeConfig:
    provider: Provider
    data_dir: Path
    source: str  # the file it came from, or "embedded default"
    peer_listener: Listener
    submission_listener: Listener
    # /metrics, /healthz, /readyz (docs/operations.md); None: off.
    monitoring_listener: Listener | None = None
    dev_pki: Path | None = None
    identity: Identity | None = None
    user_cas: tuple[Path, ...] = ()
    tsa_cas: tuple[Path, ...] = ()
    crls: tuple[Path, ...] = ()
    require_crl: bool = True
    # Where the CRLs of user_cas and tsa_cas are published, and how CRLs are fetched.
    crl_urls: tuple[str, ...] = ()
    crl: CrlSettings = field(default_factory=CrlSettings)
    # [log] level: debug, info, warning or error (relay.logs).
    log_level: str = "info"
    peers: tuple[PeerConfig, ...] = ()
    timers: Timers = field(default_factory=Timers)
    limits: Limits = field(default_factory=Limits)
    retention: Retention = field(default_factory=Retention)
    # The provider's RFC 3161 TSA over HTTP ([tsa]); None: the development PKI's TSA, or the
    # [identity] TSA key. A production configuration must have one of the two (profile §5).
    tsa: TsaClientConfig | None = None
    accounts: tuple[AccountConfig, ...] = ()
    # KEP-DOMAIN.md: the default keeps receiving when full; a provider may refuse instead.
    refuse_when_full: bool = False
    store: StoreConfig = field(default_factory=StoreConfig)
    # This node's name, unique among the provider's nodes (default: the host's name); its
    # processes claim work as "name/1", "name/2", … (relay.store.messages).
    name: str = field(default_factory=socket.gethostname)
    # Node processes on this machine, sharing the listeners (SO_REUSEPORT) and the store.
    processes: int = field(default_factory=lambda: os.cpu_count() or 1)
    # Where a small message's disk and store work runs: "loop", on the event loop's thread
    # with its verifying and signing (no hand-offs to threads: relay.steps says why), or
    # "threads", so that a slow disk or store never holds the loop (SMALL_WORK).
    small_work: str = "loop"

    @property
    def store_url(self) -> str:
        return self.store.url_for(self.data_dir)

    def peer(self, provider_id: str) -> PeerConfig | None:
        for peer in self.peers:
            if peer.id == provider_id:
                return peer
        return None


class ConfigurationProblems(ConfigurationError):
    """Every problem found in one configuration, one line each ("FILE: section.key: what is
    wrong"); ``detail`` holds them one per line, and ``kep-relay`` prints each as a line."""

    def __init__(self, problems: Sequence[str] | str, *, reason: Reason | None = None) -> None:
        self.problems = tuple(problems.splitlines() if isinstance(problems, str) else problems)
        super().__init__("\n".join(self.problems), reason=reason)


SMALL_WORK = ("loop", "threads")


def own_message_limit(provider_id: str) -> int:
    """The default limit on a message between two users of ``provider_id``: hs01's own is
    larger (KEP-DOMAIN.md), every other provider's is the cross-provider one (profile §2)."""
    return KNOWN_OWN_LIMITS.get(provider_id, DEFAULT_LIMITS.cross_provider_message)


def embedded_default(data_dir: Path = Path("var")) -> NodeConfig:
    """No file: hs01 on loopback, data under ./var, a dev PKI made on first run."""
    return NodeConfig(
        provider=BUILTIN_DIRECTORY["hs01"],
        data_dir=data_dir,
        source="embedded default",
        peer_listener=Listener("127.0.0.1", 2525),
        submission_listener=Listener("127.0.0.1", 2587, require_tls=False),
        monitoring_listener=Listener("127.0.0.1", 9465, require_tls=False),
        dev_pki=data_dir / "pki",
        limits=Limits(own_message_limit=own_message_limit("hs01")),
    )
