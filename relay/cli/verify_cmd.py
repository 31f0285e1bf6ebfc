"""``kep-relay envelope verify``, ``kep-relay evidence verify`` and ``kep-relay evidence
export``: the operator's and the auditor's tools. They print what was checked and exit 0 when
valid, 1 when not, 2 on misuse.

``evidence verify`` takes a signed delil.xml or, told apart by its first bytes, an export of one
message's evidence (a ZIP, relay/export.py), which it verifies offline: with ``--trust ROOTS``
alone as an auditor holds them, or with a node's trust (``--pki``/``--config``).
``evidence export`` writes that file (exit 0 when it verifies at export time, 1 when it was
written but does not, 2 when nothing was written).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from lxml import etree

from interop.envelope.verify import Check, verify_envelope
from interop.errors import ConfigurationError, KepError
from interop.evidence import xmlio
from interop.evidence.model import Evidence
from interop.evidence.schema import schema_errors
from interop.evidence.xades import verify_evidence
from interop.limits import DEFAULT_LIMITS
from interop.reasons import Reason
from interop.revocation import RevocationData
from interop.trust import TrustList
from interop.verifiers import Verifiers
from relay.cli.target import open_node
from relay.config_file import load
from relay.context import verifiers_for
from relay.export import export_message
from relay.export_format import ZIP_MAGIC
from relay.export_verify import ExportVerification, TrustFor, trust_from_roots, verify_file
from relay.keys import load_certificates, load_crls, read_pki, verifiers_from_pki
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
        if noun == "evidence":
            trust.add_argument(
                "--trust",
                type=Path,
                action="append",
                metavar="ROOTS.pem",
                help="trust only these root certificates (PEM), as the CAs of every provider's"
                " process certificates and of the TSAs: what an auditor holds",
            )
        at_help = "verify as of this ISO 8601 time (UTC if no zone)"
        if noun == "evidence":
            at_help += "; without it an export's newest archive stamp is judged as of its own time"
        verify.add_argument("--at", type=moment, help=at_help)
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
                "--xsd",
                type=Path,
                help="also validate a delil.xml against the ETSI XSD in this folder",
            )
            _register_export(sub)
        verify.set_defaults(run=run)


def _register_export(sub: Any) -> None:
    export = sub.add_parser(
        "export", help="write one message's evidence, with all that verifying it needs, to a ZIP"
    )
    export.add_argument("remmd_id", metavar="REMMD-ID", help="X-REM-Message-Identifier")
    export.add_argument("--out", type=Path, required=True, metavar="FILE", help="the ZIP to write")
    export.add_argument("--config", type=Path)
    export.set_defaults(run=run_export)


def moment(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from exc
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class _Roots:
    """``--trust``: root certificates alone, and the CRLs of ``--crl`` (required)."""

    certificates: tuple[x509.Certificate, ...]
    crls: tuple[x509.CertificateRevocationList, ...]

    def trust_for(self, domains: Sequence[str]) -> TrustList:
        return trust_from_roots(self.certificates, domains)

    def verifiers(self, domains: Sequence[str]) -> Verifiers:
        return Verifiers(self.trust_for(domains), RevocationData.of(self.crls, require=True))


def _setup(args: argparse.Namespace) -> tuple[Verifiers | _Roots, dt.datetime] | int:
    """The trust to verify with and the time to verify at; an exit code when the file is
    missing. Unreadable trust files are usage errors (ConfigurationError, exit 2)."""
    if not args.file.is_file():
        print(f"kep-relay: {args.file}: no such file", file=sys.stderr)
        return 2
    now = args.at or dt.datetime.now(dt.UTC)
    if getattr(args, "trust", None):
        return _Roots(load_certificates(tuple(args.trust)), load_crls(tuple(args.crl))), now
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
    return verifiers, now


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
            skipped = ("checks", "valid", "reason", "reason_code", "detail", "timeline")
            if key in skipped or value is None:
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
    assert isinstance(verifiers, Verifiers)  # envelope verify has no --trust
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
    trust, now = setup
    schema = _schema(args.xsd) if args.xsd else None
    with args.file.open("rb") as handle:  # one byte past the limit is enough to refuse it
        data = handle.read(DEFAULT_LIMITS.evidence_xml + 1)
    if data[:4] in ZIP_MAGIC:
        return _run_export_verify(args, trust)
    checks: list[Check] = []
    try:
        unsigned = xmlio.parse(data)
        if schema is not None:
            errors = schema_errors(schema, data)
            checks.append(Check("schema", not errors, "; ".join(errors) or "ETSI XSD accepts it"))
        domain = unsigned.issuer.rsplit("@", 1)[-1].lower()
        verifiers = trust.verifiers([domain]) if isinstance(trust, _Roots) else trust
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


def _schema(folder: Path) -> etree.XMLSchema:
    """``--xsd``'s schema, loaded before anything is judged: a folder without it is a usage
    error (exit 2), not a verdict of INVALID on the evidence."""
    try:
        return load_schema(folder)
    except ConfigurationError as exc:
        raise ConfigurationError(f"--xsd {exc.detail}") from exc


def _run_export_verify(args: argparse.Namespace, trust: Verifiers | _Roots) -> int:
    """An export (relay/export.py), verified offline: the checks of relay/export_verify.py.
    With a node's trust (``--pki``/``--config``) its list serves whoever issued, and its
    CRLs join the export's."""
    if isinstance(trust, _Roots):
        trust_for: TrustFor = trust.trust_for
        crls = trust.crls
    else:
        node = trust.trust

        def trust_for(_domains: Sequence[str]) -> TrustList:
            return node

        crls = trust.revocation.crls
    result = verify_file(args.file, trust_for, at=args.at, now=dt.datetime.now(dt.UTC), crls=crls)
    return _report(args, _export_report(result), list(result.checks))


def _export_report(result: ExportVerification) -> dict[str, Any]:
    manifest = result.manifest
    report: dict[str, Any] = {
        "valid": result.ok,
        "reason": result.reason.name if result.reason else None,
        "reason_code": result.reason.code if result.reason else None,
        "detail": result.detail,
        "verified_at": result.verified_at.isoformat(),
        "remmd_id": manifest.remmd_id if manifest else None,
        "provider": manifest.provider_id if manifest else None,
        "exported_at": manifest.exported_at.isoformat() if manifest else None,
        "original_sha256": manifest.original_sha256 if manifest else None,
        "timeline": [],
    }
    for outcome in result.evidence:
        entry, signed = outcome.entry, outcome.result
        stamp = signed.timestamp if signed else None
        report["timeline"].append(
            {
                "file": entry.file,
                "ledger_seq": entry.seq,
                "type": entry.type,
                "event": entry.event,
                "event_time": entry.event_time,
                "issuer": entry.issuer,
                "recipient": entry.recipient,
                "evidence_id": entry.evidence_id,
                "subject": signed.evidence.message.subject if signed and signed.evidence else None,
                "timestamp": stamp.time.isoformat() if stamp and stamp.time else None,
                "tsa": stamp.tsa if stamp else None,
                "archive_stamp": outcome.archived.seq if outcome.archived else None,
                "valid": outcome.ok,
                "detail": outcome.problem or "valid",
            }
        )
    return report


def run_export(args: argparse.Namespace) -> int:
    context = open_node(args)
    try:
        done = export_message(context, args.remmd_id, args.out)
    except LookupError as exc:
        print(f"kep-relay: {exc.args[0]}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"kep-relay: {exc}; nothing was written", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"kep-relay: {args.out}: cannot be written: {exc.strerror or exc}", file=sys.stderr)
        return 2
    finally:
        context.store.close()
    manifest, verification = done.manifest, done.verification
    messages = sum(1 for e in manifest.evidence if e.message)
    print(f"export: {done.path}")
    print(f"sha256: {done.sha256}")
    print(f"remmd_id: {manifest.remmd_id}")
    print(f"original_sha256: {manifest.original_sha256}")
    print(
        f"contents: {len(manifest.evidence)} evidence, {messages} Evidence messages,"
        f" {len(manifest.archive)} archive stamps, {len(manifest.validation)} certificates"
        " and CRLs, report.html"
    )
    for check in verification.checks:
        print(f"  [{'ok' if check.ok else 'FAIL'}] {check.name}: {check.detail}")
    if verification.ok:
        print("VALID at export")
        return 0
    print(f"INVALID at export: {verification.detail}")
    return 1
