"""CRLs fetched from a real HTTP server, checked, kept on disk and refreshed (relay/crls.py).

The node's clock is frozen here and moved by the tests; the server is ``http.server`` on a
thread (tests/relay/crl_server.py). What a running node does with them is
tests/relay/test_live_trust.py.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from interop.errors import ConfigurationError
from interop.pathval import Failure
from interop.pki.devpki import DevPki, generate
from interop.revocation import RevocationData, crl_number
from interop.trust import TrustList
from interop.verifiers import Verifiers
from relay.config_file import from_mapping
from relay.context import build_context
from relay.crl_fetch import CrlSettings
from relay.crls import CrlRefresher, HeldCrls, KeptCrls, locations
from relay.keys import read_pki, trust_from_pki
from relay.metrics import StateCollector
from relay.store import Store
from tests.interop.crls import make_crl
from tests.relay.crl_server import CrlServer, serving

START = dt.datetime.now(dt.UTC).replace(microsecond=0)
HOUR = dt.timedelta(hours=1)
PATH = "/tls-ca.crl"


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture(scope="module")
def pki() -> DevPki:
    return generate(START - 5 * HOUR, ["hs01", "hs02"])


@pytest.fixture
def server() -> Iterator[CrlServer]:
    with serving(CrlServer()) as crls:
        yield crls


class Node:
    """What a node process holds (HeldCrls over a kept folder), and the fetching part."""

    def __init__(
        self, pki: DevPki, folder: Path, url: str, settings: CrlSettings | None = None
    ) -> None:
        self.pki = pki
        self.clock = Clock(START)
        self.counted: list[tuple[str, str]] = []
        self.trust = trust_from_pki(pki, crl_locations={"hs02": (url,)})
        self.held = HeldCrls(pki.crls, KeptCrls(folder))
        self.refresher = CrlRefresher(
            self.held, lambda where, result: self.counted.append((where, result)), self.clock
        )
        self.refresher.configure(settings or CrlSettings(), locations(self.trust))

    def refresh(self) -> int:
        async def run() -> int:
            try:
                return await self.refresher.refresh()
            finally:
                await self.refresher.aclose()

        return asyncio.run(run())

    def tls_of(self, provider: str) -> Failure | None:
        """How hs01 judges ``provider``'s TLS certificate now, with what it holds."""
        verifiers = Verifiers(self.trust, RevocationData.of(self.held.current()))
        cert = self.pki.providers[provider].tls.certificate
        return (
            verifiers.tls(provider)
            .validate(cert, [], self.clock(), [f"gw.{provider}.kep.tr"])
            .failure
        )

    def newest_number(self) -> int | None:
        crl = self.held.newest(self.pki.tls_ca.certificate.subject)
        return None if crl is None else crl_number(crl)


def tls_crl(
    pki: DevPki, number: int, *revoked: str, hours: float = 24
) -> x509.CertificateRevocationList:
    """A CRL of the TLS CA issued at START, revoking the TLS certificates of ``revoked``."""
    return make_crl(
        pki.tls_ca,
        START - HOUR,
        START + dt.timedelta(hours=hours),
        [(pki.providers[p].tls.certificate, START - HOUR) for p in revoked],
        number=number,
    )


def test_a_crl_is_fetched_checked_kept_and_used(
    pki: DevPki, server: CrlServer, tmp_path: Path
) -> None:
    server.put(PATH, tls_crl(pki, 2, "hs02"))
    node = Node(pki, tmp_path / "crls", server.url(PATH))
    assert node.tls_of("hs02") is None  # the PKI's own CRL revokes nothing
    with capture_logs() as logs:
        assert node.refresh() == 1
    assert node.counted == [(server.url(PATH), "new")]
    assert node.tls_of("hs02") is Failure.REVOKED
    assert node.tls_of("hs01") is None
    (kept,) = (tmp_path / "crls").glob("*.crl")
    assert crl_number(x509.load_der_x509_crl(kept.read_bytes())) == 2
    fetched = [e for e in logs if e["event"] == "crl_fetched"]
    assert fetched and fetched[0]["number"] == 2 and fetched[0]["location"] == server.url(PATH)
    # A node starting again (nothing fetched yet) holds what was kept.
    again = HeldCrls(pki.crls, KeptCrls(tmp_path / "crls"))
    assert crl_number(again.newest(pki.tls_ca.certificate.subject)) == 2  # type: ignore[arg-type]


def test_the_next_crl_is_fetched_at_a_share_of_the_time_left(
    pki: DevPki, server: CrlServer, tmp_path: Path
) -> None:
    server.put(PATH, tls_crl(pki, 2, hours=10))
    settings = CrlSettings(max_interval=86400.0)
    node = Node(pki, tmp_path / "crls", server.url(PATH), settings)
    assert node.refresh() == 1
    # 10 h left at START: the next fetch after half of them.
    assert node.refresher.due_in() == pytest.approx(5 * 3600)
    server.put(PATH, tls_crl(pki, 3, "hs02", hours=34))
    node.clock.now = START + 4 * HOUR
    assert node.refresh() == 0 and server.seen(PATH) == 1  # not due yet
    node.clock.now = START + 5 * HOUR
    assert node.refresh() == 1
    assert node.newest_number() == 3
    assert node.tls_of("hs02") is Failure.REVOKED
    # The same one again: unchanged, and due after half of the 29 h it has left.
    node.clock.now = START + 19.5 * HOUR
    assert node.refresh() == 0
    assert node.counted[-1] == (server.url(PATH), "unchanged")
    assert node.refresher.due_in() == pytest.approx(0.5 * 14.5 * 3600)


def test_an_hour_at_most_between_fetches_however_long_a_crl_lasts(
    pki: DevPki, server: CrlServer, tmp_path: Path
) -> None:
    server.put(PATH, tls_crl(pki, 2, hours=24 * 365))
    node = Node(pki, tmp_path / "crls", server.url(PATH))
    node.refresh()
    assert node.refresher.due_in() == pytest.approx(3600)


def test_a_location_that_is_down_leaves_the_kept_crl_in_use(pki: DevPki, tmp_path: Path) -> None:
    crls = CrlServer()
    with serving(crls):
        crls.put(PATH, tls_crl(pki, 2, "hs02", hours=2))
        node = Node(pki, tmp_path / "crls", crls.url(PATH))
        assert node.refresh() == 1
    # The server is gone: each fetch fails, and is tried again after a doubling back-off.
    node.clock.now = START + HOUR
    with capture_logs() as logs:
        assert node.refresh() == 0
        assert node.refresher.due_in() == pytest.approx(30)
        node.clock.now += dt.timedelta(seconds=30)
        node.refresh()
    assert node.refresher.due_in() == pytest.approx(60)
    assert node.counted[1:] == [(crls.url(PATH), "unreachable")] * 2
    failed = [e for e in logs if e["event"] == "crl_fetch_failed"]
    assert [e["failures"] for e in failed] == [1, 2] and failed[0]["why"] == "unreachable"
    # What was kept stays in use, by this process and by one starting now.
    assert node.tls_of("hs02") is Failure.REVOKED
    restarted = HeldCrls(pki.crls, KeptCrls(tmp_path / "crls"))
    assert crl_number(restarted.newest(pki.tls_ca.certificate.subject)) == 2  # type: ignore[arg-type]
    # The metrics say how old it is and how little is left: under an hour, KepCrlStale's line.
    collector = StateCollector(
        provider="hs01",
        store_url=Store(tmp_path / "state.sqlite3").url,
        data_dir=tmp_path,
        peers=[],
        crls=restarted.current,
        clock=lambda: node.clock().timestamp(),
    )
    issuer = pki.tls_ca.certificate.subject.rfc4514_string()
    samples = _scrape(collector)
    assert samples[("kep_crl_age_seconds", issuer)] == pytest.approx(2 * 3600 + 30)
    assert samples[("kep_crl_next_update_seconds", issuer)] == pytest.approx(3600 - 30)
    assert samples[("kep_crl_next_update_seconds", issuer)] < 3600
    # Past nextUpdate the node fails closed: the CRL is no longer current.
    node.clock.now = START + 3 * HOUR
    assert node.tls_of("hs01") is Failure.REVOCATION_UNKNOWN


def _scrape(collector: StateCollector) -> dict[tuple[str, str], float]:
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {
        (s.name, s.labels.get("issuer", "")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("kep_crl_")
    }


def test_a_crl_not_signed_by_a_ca_of_its_location_is_refused(
    pki: DevPki, server: CrlServer, tmp_path: Path
) -> None:
    forged = make_crl(pki.user_ca, START - HOUR, START + 24 * HOUR, number=9)
    # The TLS CA's name, the user CA's key: it claims to be the TLS CA's.
    forged_as_tls = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(pki.tls_ca.certificate.subject)
        .last_update(START - HOUR)
        .next_update(START + 24 * HOUR)
        .add_extension(x509.CRLNumber(9), critical=False)
        .sign(pki.user_ca.signer.key, forged.signature_hash_algorithm)  # type: ignore[arg-type]
    )
    node = Node(pki, tmp_path / "crls", server.url(PATH))
    for crl in (forged_as_tls, forged):  # a genuine CRL of a CA this location is not for
        server.put(PATH, crl)
        node.refresher.configure(CrlSettings(), locations(node.trust))  # due again
        with capture_logs() as logs:
            assert node.refresh() == 0
        assert node.counted[-1] == (server.url(PATH), "wrong_issuer")
        assert [e["why"] for e in logs if e["event"] == "crl_fetch_failed"] == ["wrong_issuer"]
    assert not list((tmp_path / "crls").glob("*.crl"))
    assert node.newest_number() == 1  # the PKI's own


def test_an_older_crl_never_replaces_a_newer_one(
    pki: DevPki, server: CrlServer, tmp_path: Path
) -> None:
    node = Node(pki, tmp_path / "crls", server.url(PATH))
    server.put(PATH, tls_crl(pki, 3, "hs02"))
    assert node.refresh() == 1
    server.put(PATH, tls_crl(pki, 2))  # a mirror behind the times
    node.refresher.configure(CrlSettings(), locations(node.trust))
    assert node.refresh() == 0
    assert node.counted[-1] == (server.url(PATH), "older")
    assert node.newest_number() == 3 and node.tls_of("hs02") is Failure.REVOKED
    kept = KeptCrls(tmp_path / "crls")
    assert not kept.keep(tls_crl(pki, 2))  # nor when handed to the folder directly
    assert not kept.keep(tls_crl(pki, 3))  # the same number is not later either
    assert [crl_number(c) for c in kept.read()] == [3]
    assert kept.keep(tls_crl(pki, 4))


def test_what_is_not_a_usable_crl_is_refused(
    pki: DevPki, server: CrlServer, tmp_path: Path
) -> None:
    node = Node(pki, tmp_path / "crls", server.url(PATH), CrlSettings(max_size=4096))
    delta = make_crl(
        pki.tls_ca, START - HOUR, START + HOUR, number=5, extensions=[x509.DeltaCRLIndicator(4)]
    )
    for body, status, result in [
        (b"not a CRL", 200, "unreadable"),
        (b"0" * 5000, 200, "too_big"),
        (None, 404, "http_status"),
        (delta.public_bytes(Encoding.DER), 200, "incomplete"),  # a delta CRL held as whole
    ]:
        server.files = {PATH: body} if body is not None else {}
        server.status = status
        node.refresher.configure(node.refresher.settings, locations(node.trust))  # due now
        assert node.refresh() == 0
        assert node.counted[-1] == (server.url(PATH), result)
    assert not (tmp_path / "crls").exists()


def test_a_crl_past_its_next_update_is_kept_but_counts_as_a_failure(
    pki: DevPki, server: CrlServer, tmp_path: Path
) -> None:
    late = make_crl(pki.tls_ca, START - 3 * HOUR, START - HOUR, number=2)
    server.put(PATH, late)
    node = Node(pki, tmp_path / "crls", server.url(PATH))
    assert node.refresh() == 1  # later than the PKI's own, so kept (a proof for past times)
    assert node.counted == [(server.url(PATH), "stale")]
    assert node.refresher.due_in() == pytest.approx(30)  # the back-off, not the schedule


def test_an_unreadable_kept_file_is_moved_aside(pki: DevPki, tmp_path: Path) -> None:
    kept = KeptCrls(tmp_path / "crls")
    assert kept.keep(tls_crl(pki, 2))
    (broken,) = (tmp_path / "crls").glob("*.crl")
    broken.write_bytes(b"half a CRL")
    with capture_logs() as logs:
        held = HeldCrls(pki.crls, kept)
        assert held.current() == pki.crls
    assert [e["event"] for e in logs] == ["crl_kept_unreadable"]
    assert broken.with_name(broken.name + ".unreadable").exists()


def test_locations_come_from_the_trust_list(pki: DevPki) -> None:
    trust = trust_from_pki(
        pki,
        crl_locations={"hs01": ("http://a/1.crl",), "hs02": ("http://a/1.crl",)},
        own_crl_locations=("http://b/users.crl",),
    )
    found = {location.url: location.cas for location in locations(trust)}
    assert set(found) == {"http://a/1.crl", "http://b/users.crl"}
    assert set(found["http://a/1.crl"]) == {pki.process_ca.certificate, pki.tls_ca.certificate}
    assert set(found["http://b/users.crl"]) == {pki.user_ca.certificate, pki.process_ca.certificate}
    assert locations(TrustList.build(list(trust), [])) == locations(trust)[:1]


def test_crl_keys_of_the_configuration(tmp_path: Path) -> None:
    base = {"node": {"provider": "hs01", "dev_pki": "p"}}
    config = from_mapping(
        {
            **base,
            "trust": {"crl_urls": ["http://crl.example/users.crl"]},
            "peers": {"hs02": {"route": "127.0.0.1:1", "crl_urls": ["https://c.example/x"]}},
            "crl": {"max_interval": "30m", "min_interval": "10s", "max_size": 65536},
        },
        "x.toml",
        tmp_path,
    )
    assert config.crl_urls == ("http://crl.example/users.crl",)
    assert config.peers[0].crl_urls == ("https://c.example/x",)
    assert (config.crl.max_interval, config.crl.min_interval) == (1800.0, 10.0)
    assert config.crl.max_size == 65536 and config.crl.timeout == 30.0
    cases: list[tuple[dict[str, object], str]] = [
        ({"trust": {"crl_urls": ["ftp://x/y"]}}, r"x\.toml: trust\.crl_urls: 'ftp://x/y' is not"),
        ({"crl": {"refresh_fraction": 2}}, r"x\.toml: crl\.refresh_fraction must be in \(0, 1\]"),
        ({"crl": {"min_interval": "2h"}}, r"crl\.min_interval must be at least 1 s and at most"),
        ({"crl": {"every": 1}}, r"x\.toml: crl\.every: unknown key"),
    ]
    for table, problem in cases:
        with pytest.raises(ConfigurationError, match=problem):
            from_mapping({**base, **table}, "x.toml", tmp_path)


def test_crls_installed_reach_every_check_and_the_evidence_material(tmp_path: Path) -> None:
    """``use_crls`` after a CRL is kept: the stages, the crypto calls and the TSA client
    check with it, and new evidence keeps it for verification later (profile §7)."""
    config = from_mapping(
        {"node": {"provider": "hs01", "dev_pki": "pki", "data_dir": "data"}}, "t", tmp_path
    )
    context = build_context(config)
    try:
        pki = read_pki(tmp_path / "pki")
        before = context.validation_material()
        later = make_crl(pki.process_ca, START - HOUR, START + 24 * HOUR, number=2)
        assert context.crls.kept.keep(later)
        context.use_crls()
        assert later in context.verifiers.revocation.crls
        assert context.crypto.verifiers is context.verifiers
        assert context.stamping._validator is context.verifiers.tsa
        material = context.validation_material()
        assert ("crl", later.public_bytes(Encoding.DER)) in material
        assert ("crl", later.public_bytes(Encoding.DER)) not in before
    finally:
        context.store.close()
