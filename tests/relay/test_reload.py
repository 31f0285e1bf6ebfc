"""SIGHUP reads the configuration again (relay/reload.py), against real node processes.

A changed account takes effect (a closed account gets NonDelivery evidence), the log level
changes, a CRL file replaced is used, a file that does not load is refused with the old
configuration kept, and keys that need a restart are named and not applied; the node keeps
running and serving throughout.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from structlog.testing import capture_logs

from interop.errors import ConfigurationError
from relay import reload
from relay.config import NodeConfig, embedded_default
from relay.config_file import from_mapping
from relay.context import build_context
from relay.node import Node
from relay.processes import Supervisor
from tests.interop.crls import make_crl
from tests.relay.gateways import (
    ROOT,
    Gateway,
    Mesh,
    make_mesh,
    peer_client,
    remmd_of_subject,
    send,
    subject,
    wait_evidence,
    wait_for,
)

ALI, AYSE = "ali.yilmaz@hs01.kep.tr", "ayse.demir@hs01.kep.tr"


def accounts(ayse_state: str = "active") -> str:
    return (
        f'[[accounts]]\naddress = "{ALI}"\n\n'
        f'[[accounts]]\naddress = "{AYSE}"\nstate = "{ayse_state}"\n'
    )


def events(gateway: Gateway, name: str) -> list[dict[str, object]]:
    lines = (json.loads(line) for line in gateway.log.read_text().splitlines() if line)
    return [line for line in lines if line.get("event") == name]


def hangup(gateway: Gateway, event: str, count: int = 1) -> dict[str, object]:
    """SIGHUP, and the ``count``-th new ``event`` line it gives."""
    before = len(events(gateway, event))
    assert gateway.process is not None
    gateway.process.send_signal(signal.SIGHUP)
    wait_for(lambda: len(events(gateway, event)) >= before + count, what=f"{event} logged")
    return events(gateway, event)[before + count - 1]


def rewrite(gateway: Gateway, base: str, extra: str) -> None:
    gateway.config.write_text(base + extra)


def delivered(gateway: Gateway, event: str) -> None:
    """ali writes to ayse; her delivery evidence is ``event`` (Delivery or NonDelivery)."""
    title = subject()
    send(gateway, ALI, AYSE, subject=title)
    remmd = remmd_of_subject(gateway, ALI, title)
    wait_evidence(gateway, remmd, {("DeliveryNonDeliveryToRecipient", event, AYSE)})


def single(tmp_path: Path, extra: str = "") -> tuple[Mesh, Gateway, str]:
    mesh = make_mesh(tmp_path, ["hs01", "hs02"])
    hs01 = mesh["hs01"]
    base = hs01.config.read_text()
    rewrite(hs01, base, accounts() + extra)
    return mesh, hs01, base


def test_sighup_applies_accounts_and_the_log_level_while_serving(tmp_path: Path) -> None:
    _mesh, hs01, base = single(tmp_path, '\n[log]\nlevel = "warning"\n')
    hs01.start()
    try:
        assert hs01.process is not None
        pid = hs01.process.pid
        delivered(hs01, "Delivery")
        lines = [json.loads(line) for line in hs01.log.read_text().splitlines()]
        assert lines and {line["level"] for line in lines} <= {"warning", "error"}
        rewrite(hs01, base, accounts("closed") + '\n[log]\nlevel = "info"\n')
        reloaded = hangup(hs01, "config_reloaded")
        assert reloaded["changed"] == ["accounts", "log.level"]
        assert reloaded["accounts"] == 2
        assert not events(hs01, "config_needs_restart")
        delivered(hs01, "NonDelivery")  # ayse's account is closed now
        assert events(hs01, "message_accepted")  # info lines again
        assert hs01.process.poll() is None and hs01.process.pid == pid
    finally:
        assert hs01.stop() == 0


def test_a_configuration_that_does_not_load_is_refused_and_the_old_one_kept(
    tmp_path: Path,
) -> None:
    mesh, hs01, base = single(tmp_path)
    hs01.start()
    try:
        broken = base + accounts("closed") + '\n[limits]\nmax_connections = "many"\n'
        for text, problem in [
            (broken, "limits.max_connections: expected int, got 'many'"),
            (base + "[node\n", "not valid TOML"),
        ]:
            hs01.config.write_text(text)
            refused = hangup(hs01, "config_reload_refused")
            assert refused["config"] == str(hs01.config)
            problems = refused["problems"]
            assert isinstance(problems, list) and any(problem in p for p in problems), problems
        assert not events(hs01, "config_reloaded")
        # A good file again, not read yet (the tools read it too): the node applied nothing
        # of what it refused, and ayse's account is as it was.
        hs01.config.write_text(base + accounts("closed"))
        delivered(hs01, "Delivery")
        # Keys read once at start: named, not applied; the node still listens where it did.
        moved = base.replace(f'address = "127.0.0.1:{hs01.peer_port}"', 'address = "127.0.0.1:1"')
        hs01.config.write_text(moved + accounts() + "\n[limits]\nmax_connections = 100\n")
        needs = hangup(hs01, "config_needs_restart")
        assert needs["keys"] == ["listen.peer", "limits"]
        assert events(hs01, "config_reloaded")[-1]["changed"] == []
        with peer_client(mesh, "hs02", hs01) as client:
            assert client.ehlo()[0] == 250
        with socket.create_connection(("127.0.0.1", hs01.submission_port), timeout=5):
            pass
    finally:
        assert hs01.stop() == 0


def test_sighup_reaches_every_node_process_and_a_replaced_crl_is_used(tmp_path: Path) -> None:
    mesh = make_mesh(tmp_path, ["hs01", "hs02"], processes={"hs01": 2})
    hs01 = mesh["hs01"]
    base = hs01.config.read_text()
    rewrite(hs01, base, accounts())
    hs01.start()
    try:
        wait_for(
            lambda: {1, 2} <= {e.get("process") for e in events(hs01, "listening")},
            what="both node processes listening",
        )
        pids = hs01.node_processes()
        assert len(pids) == 2
        # The development PKI's TLS CA revokes hs02's certificate in a new CRL file.
        now = dt.datetime.now(dt.UTC)
        revoking = make_crl(
            mesh.pki.tls_ca,
            now - dt.timedelta(minutes=1),
            now + dt.timedelta(days=1),
            [(mesh.pki.providers["hs02"].tls.certificate, now - dt.timedelta(minutes=1))],
        )
        (tmp_path / "pki" / "ca" / "tls-ca.crl").write_bytes(revoking.public_bytes(Encoding.PEM))
        rewrite(hs01, base, accounts("closed"))
        hangup(hs01, "config_reloaded", count=3)  # the supervisor and both node processes
        reloaded = events(hs01, "config_reloaded")
        assert {e.get("process") for e in reloaded} == {None, 1, 2}
        assert all(e["changed"] == ["accounts", "configured CRLs"] for e in reloaded)
        assert hs01.node_processes() == pids  # none started again
        delivered(hs01, "NonDelivery")
        for _ in range(10):  # whichever node process takes the connection
            with peer_client(mesh, "hs02", hs01) as client:
                client.ehlo("gw.hs02.kep.tr")
                assert client.mail("ali.yilmaz@hs02.kep.tr")[0] == 550
    finally:
        assert hs01.stop() == 0


def test_the_embedded_default_has_nothing_to_read_again(tmp_path: Path) -> None:
    context = build_context(embedded_default(tmp_path / "var"))
    try:
        with capture_logs() as logs:
            assert not reload.reload(context)
        assert [e["event"] for e in logs] == ["config_reload_skipped"]
    finally:
        context.store.close()


def test_every_key_is_either_reloaded_or_waits_for_a_restart() -> None:
    fields = {f.name for f in dataclasses.fields(NodeConfig)} - {"source"}
    assert set(reload.RELOADED) | set(reload.NEEDS_RESTART) == fields
    assert not set(reload.RELOADED) & set(reload.NEEDS_RESTART)


def test_the_log_level_key(tmp_path: Path) -> None:
    base = {"node": {"provider": "hs01", "dev_pki": "p"}}
    assert from_mapping(base, "x.toml", tmp_path).log_level == "info"
    assert from_mapping({**base, "log": {"level": "debug"}}, "x.toml", tmp_path).log_level == (
        "debug"
    )
    with pytest.raises(ConfigurationError, match=r"x\.toml: log\.level: debug, info, warning"):
        from_mapping({**base, "log": {"level": "loud"}}, "x.toml", tmp_path)


def test_the_log_level_changes_in_a_running_process() -> None:
    code = (
        "import structlog; from relay import logs; logs.configure('json');"
        "log = structlog.get_logger('kep.node');"
        "log.info('listening', n=1); logs.set_level('warning');"
        "log.info('listening', n=2); log.warning('session_cut', n=3);"
        "logs.set_level('debug'); log.debug('listening', n=4)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert [json.loads(line)["n"] for line in done.stderr.splitlines()] == [1, 3, 4]


def test_a_reload_that_raises_is_logged_and_the_next_sighup_still_heard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in applying a configuration must not end the node's SIGHUP handling for good."""
    context = build_context(embedded_default(tmp_path / "var"))
    node = Node(context)
    applied: list[object] = []

    def apply(_context: object, prepared: object) -> None:
        if not applied:
            applied.append("failed")
            raise RuntimeError("a bug in applying")
        applied.append(prepared)

    monkeypatch.setattr(reload, "prepare", lambda _context: "prepared")
    monkeypatch.setattr(reload, "apply", apply)

    async def two_hangups() -> None:
        task = asyncio.create_task(node.reload_on_hangup())
        for _ in range(2):
            node.hangups.set()
            for _ in range(100):
                await asyncio.sleep(0.01)
                if not node.hangups.is_set() and len(applied) in (1, 2):
                    break
        await asyncio.sleep(0.05)
        task.cancel()

    try:
        with capture_logs() as logs:
            asyncio.run(two_hangups())
        assert applied == ["failed", "prepared"]
        assert [e["event"] for e in logs if e["log_level"] == "error"] == ["config_reload_failed"]
    finally:
        context.store.close()


def test_the_supervisor_survives_a_reload_that_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    supervisor = Supervisor(embedded_default(tmp_path / "var"))
    supervisor.context = build_context(supervisor.config)

    def broken(_context: object) -> bool:
        raise RuntimeError("a bug in applying")

    monkeypatch.setattr(reload, "reload", broken)
    supervisor.hangup = True
    try:
        with capture_logs() as logs:
            supervisor._reload()
        assert [e["event"] for e in logs] == ["config_reload_failed"]
        assert supervisor.reloads == 0 and not supervisor.hangup
    finally:
        supervisor.context.store.close()
