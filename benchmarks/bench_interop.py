"""Benchmarks of the interop library (issue targets; run on demand, not in the test suite).

(a) Verify a 4 KiB Dispatch completely (envelope CMS, the user's CMS, the evidence XAdES and
    every certificate check) and build and sign one evidence, on one core, with P-256 and with
    RSA-2048 certificates. Targets: >= 1,000/s (P-256), >= 500/s (RSA-2048).
(b) Verify a Dispatch carrying a 100 MiB original in a fresh process, from a file.
    Targets: >= 400 MB/s, peak RSS growth <= 64 MiB.
(c) What the CMS and RFC 3161 parts of (a) cost alone, per call (wall and CPU time): signing a
    digest, making a time-stamp token, writing and signing the 4 KiB Dispatch's envelope,
    verifying a token, a CAdES-T signature and the whole envelope (no target; issue 13).

Run:  .venv/bin/python -m benchmarks.bench_interop [--seconds N] [--size-mib N] [--parts-only]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from cryptography.hazmat.primitives.serialization import Encoding

from interop.cms.parse import ParsedSignedData
from interop.cms.sign import sign_digest
from interop.cms.timestamp import LocalTsa, token_for_imprint, verify_token
from interop.cms.verify import verify_parsed
from interop.envelope.build import write_dispatch
from interop.envelope.parse import parse_envelope
from interop.envelope.smime import build_signed_message
from interop.envelope.verify import verify_envelope
from interop.evidence import xades
from interop.evidence.codes import Event, EvidenceType
from interop.evidence.issue import follow_up, submission_evidence
from interop.evidence.xades import sign_evidence
from interop.evidence.xmlio import safe_parse
from interop.limits import DEFAULT_LIMITS
from interop.pki.devpki import DevPki, generate
from interop.pki.signer import Signer
from interop.providers import BUILTIN_DIRECTORY
from interop.verifiers import Verifiers
from relay.keys import read_pki, verifiers_from_pki, write_pki

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
MiB = 1024 * 1024


def make_dispatch(pki: DevPki, body_bytes: int, out: BinaryIO) -> int:
    """Write a Dispatch whose original is about ``body_bytes`` long; return the original's size."""
    user = pki.user("ali.yilmaz@hs01.kep.tr")
    attachment = os.urandom(body_bytes * 3 // 4) if body_bytes > 4096 else b""

    def build(text_length: int) -> bytes:
        return build_signed_message(
            user.signer,
            sender=user.address,
            recipients=["ayse.demir@hs02.kep.tr"],
            subject="Benchmark",
            body="x" * text_length,
            now=NOW,
            attachments=(("ek.bin", "application/octet-stream", attachment),) if attachment else (),
        )

    original = build(100)
    if not attachment:  # size the text so the whole signed original is body_bytes long
        original = build(max(1, 100 + (body_bytes - len(original)) * 3 // 4))
    submission = submission_evidence(
        io.BytesIO(original),
        BUILTIN_DIRECTORY["hs01"],
        user.address,
        ["ayse.demir@hs02.kep.tr"],
        "bench@hs01.kep.tr",
        NOW,
    )
    signer = pki.providers["hs01"].process
    stamp = stamper(pki)  # as a production S-GW sends it: XAdES-T in a CAdES-T envelope
    write_dispatch(
        out,
        io.BytesIO(original),
        submission,
        sign_evidence(submission, signer, NOW, timestamp=stamp),
        signer,
        NOW,
        message_id="<bench@hs01.kep.tr>",
        timestamp=stamp,
    )
    return len(original)


def stamper(pki: DevPki) -> Callable[[bytes], bytes]:
    """The development TSA in process: what time-stamping costs without the network."""
    tsa = LocalTsa(pki.tsa)
    return lambda data: tsa.stamp(data, NOW)


def bench_small(algorithm: str, seconds: float) -> dict[str, float]:
    pki = generate(NOW - dt.timedelta(minutes=1), ["hs01", "hs02"], algorithm)
    verifiers: Verifiers = verifiers_from_pki(pki)
    buffer = io.BytesIO()
    original_size = make_dispatch(pki, 4096, buffer)
    data = buffer.getvalue()
    receiver = pki.providers["hs02"].process
    hs02 = BUILTIN_DIRECTORY["hs02"]
    stamp = stamper(pki)

    def one() -> None:
        result = verify_envelope(io.BytesIO(data), verifiers, NOW, peer="hs01")
        if not result.ok or result.evidence is None or result.evidence.evidence is None:
            raise SystemExit(f"benchmark envelope did not verify: {result.detail}")
        evidence = follow_up(
            result.evidence.evidence,
            hs02,
            EvidenceType.RelayREMMDAcceptanceRejection,
            Event.Acceptance,
            NOW,
            recipient=1,
        )
        sign_evidence(evidence, receiver, NOW, timestamp=stamp)  # XAdES-T, as a node signs

    for _ in range(20):  # warm caches (certificate validation results, imports)
        one()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        one()
        count += 1
    elapsed = time.perf_counter() - start
    return {
        "original_bytes": original_size,
        "envelope_bytes": len(data),
        "per_second": count / elapsed,
        "ms_each": elapsed / count * 1000,
        "xades_ms": xades_alone_ms(data, verifiers, receiver, seconds / 4),
    }


def xades_alone_ms(data: bytes, verifiers: Verifiers, signer: Signer, seconds: float) -> float:
    """What the XML signature alone costs in (a): checking the evidence's XAdES signature
    against its known signer certificate (its references, libxmlsec1's mathematics, the signed
    properties; no chain, no model) and signing one evidence."""
    result = verify_envelope(io.BytesIO(data), verifiers, NOW, peer="hs01")
    assert result.evidence is not None and result.evidence.evidence is not None
    assert result.evidence.signer is not None
    evidence, certificate = result.evidence.evidence, result.evidence.signer
    leaf_der = certificate.public_bytes(Encoding.DER)
    signed = parse_envelope(io.BytesIO(data)).evidence_xml

    def one() -> None:
        root = safe_parse(signed)
        named, properties = xades._checked_references(root, root[-1])
        xades._verify_mathematics(root[-1], named, leaf_der)
        certificates = xades._certificates(root[-1], DEFAULT_LIMITS)
        xades._signed_signature_properties(properties, certificate, certificates)
        sign_evidence(evidence, signer, NOW)

    for _ in range(20):
        one()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        one()
        count += 1
    return (time.perf_counter() - start) / count * 1000


def per_call(function: Callable[[], object], seconds: float) -> tuple[float, float]:
    """(wall ms, CPU ms) per call of ``function``, run for about ``seconds`` after a warm-up."""
    for _ in range(20):
        function()
    count, start, cpu = 0, time.perf_counter(), time.process_time()
    while count < 200 or time.perf_counter() - start < seconds:
        function()
        count += 1
    wall = time.perf_counter() - start
    return wall / count * 1000, (time.process_time() - cpu) / count * 1000


def bench_parts(algorithm: str, seconds: float) -> dict[str, tuple[float, float]]:
    """(c) The CMS and time-stamp parts of (a), each alone, as a node does them."""
    pki = generate(NOW - dt.timedelta(minutes=1), ["hs01", "hs02"], algorithm)
    verifiers: Verifiers = verifiers_from_pki(pki)
    tsa_validator = verifiers.tsa
    assert tsa_validator is not None
    buffer = io.BytesIO()
    make_dispatch(pki, 4096, buffer)
    data = buffer.getvalue()
    envelope = parse_envelope(io.BytesIO(data))
    assert envelope.original is not None
    original = data[envelope.original.start : envelope.original.end]
    result = verify_envelope(io.BytesIO(data), verifiers, NOW, peer="hs01")
    assert result.ok and result.evidence is not None and result.evidence.evidence is not None
    evidence = result.evidence.evidence
    signer = pki.providers["hs01"].process
    stamp = stamper(pki)
    tsa = LocalTsa(pki.tsa)
    digest = hashlib.sha256(original).digest()
    signature = sign_digest(signer, digest, NOW, timestamp=stamp)
    stamped = b"a signature value"
    token = tsa.stamp(stamped, NOW)

    def write_envelope() -> None:
        write_dispatch(
            io.BytesIO(),
            io.BytesIO(original),
            evidence,
            envelope.evidence_xml,
            signer,
            NOW,
            message_id="<bench@hs01.kep.tr>",
            timestamp=stamp,
        )

    def verify_one_token() -> None:
        if not verify_token(token, stamped, NOW, tsa_validator).ok:
            raise SystemExit("benchmark token did not verify")

    def verify_signature() -> None:
        parsed = ParsedSignedData.parse(signature)
        checked = verify_parsed(
            parsed,
            digest,
            NOW,
            verifiers.process("hs01"),
            expected_names=["hs01.kep.tr"],
            tsa_validator=tsa_validator,
        )
        if not checked.ok:
            raise SystemExit(f"benchmark signature did not verify: {checked.detail}")

    def verify_whole_envelope() -> None:
        if not verify_envelope(io.BytesIO(data), verifiers, NOW, peer="hs01").ok:
            raise SystemExit("benchmark envelope did not verify")

    each = seconds / 8
    return {
        "sign_digest (CAdES-BES)": per_call(lambda: sign_digest(signer, digest, NOW), each),
        "token_for_imprint": per_call(
            lambda: token_for_imprint(pki.tsa, "sha256", digest, NOW, 1234, nonce=5678), each
        ),
        "LocalTsa.stamp": per_call(lambda: tsa.stamp(stamped, NOW), each),
        "sign_digest + token (CAdES-T)": per_call(
            lambda: sign_digest(signer, digest, NOW, timestamp=stamp), each
        ),
        "write_dispatch 4 KiB (CAdES-T)": per_call(write_envelope, each),
        "verify_token": per_call(verify_one_token, each),
        "parse + verify_parsed (CAdES-T)": per_call(verify_signature, each),
        "verify_envelope 4 KiB": per_call(verify_whole_envelope, each),
    }


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def child_verify_large(pki_dir: str, path: str) -> None:
    """Runs in a fresh process: verify one large file, report time and peak RSS growth."""
    verifiers = verifiers_from_pki(read_pki(Path(pki_dir)))
    # Everything except the verification itself is loaded: warm the imports with a tiny one.
    buffer = io.BytesIO()
    make_dispatch(read_pki(Path(pki_dir)), 4096, buffer)
    verify_envelope(io.BytesIO(buffer.getvalue()), verifiers, NOW, peer="hs01")
    del buffer
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark (Linux)
    baseline = _rss_kib("VmRSS")
    start = time.perf_counter()
    with open(path, "rb") as stream:
        result = verify_envelope(stream, verifiers, NOW, peer="hs01")
    elapsed = time.perf_counter() - start
    print(
        json.dumps(
            {
                "ok": result.ok,
                "detail": result.detail,
                "seconds": elapsed,
                "peak_growth_kib": _rss_kib("VmHWM") - baseline,
            }
        )
    )


def bench_large(size_mib: int) -> dict[str, float]:
    pki = generate(NOW - dt.timedelta(minutes=1), ["hs01", "hs02"], "ec")
    with tempfile.TemporaryDirectory() as folder:
        write_pki(pki, Path(folder) / "pki")
        path = Path(folder) / "dispatch.eml"
        with path.open("wb") as out:
            make_dispatch(pki, size_mib * MiB, out)
        size = path.stat().st_size
        path.read_bytes()  # into the page cache: this measures our code, not the disk
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.bench_interop",
                "--child",
                str(Path(folder) / "pki"),
                str(path),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    if not report["ok"]:
        raise SystemExit(f"large envelope did not verify: {report['detail']}")
    return {
        "envelope_bytes": size,
        "mb_per_second": size / report["seconds"] / 1e6,
        "seconds": report["seconds"],
        "peak_rss_growth_mib": report["peak_growth_kib"] / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--size-mib", type=int, default=100)
    parser.add_argument("--child", nargs=2, metavar=("PKI", "FILE"), help=argparse.SUPPRESS)
    parser.add_argument("--parts-only", action="store_true", help="run only (c)")
    args = parser.parse_args()
    if args.child:
        child_verify_large(*args.child)
        return
    if not args.parts_only:
        bench_targets(args)
    print("(c) the CMS and time-stamp parts alone, per call, one core (wall ms / CPU ms)")
    for algorithm in ("ec", "rsa"):
        label = "P-256" if algorithm == "ec" else "RSA-2048"
        for part, (wall, cpu) in bench_parts(algorithm, args.seconds).items():
            print(f"    {label:9} {part:34} {wall:7.3f} / {cpu:7.3f}")


def bench_targets(args: argparse.Namespace) -> None:
    print("(a) verify a 4 KiB Dispatch completely + build and sign one evidence, one core")
    for algorithm, target in (("ec", 1000), ("rsa", 500)):
        r = bench_small(algorithm, args.seconds)
        label = "P-256" if algorithm == "ec" else "RSA-2048"
        print(
            f"    {label:9} {r['per_second']:7.0f}/s ({r['ms_each']:.2f} ms each; original "
            f"{r['original_bytes']:.0f} B, envelope {r['envelope_bytes']:.0f} B)   "
            f"target >= {target}/s: "
            f"{'met' if r['per_second'] >= target else 'NOT met'}"
        )
        print(
            f"              of which the XAdES alone (python-xmlsec verify + sign):"
            f" {r['xades_ms']:.2f} ms, against {1000 / target:.1f} ms for everything at the target"
        )
    r = bench_large(args.size_mib)
    print(
        f"(b) verify a Dispatch with a {args.size_mib} MiB original "
        f"({r['envelope_bytes'] / MiB:.1f} MiB envelope, from a file)"
    )
    print(
        f"    {r['mb_per_second']:7.0f} MB/s   target >= 400 MB/s: "
        f"{'met' if r['mb_per_second'] >= 400 else 'NOT met'}"
    )
    print(
        f"    {r['peak_rss_growth_mib']:7.1f} MiB peak RSS growth   target <= 64 MiB: "
        f"{'met' if r['peak_rss_growth_mib'] <= 64 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
