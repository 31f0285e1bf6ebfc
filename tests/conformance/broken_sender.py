"""The sending side of a deliberately broken gateway (hs02), for ``conformance receive``: the
--send-command and --evidence-command the tests give the suite.

``send BREAKAGE PKI PORT STATE RECIPIENT SUBJECT`` sends one Dispatch from
ayse.demir@hs02.kep.tr to the suite's listener at 127.0.0.1:PORT, made with the project's
library, and writes the evidence its user gets into STATE/<SUBJECT>.<type>.eml: when it is not
taken (any reply but 250), the relay failure; when it is, the failure its evidence timer (of
no length: it files at once) issues, since it never waits for delivery evidence.
``evidence STATE SUBJECT REMMD TYPE`` prints STATE/<SUBJECT>.<TYPE>.eml, or what the broken
gateway filed as STATE/<REMMD>.<TYPE>.eml (exit 1 while there is neither). What is wrong is
the breakage's: ``resends-after-5xx`` sends the Dispatch again after a 5xx;
``positive-after-failure`` gives its user Delivery evidence where the relay failed;
``no-evidence-timer`` files nothing after a 250, however long no delivery evidence comes;
``none`` is right (RelayREMMDFailure, the reply in Details, or
S_REMMD_ReceivedNoDeliveryInfoFromR_REMMD after a 250).
"""

from __future__ import annotations

import datetime as dt
import io
import re
import smtplib
import ssl
import sys
from pathlib import Path

from conformance.dispatch import Outgoing, build
from conformance.identity import Pki
from interop.cms.timestamp import LocalTsa
from interop.envelope.build import write_evidence_message
from interop.envelope.parse import parse_envelope
from interop.evidence import xmlio
from interop.evidence.codes import Event, EvidenceType
from interop.evidence.issue import follow_up
from interop.evidence.model import EventReason
from interop.evidence.xades import sign_evidence
from interop.reasons import Reason

PROVIDER, SENDER = "hs02", "ayse.demir@hs02.kep.tr"
BREAKAGES = ("none", "resends-after-5xx", "positive-after-failure", "no-evidence-timer")


def filed_name(key: str, kind: str) -> str:
    """The file name of evidence of type ``kind`` filed under ``key`` (a subject, a REMMD id)."""
    return re.sub(r"[^A-Za-z0-9@._-]", "_", f"{key}.{kind}") + ".eml"


def _send(pki: Pki, port: int, outgoing: Outgoing) -> tuple[int, str]:
    tls = ssl.create_default_context(cafile=str(pki.folder / "ca/tls-ca.crt"))
    tls.check_hostname = False
    tls.load_cert_chain(
        str(pki.folder / f"providers/{PROVIDER}/tls.crt"),
        str(pki.folder / f"providers/{PROVIDER}/tls.key"),
    )
    try:
        with smtplib.SMTP_SSL("127.0.0.1", port, context=tls, timeout=30) as client:
            client.sendmail(outgoing.sender, list(outgoing.recipients), outgoing.data)
    except smtplib.SMTPResponseException as exc:
        said = exc.smtp_error
        text = said.decode(errors="replace") if isinstance(said, bytes) else said
        return exc.smtp_code, f"{exc.smtp_code} {text}"
    except (OSError, smtplib.SMTPException) as exc:
        return 0, str(exc)
    return 250, "250"


def _evidence(pki: Pki, outgoing: Outgoing, breakage: str, code: int, reply: str) -> bytes:
    now = dt.datetime.now(dt.UTC)
    if breakage == "positive-after-failure":
        kind, event, reasons = EvidenceType.DeliveryNonDeliveryToRecipient, Event.Delivery, []
    elif code == 250:
        kind, event = EvidenceType.RelayREMMDFailure, Event.DeliveryExpiration
        reasons = [EventReason(Reason.S_REMMD_ReceivedNoDeliveryInfoFromR_REMMD, "no delivery")]
    else:
        reason = Reason.R_REMMD_Malfunction if code >= 500 else Reason.R_REMMD_Unreachable
        kind, event = EvidenceType.RelayREMMDFailure, Event.DeliveryExpiration
        reasons = [EventReason(reason, f"hs01 answered: {reply}")]
    issuer = pki.directory_entry(PROVIDER)
    issued = follow_up(
        outgoing.evidence,
        issuer,
        kind,
        event,
        now,
        recipient=1 if kind is EvidenceType.DeliveryNonDeliveryToRecipient else None,
        reasons=reasons,
    )
    signer, tsa = pki.process(PROVIDER), LocalTsa(pki.tsa())
    out = io.BytesIO()
    write_evidence_message(
        out,
        issued,
        sign_evidence(issued, signer, now, timestamp=lambda d: tsa.stamp(d, now)),
        signer,
        now,
        message_id=f"<e-{issued.identifier}@{issuer.domain}>",
        issuer_id=PROVIDER,
        timestamp=lambda d: tsa.stamp(d, now),
    )
    return out.getvalue()


def send(breakage: str, folder: str, port: str, state: str, recipient: str, subject: str) -> int:
    if breakage not in BREAKAGES:
        print(f"unknown breakage {breakage}", file=sys.stderr)
        return 2
    pki = Pki.load(Path(folder))
    outgoing = build(pki, PROVIDER, SENDER, (recipient,), dt.datetime.now(dt.UTC), subject=subject)
    code, reply = _send(pki, int(port), outgoing)
    if code >= 500 and breakage == "resends-after-5xx":
        _send(pki, int(port), outgoing)
    if code != 250 or breakage not in ("no-evidence-timer", "positive-after-failure"):
        data = _evidence(pki, outgoing, breakage, code, reply)
        kind = xmlio.parse(parse_envelope(io.BytesIO(data)).evidence_xml).type.value
        (Path(state) / filed_name(subject, kind)).write_bytes(data)
    return 0


def evidence(state: str, subject: str, remmd: str, kind: str) -> int:
    for key in (subject, remmd):
        path = Path(state) / filed_name(key, kind)
        if path.exists():
            sys.stdout.buffer.write(path.read_bytes())
            return 0
    return 1


if __name__ == "__main__":
    action, arguments = sys.argv[1], sys.argv[2:]
    sys.exit(send(*arguments) if action == "send" else evidence(*arguments))
