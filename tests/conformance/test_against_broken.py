"""The suite is honest: against a deliberately broken gateway, the cases that check what it
breaks fail, and the run does not pass."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
from pathlib import Path

import pytest

from conformance import report
from conformance.identity import Pki
from conformance.main import run_suite
from conformance.registry import RUN
from conformance.runner import FAIL, PASS
from conformance.session import Options
from interop.pki.devpki import generate
from relay.keys import write_pki
from tests.conformance.broken import Breakage, BrokenGateway
from tests.conformance.test_against_kep_relay import need_xsd
from tests.helpers import need_tool
from tests.relay.gateways import free_port

pytestmark = pytest.mark.tool

CHOSEN = "KEP-TR-01,KEP-TR-02,KEP-TR-05,KEP-TR-06,KEP-TR-07,KEP-OF-01,KEP-EVF-01,KEP-SIG-01"
# Breakage → (cases that must fail, cases that must still pass: the failure is the breakage's).
EXPECTED = {
    Breakage.ACCEPTS_EVERYTHING: (
        {"KEP-TR-01", "KEP-TR-02", "KEP-TR-05", "KEP-TR-06", "KEP-TR-07", "KEP-OF-01"},
        set(),
    ),
    Breakage.SILENT: (
        {"KEP-OF-01", "KEP-EVF-01", "KEP-SIG-01"},
        {"KEP-TR-01", "KEP-TR-02", "KEP-TR-05", "KEP-TR-06"},
    ),
    Breakage.WRONG_CERTIFICATE: ({"KEP-OF-01", "KEP-EVF-01", "KEP-SIG-01"}, {"KEP-TR-05"}),
    Breakage.WRONG_EVIDENCE: ({"KEP-OF-01", "KEP-EVF-01"}, {"KEP-TR-06"}),
}


@pytest.fixture(scope="module")
def pki_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("broken") / "pki"
    write_pki(
        generate(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5), ["hs01", "hs02", "hs03"]),
        folder,
    )
    return folder


@pytest.mark.parametrize("breakage", list(Breakage), ids=lambda b: b.name.lower())
def test_named_cases_fail_against_a_broken_gateway(breakage: Breakage, pki_folder: Path) -> None:
    need_tool("openssl")
    need_tool("xmlsec1")
    listen, port = free_port(), free_port()
    gateway = BrokenGateway(
        breakage, Pki.load(pki_folder), "hs02", "hs01", ("127.0.0.1", listen), port
    )
    gateway.start()
    try:
        options = Options(
            target=("127.0.0.1", port),
            target_provider="hs02",
            as_provider="hs01",
            pki=pki_folder,
            listen=("127.0.0.1", listen),
            xsd=need_xsd(),
            only=CHOSEN,
            # Nothing comes from a silent gateway: a short wait is enough to say so.
            evidence_timeout=4.0,
            case_timeout=60.0,
        )
        results, _info = asyncio.run(run_suite(options, RUN, io.StringIO()))
    finally:
        gateway.stop()
    verdicts = {r.case.id: r.verdict for r in results}
    must_fail, must_pass = EXPECTED[breakage]
    lines = "\n".join(report.terminal_line(r) for r in results)
    assert {c for c in must_fail if verdicts[c] != FAIL} == set(), lines
    assert {c for c in must_pass if verdicts[c] != PASS} == set(), lines
    assert not report.passed(results)
