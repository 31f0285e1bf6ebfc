"""benchmarks/profile.py charges each sample to the area of the project code that asked for it."""

from __future__ import annotations

from benchmarks.profile import area_of, table


def test_library_work_is_charged_to_the_project_code_that_asked_for_it() -> None:
    frames = [
        "serve (relay/processes.py:85)",
        "process_dispatch (relay/stages/rgw.py:36)",
        "sign_evidence (interop/evidence/xades.py:190)",
        "SubElement (lxml/etree.pyx:3000)",
    ]
    assert area_of(frames) == "evidence XAdES signatures (python-xmlsec, lxml)"


def test_the_runner_is_not_an_area_and_libraries_are_charged_alone() -> None:
    frames = [
        "main (relay/cli/__init__.py:50)",
        "serve (relay/processes.py:73)",
        "BaseEventLoop._run_once (asyncio/base_events.py:1907)",
        "SMTP._handle_client (aiosmtpd/smtp.py:756)",
        "TokenList.value (email/_header_value_parser.py:134)",
    ]
    assert area_of(frames) == "SMTP server (aiosmtpd and ours)"
    assert area_of(["select (selectors.py:468)"]) == "event loop and thread hand-offs"
    assert area_of([]) == "other"


def test_table_splits_the_cpu_by_share() -> None:
    from collections import Counter

    text = table(Counter({"a": 3, "b": 1}), cpu_ms=8.0)
    assert "| a | 75.0 % | 6.00 |" in text and "| b | 25.0 % | 2.00 |" in text
