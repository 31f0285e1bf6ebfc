"""Storage faults made for real on a running gateway (INTEROP-PROFILE.md §2): a nearly full
tmpfs, a file-size limit on the process (``prlimit``), an immutable and a read-only spool
folder. A peer that follows the profile retries on 4xx and gives up on 5xx, so each must be
``451 4.3.0``, answered once after the final dot (the body is a user's original: its lines are
never read as commands), with nothing stored and nothing internal in the reply; and the node
goes on serving. These need root (mount, chattr): they skip elsewhere, and CI runs them.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.smtp.data import stuff
from tests.helpers import make_dispatch, need_privilege, need_tool
from tests.relay.gateways import Gateway, Mesh, make_mesh

MiB = 1024 * 1024
SENDER, RECIPIENT = "ali.yilmaz@hs02.kep.tr", "ayse.demir@hs01.kep.tr"
# A user's original whose lines are SMTP commands: 3 MiB, as in the report that found it.
HOSTILE = (
    f"From: {SENDER}\r\nTo: {RECIPIENT}\r\nSubject: komutlar\r\n\r\n".encode()
    + b"".join(
        line + b"\r\n"
        for line in [b"NOOP", b"RSET", b"MAIL FROM:<mallory@hs02.kep.tr>", b"DATA"] * 100
    )
    + (b"y" * 1000 + b"\r\n") * 3000
)


def _run(*command: str) -> bool:
    return subprocess.run(command, capture_output=True, timeout=30).returncode == 0


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    built = make_mesh(tmp_path, ["hs01", "hs02"])
    built["hs01"].data.mkdir(parents=True, exist_ok=True)
    yield built
    built.stop()


def _dispatch(mesh: Mesh, remmd: str, original: bytes = HOSTILE) -> bytes:
    return make_dispatch(
        mesh.pki,
        sender=SENDER,
        recipients=(RECIPIENT,),
        issuer="hs02",
        original=original,
        remmd_id=remmd,
    ).dispatch


def _deliver(mesh: Mesh, gateway: Gateway, message: bytes) -> list[str]:
    """Send one transaction as hs02 over mutual TLS, then QUIT; every reply line after DATA."""
    pki = mesh.root / "pki"
    context = ssl.create_default_context(cafile=str(pki / "ca" / "tls-ca.crt"))
    context.check_hostname = False
    context.load_cert_chain(
        str(pki / "providers/hs02/tls.crt"), str(pki / "providers/hs02/tls.key")
    )
    with (
        socket.create_connection(("127.0.0.1", gateway.peer_port), timeout=60) as raw,
        context.wrap_socket(raw) as tls,
    ):
        reader = tls.makefile("rb")

        def reply() -> str:
            while True:
                line = reader.readline().decode().rstrip("\r\n")
                if line[3:4] != "-":
                    return line

        assert reply().startswith("220")
        for command in ("EHLO gw.hs02.kep.tr", f"MAIL FROM:<{SENDER}>", f"RCPT TO:<{RECIPIENT}>"):
            tls.sendall(command.encode() + b"\r\n")
            assert reply().startswith("250"), command
        tls.sendall(b"DATA\r\n")
        assert reply().startswith("354")
        tls.sendall(stuff(message) + b"QUIT\r\n")
        return [line.decode().rstrip("\r\n") for line in reader.readlines()]


def _refused_once(replies: list[str]) -> None:
    assert len(replies) == 2, replies  # one for DATA, one for QUIT: the body stayed data
    assert replies[0].startswith("451 4.3.0"), replies
    assert replies[1].startswith("221"), replies
    for leak in ("Errno", "Error", "/", "spool", "tmp"):
        assert leak not in replies[0][10:], replies[0]


def _nothing_stored(gateway: Gateway) -> None:
    assert list((gateway.data / "spool" / "tmp").iterdir()) == []
    assert list((gateway.data / "spool" / "msg").iterdir()) == []
    assert gateway.query("SELECT COUNT(*) FROM messages") == [(0,)]


def test_a_full_disk_defers_and_the_message_passes_later(mesh: Mesh) -> None:
    need_tool("mount")
    hs01 = mesh["hs01"]
    need_privilege(
        "mounting a tmpfs", _run("mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(hs01.data))
    )
    try:
        hs01.start()
        stat = os.statvfs(hs01.data)
        filler = hs01.data / "filler"
        filler.write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize - 1 * MiB))
        dispatch = _dispatch(mesh, "rem-full@hs02.kep.tr")
        _refused_once(_deliver(mesh, hs01, dispatch))
        _nothing_stored(hs01)
        # Space comes back: the peer's retry is accepted, and the node never stopped.
        filler.unlink()
        assert _deliver(mesh, hs01, dispatch)[0].startswith("250 2.0.0 Queued as")
        assert hs01.query("SELECT COUNT(*) FROM messages WHERE kind = 'dispatch-in'") == [(1,)]
    finally:
        mesh.stop()
        _run("umount", "-l", str(hs01.data))


def test_a_file_size_limit_defers_and_smaller_messages_pass(mesh: Mesh) -> None:
    prlimit = need_tool("prlimit")
    hs01 = mesh["hs01"]
    hs01.start(prefix=(prlimit, f"--fsize={2 * MiB}"))
    _refused_once(_deliver(mesh, hs01, _dispatch(mesh, "rem-big@hs02.kep.tr")))
    _nothing_stored(hs01)
    small = HOSTILE[:20_000] + b"\r\n"
    assert _deliver(mesh, hs01, _dispatch(mesh, "rem-small@hs02.kep.tr", small))[0].startswith(
        "250"
    )


@pytest.mark.parametrize("how", ["immutable", "read-only"])
def test_a_spool_folder_that_cannot_be_written_defers(mesh: Mesh, how: str) -> None:
    hs01 = mesh["hs01"]
    hs01.start()
    folder = hs01.data / "spool" / "tmp"
    if how == "immutable":
        need_tool("chattr")
        need_privilege("chattr +i", _run("chattr", "+i", str(folder)))
        undo: tuple[str, ...] = ("chattr", "-i", str(folder))
    else:
        need_tool("mount")
        need_privilege(
            "a read-only bind mount",
            _run("mount", "--bind", str(folder), str(folder))
            and _run("mount", "-o", "remount,bind,ro", str(folder)),
        )
        undo = ("umount", str(folder))
    try:
        _refused_once(_deliver(mesh, hs01, _dispatch(mesh, f"rem-{how}@hs02.kep.tr")))
    finally:
        assert _run(*undo)
    _nothing_stored(hs01)
    assert _deliver(mesh, hs01, _dispatch(mesh, f"rem-{how}@hs02.kep.tr"))[0].startswith("250")
    assert shutil.disk_usage(hs01.data).free > 0
