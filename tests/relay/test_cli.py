"""The kep-relay command line, run as a real process where exit codes matter."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from interop.pki.devpki import DevPki
from relay.cli import main
from relay.keys import read_pki
from tests.helpers import LATER, XSD_DIR, make_dispatch, make_evidence_message
from tests.relay.gateways import run_cli


def test_pki_init_writes_the_documented_layout(tmp_path: Path) -> None:
    out = tmp_path / "pki"
    done = run_cli("pki", "init", "--out", out, "--providers", "hs01,hs02", "--algorithm", "ec")
    assert done.returncode == 0, done.stderr
    assert "development and tests only" in done.stdout
    for relative in (
        "pki.json",
        "ca/process-ca.crt",
        "ca/tls-ca.crt",
        "ca/user-ca.crt",
        "ca/user-ca.crl",
        "tsa/tsa.crt",
        "providers/hs01/process.key",
        "providers/hs02/tls.crt",
        "users/ali.yilmaz@hs01.kep.tr.crt",
        "users/iptal.edilmis@hs02.kep.tr.key",
    ):
        assert (out / relative).is_file(), relative
    assert oct((out / "providers/hs01/process.key").stat().st_mode & 0o777) == "0o600"
    pki = read_pki(out)
    assert sorted(pki.providers) == ["hs01", "hs02"]
    assert {u.state for u in pki.users} == {"valid", "expired", "revoked"}
    again = run_cli("pki", "init", "--out", out)
    assert again.returncode == 2 and "--force" in again.stderr


def test_pki_init_rsa_and_selfcheck(tmp_path: Path) -> None:
    assert (
        run_cli(
            "pki",
            "init",
            "--out",
            tmp_path / "pki",
            "--providers",
            "hs01,hs02",
            "--algorithm",
            "rsa",
        ).returncode
        == 0
    )
    done = run_cli("selfcheck", "--pki", tmp_path / "pki", "--out", tmp_path / "out")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "self-check passed" in done.stdout
    verify = run_cli(
        "envelope", "verify", tmp_path / "out" / "dispatch.eml", "--pki", tmp_path / "pki"
    )
    assert verify.returncode == 0 and "VALID" in verify.stdout


def test_envelope_verify_valid_and_json(pki: DevPki, pki_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "dispatch.eml"
    path.write_bytes(make_dispatch(pki).dispatch)
    at = LATER.isoformat()
    done = run_cli(
        "envelope", "verify", path, "--pki", pki_dir, "--at", at, "--peer", "hs01", "--json"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["valid"] is True and report["msg_type"] == "Dispatch"
    assert {c["name"] for c in report["checks"]} >= {
        "envelope signature",
        "evidence signature",
        "user signature",
        "original digest",
    }
    assert report["evidence"]["delil_turu"] == 10
    assert len(report["original_sha256"]) == 64


def test_envelope_verify_invalid_prints_the_reason(
    pki: DevPki, pki_dir: Path, tmp_path: Path
) -> None:
    path = tmp_path / "dispatch.eml"
    path.write_bytes(make_dispatch(pki, sender="iptal.edilmis@hs01.kep.tr").dispatch)
    done = run_cli("envelope", "verify", path, "--pki", pki_dir, "--at", LATER.isoformat())
    assert done.returncode == 1
    assert "INVALID: UserCertExpiredOrRevoked (reason 4)" in done.stdout
    path.write_bytes(b"not an envelope\r\n\r\n")
    broken = run_cli("envelope", "verify", path, "--pki", pki_dir, "--json")
    assert broken.returncode == 1
    assert json.loads(broken.stdout)["reason"] == "InvalidMessageFormat"


def test_verify_as_of_a_moment(pki: DevPki, pki_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "dispatch.eml"
    path.write_bytes(make_dispatch(pki).dispatch)
    far_future = "2040-01-01T00:00:00Z"
    done = run_cli("envelope", "verify", path, "--pki", pki_dir, "--at", far_future)
    assert done.returncode == 1 and "expired" in done.stdout


def test_evidence_verify(pki: DevPki, pki_dir: Path, tmp_path: Path) -> None:
    from interop.evidence.xades import sign_evidence

    exchange = make_dispatch(pki)
    evidence, _message = make_evidence_message(pki, exchange.submission)
    path = tmp_path / "delil.xml"
    path.write_bytes(sign_evidence(evidence, pki.providers["hs02"].process, LATER))
    args: list[str | Path] = [
        "evidence",
        "verify",
        path,
        "--pki",
        pki_dir,
        "--at",
        LATER.isoformat(),
    ]
    if XSD_DIR.is_dir():
        args += ["--xsd", XSD_DIR]
    done = run_cli(*args, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["evidence"]["type"] == "DeliveryNonDeliveryToRecipient"
    assert report["evidence"]["delil_turu"] == 40
    path.write_bytes(
        path.read_bytes().replace(b"Delivery</", b"Delivery</", 1).replace(b"rem-", b"rez-")
    )
    tampered = run_cli("evidence", "verify", path, "--pki", pki_dir, "--at", LATER.isoformat())
    assert tampered.returncode == 1 and "INVALID: InvalidMessageFormat" in tampered.stdout


def test_evidence_verify_of_an_unreadable_time_is_invalid_not_a_traceback(
    pki: DevPki, pki_dir: Path, tmp_path: Path
) -> None:
    from interop.evidence.xades import sign_evidence

    evidence, _message = make_evidence_message(pki, make_dispatch(pki).submission)
    signed = sign_evidence(evidence, pki.providers["hs02"].process, LATER)
    stamp = evidence.event_time.strftime("%Y-%m-%dT%H:%M:%SZ").encode()
    path = tmp_path / "delil.xml"
    # Found by fuzzing: a time at the end of the calendar in another zone overflowed.
    path.write_bytes(signed.replace(stamp, b"9999-12-31T23:59:59-01:00", 1))
    done = run_cli("evidence", "verify", path, "--pki", pki_dir)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "INVALID: InvalidMessageFormat" in done.stdout and "Traceback" not in done.stderr


def test_usage_errors_exit_2(pki_dir: Path, tmp_path: Path) -> None:
    assert run_cli("envelope", "verify").returncode == 2
    assert run_cli("envelope", "verify", tmp_path / "missing.eml", "--pki", pki_dir).returncode == 2
    assert (
        run_cli(
            "envelope", "verify", tmp_path / "x", "--pki", pki_dir, "--at", "yesterday"
        ).returncode
        == 2
    )
    (tmp_path / "x").write_bytes(b"x")
    assert run_cli("envelope", "verify", tmp_path / "x", "--pki", tmp_path).returncode == 2
    assert run_cli("frobnicate").returncode == 2


def test_main_in_process_returns_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # selfcheck signs and verifies at the real time, so it gets a PKI made now.
    assert main(["pki", "init", "--out", str(tmp_path / "pki"), "--providers", "hs03,hs04"]) == 0
    assert main(["selfcheck", "--pki", str(tmp_path / "pki")]) == 0
    assert "self-check passed" in capsys.readouterr().out
    assert main(["selfcheck", "--pki", str(tmp_path)]) == 2


def test_evidence_verify_with_roots_alone(pki: DevPki, pki_dir: Path, tmp_path: Path) -> None:
    """``--trust``: an auditor's roots as every provider's process CA; revocation data only
    from ``--crl``, required (fail closed)."""
    from interop.evidence.xades import sign_evidence

    evidence, _message = make_evidence_message(pki, make_dispatch(pki).submission)
    path = tmp_path / "delil.xml"
    path.write_bytes(sign_evidence(evidence, pki.providers["hs02"].process, LATER))
    roots = ("--trust", pki_dir / "ca" / "process-ca.crt")
    at = ("--at", LATER.isoformat())
    crl = ("--crl", pki_dir / "ca" / "process-ca.crl")
    done = run_cli("evidence", "verify", path, *roots, *crl, *at)
    assert done.returncode == 0 and done.stdout.rstrip().endswith("VALID"), done.stdout
    unknown = run_cli("evidence", "verify", path, *roots, *at)
    assert unknown.returncode == 1 and "revocation status unknown" in unknown.stdout
    assert run_cli("evidence", "verify", path, *roots, "--pki", pki_dir).returncode == 2
    (tmp_path / "empty.pem").write_text("")
    empty = run_cli("evidence", "verify", path, "--trust", tmp_path / "empty.pem")
    assert empty.returncode == 2 and "Traceback" not in empty.stderr, empty.stderr


# -- inputs once taken silently, now refused with what to do (exit 2, one line, nothing made) ----


def _refused(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_evidence_verify_with_a_wrong_xsd_folder_is_a_usage_error(
    pki: DevPki, pki_dir: Path, tmp_path: Path
) -> None:
    """Not INVALID: the evidence was never judged; the line names the folder."""
    from interop.evidence.xades import sign_evidence

    evidence, _message = make_evidence_message(pki, make_dispatch(pki).submission)
    path = tmp_path / "delil.xml"
    path.write_bytes(sign_evidence(evidence, pki.providers["hs02"].process, LATER))
    at = ("--pki", pki_dir, "--at", LATER.isoformat())
    missing = tmp_path / "no-such-folder"
    line = _refused(run_cli("evidence", "verify", path, *at, "--xsd", missing))
    assert line == f"kep-relay: --xsd {missing}: no such folder"
    empty = tmp_path / "empty"
    empty.mkdir()
    line = _refused(run_cli("evidence", "verify", path, *at, "--xsd", empty))
    assert line.startswith(f"kep-relay: --xsd {empty}: no TS02640_v2.xsd there")


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ("HS01", "'HS01' is not a provider id: write it in lower case, 'hs01'"),
        ("hs01,h", "'h' is not a provider id: 2 to 16 lower-case letters and digits"),
        ("hs01,hs-2", "'hs-2' is not a provider id"),
    ],
)
def test_pki_init_refuses_a_provider_id_and_gives_the_valid_form(
    tmp_path: Path, given: str, said: str
) -> None:
    out = tmp_path / "pki"
    line = _refused(run_cli("pki", "init", "--out", out, "--providers", given))
    assert line.startswith(f"kep-relay: --providers: {said}"), line
    assert not out.exists()


@pytest.mark.parametrize("quota", ["0", "-5", "nan"])
def test_account_quota_of_zero_or_less_is_refused(tmp_path: Path, quota: str) -> None:
    """0 used to be read as "not given" (the quota stayed as it was); -5 was stored."""
    config = tmp_path / "n.toml"
    config.write_text('[node]\nprovider = "hs01"\ndev_pki = "pki"\ndata_dir = "data"\n')
    for action in ("add", "set"):
        line = _refused(
            run_cli("account", action, "a@hs01.kep.tr", "--config", config, "--quota-mib", quota)
        )
        assert line.startswith(f"kep-relay: --quota-mib {quota}: a quota is more than 0 MiB;")
        assert "leave --quota-mib out to keep the account's quota" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n.toml"]  # nothing made


def test_send_with_an_attachment_that_is_not_there_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "sözleşme.pdf"
    line = _refused(
        run_cli(
            "send",
            "--from",
            "ali.yilmaz@hs01.kep.tr",
            "--to",
            "ayse.demir@hs01.kep.tr",
            "--attach",
            missing,
        )
    )
    assert line == f"kep-relay: --attach {missing}: cannot be read: No such file or directory"
