"""The report writers and the command line, without a target: what a target says is shown
escaped, the JUnit file is what CI reads, and the exit code follows the required cases."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from lxml import etree

from conformance import report
from conformance.registry import Case, catalogue
from conformance.runner import FAIL, PASS, SKIP, CaseResult
from conformance.session import Check, Record
from relay.cli import main

HOSTILE = "<script>alert(1)</script>"


async def _nothing(_session: object) -> None:
    return None


def _case(id: str, required: bool = True) -> Case:
    return Case(id, "a case", "run", "§2", "COF-TRANSPORT", "the rule", _nothing, required)


def _results(optional_verdict: str = FAIL) -> list[CaseResult]:
    return [
        CaseResult(
            _case("KEP-TR-01"),
            PASS,
            "fine",
            0.1,
            [Check("a check", True, HOSTILE)],
            [Record("received", HOSTILE, [f"S: 250 {HOSTILE}"], HOSTILE, f"<x>{HOSTILE}</x>", 9)],
        ),
        CaseResult(_case("KEP-SIG-02", required=False), optional_verdict, HOSTILE, 0.2),
        CaseResult(_case("KEP-OF-12", required=False), SKIP, "no --read-command", 0.0),
    ]


INFO = report.RunInfo(
    "run",
    "127.0.0.1:25",
    "hs02",
    "hs01",
    dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    dt.datetime(2026, 1, 1, 0, 1, tzinfo=dt.UTC),
)


def test_only_required_cases_decide_the_verdict() -> None:
    assert report.passed(_results())  # an optional case failed, a required one passed
    failing = [*_results(), CaseResult(_case("KEP-OF-01"), FAIL, "missing evidence", 1.0)]
    assert not report.passed(failing)
    assert "NOT CONFORMANT" in report.summary(failing)


def test_reports_escape_what_the_target_said(tmp_path: Path) -> None:
    report.write(tmp_path, INFO, _results())
    page = (tmp_path / "report.html").read_text()
    assert HOSTILE not in page and "&lt;script&gt;" in page
    suite = etree.parse(str(tmp_path / "junit.xml")).getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "1", "1")
    failure = suite.find("testcase/failure")
    assert failure is not None and failure.get("message") == HOSTILE
    assert failure.get("type") == "optional"
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["conformant"] is True
    assert data["cases"][0]["exchanges"][0]["evidence"] == f"<x>{HOSTILE}</x>"


def test_catalogue_ids_are_unique_and_cite_the_profile() -> None:
    cases = catalogue()
    assert len({c.id for c in cases}) == len(cases) >= 40
    assert all(c.section.startswith("§") and c.rule and c.etsi for c in cases)
    assert [c.id for c in catalogue(only="KEP-TR-0[12],KEP-OF-01")] == [
        "KEP-OF-01",
        "KEP-TR-01",
        "KEP-TR-02",
    ]


def test_cli_lists_the_catalogue(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["conformance", "list"]) == 0
    listed = capsys.readouterr().out
    assert all(c.id in listed for c in catalogue())


def test_cli_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--target", "127.0.0.1:1", "--target-provider", "hs02", "--as", "hs01"]
    common += ["--pki", str(tmp_path), "--listen", "127.0.0.1:2", "--xsd", str(tmp_path)]
    assert main(["conformance", "run", *common]) == 2
    assert "kep-relay: " in capsys.readouterr().err  # no PKI there
    assert main(["conformance", "receive", *common]) == 2
    assert "--send-command" in capsys.readouterr().err
