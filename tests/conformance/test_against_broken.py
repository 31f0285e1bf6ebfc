"""The suite is honest: against a deliberately broken gateway, the cases that check what it
breaks fail, and the run does not pass."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import sys
from pathlib import Path

import pytest

from conformance import report
from conformance.identity import Pki
from conformance.main import run_suite
from conformance.registry import RECEIVE, RUN
from conformance.runner import FAIL, PASS
from conformance.session import Options
from interop.pki.devpki import generate
from relay.keys import write_pki
from tests.conformance.broken import Breakage, BrokenGateway
from tests.conformance.target import CLOSED, FULL
from tests.conformance.test_against_kep_relay import need_xsd
from tests.helpers import need_tool
from tests.relay.gateways import ROOT, free_port

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
    Breakage.IGNORES_ACCOUNTS: ({"KEP-OF-13", "KEP-OF-14"}, {"KEP-OF-01"}),
    Breakage.WRONG_TIMESTAMP: ({"KEP-SIG-02", "KEP-SIG-04", "KEP-OF-01"}, {"KEP-TR-05"}),
}
# A breakage of the receiving side run with only the cases it is about (and one that passes).
NARROW = {Breakage.IGNORES_ACCOUNTS, Breakage.WRONG_TIMESTAMP}
# Breakages of how the receiving side takes evidence back: only receive mode sends it any.
EVIDENCE_BREAKAGES = {Breakage.DEFERS_BAD_EVIDENCE, Breakage.FILES_ANY_EVIDENCE}
RUN_BREAKAGES = [b for b in Breakage if b not in EVIDENCE_BREAKAGES]


@pytest.fixture(scope="module")
def pki_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("broken") / "pki"
    write_pki(
        generate(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5), ["hs01", "hs02", "hs03"]),
        folder,
    )
    return folder


@pytest.mark.parametrize("breakage", RUN_BREAKAGES, ids=lambda b: b.name.lower())
def test_named_cases_fail_against_a_broken_gateway(breakage: Breakage, pki_folder: Path) -> None:
    need_tool("openssl")
    need_tool("xmlsec1")
    listen, port = free_port(), free_port()
    gateway = BrokenGateway(
        breakage, Pki.load(pki_folder), "hs02", "hs01", ("127.0.0.1", listen), port
    )
    must_fail, must_pass = EXPECTED[breakage]
    gateway.start()
    try:
        options = Options(
            target=("127.0.0.1", port),
            target_provider="hs02",
            as_provider="hs01",
            pki=pki_folder,
            listen=("127.0.0.1", listen),
            xsd=need_xsd(),
            only=",".join(sorted(must_fail | must_pass)) if breakage in NARROW else CHOSEN,
            full_recipient=FULL,
            closed_recipient=CLOSED,
            # Nothing comes from a silent gateway: a short wait is enough to say so.
            evidence_timeout=4.0,
            case_timeout=60.0,
        )
        results, _info = asyncio.run(run_suite(options, RUN, io.StringIO()))
    finally:
        gateway.stop()
    verdicts = {r.case.id: r.verdict for r in results}
    lines = "\n".join(report.terminal_line(r) for r in results)
    assert {c for c in must_fail if verdicts[c] != FAIL} == set(), lines
    assert {c for c in must_pass if verdicts[c] != PASS} == set(), lines
    assert not report.passed(results)
    if breakage is Breakage.WRONG_TIMESTAMP:
        # OpenSSL, over the bytes the suite computed, says so too (not only the project).
        failed = {c.name for r in results for c in r.checks if not c.ok}
        for where in ("XAdES SignatureTimeStamp", "CAdES signatureTimeStampToken"):
            assert any(where in n and "(openssl ts)" in n for n in failed), (where, failed)


# Sending-side breakage (broken_sender.py), breakage of its listener → (fail, pass).
RECEIVE_EXPECTED = {
    ("resends-after-5xx", Breakage.SILENT): ({"KEP-RC-09"}, {"KEP-RC-10", "KEP-RC-14"}),
    ("positive-after-failure", Breakage.SILENT): ({"KEP-RC-10", "KEP-RC-11"}, {"KEP-RC-09"}),
    ("no-evidence-timer", Breakage.SILENT): ({"KEP-RC-14"}, {"KEP-RC-10"}),
    ("none", Breakage.DEFERS_BAD_EVIDENCE): ({"KEP-RC-12", "KEP-RC-13"}, {"KEP-RC-08"}),
    # Takes the bad evidence with 250 as the profile allows, but then shows it to its user.
    ("none", Breakage.FILES_ANY_EVIDENCE): ({"KEP-RC-12", "KEP-RC-13"}, {"KEP-RC-08"}),
}


@pytest.mark.parametrize(
    "sending, listening", list(RECEIVE_EXPECTED), ids=lambda b: getattr(b, "name", b)
)
def test_named_receive_cases_fail_against_a_broken_gateway(
    sending: str, listening: Breakage, pki_folder: Path, tmp_path: Path
) -> None:
    need_tool("openssl")
    need_tool("xmlsec1")
    listen, port = free_port(), free_port()
    gateway = BrokenGateway(
        listening, Pki.load(pki_folder), "hs02", "hs01", ("127.0.0.1", listen), port, tmp_path
    )
    must_fail, must_pass = RECEIVE_EXPECTED[(sending, listening)]
    sender = f"cd {ROOT} && {sys.executable} -m tests.conformance.broken_sender"
    gateway.start()
    try:
        options = Options(
            target=("127.0.0.1", port),
            target_provider="hs02",
            as_provider="hs01",
            pki=pki_folder,
            listen=("127.0.0.1", listen),
            xsd=need_xsd(),
            only=",".join(sorted(must_fail | must_pass)),
            send_command=(
                f"{sender} send {sending} {pki_folder} {listen} {tmp_path} {{recipient}} "
                "{subject}"
            ),
            evidence_command=f"{sender} evidence {tmp_path} {{subject}} {{remmd}} {{type}}",
            relay_timeout=1.0,
            target_evidence_timeout=1.0,
            evidence_timeout=5.0,
            settle=1.5,
            case_timeout=60.0,
        )
        results, _info = asyncio.run(run_suite(options, RECEIVE, io.StringIO()))
    finally:
        gateway.stop()
    verdicts = {r.case.id: r.verdict for r in results}
    lines = "\n".join(report.terminal_line(r) for r in results)
    assert {c for c in must_fail if verdicts[c] != FAIL} == set(), lines
    assert {c for c in must_pass if verdicts[c] != PASS} == set(), lines
    if listening is Breakage.FILES_ANY_EVIDENCE:
        # The 250 was right; what fails is what its user was shown.
        failed = {c.name for r in results for c in r.checks if not c.ok}
        assert all("refused (5xx) or kept (250)" not in n for n in failed), failed
        assert any("not shown to the sender as DeliveryNonDeliveryToRecipient" in n for n in failed)
