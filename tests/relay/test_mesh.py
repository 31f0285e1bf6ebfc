"""``kep-relay mesh``: all eight providers on loopback, a message from each to each.

Driven through the command line as an operator would; the outcome is then checked in each
sender's store and Delil folder directly, not through the command's own report.
"""

from __future__ import annotations

import os
import random
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from interop.errors import ConfigurationError
from interop.providers import BUILTIN_PROVIDERS
from relay import mesh
from relay.config_file import load
from relay.store.database import sqlite_path
from tests.relay.gateways import ROOT

PROVIDERS = list(BUILTIN_PROVIDERS)  # hs01 ... hs08


def free_base() -> int:
    """A base port whose mesh ports (base+n, +100+n, +200+n) are all free now."""
    for _ in range(50):
        base = random.randrange(20000, 40000, 10)  # noqa: S311 (not for security)
        ports = [base + k + n for k in (0, 100, 200) for n in range(1, len(PROVIDERS) + 1)]
        try:
            for port in ports:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise AssertionError("no free port range")


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay.cli", "mesh", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=cwd,
    )


def test_eight_providers_exchange_with_each_other(tmp_path: Path) -> None:
    folder = tmp_path / "mesh"
    # A relative --dir, as in the README.
    up = cli("up", "--dir", "mesh", "--base-port", str(free_base()), cwd=tmp_path)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "8 ready" in up.stdout
        status = cli("status", "--dir", str(folder))
        assert status.returncode == 0, status.stdout
        assert status.stdout.count(" ready ") == 8
        traffic = cli("traffic", "--dir", str(folder), "--timeout", "300")
        assert traffic.returncode == 0, traffic.stdout + traffic.stderr
        assert "submitted 64 signed messages" in traffic.stdout
        # Every sender holds Delivery evidence from every recipient's provider, in its store
        # and as an Evidence message in its Delil folder.
        layout = mesh.load(folder)
        for sender in PROVIDERS:
            db = layout.database(sender)
            got = _query(
                db,
                "SELECT DISTINCT lower(recipient) FROM evidence WHERE type ="
                " 'DeliveryNonDeliveryToRecipient' AND event = 'Delivery'",
            )
            expected = {f"ayse.demir@{p}.kep.tr" for p in PROVIDERS}
            assert expected <= got, (sender, expected - got)
            delil = folder / sender / "mail" / f"ali.yilmaz@{sender}.kep.tr" / ".Delil" / "new"
            assert len(list(delil.iterdir())) >= 2 * len(PROVIDERS), sender
        # Each node runs one node process (eight nodes share the machine's cores).
        assert all(load(layout.config(p)).processes == 1 for p in PROVIDERS)
        # Each gateway's log is clean: no errors or failed processing.
        for provider in PROVIDERS:
            log = layout.log(provider).read_text()
            assert '"level": "error"' not in log, provider
    finally:
        down = cli("down", "--dir", str(folder))
    assert down.returncode == 0, down.stderr
    assert "stopped 8" in down.stdout
    layout = mesh.load(folder)
    assert all(mesh.running_pid(layout, p) is None for p in PROVIDERS)
    assert cli("status", "--dir", str(folder)).returncode == 1  # nothing ready now


def _query(url: str, sql: str) -> set[str]:
    with sqlite3.connect(sqlite_path(url)) as connection:
        return {str(row[0]) for row in connection.execute(sql)}


def test_plan_refuses_what_cannot_run(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="hs09"):
        mesh.plan(tmp_path, ["hs01", "hs09"], 24000)
    with pytest.raises(ConfigurationError, match="once"):
        mesh.plan(tmp_path, ["hs01", "hs01"], 24000)
    with pytest.raises(ConfigurationError, match="base port"):
        mesh.plan(tmp_path, ["hs01"], 65500)
    layout = mesh.plan(tmp_path, ["hs01", "hs02"], 24000)
    assert layout.node("hs02") == mesh.MeshNode("hs02", 24002, 24102, 24202)


def test_up_refuses_a_folder_holding_another_mesh(tmp_path: Path) -> None:
    mesh.write(mesh.plan(tmp_path, ["hs01", "hs02"], free_base()))
    done = cli("up", "--dir", str(tmp_path), "--providers", "hs01,hs03")
    assert done.returncode == 2
    assert "holds a mesh of hs01,hs02" in done.stderr


def test_up_that_fails_stops_the_nodes_it_started_and_says_why(tmp_path: Path) -> None:
    """hs02's monitoring port is taken: hs02 cannot start, so hs01 (started with it) is
    stopped again, and the one line names hs02, the port, the key and the file."""
    base = free_base()
    folder = tmp_path / "mesh"
    taken = base + 202
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", taken))
        holder.listen()
        done = cli("up", "--dir", str(folder), "--providers", "hs01,hs02", "--base-port", str(base))
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.splitlines() == [
        f"kep-relay: hs02 did not start: cannot listen on 127.0.0.1:{taken}"
        f" (listen.monitoring.address in {folder}/hs02.toml): address already in use; stop what"
        f" uses it or change the port; stopped again: hs01 (log: {folder}/hs02.log)"
    ]
    layout = mesh.load(folder)
    assert all(mesh.running_pid(layout, p) is None for p in ("hs01", "hs02"))
    assert not any(layout.pidfile(p).exists() for p in ("hs01", "hs02"))
