"""A real Prometheus (Debian's) scrapes two gateways carrying traffic; every dashboard and
alert expression is then evaluated through Prometheus's HTTP API.

Traffic comes in two rounds, a few scrapes apart, so counters and histograms exist before
they grow: rates and quantiles then have something to show, as on a running system.
"""

from __future__ import annotations

import json
import math
import re
import smtplib
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import need_tool
from tests.relay.gateways import (
    Mesh,
    free_port,
    make_mesh,
    remmd_of_subject,
    subject,
    subject_of,
    wait_evidence,
    wait_for,
)
from tests.tools.test_deploy import (
    DASHBOARD,
    RULES,
    dashboard_expressions,
    for_prometheus,
    rule_expressions,
)

SENDER, RECIPIENT = "ali.yilmaz@hs01.kep.tr", "ayse.demir@hs02.kep.tr"


class Prometheus:
    def __init__(self, binary: str, root: Path, targets: dict[str, int]) -> None:
        self.port = free_port()
        jobs = "\n".join(
            f'      - targets: ["127.0.0.1:{port}"]\n        labels:\n          provider: {name}'
            for name, port in targets.items()
        )
        config = root / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"rule_files:\n  - {RULES}\n"
            f"scrape_configs:\n  - job_name: kep-relay\n    static_configs:\n{jobs}\n"
        )
        self.log = (root / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={root / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for(self.ready, 60, "Prometheus to be ready")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.port}/-/ready", timeout=2
            ) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:  # 400 with a JSON error for a bad expression
            return json.loads(exc.read())

    def query(self, expression: str) -> Any:
        return self.api("query", query=expression)

    def values(self, expression: str) -> list[float]:
        answer = self.query(expression)
        assert answer["status"] == "success", (expression, answer)
        return [float(r["value"][1]) for r in answer["data"]["result"]]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()


def _round(mesh: Mesh) -> None:
    """One message hs01 -> hs02, delivered and read; an unsigned submission; a refusal."""
    hs01, hs02 = mesh["hs01"], mesh["hs02"]
    title = subject()
    done = hs01.cli("send", "--from", SENDER, "--to", RECIPIENT, "--subject", title)
    assert done.returncode == 0, done.stderr
    remmd = remmd_of_subject(hs01, SENDER, title)
    wait_evidence(hs01, remmd, {("DeliveryNonDeliveryToRecipient", "Delivery", RECIPIENT)})
    number = [subject_of(p) for p in hs02.mail(RECIPIENT)].index(title) + 1
    assert hs02.cli("mailbox", "read", RECIPIENT, str(number)).returncode == 0
    wait_evidence(hs01, remmd, {("RetrievalNonRetrievalByRecipient", "Retrieval", RECIPIENT)})
    with smtplib.SMTP("127.0.0.1", hs01.submission_port, timeout=10) as client:
        # Not signed: refused with SubmissionRejection (InvalidUserSignature).
        client.sendmail(SENDER, [RECIPIENT], f"From: {SENDER}\r\nSubject: x\r\n\r\nhi\r\n")
        code, _ = client.mail("someone@hs02.kep.tr")  # not hs01's to send: 550 5.7.1
        assert code == 550


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Prometheus, Mesh]]:
    binary = need_tool("prometheus")
    root = tmp_path_factory.mktemp("prometheus")
    mesh = make_mesh(root, ["hs01", "hs02"])
    for gateway in mesh.gateways.values():
        gateway.start()
    server = Prometheus(binary, root, {p: g.monitoring_port for p, g in mesh.gateways.items()})
    try:
        _round(mesh)
        wait_for(
            lambda: sum(server.values('kep_evidence_total{direction="received"}')) >= 3,
            30,
            "Prometheus to see the first round",
        )
        time.sleep(3)  # several scrapes of every series before the counters grow
        _round(mesh)
        wait_for(
            lambda: (
                sum(server.values('kep_evidence_total{direction="received"}')) >= 6
                and sum(server.values("kep_local_delivery_seconds_count")) >= 2
            ),
            30,
            "Prometheus to see the second round",
        )
        time.sleep(2)
        yield server, mesh
    finally:
        server.stop()
        mesh.stop()


def test_both_gateways_are_scraped(prometheus: tuple[Prometheus, Mesh]) -> None:
    server, _mesh = prometheus
    targets = server.api("targets")["data"]["activeTargets"]
    assert len(targets) == 2
    assert all(t["health"] == "up" for t in targets), targets


def test_every_dashboard_expression_returns_data(prometheus: tuple[Prometheus, Mesh]) -> None:
    server, _mesh = prometheus
    empty = []
    for title, expression in dashboard_expressions():
        values = server.values(for_prometheus(expression))
        if not any(math.isfinite(v) for v in values):
            empty.append(f"{title}: {expression} -> {values}")
    assert not empty, "\n".join(empty)


def test_the_gateway_variable_lists_both_gateways(prometheus: tuple[Prometheus, Mesh]) -> None:
    """The dashboard's variable (Grafana's label_values) through the same API Grafana uses."""
    server, mesh = prometheus
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    (variable,) = [v for v in board["templating"]["list"] if v["name"] == "instance"]
    found = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable["definition"])
    assert found, variable["definition"]
    metric, label = found.groups()
    answer = server.api(f"label/{label}/values", **{"match[]": metric})
    assert answer["status"] == "success"
    expected = {f"127.0.0.1:{g.monitoring_port}" for g in mesh.gateways.values()}
    assert set(answer["data"]) == expected


def test_every_alert_expression_is_valid(prometheus: tuple[Prometheus, Mesh]) -> None:
    server, _mesh = prometheus
    for name, expression in rule_expressions():
        answer = server.query(expression)
        assert answer["status"] == "success", (name, answer)
    # The rule group loaded and evaluates without errors.
    groups = server.api("rules")["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert {r["name"] for r in rules} == {name for name, _ in rule_expressions()}
    assert all(r["health"] in ("ok", "unknown") for r in rules), [
        (r["name"], r.get("lastError")) for r in rules if r["health"] not in ("ok", "unknown")
    ]


def test_no_alert_fires_on_a_healthy_pair(prometheus: tuple[Prometheus, Mesh]) -> None:
    server, _mesh = prometheus
    for name, expression in rule_expressions():
        assert server.values(expression) == [], name
