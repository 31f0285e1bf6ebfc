"""Intake: the first stage behind each listener (INTEROP-PROFILE.md §2).

Takes: SMTP transactions from a listener. Promises: a message is acknowledged with 250 only
once its spool file and its store row (its obligation to be processed and answered with
evidence) are on stable storage; every refusal is a specific reply. On failure: storage
trouble is ``451 4.3.0`` (the sender retries), never a silent loss.

Peer listener: the TLS client certificate decides which provider speaks; MAIL FROM must be that
provider's, RCPT TO ours (no open relay), the envelope readable and its original within the
limit. A repeated Dispatch (same peer, same X-REM-Message-Identifier) is acknowledged again and
its evidence resent, never processed twice. Submission listener: the provider's own systems
submit users' messages for this provider's senders.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

import structlog
from aiosmtpd.smtp import Envelope
from cryptography import x509

from interop.address import KepAddress
from interop.envelope.fields import MsgType
from interop.envelope.parse import ParsedEnvelope, parse_envelope
from interop.errors import AddressError, SmtpReply
from interop.evidence import xmlio
from interop.evidence.xmlio import ReadEvidence
from interop.limits import DEFAULT_LIMITS
from interop.providers import Provider, ProviderDirectory
from relay.context import NodeContext
from relay.errors import (
    BadRecipient,
    BadSender,
    NotPermitted,
    RelayError,
    StorageTrouble,
    TooBig,
    UnreadableMessage,
    as_relay_error,
)
from relay.lifecycle import Kind, State
from relay.metrics import code_class, refusal_reason
from relay.readings import READ_WHOLE, READER_FIRST, FileIdentity, HeldIdentity, Reading
from relay.smtp.server import Connection, Sink
from relay.spool import SpoolWriter
from relay.stages.sgw import remmd_id_for
from relay.steps import ON_THREADS
from relay.store import is_duplicate

log = structlog.get_logger("kep.intake")

# §2: the reply to a Dispatch already accepted (counted apart from new acceptances).
ALREADY_ACCEPTED = "Already accepted as"
NO_CLIENT_CERTIFICATE = SmtpReply(530, "5.7.0", "A client certificate is required")


class _Base:
    kind = ""
    listener = ""

    def __init__(self, context: NodeContext, wake: Callable[[], None]) -> None:
        self.context = context
        self.wake = wake
        self.metrics = context.metrics

    @property
    def directory(self) -> ProviderDirectory:
        """The providers of the trust list in use (it may change at a SIGHUP)."""
        return self.context.verifiers.trust.directory

    def peer_label(self, connection: Connection) -> str:
        return connection.provider or "unknown"

    def identify(self, connection: Connection, peer_cert: bytes | None) -> None:
        self._identify(connection, peer_cert)
        if connection.tls:
            result = "refused" if connection.refused else "accepted"
            self.metrics.tls_handshakes.labels(
                self.listener, connection.tls_version or "unknown", result
            ).inc()

    def _identify(self, connection: Connection, peer_cert: bytes | None) -> None:
        raise NotImplementedError

    def refused(self, connection: Connection, reply: SmtpReply) -> None:
        self.metrics.refusals.labels(
            self.listener,
            self.peer_label(connection),
            refusal_reason(reply),
            code_class(reply.code),
        ).inc()

    def transaction_done(self, connection: Connection, reply: SmtpReply, seconds: float) -> None:
        cls = code_class(reply.code)
        if cls == "2xx":
            result = "repeated" if isinstance(reply, Repeated) else "accepted"
            self.metrics.acceptance_seconds.labels(self.listener).observe(seconds)
        else:
            result = "deferred" if cls == "4xx" else "rejected"
        self.metrics.received.labels(self.listener, self.peer_label(connection), result).inc()

    def session_cut(self, connection: Connection, why: str) -> None:
        self.metrics.sessions_cut.labels(self.listener, self.peer_label(connection), why).inc()

    def open_sink(self, connection: Connection, envelope: Envelope) -> Sink:
        # A small message stays in memory, and goes into the store with its row (``_commit``).
        return self.context.spool.writer(keep=READ_WHOLE)

    def check_rcpt_count(self, envelope: Envelope) -> SmtpReply | None:
        if len(envelope.rcpt_tos) >= self.context.config.limits.max_recipients:
            return SmtpReply(452, "4.5.3", "Too many recipients")
        return None

    def owner(self, address: str) -> Provider | None:
        """The provider whose domain ``address`` is at (None: not a KEP domain, or ``<>``)."""
        return self.directory.owner_of(address.rpartition("@")[2].lower())

    def _commit(
        self,
        writer: SpoolWriter,
        *,
        kind: Kind,
        peer: str | None,
        remmd_id: str | None,
        envelope: Envelope,
        due: float | None = None,
    ) -> SmtpReply:
        """Make the message ours and return the reply (blocking: the caller runs it where small
        work runs, or on a thread). ``due``: when any node process may take it up (default:
        now), later when this process keeps its reading (``READER_FIRST``).

        A Dispatch this peer delivered before (§2, by ``X-REM-Message-Identifier``) is not
        stored again. That is decided inside the transaction, so two connections delivering
        the same Dispatch at once store it once and both get 250.

        A small message (the writer ``held`` it in memory) makes no spool file where the store
        may hold content (``Store.holds_content``): its bytes go into the store with its row,
        in the same transaction. A large one's file (a small one's, elsewhere) is synced and
        renamed into place before the row that points at it is written.

        Any failure leaves nothing behind and answers 4xx (``relay.errors``). The one case that
        needs care: the store failing as its transaction commits, when the row may or may not
        be there; then a spool file stays for the start-up sweep to decide, and the peer,
        told to try again, finds the message already accepted if it was.
        """
        store = self.context.store
        dedupe = kind is Kind.DISPATCH_IN and peer is not None and remmd_id is not None
        held = writer.held if self._holds(writer) else None
        committed_file = False
        try:
            if held is None:
                writer.commit()
                committed_file = True
            with store.transaction() as db:
                if dedupe:
                    earlier = store.find(kind, peer or "", remmd_id or "")
                    if earlier is not None:
                        raise _AlreadyAccepted(earlier.id)
                store.add_message(
                    db,
                    id=writer.queue_id,
                    kind=kind,
                    peer=peer,
                    remmd_id=remmd_id,
                    mail_from=envelope.mail_from or "",
                    rcpt_to=envelope.rcpt_tos,
                    size=writer.size,
                    sha256=writer.sha256.hexdigest(),
                    state=State.RECEIVED,
                    next_attempt=due,
                    content=held,
                )
        except _AlreadyAccepted as already:
            self._forget(writer, committed_file)
            return self._repeated(already.queue_id, peer or "", remmd_id or "")
        except Exception as exc:
            if dedupe and is_duplicate(exc):
                # Another node stored the same Dispatch between our look and our insert (the
                # database's unique key on it decided): the same message, §2.
                earlier = store.find(kind, peer or "", remmd_id or "")
                if earlier is not None:
                    self._forget(writer, committed_file)
                    return self._repeated(earlier.id, peer or "", remmd_id or "")
            reached_store = held is not None or committed_file
            stored = self._row_exists(writer.queue_id) if reached_store else False
            if stored is False:
                self._forget(writer, committed_file)
            else:
                writer.discard()  # a committed file stays, for the row or the start-up sweep
            log.error(
                "spool_write_failed",
                queue_id=writer.queue_id,
                remmd_id=remmd_id,
                peer=peer or self.context.provider.id,
                error=f"{type(exc).__name__}: {exc}",
                stored=stored,
            )
            if stored is not True:
                return as_relay_error(exc).reply
        self.metrics.message_size.labels(self.listener).observe(writer.size)
        log.info(
            "message_accepted",
            queue_id=writer.queue_id,
            kind=kind,
            peer=peer or self.context.provider.id,
            remmd_id=remmd_id,
            size=writer.size,
        )
        return SmtpReply(250, "2.0.0", f"Queued as {writer.queue_id}")

    def _holds(self, writer: SpoolWriter) -> bool:
        """Whether ``writer``'s message goes into the store with its row, not a spool file:
        a small one held in memory, where the store may hold content (``_commit``)."""
        return writer.in_memory and self.context.store.holds_content

    def _forget(self, writer: SpoolWriter, committed_file: bool) -> None:
        """Leave nothing of a message not stored (its spool file, if it had one by now)."""
        writer.discard()
        if committed_file:
            self.context.spool.remove(writer.queue_id)

    def _row_exists(self, queue_id: str) -> bool | None:
        """Whether the store holds ``queue_id`` (None: the store cannot tell now)."""
        try:
            return self.context.store.message(queue_id) is not None
        except Exception:
            return None

    def _repeated(self, earlier_id: str, peer: str, remmd_id: str) -> SmtpReply:
        """§2: the same Dispatch again: no second copy; evidence already issued goes again."""
        self.context.store.resend_evidence_of(earlier_id)
        log.info("dispatch_repeated", queue_id=earlier_id, peer=peer, remmd_id=remmd_id)
        return Repeated(250, "2.0.0", f"{ALREADY_ACCEPTED} {earlier_id}")


@dataclass(frozen=True, slots=True)
class Repeated(SmtpReply):
    """The 250 for a Dispatch accepted before (§2): counted as repeated, not accepted."""


class _AlreadyAccepted(Exception):
    def __init__(self, queue_id: str) -> None:
        super().__init__(queue_id)
        self.queue_id = queue_id


class PeerIntake(_Base):
    listener = "peer"

    def size_limit(self, connection: Connection) -> int:
        entry = self.context.verifiers.trust.get(connection.provider or "")
        limit = entry.message_limit if entry else DEFAULT_LIMITS.cross_provider_message
        return DEFAULT_LIMITS.smtp_size(limit)  # §2: the limit plus the envelope allowance

    def _identify(self, connection: Connection, peer_cert: bytes | None) -> None:
        if peer_cert is None:
            connection.refused = NO_CLIENT_CERTIFICATE
            return
        refusal = SmtpReply(
            550, "5.7.1", "Your TLS certificate does not belong to a provider in the trust list"
        )
        subject = "(unreadable)"
        try:
            cert = x509.load_der_x509_certificate(peer_cert)
            subject = cert.subject.rfc4514_string()
        except ValueError:  # OpenSSL took it, cryptography does not: not one of ours either
            cert = None
        now = self.context.clock()
        for entry in self.context.verifiers.trust:
            if cert is None:
                break
            result = self.context.verifiers.tls(entry.id).validate(cert, [], now, entry.tls_names)
            if result.ok:
                connection.provider = entry.id
                return
        connection.refused = refusal
        log.warning("peer_unknown", client=str(connection.peer_address), subject=subject)

    def check_mail(
        self, connection: Connection, address: str, options: list[str]
    ) -> SmtpReply | None:
        # §2: MAIL FROM's domain must be the authenticated peer's (550 5.7.1 otherwise): a peer
        # cannot speak for another provider, nor for nobody (<>), nor for a domain outside KEP.
        owner = self.owner(address)
        if owner is None or owner.id != connection.provider:
            return NotPermitted(
                text=f"<{address}> is not an address of {connection.provider}; "
                "a provider may only send for its own domain"
            ).reply
        try:
            KepAddress.parse(address, self.directory)
        except AddressError as exc:
            return BadSender(text=exc.detail).reply
        return None

    def check_rcpt(
        self, connection: Connection, envelope: Envelope, address: str
    ) -> SmtpReply | None:
        # §2: RCPT TO must be in our own domains (550 5.7.1): never an open relay.
        owner = self.owner(address)
        if owner is None or owner.id != self.context.provider.id:
            return NotPermitted(text=f"Relay denied: <{address}> is not served here").reply
        try:
            KepAddress.parse(address, self.directory)
        except AddressError as exc:
            return BadRecipient(text=exc.detail).reply
        return self.check_rcpt_count(envelope)

    async def finish(self, connection: Connection, envelope: Envelope, sink: Sink) -> SmtpReply:
        assert isinstance(sink, SpoolWriter) and connection.provider is not None
        sink.flush()
        if sink.copy is not None:
            # A small envelope is read from the writer's copy on the event loop's thread
            # (CPU only), then committed, its bytes into the store with its row, where a small
            # message's work runs (relay.steps).
            read = self._inspect(connection, envelope, io.BytesIO(sink.copy))
            reply = await self.context.small_steps.blocking(
                self._settle, connection, envelope, sink, read
            )
        else:
            # Reading a large one back from its file and committing it both block, and
            # nothing between them needs the event loop: one hand-off to a thread.
            reply = await asyncio.to_thread(self._accept, connection, envelope, sink)
        if reply.code == 250:
            self.wake()
        return reply

    def _accept(self, connection: Connection, envelope: Envelope, sink: SpoolWriter) -> SmtpReply:
        """Read the envelope back from its file, then commit it (blocking)."""
        try:
            sink_file = sink.tmp.open("rb")
        except OSError as exc:
            return self._settle(
                connection, envelope, sink, StorageTrouble(f"reading back {sink.queue_id}: {exc}")
            )
        with sink_file:
            read = self._inspect(connection, envelope, sink_file)
        return self._settle(connection, envelope, sink, read)

    def _settle(
        self,
        connection: Connection,
        envelope: Envelope,
        sink: SpoolWriter,
        read: RelayError | tuple[ParsedEnvelope, ReadEvidence],
    ) -> SmtpReply:
        """Refuse, or commit (blocking); the reading of an envelope accepted is kept for this
        process's verifier (``relay.readings``), which then need not read it again."""
        if isinstance(read, RelayError):
            sink.discard()
            return read.reply
        # What was read: the bytes the store will hold, or the file as written (renamed into
        # place as it is, then only read).
        held = self._holds(sink)
        source = HeldIdentity(sink.size, sink.sha256.digest()) if held else FileIdentity.of(sink)
        reading = Reading(read[0], read[1], source)
        parsed = reading.envelope
        kind = Kind.DISPATCH_IN if parsed.msg_type is MsgType.Dispatch else Kind.EVIDENCE_IN
        # Kept before the commit, so the message can wait for this process from its first
        # moment in the store (``READER_FIRST``); forgotten again if it is not stored.
        now = self.context.now()
        kept = self.context.readings.keep(sink.queue_id, reading, now)
        reply = self._commit(
            sink,
            kind=kind,
            peer=connection.provider,
            remmd_id=parsed.message_identifier,
            envelope=envelope,
            due=now + READER_FIRST if kept else None,
        )
        if kept and (reply.code != 250 or isinstance(reply, Repeated)):
            self.context.readings.drop(sink.queue_id)
        return reply

    def _inspect(
        self, connection: Connection, envelope: Envelope, stream: BinaryIO
    ) -> RelayError | tuple[ParsedEnvelope, ReadEvidence]:
        """Read the envelope's structure before acknowledging it (it is on disk, not yet ours):
        the refusal, or the envelope and its delil.xml read."""
        try:
            parsed = parse_envelope(stream)
            read = xmlio.read(parsed.evidence_xml)
        except Exception as exc:  # KepError: its own reply; anything else: 451, and logged
            error = as_relay_error(exc)
            if error.temporary:
                log.exception("envelope_unreadable", peer=connection.provider)
            return error
        entry = self.context.verifiers.trust[connection.provider or ""]
        if parsed.original is not None and parsed.original.size > entry.message_limit:
            return TooBig(
                text=f"The original message is {parsed.original.size} bytes; "
                f"the limit between providers is {entry.message_limit}"
            )
        evidence = read.evidence
        if evidence.message.remmd_message_id != parsed.message_identifier:
            return UnreadableMessage(text="X-REM-Message-Identifier does not match delil.xml")
        if parsed.msg_type is MsgType.Dispatch:
            named = {r.lower() for r in evidence.recipients}
            strangers = [r for r in envelope.rcpt_tos if r.lower() not in named]
            if strangers:
                # §4 R-GW: evidence is issued per recipient of the Dispatch; a RCPT TO the
                # Dispatch does not name could never be answered, so the S-GW must hear now.
                return UnreadableMessage(
                    text=f"RCPT TO <{strangers[0]}> is not a recipient of this Dispatch "
                    "(not in delil.xml RecipientsDetails)"
                )
        return parsed, read


class SubmissionIntake(_Base):
    listener = "submission"

    def peer_label(self, connection: Connection) -> str:
        return self.context.provider.id  # the provider's own systems

    def size_limit(self, connection: Connection) -> int:
        return DEFAULT_LIMITS.smtp_size(
            max(self.context.config.limits.own_message_limit, DEFAULT_LIMITS.cross_provider_message)
        )

    def _identify(self, connection: Connection, peer_cert: bytes | None) -> None:
        if not self.context.config.submission_listener.require_tls:
            return
        if peer_cert is None:
            connection.refused = NO_CLIENT_CERTIFICATE
            return
        refusal = SmtpReply(550, "5.7.1", "Your certificate is not one of this provider's systems")
        try:
            cert = x509.load_der_x509_certificate(peer_cert)
        except ValueError:
            connection.refused = refusal
            return
        validator = self.context.verifiers.tls(self.context.provider.id)
        result = validator.validate(cert, [], self.context.clock())
        if not result.ok:
            connection.refused = refusal

    def check_mail(
        self, connection: Connection, address: str, options: list[str]
    ) -> SmtpReply | None:
        owner = self.owner(address)
        if owner is None or owner.id != self.context.provider.id:
            return NotPermitted(
                text=f"<{address}> is not an address of {self.context.provider.id}"
            ).reply
        try:
            KepAddress.parse(address, self.directory)
        except AddressError as exc:
            return BadSender(text=exc.detail).reply
        return None

    def check_rcpt(
        self, connection: Connection, envelope: Envelope, address: str
    ) -> SmtpReply | None:
        # Whether each recipient is a KEP address is decided with evidence (§4 S-GW 1).
        if "@" not in address:
            return BadRecipient(text="Not an e-mail address").reply
        return self.check_rcpt_count(envelope)

    async def finish(self, connection: Connection, envelope: Envelope, sink: Sink) -> SmtpReply:
        assert isinstance(sink, SpoolWriter)
        remmd_id = remmd_id_for(self.context, sink.queue_id)  # known from acceptance on
        # Committed where a small message's work runs (relay.steps), a large one on a thread.
        steps = self.context.small_steps if sink.size <= READ_WHOLE else ON_THREADS
        reply = await steps.blocking(
            self._commit,
            sink,
            kind=Kind.SUBMISSION,
            peer=None,
            remmd_id=remmd_id,
            envelope=envelope,
        )
        self.wake()
        return reply
