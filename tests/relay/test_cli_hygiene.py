"""The command line as an operator meets it: output only on stdout, logs on stderr, nothing
created by a command that reads, messages shown decoded, a send that says how it ended."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.cli import ledger_cmd
from relay.mailbox import Account, AccountState, AccountType, Mailboxes
from tests.relay.gateways import ROOT, Gateway, make_mesh, run_cli, wait_for

SENDER = "ali.yilmaz@hs01.kep.tr"
RECIPIENT = "ayse.demir@hs01.kep.tr"


@pytest.mark.parametrize(
    "command",
    [
        ("mailbox", "list", RECIPIENT),
        ("mailbox", "show", RECIPIENT, "1"),
        ("ledger", "verify"),
        ("ledger", "checkpoint"),
        ("account", "list"),
        ("evidence", "export", "x@hs01.kep.tr", "--out", "x.zip"),
    ],
)
def test_a_command_without_a_node_creates_nothing(tmp_path: Path, command: tuple[str, ...]) -> None:
    # Run where no node lives, without --config: no data folder, no PKI, no store appear.
    done = run_cli(*command, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("kep-relay: no node here: its data folder")
    assert "--config" in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_a_named_configuration_whose_node_never_ran_creates_nothing(tmp_path: Path) -> None:
    config = tmp_path / "hs02.toml"
    config.write_text('[node]\nprovider = "hs02"\ndata_dir = "data"\ndev_pki = "pki"\n')
    done = run_cli("mailbox", "list", RECIPIENT, "--config", config, cwd=tmp_path)
    assert done.returncode == 2
    assert f"no node here: its data folder {tmp_path / 'data'} does not exist" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hs02.toml"]


def test_version(tmp_path: Path) -> None:
    done = run_cli("--version", cwd=tmp_path)
    assert done.returncode == 0
    assert done.stdout.startswith("kep-relay ") and done.stdout.split()[1][0].isdigit()


def test_mailbox_lists_in_filing_order_not_name_order(tmp_path: Path) -> None:
    account = Account(RECIPIENT, AccountType.SEND_RECEIVE, AccountState.ACTIVE, 10**9)
    boxes = Mailboxes(tmp_path, [account], clock=lambda: 1_800_000_000.0)
    # Filed in the same second: their names sort by key ("b" before "c"), not by time.
    first = boxes.put(RECIPIENT, "Delil", "c-first", b"Subject: first\r\n\r\n")
    second = boxes.put(RECIPIENT, "Delil", "b-second", b"Subject: second\r\n\r\n")
    os.utime(first, ns=(1_800_000_000_000_000_000, 1_800_000_000_000_000_000))
    os.utime(second, ns=(1_800_000_000_000_000_001, 1_800_000_000_000_000_001))
    assert sorted([first.name, second.name])[0] == second.name
    assert [p for p, _ in boxes.list(RECIPIENT, "Delil")] == [first, second]


def test_ledger_progress_lines(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger_cmd, "PROGRESS_EVERY", 0.0)
    progress = ledger_cmd.Progress()
    for done in range(1, 4):
        progress(done, 3)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("ledger: 1 of 3 evidence signatures checked (33 %")
    assert lines[-1].startswith("ledger: 3 of 3 evidence signatures checked (100 %")


@pytest.fixture(scope="module")
def hs01(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    mesh = make_mesh(tmp_path_factory.mktemp("hygiene"), ["hs01"])
    gateway = mesh["hs01"]
    gateway.start()
    yield gateway
    mesh.stop()


def test_send_waits_for_acceptance_and_says_so(hs01: Gateway) -> None:
    attachment = hs01.root / "dilekce.txt"
    attachment.write_text("ek\n")
    done = hs01.cli(
        "send", "--from", SENDER, "--to", RECIPIENT, "--subject", "Dilekçe ğüş",
        "--body", "Gövde metni", "--attach", str(attachment),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    queue_id = done.stdout.split(" as ")[1].split(":")[0]
    assert f"accepted: {queue_id}@hs01.kep.tr" in done.stdout
    # The S-GW had decided by then: its acceptance is in the store.
    assert hs01.query("SELECT state FROM messages WHERE id = ?", queue_id) == [("processed",)]


def test_send_of_a_refused_message_exits_1_with_the_reason(hs01: Gateway) -> None:
    done = hs01.cli(
        "send", "--from", "iptal.edilmis@hs01.kep.tr", "--to", RECIPIENT, "--subject", "x"
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "kep-relay: refused (rejected): UserCertExpiredOrRevoked" in done.stderr
    assert "revoked" in done.stderr


def test_send_no_wait_only_hands_over(hs01: Gateway) -> None:
    done = hs01.cli("send", "--from", "iptal.edilmis@hs01.kep.tr", "--to", RECIPIENT, "--no-wait")
    assert done.returncode == 0 and "accepted" not in done.stdout
    assert "submitted to" in done.stdout


def test_mailbox_show_decodes_and_raw_gives_the_bytes(hs01: Gateway) -> None:
    attachment = hs01.root / "ek.pdf"
    attachment.write_bytes(b"%PDF-1.4 " + bytes(range(256)))
    done = hs01.cli(
        "send", "--from", SENDER, "--to", RECIPIENT, "--subject", "Gösterilecek ileti",
        "--body", "Satır bir\nSatır iki", "--attach", str(attachment),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    wait_for(lambda: len(hs01.mail(RECIPIENT)) >= 1, what="delivery")
    listing = hs01.cli("mailbox", "list", RECIPIENT).stdout.splitlines()
    number = str(next(i for i, line in enumerate(listing, 1) if "Gösterilecek ileti" in line))
    shown = hs01.cli("mailbox", "show", RECIPIENT, number)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert "Subject: Gösterilecek ileti" in text and f"From: {SENDER}" in text
    assert "Satır bir\nSatır iki" in text
    assert "ek.pdf  application/pdf, 265 bytes" in text
    assert "Signed: S/MIME" in text
    assert "MII" not in text and "boundary=" not in text  # no raw S/MIME
    raw = subprocess.run(
        [sys.executable, "-m", "relay.cli", "mailbox", "show", RECIPIENT, number, "--raw",
         "--config", str(hs01.config)],
        capture_output=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=hs01.root,
    )  # fmt: skip
    # Exactly the filed bytes: no log line mixed in (logs go to stderr).
    filed = sorted(hs01.mail(RECIPIENT), key=lambda p: p.stat().st_mtime_ns)[int(number) - 1]
    assert raw.returncode == 0 and raw.stdout == filed.read_bytes()


def test_ledger_checkpoint_prints_its_result_once(hs01: Gateway) -> None:
    done = hs01.cli("ledger", "checkpoint")
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 1
    assert done.stdout.startswith("checkpoint: ")


def test_output_into_a_closed_pipe_ends_quietly(hs01: Gateway) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "relay.cli", "mailbox", "list", SENDER, "--folder", "Delil",
         "--config", str(hs01.config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=hs01.root,
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # like `| head` that has read enough before anything came
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) == 141
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr
