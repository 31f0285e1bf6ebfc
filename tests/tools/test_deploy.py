"""deploy/ checked by the tools that will run it: promtool, systemd-analyze, and Grafana's format.

The live half (a real Prometheus scraping real gateways, every expression evaluated) is
tests/tools/test_prometheus.py.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from tests.helpers import need_tool

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "kep-relay.json"
RULES = DEPLOY / "prometheus" / "kep-relay-rules.yml"
# Every metric a node can serve (relay/metrics.py, relay/node.py), without histogram suffixes.
NODE_METRICS = {
    "kep_messages_received_total", "kep_smtp_refusals_total", "kep_messages_relayed_total",
    "kep_peer_up", "kep_peer_last_contact_timestamp_seconds", "kep_verifications_total",
    "kep_tls_handshakes_total", "kep_smtp_acceptance_seconds", "kep_local_delivery_seconds",
    "kep_message_size_bytes", "kep_processing_failures_total", "kep_queue_messages",
    "kep_queue_oldest_age_seconds", "kep_evidence_awaited", "kep_evidence_awaited_oldest_seconds",
    "kep_evidence_total", "kep_evidence_round_trip_seconds", "kep_ledger_records",
    "kep_ledger_last_checkpoint_timestamp_seconds", "kep_ledger_checkpoint_records",
    "kep_certificate_expiry_timestamp_seconds", "kep_data_disk_free_bytes",
    "kep_data_disk_size_bytes", "kep_smtp_connections_open", "kep_node_draining",
    "kep_smtp_sessions_cut_total", "kep_messages_quarantined_total", "kep_messages_expired_total",
    "kep_tsa_failures_total", "kep_ledger_archive_tsa_expiry_timestamp_seconds",
    "kep_claims_lost_total", "kep_claims_recovered_total", "kep_node_processes",
    "kep_crl_age_seconds", "kep_crl_next_update_seconds", "kep_crl_fetches_total",
}  # fmt: skip


def dashboard_expressions() -> list[tuple[str, str]]:
    """(panel title, expression) for every query of the dashboard."""
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [
        (panel["title"], target["expr"])
        for panel in board["panels"]
        for target in panel.get("targets", [])
    ]


def rule_expressions() -> list[tuple[str, str]]:
    """(alert name, expression) of every alert rule. No YAML library is a dependency, so the
    file keeps a fixed layout (``- alert:`` then ``expr:``); promtool checks the YAML itself."""
    found: list[tuple[str, str]] = []
    lines = RULES.read_text(encoding="utf-8").splitlines()
    for index, line in enumerate(lines):
        match = re.match(r"\s*- alert: (\w+)", line)
        if not match:
            continue
        expr_line = lines[index + 1].strip()
        assert expr_line.startswith("expr:"), f"{match.group(1)}: expr must follow alert"
        text = expr_line.removeprefix("expr:").strip()
        if text == "|":
            block = []
            for following in lines[index + 2 :]:
                if not following.startswith(" " * 10):
                    break
                block.append(following.strip())
            text = " ".join(block)
        found.append((match.group(1), text))
    return found


def for_prometheus(expression: str, window: str = "1m") -> str:
    """A dashboard expression with Grafana's variables filled in as Grafana would."""
    return expression.replace("$__rate_interval", window).replace("$instance", ".*")


def metric_names(expression: str) -> set[str]:
    names = set(re.findall(r"\b(kep_[a-z_]+)", expression))
    return {re.sub(r"_(bucket|count|sum)$", "", n) for n in names}


def test_dashboard_is_well_formed() -> None:
    board: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert board["uid"] == "kep-relay" and board["schemaVersion"] >= 36
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    variables = {v["name"] for v in board["templating"]["list"]}
    assert {"datasource", "instance"} <= variables
    titles = " ".join(p["title"].lower() for p in board["panels"])
    for topic in ("peer", "latency", "round trip", "queue", "refusals", "tls", "certificate"):
        assert topic in titles, f"a panel about {topic}"
    assert "ledger" in titles
    for panel in board["panels"]:
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"])
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]


def test_dashboard_and_rules_use_only_metrics_a_node_serves() -> None:
    for where, expression in dashboard_expressions() + rule_expressions():
        unknown = metric_names(expression) - NODE_METRICS
        assert not unknown, f"{where}: {unknown}"


def test_rules_cover_what_operators_asked_for() -> None:
    names = {name for name, _ in rule_expressions()}
    assert {
        "KepQueueGrowing",
        "KepOldestMessageTooOld",
        "KepPeerUnreachable",
        "KepEvidenceOverdue",
        "KepCertificateExpiringSoon",
        "KepLedgerCheckpointMissing",
        "KepDiskAlmostFull",
        "KepGatewayDown",
    } <= names


def test_promtool_checks_config_and_rules() -> None:
    promtool = need_tool("promtool")
    for args in (
        ["check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
        ["check", "rules", str(RULES)],
    ):
        done = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr


def test_alert_rules_pass_their_unit_tests() -> None:
    promtool = need_tool("promtool")
    done = subprocess.run(
        [promtool, "test", "rules", "tests/kep-relay-rules.test.yml"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=DEPLOY / "prometheus",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_a_unit_test() -> None:
    tests = (DEPLOY / "prometheus" / "tests" / "kep-relay-rules.test.yml").read_text()
    for name, _ in rule_expressions():
        assert f"alertname: {name}\n" in tests, name


def test_systemd_unit_is_hardened() -> None:
    analyze = need_tool("systemd-analyze")
    unit = DEPLOY / "systemd" / "kep-relay.service"
    # The threshold is the exposure level times ten: fail above 2.0 ("OK" in systemd's words).
    done = subprocess.run(
        [analyze, "security", "--offline=true", "--threshold=20", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    assert "Overall exposure level" in done.stdout
    text = unit.read_text()
    for directive in (
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "KillSignal=SIGTERM",
        "ExecReload=/bin/kill -HUP $MAINPID",  # systemctl reload: relay/reload.py
    ):
        assert directive in text
