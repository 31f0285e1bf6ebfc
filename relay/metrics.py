"""Prometheus metrics of a node (names prefixed ``kep_``; docs/operations.md lists them).

Two kinds. Events are counted where they happen, by the stage that sees them (``Metrics``).
State is read when Prometheus scrapes (``StateCollector``): queue depth and age, evidence
awaited from peers, the ledger, certificate expiry, the CRLs held and free disk, straight
from the store on a read-only connection of its own, so a scrape never waits for or disturbs
processing.
Evidence counts and round trips are read from the ledger as it grows, so evidence issued by
the operator tools (a Retrieval when ``mailbox read`` opens a message) is counted too.

Labels are bounded: provider ids from the trust list, stage names, profile reasons, evidence
types and events, reply code classes. Never an address, a domain of a user, or a subject.
"""

from __future__ import annotations

import bisect
import shutil
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from interop.errors import SmtpReply
from interop.reasons import Reason
from interop.revocation import CRL, newest_by_issuer
from interop.trust import TrustList
from relay.lifecycle import HELD, PENDING, Kind, State
from relay.store.reader import StoreReader
from relay.tsa import TsaUnavailable, tsa_certificate

if TYPE_CHECKING:
    from relay.context import NodeContext

# 1 ms to 2 days: an SMTP reply and an evidence a peer returns the next day fit one scale.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 900.0, 1800.0, 3600.0, 3 * 3600.0, 6 * 3600.0, 12 * 3600.0, 86400.0, 2 * 86400.0,
)  # fmt: skip
KiB, MiB = 1024, 1024 * 1024
SIZE_BUCKETS = (
    4 * KiB, 16 * KiB, 64 * KiB, 256 * KiB, 1 * MiB, 4 * MiB, 10 * MiB, 25 * MiB, 50 * MiB,
    100 * MiB, 128 * MiB,
)  # fmt: skip


def code_class(code: int) -> str:
    """``2xx``, ``4xx`` or ``5xx`` of an SMTP reply code; ``none`` (0) when no reply came."""
    return f"{code // 100}xx" if 200 <= code < 600 else "none"


# Refusals are labelled by their RFC 3463 enhanced status code, turned into a word here: the
# codes a node gives are few and fixed, so the label stays bounded.
_REFUSAL_REASONS = {
    "5.3.4": "size",
    "5.7.1": "not_permitted",
    "5.7.0": "no_client_certificate",
    "5.6.0": "bad_envelope",
    "5.6.11": "bare_line_ending",
    "4.3.0": "storage",
    "4.3.2": "busy",
    "4.4.2": "session_cut",
    "5.1.7": "bad_sender",
    "5.1.3": "bad_recipient",
    "4.5.3": "too_many_recipients",
}


def refusal_reason(reply: SmtpReply) -> str:
    if reply.enhanced in _REFUSAL_REASONS:
        return _REFUSAL_REASONS[reply.enhanced]
    return "protocol" if reply.enhanced.startswith("5.5.") or 500 <= reply.code < 510 else "other"


class Metrics:
    """The counters and histograms stages update; one registry per node."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.received = Counter(
            "kep_messages_received",
            "SMTP transactions that reached the end of DATA, by listener, peer and result"
            " (accepted, repeated, rejected, deferred)",
            ["listener", "peer", "result"],
            registry=r,
        )
        self.refusals = Counter(
            "kep_smtp_refusals",
            "4xx and 5xx replies this node gave, by listener, peer, reason and code class",
            ["listener", "peer", "reason", "code_class"],
            registry=r,
        )
        self.relayed = Counter(
            "kep_messages_relayed",
            "Delivery attempts to peers, by peer, kind (dispatch, evidence), result (sent,"
            " deferred, failed) and reply code class",
            ["peer", "kind", "result", "code_class"],
            registry=r,
        )
        # With several node processes (relay.processes) a gauge's value is combined over them
        # as multiprocess_mode says; alone, the mode changes nothing.
        self.peer_up = Gauge(
            "kep_peer_up",
            "1 when the last delivery attempt to the peer got an SMTP answer, 0 when it could"
            " not connect",
            ["peer"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.peer_last_contact = Gauge(
            "kep_peer_last_contact_timestamp_seconds",
            "When the peer last answered a delivery attempt",
            ["peer"],
            registry=r,
            multiprocess_mode="max",
        )
        self.connections_open = Gauge(
            "kep_smtp_connections_open",
            "SMTP connections open on the peer and submission listeners",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.draining = Gauge(
            "kep_node_draining",
            "1 while the node drains after SIGTERM",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.verifications = Counter(
            "kep_verifications",
            "Signature and certificate checks, by what was checked (dispatch, evidence,"
            " user_message), result (valid, invalid) and profile reason",
            ["check", "result", "reason"],
            registry=r,
        )
        self.tls_handshakes = Counter(
            "kep_tls_handshakes",
            "TLS handshakes, by endpoint (peer and submission listeners, outbound), TLS version"
            " and the result for the other side's certificate (accepted, refused: valid but"
            " not of the expected provider, missing, untrusted, failed: no TLS agreed)",
            ["endpoint", "version", "certificate"],
            registry=r,
        )
        self.acceptance_seconds = Histogram(
            "kep_smtp_acceptance_seconds",
            "From MAIL FROM to the 250 after DATA (spool and store synced)",
            ["listener"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.delivery_seconds = Histogram(
            "kep_local_delivery_seconds",
            "From acceptance to the message lying in the recipient's mailbox, by the provider"
            " it came from",
            ["peer"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.message_size = Histogram(
            "kep_message_size_bytes",
            "Size of accepted messages, by listener",
            ["listener"],
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        self.processing_failures = Counter(
            "kep_processing_failures",
            "Stage runs that raised and left their message to be tried again, by stage kind",
            ["kind"],
            registry=r,
        )
        self.sessions_cut = Counter(
            "kep_smtp_sessions_cut",
            "SMTP sessions this node ended with 421 4.4.2, by listener, peer and why"
            " (slow_transfer: DATA below limits.min_transfer_rate for"
            " timers.slow_transfer_limit; silence: no data for timers.data_timeout; junk: more"
            " than limits.max_junk_commands commands that do no work)",
            ["listener", "peer", "why"],
            registry=r,
        )
        self.quarantined = Counter(
            "kep_messages_quarantined",
            "Received messages put aside after their processing failed"
            " limits.max_processing_attempts times, by kind and the reason the sender was given",
            ["kind", "reason"],
            registry=r,
        )
        self.expired = Counter(
            "kep_messages_expired",
            "Messages to peers given up at the end of their lifetime (Dispatches at"
            " timers.relay_timeout, Evidence messages at timers.evidence_lifetime), by peer"
            " and kind",
            ["peer", "kind"],
            registry=r,
        )
        self.tsa_failures = Counter(
            "kep_tsa_failures",
            "Work that waits because no time-stamp token could be had from the TSA, by why"
            " (unreachable, timeout, http_status, refused, bad_reply, untrusted, clock, ...)",
            ["why"],
            registry=r,
        )
        self.claims_lost = Counter(
            "kep_claims_lost",
            "Messages a node process was working on when its lease ran out and another took"
            " them over (its work on them void), by kind: a process stalled past [store] lease",
            ["kind"],
            registry=r,
        )
        self.claims_recovered = Counter(
            "kep_claims_recovered",
            "Messages taken up from node processes whose leases ran out (a process died)",
            registry=r,
        )
        self.crl_fetches = Counter(
            "kep_crl_fetches",
            "CRL fetches from the trust list's locations, by location and result (new,"
            " unchanged, older: the location answered; unreachable, timeout, http_status,"
            " too_big, content_encoding, unreadable, incomplete, wrong_issuer, stale, storage:"
            " it did not give a CRL that could be used)",
            ["location", "result"],
            registry=r,
        )

    def failed(self, exc: BaseException) -> None:
        """Count what a failure says about the node's dependencies (the TSA, for now)."""
        if isinstance(exc, TsaUnavailable):
            self.tsa_failures.labels(exc.why).inc()

    def verified(self, check: str, ok: bool, reason: Reason | None) -> None:
        self.verifications.labels(
            check, "valid" if ok else "invalid", reason.name if reason else "none"
        ).inc()

    def register_process(self) -> None:
        """Memory, CPU, file descriptors and Python's version (the serving node only)."""
        disable_created_metrics()  # type: ignore[no-untyped-call]  # rate() needs no *_created
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)


def register_state(registry: CollectorRegistry, context: NodeContext) -> None:
    """What is read from the store and the certificates at scrape time (``StateCollector``):
    once per machine, by the node or by the supervisor of its node processes."""
    certificates = [
        ("process", context.process.certificate),
        ("tls", x509.load_pem_x509_certificate(context.tls_cert.read_bytes())),
    ]
    if context.stamping.local is not None:
        certificates.append(("tsa", context.stamping.local.signer.certificate))
    provider = context.provider.id
    registry.register(
        StateCollector(
            provider=provider,
            store_url=context.store.url,
            data_dir=context.config.data_dir,
            peers=[e.id for e in context.verifiers.trust if e.id != provider],
            # The trust list and the CRLs in use at scrape time (both change without a restart).
            certificates=lambda: certificates_of(provider, certificates, context.verifiers.trust),
            crls=context.crls.current,
            clock=context.now,
        )
    )


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    provider: str
    role: str  # process, tls, tsa, process_ca, tls_ca, user_ca, tsa_ca
    subject: str
    not_after: float


def certificates_of(
    provider: str,
    own: Iterable[tuple[str, x509.Certificate]],
    trust: TrustList,
) -> list[CertificateInfo]:
    """The certificates a node depends on: its own, and every CA of its trust list."""

    def info(owner: str, role: str, cert: x509.Certificate) -> CertificateInfo:
        names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        subject = str(names[0].value) if names else cert.subject.rfc4514_string()
        return CertificateInfo(owner, role, subject, cert.not_valid_after_utc.timestamp())

    found = [info(provider, role, cert) for role, cert in own]
    for entry in trust:
        found += [info(entry.id, "process_ca", c) for c in entry.process_cas]
        found += [info(entry.id, "tls_ca", c) for c in entry.tls_cas]
    found += [info("users", "user_ca", c) for c in trust.user_cas]
    found += [info("tsa", "tsa_ca", c) for c in trust.tsa_cas]
    unique = {(c.provider, c.role, c.subject): c for c in found}
    return list(unique.values())


@dataclass
class _EvidenceTally:
    """Evidence counted from the ledger, from the record the node started at."""

    last_seq: int = 0
    counts: dict[tuple[str, str, str, str], int] = field(default_factory=lambda: defaultdict(int))
    round_trips: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    round_trip_sums: dict[tuple[str, str], float] = field(
        default_factory=lambda: defaultdict(float)
    )

    def observe_round_trip(self, key: tuple[str, str], seconds: float) -> None:
        buckets = self.round_trips.setdefault(key, [0] * (len(LATENCY_BUCKETS) + 1))
        buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.round_trip_sums[key] += seconds


class StateCollector(Collector):
    """What the store says at scrape time (see the module's docstring)."""

    def __init__(
        self,
        *,
        provider: str,
        store_url: str,
        data_dir: Path,
        peers: Iterable[str],
        certificates: Callable[[], Iterable[CertificateInfo]] = lambda: (),
        crls: Callable[[], Iterable[CRL]] = lambda: (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.provider = provider
        self.clock = clock
        self.store_url = store_url
        self.data_dir = data_dir
        self.peers = sorted(set(peers))
        self.certificates = certificates
        self.crls = crls
        self._lock = threading.Lock()
        self._tally = _EvidenceTally()
        with self._connect() as db:  # counters start at the ledger's length when the node starts
            self._tally.last_seq = db.ledger_length()

    def _connect(self) -> StoreReader:
        return StoreReader(self.store_url)

    def collect(self) -> Iterator[Metric]:
        now = self.clock()
        with self._lock, self._connect() as db:
            yield from self._queue(db, now)
            yield from self._awaited(db, now)
            yield from self._evidence(db)
            yield from self._ledger(db)
        yield from self._certificates()
        yield from self._crls(now)
        yield from self._disk()

    def _queue(self, db: StoreReader, now: float) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "kep_queue_messages",
            "Messages waiting in a stage (received, queued, sending) or held for an operator"
            " (invalid, unmatched, quarantined, hold), by kind and state",
            labels=["kind", "state"],
        )
        oldest = GaugeMetricFamily(
            "kep_queue_oldest_age_seconds",
            "Age of the oldest message still waiting (received, queued or sending), by kind",
            labels=["kind"],
        )
        counts: dict[tuple[Kind, State], int] = defaultdict(int)
        first: dict[Kind, float] = {}
        for kind, state, count, created in db.queue():
            counts[(kind, state)] = count
            if state in PENDING:
                first[kind] = min(first.get(kind, created), created)
        for kind in Kind:
            for state in (*PENDING, *HELD):
                depth.add_metric([kind.value, state.value], counts[(kind, state)])
            oldest.add_metric([kind.value], max(0.0, now - first[kind]) if kind in first else 0.0)
        yield depth
        yield oldest

    def _awaited(self, db: StoreReader, now: float) -> Iterator[Metric]:
        awaited = GaugeMetricFamily(
            "kep_evidence_awaited",
            "Dispatches sent to the peer whose Delivery evidence has not come yet",
            labels=["peer"],
        )
        oldest = GaugeMetricFamily(
            "kep_evidence_awaited_oldest_seconds",
            "How long the oldest Dispatch sent to the peer has waited for its Delivery evidence",
            labels=["peer"],
        )
        found: dict[str, tuple[int, float | None]] = {
            peer: (count, sent) for peer, count, sent in db.awaited()
        }
        for peer in sorted({*self.peers, *found}):
            count, sent = found.get(peer, (0, None))
            awaited.add_metric([peer], count)
            oldest.add_metric([peer], max(0.0, now - sent) if sent is not None else 0.0)
        yield awaited
        yield oldest

    def _evidence(self, db: StoreReader) -> Iterator[Metric]:
        tally = self._tally
        for seq, direction, type_, event, row_peer, kind, created, sent in db.evidence_since(
            tally.last_seq
        ):
            tally.last_seq = seq
            peer = row_peer or self.provider
            tally.counts[(direction, type_, event, peer)] += 1
            if direction == "received" and kind is Kind.DISPATCH_OUT and sent is not None:
                tally.observe_round_trip((peer, type_), max(0.0, created - sent))
        counts = CounterMetricFamily(
            "kep_evidence",
            "Evidence recorded in the ledger since the node started, by direction (issued,"
            " received), type, event and the peer it goes to or came from",
            labels=["direction", "type", "event", "peer"],
        )
        for labels, value in sorted(tally.counts.items()):
            counts.add_metric(list(labels), value)
        yield counts
        round_trip = HistogramMetricFamily(
            "kep_evidence_round_trip_seconds",
            "From a Dispatch's 250 at the peer to each evidence the peer returns for it, by peer"
            " and evidence type",
            labels=["peer", "type"],
        )
        for key, buckets in sorted(tally.round_trips.items()):
            cumulative, total = [], 0
            for bound, count in zip((*LATENCY_BUCKETS, float("inf")), buckets, strict=True):
                total += count
                cumulative.append((_le(bound), total))
            round_trip.add_metric(list(key), cumulative, tally.round_trip_sums[key])
        yield round_trip

    def _ledger(self, db: StoreReader) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "kep_ledger_records",
            "Records in the evidence ledger (profile §7)",
            value=db.ledger_length(),
        )
        last = db.last_checkpoint()
        yield GaugeMetricFamily(
            "kep_ledger_last_checkpoint_timestamp_seconds",
            "When the last signed checkpoint of the ledger was taken (0: never)",
            value=last[0] if last else 0.0,
        )
        yield GaugeMetricFamily(
            "kep_ledger_checkpoint_records",
            "Ledger records the last signed checkpoint covers",
            value=last[1] if last else 0,
        )
        newest = db.newest_archive_token()
        tsa = tsa_certificate(newest) if newest else None
        yield GaugeMetricFamily(
            "kep_ledger_archive_tsa_expiry_timestamp_seconds",
            "notAfter of the TSA certificate of the ledger's newest archive stamp (0: none):"
            " the TSA must be renewed before it, or the archive chain ends",
            value=tsa.not_valid_after_utc.timestamp() if tsa else 0.0,
        )

    def _certificates(self) -> Iterator[Metric]:
        expiry = GaugeMetricFamily(
            "kep_certificate_expiry_timestamp_seconds",
            "notAfter of each certificate the node uses or trusts, by provider, role and subject",
            labels=["provider", "role", "subject"],
        )
        for cert in self.certificates():
            expiry.add_metric([cert.provider, cert.role, cert.subject], cert.not_after)
        yield expiry

    def _crls(self, now: float) -> Iterator[Metric]:
        age = GaugeMetricFamily(
            "kep_crl_age_seconds",
            "Age of the newest CRL held of each issuer (now - thisUpdate)",
            labels=["issuer"],
        )
        left = GaugeMetricFamily(
            "kep_crl_next_update_seconds",
            "Seconds until the nextUpdate of the newest CRL held of each issuer (negative:"
            " past, and certificates of that CA are refused)",
            labels=["issuer"],
        )
        for issuer, crl in sorted(
            newest_by_issuer(self.crls()).items(), key=lambda item: item[0].rfc4514_string()
        ):
            name = issuer.rfc4514_string()
            age.add_metric([name], now - crl.last_update_utc.timestamp())
            if crl.next_update_utc is not None:
                left.add_metric([name], crl.next_update_utc.timestamp() - now)
        yield age
        yield left

    def _disk(self) -> Iterator[Metric]:
        usage = shutil.disk_usage(self.data_dir)
        yield GaugeMetricFamily(
            "kep_data_disk_free_bytes",
            "Free bytes on the file system of the data folder (spool, store, mailboxes)",
            value=usage.free,
        )
        yield GaugeMetricFamily(
            "kep_data_disk_size_bytes",
            "Size of the file system of the data folder",
            value=usage.total,
        )


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)
