"""``kep-relay envelope verify`` and ``kep-relay evidence verify``: the operator's and the
auditor's tools. They print what was checked and exit 0 when valid, 1 when not, 2 on misuse."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes

from interop.envelope.verify import Check, verify_envelope
from interop.errors import KepError
from interop.evidence import xmlio
from interop.evidence.model import Evidence
from interop.evidence.schema import schema_errors
from interop.evidence.xades import verify_evidence
from interop.limits import DEFAULT_LIMITS
from interop.reasons import Reason
from interop.revocation import RevocationData
from interop.verifiers import Verifiers
from relay.config import load
from relay.context import verifiers_for
from relay.pkidir import load_crls, read_pki, verifiers_from_pki
from relay.xsd import load_schema


def register(commands: Any) -> None:
    for noun, run in (("envelope", run_envelope), ("evidence", run_evidence)):
        group = commands.add_parser(noun, help=f"{noun} tools")
        sub = group.add_subparsers(dest=f"{noun}_command", required=True, metavar="ACTION")
        verify = sub.add_parser("verify", help=f"verify a {noun} file and show what was checked")
        verify.add_argument("file", type=Path)
        trust = verify.add_mutually_exclusive_group(required=True)
        trust.add_argument("--pki", type=Path, help="trust from a dev PKI folder")
        trust.add_argument("--config", type=Path, help="trust of a node configuration (TOML)")
        verify.add_argument(
            "--at", type=moment, help="verify as of this ISO 8601 time (UTC if no zone)"
        )
        verify.add_argument("--json", action="store_true", help="print one JSON object")
        verify.add_argument(
            "--crl",
            type=Path,
            action="append",
            default=[],
            metavar="FILE",
            help="a CRL (PEM or DER) to use besides the trust's: one current when the"
            " signature was made, to verify it after the signer's certificate expired",
        )
        if noun == "envelope":
            verify.add_argument("--peer", help="provider id the envelope came from (as TLS said)")
        else:
            verify.add_argument(
                "--xsd", type=Path, help="also validate against the ETSI XSD in this folder"
            )
        verify.set_defaults(run=run)


def moment(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from exc
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _setup(args: argparse.Namespace) -> tuple[Verifiers, dt.datetime] | int:
    if not args.file.is_file():
        print(f"kep-relay: {args.file}: no such file", file=sys.stderr)
        return 2
    if args.config is not None:
        verifiers = verifiers_for(load(args.config))
    else:
        verifiers = verifiers_from_pki(read_pki(args.pki))
    if args.crl:
        current = verifiers.revocation
        crls = RevocationData.of(
            [*current.crls, *load_crls(tuple(args.crl))], require=current.require
        )
        verifiers = Verifiers(verifiers.trust, crls)
    return verifiers, args.at or dt.datetime.now(dt.UTC)


def _evidence_summary(evidence: Evidence | None) -> dict[str, Any] | None:
    if evidence is None:
        return None
    return {
        "type": evidence.type.value,
        "event": evidence.event.value,
        "identifier": evidence.identifier,
        "delil_turu": evidence.delil_turu,
        "issuer": evidence.issuer,
        "event_time": evidence.event_time.isoformat(),
        "sender": evidence.sender,
        "recipients": list(evidence.recipients),
        "refers_to_recipient": evidence.refers_to_recipient,
        "reasons": [
            {"reason": r.reason.name, "code": r.reason.code, "details": r.details}
            for r in evidence.reasons
        ],
        "remmd_message_id": evidence.message.remmd_message_id,
        "message_digest_sha256": evidence.message.digest.hex(),
        "teblig_zamani": evidence.teblig_zamani.isoformat() if evidence.teblig_zamani else None,
    }


def _report(args: argparse.Namespace, report: dict[str, Any], checks: list[Check]) -> int:
    report["checks"] = [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in checks]
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        for key, value in report.items():
            if key in ("checks", "valid", "reason", "reason_code", "detail") or value is None:
                continue
            text = (
                ", ".join(f"{k}={v}" for k, v in value.items() if v not in (None, [], ""))
                if isinstance(value, dict)
                else value
            )
            print(f"{key}: {text}")
        for check in checks:
            print(f"  [{'ok' if check.ok else 'FAIL'}] {check.name}: {check.detail}")
        if report["valid"]:
            print("VALID")
        else:
            print(
                f"INVALID: {report['reason']} (reason {report['reason_code']}): {report['detail']}"
            )
    return 0 if report["valid"] else 1


def _malformed(args: argparse.Namespace, exc: KepError) -> int:
    report = {
        "valid": False,
        "reason": exc.reason.name,
        "reason_code": exc.reason.code,
        "detail": exc.detail,
    }
    return _report(args, report, [Check("format", False, exc.detail)])


def run_envelope(args: argparse.Namespace) -> int:
    setup = _setup(args)
    if isinstance(setup, int):
        return setup
    verifiers, now = setup
    try:
        # Streamed: a large envelope is located and hashed in place, never loaded.
        with args.file.open("rb") as stream:
            result = verify_envelope(stream, verifiers, now, peer=args.peer)
    except KepError as exc:
        return _malformed(args, exc)
    env = result.envelope
    report: dict[str, Any] = {
        "valid": result.ok,
        "reason": result.reason.name if result.reason else None,
        "reason_code": result.reason.code if result.reason else None,
        "detail": result.detail,
        "verified_at": now.isoformat(),
        "msg_type": env.msg_type.value,
        "message_identifier": env.message_identifier,
        "ileti_tip": env.ileti_tip.value,
        "issuer": result.issuer_id,
        "size": env.size,
        "original_sha256": result.original_digest.hex() if result.original_digest else None,
        "evidence": _evidence_summary(result.evidence.evidence if result.evidence else None),
    }
    if result.envelope_signature and result.envelope_signature.chain:
        report["envelope_chain"] = [
            c.subject.rfc4514_string() for c in result.envelope_signature.chain.chain
        ]
    if result.user_signature and result.user_signature.signer:
        report["user_signer"] = result.user_signature.signer_name
    return _report(args, report, list(result.checks))


def run_evidence(args: argparse.Namespace) -> int:
    setup = _setup(args)
    if isinstance(setup, int):
        return setup
    verifiers, now = setup
    with args.file.open("rb") as handle:  # one byte past the limit is enough to refuse it
        data = handle.read(DEFAULT_LIMITS.evidence_xml + 1)
    checks: list[Check] = []
    try:
        unsigned = xmlio.parse(data)
        if args.xsd:
            errors = schema_errors(load_schema(args.xsd), data)
            checks.append(Check("schema", not errors, "; ".join(errors) or "ETSI XSD accepts it"))
        domain = unsigned.issuer.rsplit("@", 1)[-1].lower()
        entry = verifiers.trust.owner_of(domain)
        if entry is None:
            checks.append(Check("issuer", False, f"{domain} is not a provider in the trust list"))
            refused: dict[str, Any] = {
                "valid": False,
                "reason": Reason.PolicyViolation.name,
                "reason_code": Reason.PolicyViolation.code,
                "detail": f"issuer {unsigned.issuer} is not trusted",
                "evidence": _evidence_summary(unsigned),
            }
            return _report(args, refused, checks)
        result = verify_evidence(
            data,
            now,
            verifiers.process(entry.id),
            tsa_validator=verifiers.tsa,
            expected_issuer_domain=entry.provider.domain,
        )
    except KepError as exc:
        return _malformed(args, exc)
    checks.append(Check("issuer", True, f"{unsigned.issuer} ({entry.id})"))
    checks.append(
        Check(
            "signature", result.intact, "XAdES signature intact" if result.intact else result.detail
        )
    )
    if result.intact:
        checks.append(
            Check("signer", result.ok, result.chain.describe() if result.chain else result.detail)
        )
    schema_ok = all(c.ok for c in checks if c.name == "schema")
    valid = result.ok and schema_ok
    reason = result.reason or (None if schema_ok else Reason.InvalidMessageFormat)
    report: dict[str, Any] = {
        "valid": valid,
        "reason": reason.name if reason else None,
        "reason_code": reason.code if reason else None,
        "detail": result.detail if not result.ok else ("valid" if valid else "schema violations"),
        "verified_at": now.isoformat(),
        "signing_time": result.signing_time.isoformat() if result.signing_time else None,
        "signer_sha256": result.signer.fingerprint(hashes.SHA256()).hex()
        if result.signer
        else None,
        "evidence": _evidence_summary(result.evidence or unsigned),
    }
    return _report(args, report, checks)
