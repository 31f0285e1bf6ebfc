"""A gateway time-stamping with a TSA nobody here wrote (``openssl ts -reply`` over HTTP): while
the TSA is down the work waits (nothing is issued unstamped, nothing is put aside) and a metric
says so; when it comes back, the message goes on and its evidence carries OpenSSL's tokens."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from interop.envelope.verify import verify_envelope
from relay.keys import verifiers_from_pki
from tests.relay.gateways import (
    Mesh,
    free_port,
    make_mesh,
    remmd_of_subject,
    scrape,
    send,
    subject,
    value,
    wait_evidence,
)
from tests.tools.tsa_front import OPENSSL_POLICY, Front, serving, tsa_folder

pytestmark = pytest.mark.tool

SENDER, RECIPIENT = "ali.yilmaz@hs01.kep.tr", "ayse.demir@hs02.kep.tr"


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[tuple[Mesh, Path, int]]:
    port = free_port()
    tsa = (
        f'[tsa]\nurl = "http://127.0.0.1:{port}/tsa"\npolicy = "{OPENSSL_POLICY}"\n'
        "timeout = 2\nretries = 0\n"
    )
    built = make_mesh(tmp_path, ["hs01", "hs02"], extra={"hs01": tsa})
    folder = tsa_folder(built.pki, tmp_path / "openssl-tsa")
    yield built, folder, port
    built.stop()


def test_a_tsa_that_is_down_defers_the_work(mesh: tuple[Mesh, Path, int]) -> None:
    built, folder, port = mesh
    hs01, hs02 = built["hs01"], built["hs02"]
    hs01.start()
    hs02.start()
    title = subject()
    send(hs01, SENDER, RECIPIENT, subject=title)
    time.sleep(3)
    # Accepted (250), but no evidence without a token: the submission waits, uncounted.
    assert hs01.query("SELECT state, attempts FROM messages WHERE kind = 'submission'") == [
        ("received", 0)
    ]
    assert hs01.query("SELECT COUNT(*) FROM evidence") == [(0,)]
    assert value(scrape(hs01), "kep_tsa_failures_total", why="unreachable") >= 1
    with serving(Front(folder), port):
        remmd = remmd_of_subject(hs01, SENDER, title)
        wait_evidence(
            hs01, remmd, {("DeliveryNonDeliveryToRecipient", "Delivery", RECIPIENT)}, timeout=60
        )
    # hs01's own evidence messages carry OpenSSL's time-stamp, and it verifies.
    verifiers = verifiers_from_pki(built.pki)
    (filed,) = [p for p in hs01.mail(SENDER, "Delil") if "-n0." in p.name]
    with filed.open("rb") as stream:
        result = verify_envelope(stream, verifiers, dt.datetime.now(dt.UTC))
    assert result.ok, result.detail
    stamp = result.envelope_signature.timestamp if result.envelope_signature else None
    assert stamp is not None and stamp.ok and "KEP Dev TSA" in stamp.tsa
