"""S-GW: users' messages submitted by the provider's own systems (INTEROP-PROFILE.md §4).

Takes: ``submission`` rows in state ``received``. Promises: the user's e-imza, the account and
the recipients are checked; SubmissionAcceptanceRejection is issued and filed in the sender's
Delil folder (the original in Sent); on acceptance each recipient provider gets one Dispatch
(queued, with its relay timer) and local recipients are delivered here with the same
evidence an R-GW would issue. All state changes commit in one transaction.
"""

from __future__ import annotations

import dataclasses
import email.utils
from collections import defaultdict
from dataclasses import dataclass
from typing import BinaryIO, cast

import structlog
from cryptography import x509

from interop.address import KepAddress
from interop.envelope.build import write_dispatch
from interop.envelope.fields import ILETI_TIP, IletiTip
from interop.envelope.mime import Span
from interop.envelope.user import UserMessageVerification, verify_user_message
from interop.errors import AddressError, KepError
from interop.evidence.codes import Event
from interop.evidence.issue import follow_up, submission_evidence
from interop.evidence.model import EventReason
from interop.identity import certificate_number
from interop.limits import message_limit
from interop.pathval import subject_text
from interop.providers import ETEBLIGAT_PROVIDER
from interop.reasons import Reason
from relay.context import NodeContext
from relay.issuing import Issued, file_evidence, record, sign
from relay.lifecycle import Kind, State
from relay.readings import READ_WHOLE, Received
from relay.stages.deliver import decide_and_deliver
from relay.steps import IN_PLACE, Steps
from relay.store import MessageRow

log = structlog.get_logger("kep.sgw")


def verify_user(context: NodeContext, received: Received) -> UserMessageVerification | KepError:
    """The user's e-imza verified, or why the message is not an S/MIME one (CPU only for a
    small message read whole)."""
    with received.open() as stream:
        try:
            return verify_user_message(
                stream,
                context.verifiers.user,
                context.clock(),
                tsa_validator=context.verifiers.tsa,
            )
        except KepError as exc:
            return exc


def _checks(
    context: NodeContext, row: MessageRow, user: UserMessageVerification | KepError
) -> tuple[list[EventReason], IletiTip, dict[str, list[str]]]:
    """Reasons to refuse (empty when accepted), the message kind, recipients by provider."""
    reasons: list[EventReason] = []
    ileti_tip = IletiTip.standart
    if isinstance(user, KepError):
        context.metrics.verified("user_message", False, Reason.InvalidUserSignature)
        reasons.append(
            EventReason(Reason.InvalidUserSignature, f"an e-imza is required: {user.detail}")
        )
    else:
        context.metrics.verified("user_message", user.ok, user.reason)
        if not user.ok and user.reason is not None:
            reasons.append(EventReason(user.reason, user.signature.detail))
        problem = from_problem(user.headers.get_all("From"), row.mail_from)
        if problem is not None:
            # §4 S-GW 1: From: MUST be exactly the account's address (the MAIL FROM).
            reasons.append(EventReason(Reason.InvalidUserSignature, problem))
        if user.ok and user.signature.signer is not None:
            problem = signer_problem(context, row, user.signature.signer)
            if problem is not None:
                reasons.append(EventReason(Reason.InvalidUserSignature, problem))
        try:
            ileti_tip = IletiTip.parse(user.headers.get(ILETI_TIP))
        except ValueError as exc:  # a kind of message KEP does not have: not the e-imza
            reasons.append(EventReason(Reason.InvalidMessageFormat, str(exc)))
    why_not = context.mailboxes.why_cannot_send(row.mail_from)
    if why_not:
        reasons.append(EventReason(Reason.PolicyViolation, why_not))
    by_provider: dict[str, list[str]] = defaultdict(list)
    directory = context.verifiers.trust.directory
    for address in row.rcpt_to:
        try:
            recipient = KepAddress.parse(address, directory)
        except AddressError as exc:
            # Not a KEP address: no REMMD can be identified for it.
            reasons.append(EventReason(Reason.R_REMMD_NotIdenified, exc.detail))
            continue
        by_provider[recipient.provider_id].append(str(recipient))
    limit = message_limit(
        context.provider.id,
        by_provider,
        {context.provider.id: context.config.limits.own_message_limit},
        # The limit each recipient's provider is held to ([peers] message_limit_mib), so the
        # S-GW never sends what that provider's R-GW, configured alike, would refuse (§2).
        peer_limits={e.id: e.message_limit for e in context.verifiers.trust},
    )
    if row.size > limit:
        reasons.append(
            EventReason(
                Reason.PolicyViolation, f"the message is {row.size} bytes; the limit is {limit}"
            )
        )
    if ileti_tip is IletiTip.eTebligat and context.provider.id != ETEBLIGAT_PROVIDER:
        reasons.append(
            EventReason(Reason.PolicyViolation, "eTebligat is sent only through hs01 (PTT)")
        )
    elif ileti_tip is IletiTip.eTebligat:
        account = context.mailboxes.account(row.mail_from)
        if account is not None and not account.etebligat:
            # §4 S-GW 1: only accounts the provider authorised to serve notices (public bodies).
            reasons.append(
                EventReason(
                    Reason.PolicyViolation,
                    f"{row.mail_from} is not authorised to send eTebligat",
                )
            )
    for pid in by_provider:
        if pid != context.provider.id and context.verifiers.trust.get(pid) is None:
            reasons.append(
                EventReason(Reason.R_REMMD_NotIdenified, f"{pid} is not in the trust list")
            )
    return reasons, ileti_tip, dict(by_provider)


def from_problem(from_fields: list[str], account: str) -> str | None:
    """Why the original's From: is not exactly ``account`` (None when it is). Addresses are
    parsed and compared whole, so ``kali@hs01.kep.tr`` is not ``ali@hs01.kep.tr``."""
    if len(from_fields) != 1:
        return f"the message has {len(from_fields)} From: fields; one, {account}, is required"
    try:
        found = [address for _name, address in email.utils.getaddresses(from_fields) if address]
    except Exception:  # the standard library's parser on a user's bytes: unreadable is wrong
        found = []
    if len(found) != 1:
        return f"From: {from_fields[0]!r} must name exactly one address, {account}"
    if found[0].lower() != account.lower():
        return f"From: {found[0]} is not the account {account} that submitted the message"
    return None


def signer_problem(context: NodeContext, row: MessageRow, signer: x509.Certificate) -> str | None:
    """Why the e-imza's signer cannot speak for the submitting account (None when it can).

    §1 and §4 S-GW 1: the certificate's subject serialNumber must be the account holder's TC
    Kimlik No (or YKN), or one of its authorised operators', as they were when the provider
    accepted the message (the store keeps who was allowed when).
    """
    if context.mailboxes.account(row.mail_from) is None:
        return None  # refused already: no account
    who = subject_text(signer)
    number = certificate_number(signer)
    if number is None:
        return (
            f"the e-imza of {who} names no TC Kimlik No or YKN; it cannot sign for {row.mail_from}"
        )
    if str(number) not in context.mailboxes.signers_at(row.mail_from, row.created):
        return (
            f"the e-imza of {who} (serialNumber {number}) is neither the holder of"
            f" {row.mail_from} nor one of its authorised operators"
        )
    return None


def remmd_id_for(context: NodeContext, queue_id: str) -> str:
    """The REMMD message id of a user's submission: its queue id at this provider's domain."""
    return f"{queue_id}@{context.provider.domain}"


async def process_submission(
    context: NodeContext,
    row: MessageRow,
    steps: Steps = IN_PLACE,
    received: Received | None = None,
) -> None:
    """The S-GW for ``row``, in steps: the file is read (unless the node read it with its
    claim: ``received``), the user's e-imza verified (``steps.cpu`` for a small message: the
    event loop's thread, in a node), then the rest in one blocking step (it signs, files and
    writes in turn; not yet split further)."""
    if received is None:
        received = await steps.blocking(context.receive, row)
    computing = steps.cpu if received.small else steps.blocking
    user = await computing(verify_user, context, received)
    await steps.last(accept_or_refuse, context, row, received, user)


def accept_or_refuse(
    context: NodeContext,
    row: MessageRow,
    received: Received,
    user: UserMessageVerification | KepError,
) -> None:
    """SubmissionAcceptanceRejection, filed; on acceptance the Dispatches queued and local
    recipients delivered; all recorded in one transaction."""
    reasons, ileti_tip, by_provider = _checks(context, row, user)
    remmd_id = remmd_id_for(context, row.id)
    recipients = [r.lower() for r in row.rcpt_to]
    with received.open() as stream:
        submission = sign(
            context,
            submission_evidence(
                stream,
                context.provider,
                row.mail_from,
                recipients,
                remmd_id,
                context.clock(),
                reasons=reasons,
            ),
        )
    # Filed at once: a replay after a crash takes the evidence filed then, whose identifier
    # the sender holds, and issues the rest about it.
    tip = ileti_tip.value
    fresh = context.fresh_until(row)  # the first attempt files without searching the folders
    submission = file_evidence(
        context, submission, row.mail_from, f"{row.id}-n0", ileti_tip=tip, fresh_until=fresh
    )
    filed = [(submission, f"{row.id}-n0")]
    dispatches: list[_Dispatch] = []
    if not reasons:
        for pid, addresses in by_provider.items():
            indices = [recipients.index(a) + 1 for a in addresses]
            if pid == context.provider.id:
                decided = decide_and_deliver(
                    context,
                    submission.evidence,
                    indices,
                    sending_provider=pid,
                    ileti_tip=ileti_tip,
                    original=(received, Span(0, row.size)),
                    key=row.id,
                    accepted_at=row.created,
                    fresh_until=fresh,
                )
                for evidence in decided:
                    key = f"{row.id}-n{len(filed)}"
                    issued = sign(context, evidence)
                    issued = file_evidence(
                        context, issued, row.mail_from, key, ileti_tip=tip, fresh_until=fresh
                    )
                    filed.append((issued, key))
                continue
            dispatches.append(_dispatch(context, row, received, submission, pid, addresses))
    if not reasons:  # only a message the provider accepted is the user's sent message (quota)
        with received.open() as source:
            context.mailboxes.put(row.mail_from, "Sent", row.id, source, fresh_until=fresh)
    with context.store.transaction() as db:
        for issued, note_id in filed:
            record(context, db, issued, direction="issued", message_id=row.id, envelope_id=note_id)
        for dispatch in dispatches:
            record(context, db, dispatch.evidence, direction="issued", message_id=dispatch.id)
            context.store.add_message(
                db,
                id=dispatch.id,
                kind=Kind.DISPATCH_OUT,
                peer=dispatch.peer,
                remmd_id=remmd_id,
                mail_from=row.mail_from,
                rcpt_to=dispatch.addresses,
                size=dispatch.size,
                sha256=dispatch.sha256,
                state=State.QUEUED,
                parent=row.id,
                content=dispatch.content,
            )
            context.store.set_timer(
                db,
                dispatch.id,
                remmd_id,
                dispatch.peer,
                relay_deadline=context.now() + context.config.timers.relay_timeout,
            )
        context.store.move(db, row, State.REJECTED if reasons else State.PROCESSED)
    log.info(
        "submission_processed",
        queue_id=row.id,
        remmd_id=remmd_id,
        peer=context.provider.id,
        evidence_event=submission.evidence.event.value,
        reason=reasons[0].reason.name if reasons else None,
        dispatches=len(dispatches),
    )


@dataclass(frozen=True, slots=True)
class _Dispatch:
    """A Dispatch written for one provider, to be queued with its evidence."""

    id: str
    peer: str
    addresses: list[str]
    evidence: Issued  # its own SubmissionAcceptance
    size: int
    sha256: str
    content: bytes | None  # its bytes, held in the store; None: its spool file


def _dispatch(
    context: NodeContext,
    row: MessageRow,
    received: Received,
    submission: Issued,
    pid: str,
    addresses: list[str],
) -> _Dispatch:
    """One Dispatch for the recipients at ``pid``, with its own SubmissionAcceptance (§5:
    the evidence inside a Dispatch covers that Dispatch's recipients). One of up to
    ``READ_WHOLE`` bytes is held in the store with its row where the store may hold content
    (as a received message is, ``relay.readings``), with no spool file; a larger one is a
    spool file, synced before its row is written."""
    per_dispatch = sign(
        context,
        dataclasses.replace(
            follow_up(
                submission.evidence,
                context.provider,
                submission.evidence.type,
                Event.Acceptance,
                context.clock(),
            ),
            recipients=tuple(addresses),
        ),
    )
    writer = context.spool.writer(keep=READ_WHOLE if context.store.holds_content else 0)
    try:
        with received.open() as original:
            write_dispatch(
                cast(BinaryIO, writer),
                original,
                per_dispatch.evidence,
                per_dispatch.xml,
                context.process,
                context.clock(),
                message_id=f"<{writer.queue_id}@{context.provider.domain}>",
                timestamp=context.stamp_function(),
            )
        content = writer.held
        if content is None:
            writer.commit()
        else:
            writer.discard()  # held in memory: no file was made
    except BaseException:
        writer.discard()
        raise
    return _Dispatch(
        writer.queue_id,
        pid,
        addresses,
        per_dispatch,
        writer.size,
        writer.sha256.hexdigest(),
        content,
    )
