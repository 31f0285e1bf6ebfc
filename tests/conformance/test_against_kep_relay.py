"""The suite against kep-relay itself (a real node process), in both modes: every required
case passes, the optional ones kep-relay offers too, and the reports say so."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree

from conformance import report
from conformance.main import run_suite
from conformance.registry import RECEIVE, RUN, catalogue
from conformance.runner import PASS, SKIP, CaseResult
from conformance.session import Options
from interop.errors import ConfigurationError
from tests.conformance.target import (
    CLOSED,
    EVIDENCE_TIMEOUT,
    FULL,
    RELAY_TIMEOUT,
    SECOND,
    SUITE,
    TARGET,
    make_target,
)
from tests.helpers import XSD_DIR, need_tool
from tests.relay.gateways import Gateway, free_port

pytestmark = pytest.mark.tool
HERE = Path(__file__).resolve().parent


def need_xsd() -> Path:
    if not XSD_DIR.is_dir():
        message = f"the ETSI XSD is expected at {XSD_DIR} (shared/ beside the project)"
        if os.environ.get("KEP_REQUIRE_TOOLS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return XSD_DIR


class Target:
    def __init__(self, root: Path) -> None:
        self.listen, self.second = free_port(), free_port()
        self.gateway: Gateway = make_target(root, self.listen, self.second)
        self.root = root

    def options(self, **changes: object) -> Options:
        python = sys.executable
        config = self.gateway.config
        values: dict[str, object] = {
            "target": ("127.0.0.1", self.gateway.peer_port),
            "target_provider": TARGET,
            "as_provider": SUITE,
            "pki": self.root / "pki",
            "listen": ("127.0.0.1", self.listen),
            "xsd": need_xsd(),
            "second_provider": SECOND,
            "second_listen": ("127.0.0.1", self.second),
            "full_recipient": FULL,
            "closed_recipient": CLOSED,
            "evidence_timeout": 30.0,
            "case_timeout": 120.0,
            "read_command": (
                f"{python} {HERE / 'read_message.py'} {config} {{recipient}} {{subject}}"
            ),
            "evidence_command": (
                f"{python} {HERE / 'show_evidence.py'} {config} {{sender}} {{subject}} {{type}}"
            ),
            "relay_timeout": RELAY_TIMEOUT,
            "target_evidence_timeout": EVIDENCE_TIMEOUT,
            "send_command": (
                f"{python} -m relay.cli send --config {config} --from ayse.demir@hs02.kep.tr "
                "--to {recipient} --subject {subject} --body Merhaba --no-wait"
            ),
            **changes,
        }
        return Options(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    need_tool("openssl")
    need_tool("xmlsec1")
    made = Target(tmp_path_factory.mktemp("conformance"))
    made.gateway.start()
    try:
        yield made
    finally:
        made.gateway.stop()


def _run(options: Options, mode: str) -> tuple[list[CaseResult], report.RunInfo, str]:
    out = io.StringIO()
    results, info = asyncio.run(run_suite(options, mode, out))
    return results, info, out.getvalue()


def _failures(results: list[CaseResult]) -> str:
    return "\n".join(report.terminal_line(r) for r in results if r.verdict not in (PASS,))


def test_run_mode_is_green_against_kep_relay(target: Target, tmp_path: Path) -> None:
    results, info, printed = _run(target.options(report=tmp_path), RUN)
    assert report.passed(results), _failures(results)
    # kep-relay offers every optional behaviour too (a read command, XAdES-T, CAdES-T).
    assert all(r.verdict == PASS for r in results), _failures(results)
    assert [r.case.id for r in results] == [c.id for c in catalogue(RUN)]
    assert "CONFORMANT" in report.summary(results) and "KEP-OF-01" in printed
    # Every case that exchanged messages checked what came back with the independent tools.
    checks = [c.name for r in results for c in r.checks]
    for tool in ("(openssl cms)", "(xmlsec1)", "ETSI XSD", "(openssl ts)"):
        assert any(tool in name for name in checks), tool
    written = report.write(tmp_path, info, results)
    suite = etree.parse(str(tmp_path / "junit.xml")).getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "0" and suite.get("errors") == "0"
    assert int(suite.get("tests") or 0) == len(results)
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["conformant"] is True
    delivered = next(c for c in data["cases"] if c["id"] == "KEP-OF-01")
    assert any("DeliveryNonDeliveryToRecipient" in x["evidence"] for x in delivered["exchanges"])
    page = (tmp_path / "report.html").read_text()
    assert "KEP-EVF-01" in page and "&lt;" in page  # decoded evidence, escaped
    assert len(written) == 3


def test_receive_mode_is_green_against_kep_relay(target: Target) -> None:
    results, _info, _printed = _run(target.options(), RECEIVE)
    assert [r.case.id for r in results] == [c.id for c in catalogue(RECEIVE)]
    assert all(r.verdict == PASS for r in results), _failures(results)
    # kep-relay keeps the bad evidence (state invalid) and files only the good Acceptance for
    # its user: the evidence command shows no Delivery for those Dispatches.
    for bad in ("KEP-RC-12", "KEP-RC-13"):
        checks = {c.name for r in results if r.case.id == bad for c in r.checks if c.ok}
        assert any("not shown to the sender as DeliveryNonDeliveryToRecipient" in n for n in checks)
        assert any("RelayREMMDAcceptanceRejection reached the sender" in n for n in checks)


def test_without_a_read_command_retrieval_is_skipped_not_failed(target: Target) -> None:
    results, _info, _printed = _run(target.options(read_command=None, only="KEP-OF-12"), RUN)
    assert [(r.case.id, r.verdict) for r in results] == [("KEP-OF-12", SKIP)]
    assert report.passed(results)


def test_cases_needing_what_the_operator_prepares_are_skipped_and_say_why(
    target: Target,
) -> None:
    results, _info, printed = _run(
        target.options(full_recipient=None, closed_recipient=None, only="KEP-OF-1[34]"), RUN
    )
    assert [(r.case.id, r.verdict) for r in results] == [("KEP-OF-13", SKIP), ("KEP-OF-14", SKIP)]
    assert "no --full-recipient" in printed and "no --closed-recipient" in printed
    assert report.passed(results)
    results, _info, printed = _run(
        target.options(evidence_command=None, relay_timeout=None, only="KEP-RC-1[014]"), RECEIVE
    )
    assert [(r.case.id, r.verdict) for r in results] == [
        ("KEP-RC-10", SKIP),
        ("KEP-RC-11", SKIP),
        ("KEP-RC-14", SKIP),
    ]
    assert printed.count("no --evidence-command") == 3
    results, _info, printed = _run(
        target.options(relay_timeout=None, target_evidence_timeout=None, only="KEP-RC-1[14]"),
        RECEIVE,
    )
    assert [(r.case.id, r.verdict) for r in results] == [("KEP-RC-11", SKIP), ("KEP-RC-14", SKIP)]
    assert "no --relay-timeout" in printed and "no --target-evidence-timeout" in printed


def _without_target_keys(folder: Path, copy: Path) -> Path:
    shutil.copytree(folder, copy)
    removed = [*(copy / "providers" / TARGET).glob("*.key"), *copy.glob(f"users/*@{TARGET}.*.key")]
    for key in removed:
        key.unlink()
    assert {k.name for k in removed} >= {"process.key", "tls.key"}
    return copy


def test_the_folder_need_not_hold_the_targets_keys(target: Target, tmp_path: Path) -> None:
    folder = _without_target_keys(target.root / "pki", tmp_path / "pki")
    assert not [
        *(folder / "providers" / TARGET).glob("*.key"),
        *folder.glob(f"users/*@{TARGET}.*.key"),
    ]
    # Cases that judge the target's certificates and signatures, in both modes.
    chosen = "KEP-TR-0[356],KEP-OF-01,KEP-OF-07,KEP-SIG-01,KEP-SIG-03"
    results, _info, _printed = _run(target.options(pki=folder, only=chosen), RUN)
    assert len(results) == 7 and all(r.verdict == PASS for r in results), _failures(results)
    results, _info, _printed = _run(target.options(pki=folder, only="KEP-RC-0[56]"), RECEIVE)
    assert len(results) == 2 and all(r.verdict == PASS for r in results), _failures(results)


def test_only_the_targets_keys_may_be_left_out(target: Target, tmp_path: Path) -> None:
    folder = _without_target_keys(target.root / "pki", tmp_path / "pki")
    with pytest.raises(ConfigurationError, match=re.escape(f"providers/{TARGET}/process.key")):
        _run(target.options(pki=folder, target_provider=SUITE, as_provider=TARGET), RUN)
    (folder / "providers" / SECOND / "tls.key").unlink()
    with pytest.raises(ConfigurationError, match=re.escape(f"providers/{SECOND}/process.key")):
        _run(target.options(pki=folder, second_provider=None, second_listen=None), RUN)
