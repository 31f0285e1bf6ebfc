"""Crypto workers (relay/crypto.py): same answers as in-process, errors and lost workers
handled, and no worker outlives its node."""

from __future__ import annotations

import dataclasses
import os
import pickle
import signal
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from interop.errors import KepError
from interop.evidence.codes import Event, EvidenceType
from interop.evidence.issue import follow_up
from interop.pki.devpki import DevPki
from interop.providers import BUILTIN_DIRECTORY
from relay.config import NodeConfig, load
from relay.crypto import LocalCrypto, PooledCrypto, _ready, local_crypto
from relay.pkidir import write_pki
from tests.helpers import NOW, make_dispatch
from tests.relay.gateways import make_mesh, wait_for


@pytest.fixture(scope="module")
def hs02_config(pki: DevPki, tmp_path_factory: pytest.TempPathFactory) -> NodeConfig:
    folder = tmp_path_factory.mktemp("node")
    write_pki(pki, folder / "pki")
    (folder / "hs02.toml").write_text(
        '[node]\nprovider = "hs02"\ndata_dir = "data"\ndev_pki = "pki"\n'
        '[peers.hs01]\nroute = "127.0.0.1:1"\n'
    )
    return load(folder / "hs02.toml")


@pytest.fixture(scope="module")
def pooled(hs02_config: NodeConfig) -> Iterator[PooledCrypto]:
    crypto = PooledCrypto(hs02_config, 1)
    yield crypto
    crypto.close()


@pytest.fixture(scope="module")
def local(hs02_config: NodeConfig) -> LocalCrypto:
    return local_crypto(hs02_config, instance=0)


def test_a_worker_verifies_as_the_node_does(
    pki: DevPki, pooled: PooledCrypto, local: LocalCrypto, tmp_path: Path
) -> None:
    good = tmp_path / "good.eml"
    good.write_bytes(make_dispatch(pki).dispatch)
    forged = tmp_path / "forged.eml"
    forged.write_bytes(make_dispatch(pki, envelope_signer="hs03").dispatch)
    for path in (good, forged):
        there = pooled.verify_envelope(path, NOW, "hs01")
        here = local.verify_envelope(path, NOW, "hs01")
        assert (there.ok, there.reason, there.detail) == (here.ok, here.reason, here.detail)
        assert there.checks == here.checks
        assert there.envelope.original == here.envelope.original
    assert pooled.verify_envelope(good, NOW, "hs01").ok
    signer = pooled.verify_envelope(good, NOW, "hs01").evidence
    assert signer is not None and signer.signer == pki.providers["hs01"].process.certificate


def test_an_unreadable_envelope_raises_the_same_error_through_a_worker(
    pooled: PooledCrypto, local: LocalCrypto, tmp_path: Path
) -> None:
    junk = tmp_path / "junk.eml"
    junk.write_bytes(b"Subject: not an envelope\r\n\r\nhello\r\n")
    with pytest.raises(KepError) as here:
        local.verify_envelope(junk, NOW, "hs01")
    with pytest.raises(KepError) as there:
        pooled.verify_envelope(junk, NOW, "hs01")
    assert type(there.value) is type(here.value)
    assert (there.value.reason, there.value.detail) == (here.value.reason, here.value.detail)


def test_evidence_issued_by_a_worker_verifies(
    pki: DevPki, pooled: PooledCrypto, local: LocalCrypto, tmp_path: Path
) -> None:
    about = make_dispatch(pki).submission
    evidence = [
        follow_up(
            about,
            BUILTIN_DIRECTORY["hs02"],
            EvidenceType.RelayREMMDAcceptanceRejection,
            Event.Acceptance,
            NOW,
            recipient=1,
        ),
        follow_up(
            about,
            BUILTIN_DIRECTORY["hs02"],
            EvidenceType.DeliveryNonDeliveryToRecipient,
            Event.Delivery,
            NOW,
            recipient=1,
        ),
    ]
    signed = pooled.issue_messages(evidence, NOW, dispatch_message_id="<d@hs01.kep.tr>")
    assert len(signed) == 2
    for number, (e, (xml, message)) in enumerate(zip(evidence, signed, strict=True)):
        path = tmp_path / f"evidence-{number}.eml"
        path.write_bytes(message)
        result = local.verify_envelope(path, NOW, "hs02")
        assert result.ok, result.detail
        assert result.evidence is not None and result.evidence.evidence is not None
        assert result.evidence.evidence.identifier == e.identifier
        assert result.envelope.evidence_xml == xml


def test_a_lost_worker_fails_one_call_and_the_next_gets_a_new_one(
    hs02_config: NodeConfig, tmp_path: Path, pki: DevPki
) -> None:
    crypto = PooledCrypto(hs02_config, 1)
    try:
        good = tmp_path / "good.eml"
        good.write_bytes(make_dispatch(pki).dispatch)
        first = crypto._call(_ready)
        os.kill(first, signal.SIGKILL)
        with pytest.raises(BrokenProcessPool):
            crypto.verify_envelope(good, NOW, "hs01")
        assert crypto.verify_envelope(good, NOW, "hs01").ok
        assert crypto._call(_ready) != first
    finally:
        crypto.close()


def test_workers_that_cannot_start_make_the_node_not_ready(
    hs02_config: NodeConfig, tmp_path: Path, pki: DevPki
) -> None:
    """A worker reads the keys when it starts; if it cannot, every call fails, each loss is
    reported, and after three in a row ``health`` says what is wrong (/readyz: crypto)."""
    good = tmp_path / "good.eml"
    good.write_bytes(make_dispatch(pki).dispatch)
    gone = dataclasses.replace(hs02_config, dev_pki=tmp_path / "no-such-pki")
    lost: list[int] = []
    crypto = PooledCrypto(gone, 1, on_lost=lambda: lost.append(1))
    try:
        for attempt in range(1, PooledCrypto.FAILING_AFTER + 1):
            assert crypto.health() is None
            with pytest.raises(BrokenProcessPool):
                crypto.verify_envelope(good, NOW, "hs01")
            assert len(lost) == attempt
        problem = crypto.health()
        assert problem is not None and "lost 3 times in a row" in problem
    finally:
        crypto.close()
    # A working pool is healthy again as soon as a call succeeds.
    working = PooledCrypto(hs02_config, 1)
    try:
        working._losses_in_a_row = PooledCrypto.FAILING_AFTER
        assert working.health() is not None
        assert working.verify_envelope(good, NOW, "hs01").ok
        assert working.health() is None
    finally:
        working.close()


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_no_worker_outlives_its_node(tmp_path: Path, how: int) -> None:
    mesh = make_mesh(tmp_path, ["hs01"])
    hs01 = mesh["hs01"]
    hs01.start()
    try:
        assert hs01.process is not None
        node = hs01.process.pid
        # Two workers (spawned) and multiprocessing's resource tracker.
        wait_for(lambda: len(_children(node)) >= 2, timeout=30, what="crypto workers")
        workers = _children(node)
        hs01.stop(how)
        wait_for(
            lambda: not any(_alive(pid) for pid in workers),
            timeout=15,
            what=f"workers {sorted(workers)} to leave after {signal.Signals(how).name}",
        )
    finally:
        mesh.stop()


def test_certificates_and_crls_travel_between_processes_as_der(pki: DevPki) -> None:
    """Verification results carry the chains and CRLs consulted (kept with the evidence); a
    worker's result must pickle back to the node (a regression: CRLs did not)."""
    for crl in pki.crls:
        again = pickle.loads(pickle.dumps(crl))  # noqa: S301 (our own bytes)
        assert again.public_bytes(Encoding.DER) == crl.public_bytes(Encoding.DER)
    cert = pki.providers["hs01"].process.certificate
    assert pickle.loads(pickle.dumps(cert)) == cert  # noqa: S301 (our own bytes)
