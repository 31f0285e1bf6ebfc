"""A running node learns of a revocation from a CRL it fetches, without a restart.

Real node processes (tests/relay/gateways.py) with hs02's CRL location pointing at a real HTTP
server (tests/relay/crl_server.py). hs02's TLS certificate is revoked in a new CRL of the TLS
CA; hs02 connecting as a peer (Python's smtplib with hs02's certificate) is then refused
by hs01 before MAIL, while hs01 keeps running.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
from pathlib import Path

from cryptography import x509

from interop.pki.devpki import DevPki
from tests.interop.crls import make_crl
from tests.relay.crl_server import CrlServer, serving
from tests.relay.gateways import Gateway, Mesh, make_mesh, peer_client, scrape, value, wait_for

PATH = "/tls-ca.crl"
# Fetched every second (a year-long CRL is fetched every max_interval), retried after one.
QUICK = """
[crl]
min_interval = "1s"
max_interval = "1s"
retry_initial = "1s"
retry_max = "2s"
"""


def tls_crl(pki: DevPki, number: int, *revoked: str) -> x509.CertificateRevocationList:
    now = dt.datetime.now(dt.UTC)
    return make_crl(
        pki.tls_ca,
        now - dt.timedelta(minutes=1),
        now + dt.timedelta(days=1),
        [(pki.providers[p].tls.certificate, now - dt.timedelta(minutes=1)) for p in revoked],
        number=number,
    )


def locate_crls(gateway: Gateway, peer: str, url: str) -> None:
    """``peer``'s CRL location in ``gateway``'s configuration, and quick refreshes."""
    text = gateway.config.read_text()
    table = f"[peers.{peer}]\n"
    assert table in text
    gateway.config.write_text(text.replace(table, f'{table}crl_urls = ["{url}"]\n') + QUICK)


def peer_refused(mesh: Mesh, gateway: Gateway) -> bool:
    """Whether ``gateway`` refuses hs02 as a peer (its TLS certificate maps to no provider)."""
    with peer_client(mesh, "hs02", gateway) as client:
        client.ehlo("gw.hs02.kep.tr")
        code, _ = client.mail("ali.yilmaz@hs02.kep.tr")
        client.rset()
    return code == 550


def events(gateway: Gateway, name: str) -> list[dict[str, object]]:
    lines = (json.loads(line) for line in gateway.log.read_text().splitlines() if line)
    return [line for line in lines if line.get("event") == name]


def test_a_peer_revoked_in_a_fetched_crl_is_refused_without_a_restart(tmp_path: Path) -> None:
    mesh = make_mesh(tmp_path, ["hs01", "hs02"])
    hs01 = mesh["hs01"]
    with serving(CrlServer()) as server:
        server.put(PATH, tls_crl(mesh.pki, 2))
        locate_crls(hs01, "hs02", server.url(PATH))
        hs01.start()
        try:
            assert hs01.process is not None
            pid = hs01.process.pid
            wait_for(lambda: bool(events(hs01, "crl_fetched")), what="the first CRL fetched")
            assert not peer_refused(mesh, hs01)
            server.put(PATH, tls_crl(mesh.pki, 3, "hs02"))
            wait_for(lambda: peer_refused(mesh, hs01), what="hs02 refused after the new CRL")
            assert hs01.process.poll() is None and hs01.process.pid == pid  # no restart
            assert [e["number"] for e in events(hs01, "crl_fetched")] == [2, 3]
            assert events(hs01, "peer_unknown")
            # Kept on disk, in DER, for the next start and for when the server is down.
            (kept,) = (hs01.data / "crls").glob("*.crl")
            assert x509.load_der_x509_crl(
                kept.read_bytes()
            ).get_revoked_certificate_by_serial_number(
                mesh.pki.providers["hs02"].tls.certificate.serial_number
            )
            samples = scrape(hs01)
            assert value(samples, "kep_crl_fetches_total", result="new") == 2
            issuer = mesh.pki.tls_ca.certificate.subject.rfc4514_string()
            left = value(samples, "kep_crl_next_update_seconds", issuer=issuer)
            assert 22 * 3600 < left <= 24 * 3600
        finally:
            hs01.stop()
    # Started again with the server gone: the kept CRL is in use from the start.
    hs01.start()
    try:
        assert peer_refused(mesh, hs01)
        wait_for(
            lambda: value(scrape(hs01), "kep_crl_fetches_total", result="unreachable") >= 1,
            what="a failed fetch counted",
        )
        assert events(hs01, "crl_fetch_failed")
    finally:
        hs01.stop()


def test_one_node_process_fetches_and_every_one_installs(tmp_path: Path) -> None:
    mesh = make_mesh(tmp_path, ["hs01", "hs02"], processes={"hs01": 2})
    hs01 = mesh["hs01"]
    with serving(CrlServer()) as server:
        server.put(PATH, tls_crl(mesh.pki, 2))
        locate_crls(hs01, "hs02", server.url(PATH))
        hs01.start()
        try:
            wait_for(
                lambda: {1, 2} <= {e.get("process") for e in events(hs01, "listening")},
                what="both node processes listening",
            )
            wait_for(lambda: bool(events(hs01, "crl_fetched")), what="the first CRL fetched")
            server.put(PATH, tls_crl(mesh.pki, 3, "hs02"))
            # The kernel spreads connections over both processes: ten refused in a row.
            wait_for(
                lambda: all(peer_refused(mesh, hs01) for _ in range(10)),
                what="every node process refusing hs02",
            )
            fetched = events(hs01, "crl_fetched")
            assert [e["number"] for e in fetched] == [2, 3]
            assert {e.get("process") for e in fetched} == {1}  # one fetches for the machine
            # Node process 2 installs what process 1 kept (it started with number 2 or 1), on
            # its next look at the kept folder (every 5 s): the ten connections above may all
            # have gone to process 1, so wait for it rather than assume it happened.
            wait_for(
                lambda: 2 in {e.get("process") for e in events(hs01, "crls_installed")},
                what="node process 2 installing the kept CRL",
            )
        finally:
            hs01.stop()


def test_a_crl_location_added_at_a_sighup_is_fetched_at_once(tmp_path: Path) -> None:
    mesh = make_mesh(tmp_path, ["hs01", "hs02"])
    hs01 = mesh["hs01"]
    with serving(CrlServer()) as server:
        server.put(PATH, tls_crl(mesh.pki, 2, "hs02"))
        hs01.start()
        try:
            assert not peer_refused(mesh, hs01)
            locate_crls(hs01, "hs02", server.url(PATH))
            assert hs01.process is not None
            hs01.process.send_signal(signal.SIGHUP)
            wait_for(lambda: peer_refused(mesh, hs01), what="hs02 refused after the SIGHUP")
            (reloaded,) = events(hs01, "config_reloaded")
            assert reloaded["changed"] == ["crl", "peers.hs02"]
            assert [e["number"] for e in events(hs01, "crl_fetched")] == [2]
        finally:
            hs01.stop()
