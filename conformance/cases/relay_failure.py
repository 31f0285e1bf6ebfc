"""A target that sends, when the relay fails or the evidence it gets back is bad or missing
(``conformance receive``; INTEROP-PROFILE.md §2, §4 Relay, §4 S-GW on an Evidence).

The suite refuses the target's Dispatch for good (5xx), keeps its listener closed past the
target's relay timeout, or accepts the Dispatch and withholds the delivery evidence past the
target's evidence timeout; the target must not send that Dispatch again, and must issue
RelayREMMDFailure to its own user. That evidence goes to the user, not over SMTP, so the suite
sees it only through the operator's ``--evidence-command`` (which prints it); without that
command those cases are skipped. The suite also sends the target evidence that is malformed
or signed by another provider: the target must refuse it (5xx) or keep it (250), never defer
it or drop the connection, must go on serving and, where the command is given, must not show
its user that evidence as a Delivery.
"""

from __future__ import annotations

import asyncio
import io
import shlex

from conformance import tools
from conformance.cases.common import REASON_PREFIXES
from conformance.cases.receive import (
    dispatch_from_target,
    new_token,
    ours,
    send_evidence_back,
    submission,
)
from conformance.listener import Answer, Received
from conformance.registry import RECEIVE, CaseSkipped, case
from conformance.session import Record, Session, pretty_xml
from interop.envelope.verify import verify_envelope
from interop.errors import MalformedInput
from interop.evidence import xmlio
from interop.evidence.codes import Event, EvidenceType
from interop.evidence.model import Evidence
from interop.reasons import Reason

REM = "{http://uri.etsi.org/02640/v2#}"
KEP = "{urn:kep:interop:1}"
FAILURE = EvidenceType.RelayREMMDFailure.value
RELAY = EvidenceType.RelayREMMDAcceptanceRejection.value
DELIVERY = EvidenceType.DeliveryNonDeliveryToRecipient.value
EVENT_PREFIXES = ("http:uri.etsi.org/02640/Event#", "http://uri.etsi.org/02640/Event#")
REFUSAL = "554 5.7.0 Refused for good by the conformance suite"
DEFERRAL = "451 4.3.0 Temporary trouble (conformance test: the listener closes now)"
POLL = 0.5  # seconds between two runs of --evidence-command while nothing is there yet
OUTPUT_LIMIT = 4 * 1024 * 1024  # bytes of the command's output read: one Evidence message


def _answer_with(token: str, reply: str) -> Answer:
    select = ours(token)

    def answer(received: Received) -> str | None:
        return reply if select(received) else None

    return answer


async def _refused_dispatch(s: Session, token: str, reply: str) -> Received:
    """The target's Dispatch with subject ``token``, every attempt answered ``reply``."""
    s.listener.answer = _answer_with(token, reply)
    (received,) = (await dispatch_from_target(s, token=token))[:1]
    return received


def _hook(s: Session) -> str:
    command = s.options.evidence_command
    if not command:
        raise CaseSkipped(
            "no --evidence-command: the suite cannot see the evidence the target files for its "
            "own user"
        )
    return command


async def evidence_from_target(
    s: Session,
    command: str,
    dispatch: Received,
    token: str,
    wait: float,
    kind: str = FAILURE,
) -> bytes | None:
    """Run ``--evidence-command`` until it prints the evidence of type ``kind`` the target
    filed for the sender of ``dispatch``, or ``wait`` seconds pass; its output, or None."""
    filled = command.format(
        sender=shlex.quote(dispatch.mail_from),
        subject=shlex.quote(token),
        remmd=shlex.quote(dispatch.message_identifier or ""),
        type=shlex.quote(kind),
    )
    deadline = asyncio.get_running_loop().time() + wait
    runs, said = 0, b""
    while True:
        runs += 1
        process = await asyncio.create_subprocess_shell(
            filled, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        output, errors = await process.communicate()
        if process.returncode == 0 and output.strip():
            s.records.append(
                Record(
                    "note", f"evidence command ({kind})", [filled, f"printed after {runs} run(s)"]
                )
            )
            return output[:OUTPUT_LIMIT]
        said = errors or output
        if asyncio.get_running_loop().time() >= deadline:
            break
        await asyncio.sleep(POLL)
    s.records.append(
        Record(
            "note",
            f"evidence command ({kind})",
            [filled, f"nothing after {runs} run(s) in {wait:g} s", said.decode("utf-8", "replace")],
        )
    )
    return None


def _printed(s: Session, output: bytes, kind: str) -> tuple[bytes | None, bytes | None]:
    """What the evidence command printed, recorded: the Evidence message (None when it printed
    delil.xml alone) and its delil.xml (None when the message holds not exactly one)."""
    message = None if output.lstrip().startswith(b"<") else output
    xml: bytes | None = output.strip()
    if message is not None:
        parts = tools.xml_parts(tools.mime(message))
        xml = parts[0] if len(parts) == 1 else None
    s.records.append(
        Record(
            "received",
            f"{kind} (through --evidence-command)",
            [],
            message[:4096].decode("utf-8", "replace") if message else "",
            pretty_xml(xml) if xml else "",
            len(output),
        )
    )
    return message, xml


def judge_failure(
    s: Session,
    output: bytes | None,
    dispatch: Received,
    token: str,
    *,
    reasons: tuple[str, ...],
    event: str | None,
    details: str | None,
) -> None:
    """The RelayREMMDFailure the command printed (an Evidence message, or delil.xml alone):
    about the Dispatch, of a §6 reason in ``reasons`` (any §6 reason when empty), with
    ``event`` and ``details`` in its Details where given; signed by the target (OpenSSL and
    xmlsec1 over the bytes printed), valid against the XSD, every time-stamp verified."""
    s.require(
        "the target filed RelayREMMDFailure for its user (§4 Relay)",
        output is not None,
        "the evidence command printed it" if output else "it printed nothing in time",
    )
    assert output is not None
    message, xml = _printed(s, output, FAILURE)
    s.require("one delil.xml in what was printed", xml is not None, "none, or several")
    assert xml is not None
    try:
        evidence: Evidence = xmlio.parse(xml)
    except MalformedInput as exc:
        s.require(f"{FAILURE}: readable (§5)", False, exc.detail)
        return
    s.require(
        f"the evidence is {FAILURE} (§4 Relay)",
        evidence.type is EvidenceType.RelayREMMDFailure,
        evidence.type.value,
    )
    root = tools.parse_xml(xml)
    assert root is not None
    code = (root.findtext(REM + "EventCode") or "").strip()
    if event is not None:
        s.check(
            f"EventCode …#{event} (§4 Relay)",
            code in [p + event for p in EVENT_PREFIXES],
            code,
        )
    else:
        s.check("a negative event", evidence.event.is_negative, code)
    names = [r.reason.name for r in evidence.reasons]
    s.check(
        f"the reason is {' or '.join(reasons) or 'one of §6'} (§4 Relay, §6)",
        bool(names) and (not reasons or any(n in reasons for n in names)),
        ", ".join(names) or "no reason given",
    )
    codes = [
        (n.text or "").strip()
        for n in root.findall(f"{REM}EventReasons/{REM}EventReason/{REM}Code")
    ]
    s.check(
        "EventReason Code in the standard's URI form (§5)",
        bool(codes)
        and all(any(c == p + r.name for p in REASON_PREFIXES for r in Reason) for c in codes),
        ", ".join(codes) or "no EventReason",
    )
    if details is not None:
        said = " ".join(r.details for r in evidence.reasons)
        s.check(f"Details carries the SMTP reply ({details}) (§4 Relay)", details in said, said)
    s.check(
        "about the Dispatch sent (MessageIdentifierByREMMD)",
        evidence.message.remmd_message_id == dispatch.message_identifier,
        evidence.message.remmd_message_id,
    )
    about = submission(s, dispatch)
    s.check(
        "the digest of the Dispatch's original (§5 ds:DigestValue)",
        evidence.message.digest == about.message.digest,
        evidence.message.digest.hex(),
    )
    s.check(
        "for the sender, about the message it sent (§5)",
        evidence.sender.lower() == dispatch.mail_from.lower() and evidence.message.subject == token,
        f"{evidence.sender}: {evidence.message.subject}",
    )
    s.check(
        "issued by the target's delil@ (§5)",
        evidence.issuer.lower() == f"delil@{s.domain(s.target)}",
        evidence.issuer,
    )
    turu = (root.findtext(f"{REM}Extensions/{REM}Extension/{KEP}DelilTuru") or "").strip()
    s.check("DelilTuru 31 (KEP extension)", turu == "31", turu)
    ca = s.pki.pem("ca/process-ca.crt")
    xsd = s.schema.judge(xml)
    s.check("valid against the ETSI XSD (§5)", xsd.ok, xsd.detail)
    xmlsec = tools.xmlsec_verify(xml, ca)
    s.check("XAdES verifies (xmlsec1)", xmlsec.ok, xmlsec.detail)
    if message is not None:
        smime = tools.openssl_verify_smime(message, ca)
        s.check("the Evidence message verifies (openssl cms)", smime.ok, smime.detail)
        try:
            result = verify_envelope(io.BytesIO(message), s.pki.verifiers, s.now(), peer=s.target)
            s.check("the Evidence message verifies (project library)", result.ok, result.detail)
        except MalformedInput as exc:
            s.check("the Evidence message verifies (project library)", False, exc.detail)
    s.check_stamps(FAILURE, xml, message)


@case(
    "KEP-RC-09",
    "after a 5xx the target does not send the same Dispatch again",
    section="§2, §4 Relay",
    etsi="COF-RETRY",
    mode=RECEIVE,
    rule="Relay: retried on 4xx and connection failures with exponential back-off. … A 5xx on "
    "a Dispatch also ends the relay with RelayREMMDFailure carrying the SMTP reply in Details.",
)
async def no_retry_after_5xx(s: Session) -> None:
    token = new_token()
    try:
        first = await _refused_dispatch(s, token, REFUSAL)
        s.check("the Dispatch was answered 5xx", first.answered.startswith("554"), first.answered)
        came = await s.listener.wait_for(
            ours(token), lambda found: len(found) > 1, s.options.settle
        )
    finally:
        s.listener.answer = None
    s.check(
        f"not sent again within {s.options.settle:g} s (--settle)",
        len(came) == 1,
        f"{len(came)} attempt(s): " + ", ".join(r.answered[:3] for r in came),
    )


@case(
    "KEP-RC-10",
    "after a 5xx the target files RelayREMMDFailure carrying the reply for its user",
    section="§4 Relay, §5, §6",
    etsi="OF-REJECT",
    mode=RECEIVE,
    rule="A 5xx on a Dispatch also ends the relay with RelayREMMDFailure carrying the SMTP "
    "reply in Details.",
)
async def failure_after_5xx(s: Session) -> None:
    command = _hook(s)
    token = new_token()
    try:
        dispatch = await _refused_dispatch(s, token, REFUSAL)
    finally:
        s.listener.answer = None
    output = await evidence_from_target(s, command, dispatch, token, s.options.evidence_timeout)
    judge_failure(s, output, dispatch, token, reasons=(), event=None, details="554")


@case(
    "KEP-RC-11",
    "the suite's listener is down past the relay timeout: RelayREMMDFailure, R_REMMD_Unreachable",
    section="§4 Relay, §5, §6",
    etsi="COF-RETRY",
    mode=RECEIVE,
    rule="After relay_timeout (default 24 h, profile choice) with no 250, the S-GW issues "
    "RelayREMMDFailure (DeliveryExpiration, reason R_REMMD_Unreachable …).",
)
async def failure_after_timeout(s: Session) -> None:
    command = _hook(s)
    relay_timeout = s.options.relay_timeout
    if relay_timeout is None:
        raise CaseSkipped("no --relay-timeout: the target's relay timeout is not known short")
    token = new_token()
    listener = s.listener
    try:
        # The first attempt tells the suite which Dispatch it is; then the listener goes down
        # (an attempt already under way when it closes is deferred too).
        dispatch = await _refused_dispatch(s, token, DEFERRAL)
        await listener.stop()
        output = await evidence_from_target(
            s, command, dispatch, token, relay_timeout + s.options.evidence_timeout
        )
    finally:
        if not listener.running:
            await listener.start()
        listener.answer = None
    judge_failure(
        s,
        output,
        dispatch,
        token,
        reasons=("R_REMMD_Unreachable",),
        event=Event.DeliveryExpiration.value,
        details=None,
    )
    came = await listener.wait_for(ours(token), lambda found: len(found) > 1, s.options.settle)
    s.check(
        "the Dispatch is not sent again once it failed",
        len(came) == 1,
        f"{len(came)} attempt(s) seen",
    )


async def _bad_evidence_back(s: Session, why: str, **spoiled: object) -> None:
    """The target's Dispatch, answered 250; then Delivery evidence about it, ``spoiled``: the
    target refuses it (5xx) or keeps it (250), never defers it or drops the connection; it
    still takes the good relay Acceptance after it; and, with ``--evidence-command``, its user
    is shown that Acceptance but no Delivery (the suite sent none that verifies)."""
    token = new_token()
    (received,) = (await dispatch_from_target(s, token=token))[:1]
    about = submission(s, received)
    done = await s.answered(
        send_evidence_back(
            s,
            received,
            about,
            EvidenceType.DeliveryNonDeliveryToRecipient,
            Event.Delivery,
            why,
            **spoiled,
        ),
        f"{why}: answered",
    )
    code = done.final.code
    s.check(
        f"{why}: refused (5xx) or kept (250), not deferred (§2, §4 S-GW on an Evidence)",
        code == 250 or 500 <= code < 600,
        str(done.final),
    )
    after = await s.answered(
        send_evidence_back(
            s,
            received,
            about,
            EvidenceType.RelayREMMDAcceptanceRejection,
            Event.Acceptance,
            "good",
        ),
        "the target still serves: good evidence taken",
    )
    s.check("the target still serves: good evidence taken (250)", after.accepted, str(after.final))
    command = s.options.evidence_command
    if not command:
        s.records.append(
            Record(
                "note",
                "evidence command",
                ["not given: what the target's user was shown is not checked"],
            )
        )
        return
    await _not_shown(s, command, received, token, why)


async def _not_shown(s: Session, command: str, dispatch: Received, token: str, why: str) -> None:
    """Through ``--evidence-command``: the good relay Acceptance the suite sent after the bad
    evidence reached the sender's evidence folder (so the target has processed what came
    before it), and no Delivery shows there for ``settle`` seconds more."""
    shown = await evidence_from_target(
        s, command, dispatch, token, s.options.evidence_timeout, kind=RELAY
    )
    if shown is None:
        s.check(f"the good {RELAY} reached the sender (§4 S-GW on an Evidence)", False, "not shown")
    else:
        _message, xml = _printed(s, shown, RELAY)
        evidence = _read(xml)
        s.check(
            f"the good {RELAY} reached the sender (§4 S-GW on an Evidence)",
            evidence is not None
            and evidence.type is EvidenceType.RelayREMMDAcceptanceRejection
            and evidence.message.remmd_message_id == dispatch.message_identifier,
            _label(evidence),
        )
    output = await evidence_from_target(
        s, command, dispatch, token, s.options.settle, kind=DELIVERY
    )
    if output is None:
        s.check(
            f"{why}: not shown to the sender as {DELIVERY} (§4 S-GW on an Evidence)",
            True,
            f"the evidence command printed no {DELIVERY} in {s.options.settle:g} s (--settle)",
        )
        return
    _message, xml = _printed(s, output, DELIVERY)
    evidence = _read(xml)
    printed = _label(evidence)
    s.check(
        f"{why}: not shown to the sender as {DELIVERY} (§4 S-GW on an Evidence)",
        evidence is not None
        and (
            evidence.type is not EvidenceType.DeliveryNonDeliveryToRecipient
            or evidence.message.remmd_message_id != dispatch.message_identifier
        ),
        f"the evidence command printed {printed}; the suite sent no {DELIVERY} for this "
        f"Dispatch that verifies, only {why}",
    )


def _label(evidence: Evidence | None) -> str:
    if evidence is None:
        return "an unreadable delil.xml"
    about = evidence.message.remmd_message_id
    return f"{evidence.type.value} {evidence.event.value} about {about}"


def _read(xml: bytes | None) -> Evidence | None:
    if xml is None:
        return None
    try:
        return xmlio.parse(xml)
    except MalformedInput:
        return None


def _truncated(xml: bytes) -> bytes:
    return xml[: len(xml) // 2]


@case(
    "KEP-RC-12",
    "malformed evidence back is refused or kept, and the target goes on serving",
    section="§2, §4 S-GW on an Evidence, §5",
    etsi="COF-ROBUSTNESS",
    mode=RECEIVE,
    rule="S-GW, on an Evidence: verify transport, envelope signature and the evidence's own "
    "signature … Evidence for an unknown message is kept and reported, not dropped. 4xx is "
    "for what may pass later.",
)
async def malformed_evidence_back(s: Session) -> None:
    await _bad_evidence_back(s, "delil.xml cut in half", spoil=_truncated)


@case(
    "KEP-RC-13",
    "evidence signed by another provider is refused or kept, and the target goes on serving",
    section="§1, §4 S-GW on an Evidence",
    etsi="SIG-EVXADES",
    mode=RECEIVE,
    rule="S-GW, on an Evidence: verify transport, envelope signature and the evidence's own "
    "signature; the issuer MUST be the provider the Dispatch went to.",
)
async def foreign_evidence_back(s: Session) -> None:
    others = [p for p in s.pki.dev.providers if p not in (s.me, s.target)]
    if not others:
        raise CaseSkipped("the PKI folder holds no third provider to sign with")
    await _bad_evidence_back(s, f"Delivery evidence signed by {others[0]}", signed_by=others[0])


@case(
    "KEP-RC-14",
    "no delivery evidence within the evidence timeout: RelayREMMDFailure, "
    "S_REMMD_ReceivedNoDeliveryInfoFromR_REMMD",
    section="§4 S-GW on an Evidence, §5, §6",
    etsi="COF-RETRY",
    mode=RECEIVE,
    rule="If no Delivery/NonDelivery evidence arrives within evidence_timeout after relay "
    "acceptance (default 24 h), the S-GW issues RelayREMMDFailure with "
    "S_REMMD_ReceivedNoDeliveryInfoFromR_REMMD.",
)
async def failure_without_delivery(s: Session) -> None:
    command = _hook(s)
    evidence_timeout = s.options.target_evidence_timeout
    if evidence_timeout is None:
        raise CaseSkipped(
            "no --target-evidence-timeout: the target's evidence timeout is not known short"
        )
    token = new_token()
    (dispatch,) = (await dispatch_from_target(s, token=token))[:1]
    s.require(
        "the Dispatch was taken (250)", dispatch.answered.startswith("250"), dispatch.answered
    )
    about = submission(s, dispatch)
    # Relay acceptance, as an R-GW sends it; the Delivery evidence that should follow never does.
    done = await s.answered(
        send_evidence_back(
            s,
            dispatch,
            about,
            EvidenceType.RelayREMMDAcceptanceRejection,
            Event.Acceptance,
            "relay Acceptance (no Delivery evidence will follow)",
        ),
        "the relay Acceptance taken (250)",
    )
    s.require("the relay Acceptance taken (250)", done.accepted, str(done.final))
    output = await evidence_from_target(
        s, command, dispatch, token, evidence_timeout + s.options.evidence_timeout
    )
    judge_failure(
        s,
        output,
        dispatch,
        token,
        reasons=(Reason.S_REMMD_ReceivedNoDeliveryInfoFromR_REMMD.name,),
        event=None,
        details=None,
    )
