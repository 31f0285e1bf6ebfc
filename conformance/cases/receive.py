"""A target that sends (``conformance receive``; INTEROP-PROFILE.md §2, §3, §4 S-GW): the
suite plays the receiving provider. A case has a user of the target write to a user of the
provider the suite plays (``--send-command``), takes the Dispatch the target sends to the
listener, judges it, and answers with evidence as an R-GW would."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import io
import shlex
import uuid
from collections.abc import Callable

from conformance import tools
from conformance.identity import Pki
from conformance.listener import Received
from conformance.registry import RECEIVE, CaseFailed, case
from conformance.session import Record, Session, header_block, pretty_xml
from conformance.smtp import Transaction
from interop.cms.timestamp import LocalTsa
from interop.envelope.build import write_evidence_message
from interop.envelope.parse import parse_envelope
from interop.envelope.verify import verify_envelope
from interop.errors import MalformedInput
from interop.evidence import xmlio
from interop.evidence.codes import Event, EvidenceType
from interop.evidence.issue import follow_up
from interop.evidence.model import Evidence
from interop.evidence.xades import sign_evidence

REM = "{http://uri.etsi.org/02640/v2#}"
DS = "{http://www.w3.org/2000/09/xmldsig#}"
KEP = "{urn:kep:interop:1}"
IDENTITY_ENCODINGS = ("", "7bit", "8bit", "binary")


def new_token() -> str:
    """A subject no other message has: how the suite finds the Dispatch it had sent."""
    return f"uygunluk-{uuid.uuid4().hex[:12]}"


def ours(token: str) -> Callable[[Received], bool]:
    def select(received: Received) -> bool:
        return (received.msg_type or "").lower() == "dispatch" and token in (
            received.header("Subject") or ""
        )

    return select


async def trigger(s: Session, token: str) -> None:
    command = s.options.send_command
    if not command:
        raise CaseFailed("receive mode needs --send-command")
    filled = command.format(recipient=shlex.quote(s.sender()), subject=shlex.quote(token))
    process = await asyncio.create_subprocess_shell(
        filled, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await process.communicate()
    s.records.append(
        Record("note", "send command", [filled, output.decode(errors="replace")[-2000:]])
    )
    s.require(
        "the send command succeeded",
        process.returncode == 0,
        f"exit {process.returncode}: {output.decode(errors='replace')[-300:]}",
    )


async def dispatch_from_target(
    s: Session, attempts: int = 1, token: str | None = None
) -> list[Received]:
    """Trigger a message (with subject ``token``, a new one by default) and wait for
    ``attempts`` deliveries of its Dispatch."""
    token = token or new_token()
    await trigger(s, token)
    select = ours(token)
    came = await s.listener.wait_for(
        select, lambda found: len(found) >= attempts, s.options.evidence_timeout
    )
    for received in came:
        parts = tools.xml_parts(tools.mime(received.data))
        s.records.append(
            Record(
                "received",
                f"Dispatch {received.message_identifier} (listener message {received.number})",
                [
                    f"MAIL FROM:<{received.mail_from}> {' '.join(received.mail_options)}",
                    *(f"RCPT TO:<{r}>" for r in received.rcpt_to),
                    f"answered: {received.answered}",
                ],
                header_block(received.data),
                pretty_xml(parts[0]) if parts else "",
                len(received.data),
            )
        )
    s.require(
        f"the target sent the Dispatch ({attempts} attempt(s))",
        len(came) >= attempts,
        f"{len(came)} came within {s.options.evidence_timeout:g} s",
    )
    return came


def submission(s: Session, received: Received) -> Evidence:
    parts = tools.xml_parts(tools.mime(received.data))
    s.require("one delil.xml in the Dispatch", len(parts) == 1, f"{len(parts)} found")
    try:
        return xmlio.parse(parts[0])
    except MalformedInput as exc:
        raise CaseFailed(f"delil.xml unreadable: {exc.detail}") from exc


@case(
    "KEP-RC-01",
    "the target relays a Dispatch over mutual TLS with the right SMTP envelope",
    section="§2, §3",
    etsi="OF-NORMAL",
    mode=RECEIVE,
    rule="SMTP with TLS 1.2 or newer, client certificate required. SMTP MAIL FROM / RCPT TO of "
    "a Dispatch: original sender / the recipients at that R-GW.",
)
async def relayed(s: Session) -> None:
    (received,) = (await dispatch_from_target(s))[:1]
    peer = s.pki.check_peer(s.target, received.peer_certificate, s.now())
    s.check(
        "the client certificate is the target's (§1, §2)",
        not isinstance(peer, str) and peer.ok,
        peer if isinstance(peer, str) else (peer.detail or peer.subject),
    )
    s.check(
        "TLS 1.2 or newer",
        received.tls_version in ("TLSv1.2", "TLSv1.3"),
        str(received.tls_version),
    )
    s.check(
        "MAIL FROM an address of the target's domain (the original sender)",
        received.mail_from.lower().endswith("@" + s.domain(s.target)),
        received.mail_from,
    )
    s.check(
        "RCPT TO our user only",
        [r.lower() for r in received.rcpt_to] == [s.sender().lower()],
        ", ".join(received.rcpt_to),
    )
    s.check(
        "SIZE= given at MAIL FROM (RFC 1870, we advertise SIZE)",
        any(o.upper().startswith("SIZE=") for o in received.mail_options),
        " ".join(received.mail_options) or "(none)",
    )


@case(
    "KEP-RC-02",
    "the Dispatch has the §3 MIME structure, the original not re-encoded",
    section="§3",
    etsi="MSGF-DISPATCH",
    mode=RECEIVE,
    rule="multipart/signed ├── multipart/mixed (multipart/alternative; application/xml "
    'delil.xml; message/rfc822 name="ileti.eml", the original user message, byte for byte) '
    "└── smime.p7s. The original message is never re-encoded.",
)
async def dispatch_structure(s: Session) -> None:
    (received,) = (await dispatch_from_target(s))[:1]
    message = tools.mime(received.data)
    s.check("multipart/signed", message.get_content_type() == "multipart/signed")
    parts = tools.subparts(message)
    s.require("two parts", len(parts) == 2, f"{len(parts)}")
    inner = list(parts[0].walk())
    types = [p.get_content_type() for p in inner]
    s.check("first part multipart/mixed", types[:1] == ["multipart/mixed"], ", ".join(types))
    s.check("text/plain and text/html introduction", "text/plain" in types and "text/html" in types)
    s.check("one application/xml delil.xml", types.count("application/xml") == 1, ", ".join(types))
    s.check("one message/rfc822 ileti.eml", types.count("message/rfc822") == 1, ", ".join(types))
    for part in inner:
        if part.get_content_type() == "message/rfc822":
            encoding = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
            s.check(
                "ileti.eml not transfer-encoded (RFC 2046 §5.2.1)",
                encoding in IDENTITY_ENCODINGS,
                encoding or "(none)",
            )
    s.check(
        "second part smime.p7s",
        parts[1].get_content_type()
        in ("application/pkcs7-signature", "application/x-pkcs7-signature"),
        parts[1].get_content_type(),
    )


@case(
    "KEP-RC-03",
    "the Dispatch's header fields follow the §3 table",
    section="§3",
    etsi="MSGF-DISPATCH",
    mode=RECEIVE,
    rule="X-REM-Msg-Type Dispatch; X-REM-Message-Identifier the S-GW's id; X-REM-Evidence-Type "
    "SubmissionAcceptanceRejection; X-REM-Event Acceptance; X-REM-Evidence-Identifier of "
    "delil.xml; From/To/Cc/Subject as in the original; Message-ID new.",
)
async def dispatch_headers(s: Session) -> None:
    (received,) = (await dispatch_from_target(s))[:1]
    evidence = submission(s, received)
    s.check("X-REM-Msg-Type Dispatch", (received.msg_type or "").lower() == "dispatch")
    s.check(
        "X-REM-Message-Identifier = MessageIdentifierByREMMD",
        received.message_identifier == evidence.message.remmd_message_id,
        str(received.message_identifier),
    )
    s.check(
        "X-REM-Evidence-Type SubmissionAcceptanceRejection",
        received.header("X-REM-Evidence-Type") == "SubmissionAcceptanceRejection",
        str(received.header("X-REM-Evidence-Type")),
    )
    s.check("X-REM-Event Acceptance", received.header("X-REM-Event") == "Acceptance")
    s.check(
        "X-REM-Evidence-Identifier = EvidenceIdentifier",
        received.header("X-REM-Evidence-Identifier") == evidence.identifier,
    )
    s.check("Message-ID present", bool(received.header("Message-ID")))
    original = _original(s, received)
    inner = tools.mime(original)
    for field in ("From", "To", "Subject"):
        s.check(
            f"{field} as in the original",
            received.header(field) == (" ".join(str(inner.get(field, "")).split()) or None),
            f"{received.header(field)} / {inner.get(field)}",
        )


def _original(s: Session, received: Received) -> bytes:
    try:
        parsed = parse_envelope(io.BytesIO(received.data))
    except MalformedInput as exc:
        raise CaseFailed(f"the Dispatch cannot be read: {exc.detail}") from exc
    s.require("an original (ileti.eml)", parsed.original is not None)
    assert parsed.original is not None
    return received.data[parsed.original.start : parsed.original.end]


@case(
    "KEP-RC-04",
    "the original travels byte for byte: its digest and the user's e-imza verify",
    section="§3, §5",
    etsi="MSGF-DISPATCH",
    mode=RECEIVE,
    rule="The original message is never re-encoded: its bytes, and so the user's S/MIME "
    "signature inside, stay intact end to end. ds:DigestValue: SHA-256 of the original message "
    "bytes.",
)
async def byte_exact(s: Session) -> None:
    (received,) = (await dispatch_from_target(s))[:1]
    evidence = submission(s, received)
    original = _original(s, received)
    s.check(
        "SHA-256 of ileti.eml = the evidence's DigestValue",
        hashlib.sha256(original).digest() == evidence.message.digest,
        base64.b64encode(hashlib.sha256(original).digest()).decode(),
    )
    user = tools.openssl_verify_smime(original, s.pki.pem("ca/user-ca.crt"))
    s.check("the user's e-imza verifies (openssl cms, user CA)", user.ok, user.detail)


@case(
    "KEP-RC-05",
    "the Dispatch is signed (CAdES) by the target's process certificate",
    section="§3",
    etsi="SIG-SMIME",
    mode=RECEIVE,
    rule="smime.p7s is a detached CMS SignedData (CAdES-BES) over the exact bytes of the first "
    "part. Signer: the issuing provider's process certificate, included with its chain.",
)
async def dispatch_signature(s: Session) -> None:
    (received,) = (await dispatch_from_target(s))[:1]
    smime = tools.openssl_verify_smime(received.data, s.pki.pem("ca/process-ca.crt"))
    s.check("smime.p7s verifies (openssl cms, process CA)", smime.ok, smime.detail)
    try:
        result = verify_envelope(io.BytesIO(received.data), s.pki.verifiers, s.now(), peer=s.target)
    except MalformedInput as exc:
        s.check("the Dispatch verifies (project library)", False, exc.detail)
        return
    s.check(
        "the Dispatch verifies (project library: envelope, evidence, original, e-imza)",
        result.ok,
        result.detail,
    )
    s.check(
        "CAdES-BES signed attributes",
        result.envelope_signature is not None and result.envelope_signature.cades,
        result.envelope_signature.detail if result.envelope_signature else "",
    )


@case(
    "KEP-RC-06",
    "the SubmissionAcceptanceRejection inside is valid, signed and complete",
    section="§5",
    etsi="EVF-SUBACC",
    mode=RECEIVE,
    rule="The SubmissionAcceptanceRejection inside a Dispatch covers all of that Dispatch's "
    "recipients and omits EvidenceRefersToRecipient. Validate against the XSD with the "
    "ds:Signature removed, and verify the signature separately.",
)
async def submission_evidence(s: Session) -> None:
    (received,) = (await dispatch_from_target(s))[:1]
    parts = tools.xml_parts(tools.mime(received.data))
    s.require("delil.xml", len(parts) == 1)
    xml = parts[0]
    xsd = s.schema.judge(xml)
    s.check("valid against the ETSI XSD", xsd.ok, xsd.detail)
    xmlsec = tools.xmlsec_verify(xml, s.pki.pem("ca/process-ca.crt"))
    s.check("XAdES verifies (xmlsec1)", xmlsec.ok, xmlsec.detail)
    root = tools.parse_xml(xml)
    s.require("well-formed", root is not None)
    assert root is not None
    s.check(
        "root SubmissionAcceptanceRejection",
        root.tag == REM + "SubmissionAcceptanceRejection",
        root.tag,
    )
    s.check("no EvidenceRefersToRecipient", root.find(REM + "EvidenceRefersToRecipient") is None)
    recipients = [
        (n.text or "").strip().lower()
        for n in root.iter(REM + "AttributedElectronicAddress")
        if n.getparent() is not None
        and n.getparent().getparent() is not None  # type: ignore[union-attr]
        and n.getparent().getparent().tag == REM + "RecipientsDetails"  # type: ignore[union-attr]
    ]
    s.check(
        "RecipientsDetails names our user",
        f"mailto:{s.sender()}".lower() in recipients,
        ", ".join(recipients),
    )
    issuer = root.find(f"{REM}EvidenceIssuerDetails/{REM}AttributedElectronicAddress")
    s.check(
        "issued by the target's delil@",
        issuer is not None
        and (issuer.text or "").strip().lower() == f"mailto:delil@{s.domain(s.target)}",
    )
    turu = root.find(f"{REM}Extensions/{REM}Extension/{KEP}DelilTuru")
    s.check("DelilTuru 10", turu is not None and (turu.text or "").strip() == "10")
    details = root.find(REM + "SenderMessageDetails")
    s.check(
        'SenderMessageDetails isNotification="false"',
        details is not None and details.get("isNotification") == "false",
    )


@case(
    "KEP-RC-07",
    "after a 451 the target sends the same Dispatch again",
    section="§2, §4 Relay",
    etsi="COF-RETRY",
    mode=RECEIVE,
    rule="Relay: retried on 4xx and connection failures with exponential back-off. Temporary "
    "trouble: 451 4.3.0.",
)
async def retry_after_451(s: Session) -> None:
    refused: set[str] = set()

    def answer(received: Received) -> str | None:
        key = received.message_identifier or ""
        if (received.msg_type or "").lower() == "dispatch" and key not in refused:
            refused.add(key)
            return "451 4.3.0 Temporary trouble (conformance test: send again)"
        return None

    s.listener.answer = answer
    try:
        came = await dispatch_from_target(s, attempts=2)
    finally:
        s.listener.answer = None
    first, second = came[0], came[1]
    s.check("the first attempt was answered 451", first.answered.startswith("451"), first.answered)
    s.check(
        "the same X-REM-Message-Identifier again",
        first.message_identifier == second.message_identifier,
        f"{first.message_identifier} / {second.message_identifier}",
    )
    s.check(
        "the same bytes again",
        hashlib.sha256(first.data).digest() == hashlib.sha256(second.data).digest(),
        f"{len(first.data)} / {len(second.data)} bytes",
    )


def evidence_message(
    pki: Pki,
    provider: str,
    about: Evidence,
    kind: EvidenceType,
    event: Event,
    dispatch_id: str | None,
    *,
    signed_by: str | None = None,
    spoil: Callable[[bytes], bytes] | None = None,
) -> bytes:
    """An Evidence message ``provider``'s R-GW sends about ``about``. ``signed_by``: another
    provider's process certificate signs it (evidence and envelope); ``spoil``: rewrites the
    signed delil.xml before the envelope is signed over it."""
    now = dt.datetime.now(dt.UTC)
    issued = follow_up(about, pki.directory_entry(provider), kind, event, now, recipient=1)
    signer = pki.process(signed_by or provider)
    tsa = LocalTsa(pki.tsa())
    out = io.BytesIO()
    domain = pki.provider(provider).domain
    xml = sign_evidence(issued, signer, now, timestamp=lambda d: tsa.stamp(d, now))
    write_evidence_message(
        out,
        issued,
        spoil(xml) if spoil is not None else xml,
        signer,
        now,
        message_id=f"<e-{issued.identifier}@{domain}>",
        issuer_id=provider,
        dispatch_message_id=dispatch_id,
        timestamp=lambda d: tsa.stamp(d, now),
    )
    return out.getvalue()


async def send_evidence_back(
    s: Session,
    dispatch: Received,
    about: Evidence,
    kind: EvidenceType,
    event: Event,
    title: str,
    **spoiled: object,
) -> Transaction:
    """``evidence_message`` about the target's ``dispatch``, sent to its sender as the suite's
    R-GW sends evidence: from delil@ of the suite's provider (``spoiled``: as there)."""
    data = evidence_message(
        s.pki,
        s.me,
        about,
        kind,
        event,
        dispatch.header("Message-ID"),
        **spoiled,  # type: ignore[arg-type]
    )
    return await s.send(
        data, mail_from=f"delil@{s.domain(s.me)}", rcpt_to=(about.sender,), title=title
    )


@case(
    "KEP-RC-08",
    "the target takes the suite's evidence back (250 for each)",
    section="§2, §4 S-GW on an Evidence",
    etsi="OF-NORMAL",
    mode=RECEIVE,
    rule="S-GW, on an Evidence: verify transport, envelope signature and the evidence's own "
    "signature; correlate by X-REM-Message-Identifier, record it, stop the relay timer. 250 "
    "after DATA means durably committed.",
)
async def evidence_back(s: Session) -> None:
    (received,) = (await dispatch_from_target(s))[:1]
    about = submission(s, received)
    for kind, event in (
        (EvidenceType.RelayREMMDAcceptanceRejection, Event.Acceptance),
        (EvidenceType.DeliveryNonDeliveryToRecipient, Event.Delivery),
    ):
        done = await send_evidence_back(
            s, received, about, kind, event, f"Evidence {kind.value} {event.value}"
        )
        s.check(f"{kind.value} {event.value} accepted with 250", done.accepted, str(done.final))
