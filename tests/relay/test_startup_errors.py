"""``kep-relay serve`` that cannot start says so in one line and exits 2 (relay/startup.py).

Real processes (``python -m relay.cli serve``) of a production configuration, so that no
development-PKI warning shares stderr with the line: a port of each listener held by a socket
of the test (with one node process and under a supervisor of two), a data folder under a
file, and one that cannot be written (immutable, as root; its mode, as anyone else). Each
must end with exit code 2, exactly one line on stderr naming the key, the file and what to do,
no traceback, and nothing made.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from interop.errors import ConfigurationError
from interop.pki.devpki import DevPki
from relay import startup
from relay.config_file import load
from tests.helpers import need_privilege, need_tool, production_config
from tests.relay.gateways import ROOT, free_port

LISTENERS = ("peer", "submission", "monitoring")


def serve(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay.cli", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=config.parent,
    )


def configured(pki: DevPki, folder: Path, processes: int = 1, data: str = "data") -> Path:
    """A production configuration on free ports; they are in its [listen] tables."""
    path = production_config(pki, folder)
    listen = "".join(
        f'[listen.{name}]\naddress = "127.0.0.1:{free_port()}"\n' for name in LISTENERS
    )
    path.write_text(
        path.read_text()
        .replace("processes = 1", f"processes = {processes}")
        .replace('data_dir = "data"', f'data_dir = "{data}"')
        + listen
    )
    return path


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("processes", [1, 2])
@pytest.mark.parametrize("listener", LISTENERS)
def test_a_port_in_use_is_named_once(
    pki: DevPki, tmp_path: Path, listener: str, processes: int
) -> None:
    config = configured(pki, tmp_path, processes)
    address = getattr(load(config), f"{listener}_listener")
    with socket.socket() as holder:
        holder.bind((address.host, address.port))
        holder.listen()
        line = one_line(serve(config))
    assert line == (
        f"kep-relay: cannot listen on 127.0.0.1:{address.port} (listen.{listener}.address in"
        f" {config}): address already in use; stop what uses it or change the port"
    )
    assert not (tmp_path / "data").exists()  # a node that cannot listen has made nothing


def test_a_data_folder_under_a_file_is_named(pki: DevPki, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    config = configured(pki, tmp_path, processes=2, data="afile/data")
    assert one_line(serve(config)) == (
        f"kep-relay: cannot make the data folder {tmp_path}/afile/data (node.data_dir in"
        f" {config}): {tmp_path}/afile is a file, not a folder; change node.data_dir"
    )


def _run(*command: str) -> bool:
    return subprocess.run(command, capture_output=True, timeout=30).returncode == 0


@pytest.fixture
def unwritable(tmp_path: Path) -> Iterator[Path]:
    """A data folder that exists and cannot be written in: mode 0555, or, as root (who
    ignores a folder's mode), immutable (chattr +i), which binds root too."""
    folder = tmp_path / "data"
    folder.mkdir()
    if os.geteuid() == 0:
        need_tool("chattr")
        need_privilege("chattr +i", _run("chattr", "+i", str(folder)))
        yield folder
        assert _run("chattr", "-i", str(folder))
        return
    folder.chmod(0o555)
    yield folder
    folder.chmod(0o755)


@pytest.mark.parametrize("processes", [1, 2])
def test_a_data_folder_that_cannot_be_written_is_named_with_the_store_and_user(
    pki: DevPki, tmp_path: Path, unwritable: Path, processes: int
) -> None:
    config = configured(pki, tmp_path, processes)
    line = one_line(serve(config))
    user = startup.running_user()
    assert line.startswith(
        f"kep-relay: cannot write in the data folder {unwritable} (node.data_dir in {config}),"
        f" which holds the store {unwritable}/state.sqlite3, as user {user}: "
    ), line
    assert line.endswith(f"; make it writable for {user} or change node.data_dir")


def test_a_store_that_does_not_answer_is_named_without_its_password(
    pki: DevPki, tmp_path: Path
) -> None:
    """After the wait a node gives its database (none here), the line names the URL with
    its password hidden."""
    config = configured(pki, tmp_path)
    port = free_port()  # nothing listens there
    with config.open("a") as toml:
        toml.write(f'[store]\nurl = "postgresql://kep:s3cret@127.0.0.1:{port}/kep"\n')
    with pytest.raises(ConfigurationError) as caught:
        startup.check(load(config), store_wait=0)
    assert caught.value.detail.startswith(
        f"cannot reach the store at postgresql://kep:***@127.0.0.1:{port}/kep (store.url in"
        f" {config}) after 0 s: "
    )
    assert caught.value.detail.endswith("; start the database or correct store.url")
    assert "s3cret" not in caught.value.detail
