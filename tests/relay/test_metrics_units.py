"""The pieces of the operators' view, one at a time: labels, state read from the store, probes,
configuration, and the log events the code can emit (docs/operations.md lists them)."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from interop.errors import ConfigurationError, SmtpReply
from relay.config import embedded_default
from relay.config_file import from_mapping
from relay.context import build_context
from relay.lifecycle import Kind, State
from relay.metrics import LATENCY_BUCKETS, StateCollector, code_class, refusal_reason
from relay.monitoring import run_checks, storage_writable
from relay.node import Node
from relay.store import Store

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("reply", "reason", "cls"),
    [
        ("552 5.3.4 Message exceeds the size limit of 100 bytes", "size", "5xx"),
        ("550 5.7.1 Relay denied: x is not served here", "not_permitted", "5xx"),
        ("530 5.7.0 A client certificate is required", "no_client_certificate", "5xx"),
        ("451 4.3.0 Temporary storage problem, try again later", "storage", "4xx"),
        ("550 5.6.11 Bare CR or LF in message data is not accepted", "bare_line_ending", "5xx"),
        ("500 Error: command not recognized", "protocol", "5xx"),
        ("554 5.9.9 something new", "other", "5xx"),
        ("SMTPServerDisconnected: lost", "other", "none"),
    ],
)
def test_refusals_map_to_bounded_labels(reply: str, reason: str, cls: str) -> None:
    parsed = SmtpReply.parse(reply)
    assert refusal_reason(parsed) == reason
    assert code_class(parsed.code) == cls


def test_replies_parse_as_they_went_on_the_wire() -> None:
    assert SmtpReply.parse("552 5.3.4 Too big\r\n") == SmtpReply(552, "5.3.4", "Too big")
    assert SmtpReply.parse("500 Error: bad syntax") == SmtpReply(500, "", "Error: bad syntax")
    assert SmtpReply.parse("421 4.3.2 Busy") == SmtpReply(421, "4.3.2", "Busy")
    assert SmtpReply.parse("garbage") == SmtpReply(0, "", "")
    assert str(SmtpReply(451, "4.3.0", "x")) == "451 4.3.0 x"


def test_latency_buckets_reach_from_a_millisecond_to_two_days() -> None:
    assert LATENCY_BUCKETS[0] == 0.001 and LATENCY_BUCKETS[-1] == 2 * 86400
    assert list(LATENCY_BUCKETS) == sorted(LATENCY_BUCKETS)


def _scrape(collector: StateCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_state_collector_reads_queue_evidence_and_ledger(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.sqlite3")
    collector = StateCollector(
        provider="hs01",
        store_url=store.url,
        data_dir=tmp_path,
        peers=["hs02"],
    )
    now = time.time()
    with store.transaction() as db:
        store.add_message(
            db, id="d1", kind=Kind.DISPATCH_OUT, peer="hs02", remmd_id="r1@hs01.kep.tr",
            mail_from="a@hs01.kep.tr", rcpt_to=["b@hs02.kep.tr"], size=10, sha256="00",
            state=State.QUEUED,
        )  # fmt: skip
        db.execute("UPDATE messages SET created = ? WHERE id = 'd1'", (now - 120,))
        store.add_message(
            db, id="d2", kind=Kind.DISPATCH_OUT, peer="hs02", remmd_id="r2@hs01.kep.tr",
            mail_from="a@hs01.kep.tr", rcpt_to=["b@hs02.kep.tr"], size=10, sha256="00",
            state=State.SENT,
        )  # fmt: skip
        db.execute("UPDATE messages SET sent_at = ? WHERE id = 'd2'", (now - 600,))
        store.set_timer(db, "d2", "r2@hs01.kep.tr", "hs02", evidence_deadline=now + 3600)
        store.add_evidence(
            db, id="e1", direction="received", remmd_id="r2@hs01.kep.tr",
            type="RelayREMMDAcceptanceRejection", event="Acceptance", recipient="b@hs02.kep.tr",
            sender="a@hs01.kep.tr", issuer="hs02", xml=b"<x/>", message_id="d2",
        )  # fmt: skip
    samples = _scrape(collector)
    assert samples[("kep_queue_messages", (("kind", "dispatch-out"), ("state", "queued")))] == 1
    age = samples[("kep_queue_oldest_age_seconds", (("kind", "dispatch-out"),))]
    assert 119 <= age < 180
    assert samples[("kep_evidence_awaited", (("peer", "hs02"),))] == 1
    assert 599 <= samples[("kep_evidence_awaited_oldest_seconds", (("peer", "hs02"),))] < 660
    labels = (
        ("direction", "received"),
        ("event", "Acceptance"),
        ("peer", "hs02"),
        ("type", "RelayREMMDAcceptanceRejection"),
    )
    assert samples[("kep_evidence_total", labels)] == 1
    trip = (("peer", "hs02"), ("type", "RelayREMMDAcceptanceRejection"))
    assert samples[("kep_evidence_round_trip_seconds_count", trip)] == 1
    assert 599 <= samples[("kep_evidence_round_trip_seconds_sum", trip)] < 660
    assert samples[("kep_evidence_round_trip_seconds_bucket", (("le", "300.0"), *trip))] == 0
    assert samples[("kep_evidence_round_trip_seconds_bucket", (("le", "900.0"), *trip))] == 1
    assert samples[("kep_ledger_records", ())] == 1
    # Counted once: a second scrape reads only records added since.
    assert _scrape(collector)[("kep_evidence_total", labels)] == 1


def test_evidence_counts_start_at_the_ledger_length_when_the_node_starts(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.sqlite3")
    with store.transaction() as db:
        store.add_evidence(
            db, id="old", direction="issued", remmd_id="r", type="SubmissionAcceptanceRejection",
            event="Acceptance", recipient=None, sender="a", issuer="hs01", xml=b"<x/>",
            message_id=None,
        )  # fmt: skip
    collector = StateCollector(provider="hs01", store_url=store.url, data_dir=tmp_path, peers=[])
    assert not [k for k in _scrape(collector) if k[0] == "kep_evidence_total"]


def test_readiness_reports_draining_and_storage(tmp_path: Path) -> None:
    config = from_mapping(
        {"node": {"provider": "hs01", "dev_pki": "pki", "data_dir": "data"}}, "t", tmp_path
    )
    node = Node(build_context(config))
    probes = node.probes()
    ok, checks = run_checks(probes.ready)
    assert not ok and checks["listeners"] != "ok"  # not started
    assert checks["storage"] == checks["pki"] == checks["draining"] == "ok"
    node.stopping.set()
    assert run_checks(probes.ready)[1]["draining"] == "draining after SIGTERM"
    assert run_checks(probes.alive) == (True, {"event_loop": "ok"})
    node.beat -= 60  # an event loop silent for a minute
    assert not run_checks(probes.alive)[0]
    broken = storage_writable(tmp_path / "gone", f"sqlite:///{tmp_path}/gone/state.sqlite3")
    assert "data folder not writable" in (broken() or "")


def test_monitoring_listener_configuration(tmp_path: Path) -> None:
    base = {"node": {"provider": "hs01", "dev_pki": "p"}}
    assert embedded_default().monitoring_listener is not None
    off = from_mapping({**base, "listen": {"monitoring": {"address": "off"}}}, "x", tmp_path)
    assert off.monitoring_listener is None
    with pytest.raises(ConfigurationError, match=r"listen\.monitoring\.address: 'x' is not"):
        from_mapping({**base, "listen": {"monitoring": {"address": "x"}}}, "x", tmp_path)


def _log_events() -> dict[str, list[str]]:
    """Event name -> call sites, for every ``log.<level>("event", ...)`` in relay/."""
    found: dict[str, list[str]] = {}
    for path in sorted((ROOT / "relay").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("debug", "info", "warning", "error", "exception")
                and isinstance(node.func.value, ast.Call | ast.Name)
                and (
                    (isinstance(node.func.value, ast.Name) and node.func.value.id == "log")
                    or "get_logger" in ast.unparse(node.func.value)
                )
            ):
                first = node.args[0] if node.args else None
                assert isinstance(first, ast.Constant) and isinstance(first.value, str), (
                    f"{path}:{node.lineno}: the event must be a fixed name"
                )
                found.setdefault(first.value, []).append(f"{path.name}:{node.lineno}")
    return found


def test_log_events_are_fixed_names_documented_once() -> None:
    events = _log_events()
    assert len(events) > 20
    text = (ROOT / "docs" / "operations.md").read_text()
    start = text.index("## Logs")
    section = text[start : text.index("\n## ", start)]
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", section, re.M))
    for name, sites in events.items():
        assert re.fullmatch(r"[a-z]+(_[a-z]+)*", name), name
        assert len(sites) == 1 or name == "listening", f"{name} is logged at {sites}"
        assert name in documented, f"{name} is not in docs/operations.md"
    assert documented <= set(events), documented - set(events)


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_log_formats(fmt: str) -> None:
    code = (
        f"import logging, structlog; from relay import logs; logs.configure({fmt!r});"
        "structlog.get_logger('kep.node').info('listening', listener='peer', port=2525);"
        "logging.getLogger('mail.log').warning('lost %s', 'peer')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    line, library = done.stderr.strip().splitlines()
    if fmt == "json":
        record = json.loads(line)
        assert record["event"] == "listening" and record["port"] == 2525
        assert {"level", "timestamp"} <= set(record)
        foreign = json.loads(library)  # a library's line in the same format, countable
        assert foreign["event"] == "library_message" and foreign["message"] == "lost peer"
        assert foreign["logger"] == "mail.log" and foreign["level"] == "warning"
    else:
        plain = re.sub(r"\x1b\[[0-9;]*m", "", line)  # without the colours
        assert not plain.startswith("{") and "listening" in plain and "port=2525" in plain


def test_node_processes_sharing_stderr_write_whole_lines(tmp_path: Path) -> None:
    """Node processes share one stderr; unbuffered (as under systemd with PYTHONUNBUFFERED),
    a line written in two pieces could take another process's line between them (a
    regression: the benchmark's log held lines of two records)."""
    code = (
        "import structlog, threading; from relay import logs; logs.configure('json');"
        "log = structlog.get_logger('kep.node');"
        "work = lambda: [log.info('message_accepted', n=i, pad='x' * 200) for i in range(1500)];"
        "threads = [threading.Thread(target=work) for _ in range(2)];"
        "[t.start() for t in threads]; [t.join() for t in threads]"
    )
    out = tmp_path / "stderr.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    with out.open("wb") as shared:
        writers = [
            subprocess.Popen([sys.executable, "-c", code], stderr=shared, env=env, cwd=ROOT)
            for _ in range(3)
        ]
        assert [w.wait(timeout=120) for w in writers] == [0, 0, 0]
    lines = out.read_text().splitlines()
    assert len(lines) == 3 * 2 * 1500
    assert all(json.loads(line)["event"] == "message_accepted" for line in lines)
