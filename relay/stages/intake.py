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
from collections.abc import Callable

import structlog
from aiosmtpd.smtp import Envelope
from cryptography import x509

from interop.address import KepAddress
from interop.envelope.fields import MsgType
from interop.envelope.parse import parse_envelope
from interop.errors import AddressError, KepError
from interop.evidence import xmlio
from interop.limits import DEFAULT_LIMITS
from relay.context import NodeContext
from relay.metrics import code_class, refusal_reason
from relay.smtp.server import Connection, Sink
from relay.spool import SpoolWriter
from relay.stages.sgw import remmd_id_for

log = structlog.get_logger("kep.intake")

# §2: the reply to a Dispatch already accepted (counted apart from new acceptances).
ALREADY_ACCEPTED = "250 2.0.0 Already accepted as"


class _Base:
    kind = ""
    listener = ""

    def __init__(self, context: NodeContext, wake: Callable[[], None]) -> None:
        self.context = context
        self.wake = wake
        self.directory = context.verifiers.trust.directory
        self.metrics = context.metrics

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

    def refused(self, connection: Connection, reply: str) -> None:
        self.metrics.refusals.labels(
            self.listener, self.peer_label(connection), refusal_reason(reply), code_class(reply)
        ).inc()

    def transaction_done(self, connection: Connection, reply: str, seconds: float) -> None:
        cls = code_class(reply)
        if cls == "2xx":
            result = "repeated" if reply.startswith(ALREADY_ACCEPTED) else "accepted"
            self.metrics.acceptance_seconds.labels(self.listener).observe(seconds)
        else:
            result = "deferred" if cls == "4xx" else "rejected"
        self.metrics.received.labels(self.listener, self.peer_label(connection), result).inc()

    def open_sink(self, connection: Connection, envelope: Envelope) -> Sink:
        return self.context.spool.writer()

    def check_rcpt_count(self, envelope: Envelope) -> str | None:
        if len(envelope.rcpt_tos) >= self.context.config.limits.max_recipients:
            return "452 4.5.3 Too many recipients"
        return None

    def _commit(
        self,
        writer: SpoolWriter,
        *,
        kind: str,
        peer: str | None,
        remmd_id: str | None,
        envelope: Envelope,
    ) -> str:
        """Make the message ours and return the reply (blocking: the caller runs it on a thread).

        A Dispatch this peer delivered before (§2, by ``X-REM-Message-Identifier``) is not
        stored again. That is decided inside the transaction, so two connections delivering
        the same Dispatch at once store it once and both get 250.
        """
        store = self.context.store
        dedupe = kind == "dispatch-in" and peer is not None and remmd_id is not None
        try:
            writer.commit()
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
                    state="received",
                )
        except _AlreadyAccepted as already:
            self.context.spool.remove(writer.queue_id)
            return self._repeated(already.queue_id, peer or "", remmd_id or "")
        except OSError as exc:
            writer.discard()
            self.context.spool.remove(writer.queue_id)
            log.error(
                "spool_write_failed",
                queue_id=writer.queue_id,
                remmd_id=remmd_id,
                peer=peer or self.context.provider.id,
                error=str(exc),
            )
            return "451 4.3.0 Temporary storage problem, try again later"
        self.metrics.message_size.labels(self.listener).observe(writer.size)
        log.info(
            "message_accepted",
            queue_id=writer.queue_id,
            kind=kind,
            peer=peer or self.context.provider.id,
            remmd_id=remmd_id,
            size=writer.size,
        )
        return f"250 2.0.0 Queued as {writer.queue_id}"

    def _repeated(self, earlier_id: str, peer: str, remmd_id: str) -> str:
        """§2: the same Dispatch again: no second copy; evidence already issued goes again."""
        with self.context.store.transaction() as db:
            db.execute(
                "UPDATE messages SET state = 'queued', next_attempt = NULL, attempts = 0"
                " WHERE parent = ? AND kind = 'evidence-out' AND state IN ('sent', 'failed')",
                (earlier_id,),
            )
        log.info("dispatch_repeated", queue_id=earlier_id, peer=peer, remmd_id=remmd_id)
        return f"{ALREADY_ACCEPTED} {earlier_id}"


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
            connection.refused = "530 5.7.0 A client certificate is required"
            return
        cert = x509.load_der_x509_certificate(peer_cert)
        now = self.context.clock()
        for entry in self.context.verifiers.trust:
            result = self.context.verifiers.tls(entry.id).validate(cert, [], now, entry.tls_names)
            if result.ok:
                connection.provider = entry.id
                return
        connection.refused = (
            "550 5.7.1 Your TLS certificate does not belong to a provider in the trust list"
        )
        log.warning(
            "peer_unknown",
            client=str(connection.peer_address),
            subject=cert.subject.rfc4514_string(),
        )

    def check_mail(self, connection: Connection, address: str, options: list[str]) -> str | None:
        try:
            sender = KepAddress.parse(address, self.directory)
        except AddressError as exc:
            return f"553 5.1.7 {exc.detail}"
        if sender.provider_id != connection.provider:
            # §2: a peer cannot speak for another provider.
            return (
                f"550 5.7.1 {sender} is not an address of {connection.provider}; "
                "a provider may only send for its own domain"
            )
        return None

    def check_rcpt(self, connection: Connection, envelope: Envelope, address: str) -> str | None:
        try:
            recipient = KepAddress.parse(address, self.directory)
        except AddressError as exc:
            return f"553 5.1.3 {exc.detail}"
        if recipient.provider_id != self.context.provider.id:
            return f"550 5.7.1 Relay denied: {recipient.domain} is not served here"
        return self.check_rcpt_count(envelope)

    async def finish(self, connection: Connection, envelope: Envelope, sink: Sink) -> str:
        assert isinstance(sink, SpoolWriter) and connection.provider is not None
        sink.flush()
        problem, msg_type, remmd_id = await asyncio.to_thread(self._inspect, connection, sink)
        if problem:
            sink.discard()
            return problem
        kind = "dispatch-in" if msg_type is MsgType.Dispatch else "evidence-in"
        reply = await asyncio.to_thread(
            self._commit,
            sink,
            kind=kind,
            peer=connection.provider,
            remmd_id=remmd_id,
            envelope=envelope,
        )
        self.wake()
        return reply

    def _inspect(
        self, connection: Connection, sink: SpoolWriter
    ) -> tuple[str | None, MsgType | None, str | None]:
        """Read the envelope's structure before acknowledging it (it is on disk, not yet ours)."""
        try:
            sink_file = sink.tmp.open("rb")
        except OSError:
            return "451 4.3.0 Temporary storage problem, try again later", None, None
        with sink_file:
            try:
                parsed = parse_envelope(sink_file)
                evidence = xmlio.parse(parsed.evidence_xml)
            except KepError as exc:
                code, enhanced = (
                    ("552", "5.3.4") if exc.smtp_reply.code == 552 else ("550", "5.6.0")
                )
                return f"{code} {enhanced} {exc.detail}", None, None
            except Exception:  # a reader bug on hostile bytes: refuse for now, never crash
                log.exception("envelope_unreadable", peer=connection.provider)
                return "451 4.3.0 The envelope could not be read here; try again later", None, None
        entry = self.context.verifiers.trust[connection.provider or ""]
        if parsed.original is not None and parsed.original.size > entry.message_limit:
            return (
                (
                    f"552 5.3.4 The original message is {parsed.original.size} bytes; "
                    f"the limit between providers is {entry.message_limit}"
                ),
                None,
                None,
            )
        if evidence.message.remmd_message_id != parsed.message_identifier:
            return "550 5.6.0 X-REM-Message-Identifier does not match delil.xml", None, None
        return None, parsed.msg_type, parsed.message_identifier


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
            connection.refused = "530 5.7.0 A client certificate is required"
            return
        cert = x509.load_der_x509_certificate(peer_cert)
        validator = self.context.verifiers.tls(self.context.provider.id)
        result = validator.validate(cert, [], self.context.clock())
        if not result.ok:
            connection.refused = "550 5.7.1 Your certificate is not one of this provider's systems"

    def check_mail(self, connection: Connection, address: str, options: list[str]) -> str | None:
        try:
            sender = KepAddress.parse(address, self.directory)
        except AddressError as exc:
            return f"553 5.1.7 {exc.detail}"
        if sender.provider_id != self.context.provider.id:
            return f"550 5.7.1 {sender} is not an address of {self.context.provider.id}"
        return None

    def check_rcpt(self, connection: Connection, envelope: Envelope, address: str) -> str | None:
        # Whether each recipient is a KEP address is decided with evidence (§4 S-GW 1).
        if "@" not in address:
            return "553 5.1.3 Not an e-mail address"
        return self.check_rcpt_count(envelope)

    async def finish(self, connection: Connection, envelope: Envelope, sink: Sink) -> str:
        assert isinstance(sink, SpoolWriter)
        remmd_id = remmd_id_for(self.context, sink.queue_id)  # known from acceptance on
        reply = await asyncio.to_thread(
            self._commit, sink, kind="submission", peer=None, remmd_id=remmd_id, envelope=envelope
        )
        self.wake()
        return reply
