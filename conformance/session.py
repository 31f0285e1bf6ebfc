"""What a case works with: the providers the suite plays, the target, the listener, and the
record of everything sent, received and checked (which the reports show).

Takes the run's ``Options``, the PKI, the listener and the schema; a ``Session`` is made fresh
for each case. It promises: ``send`` opens a new mutual-TLS connection to the target as a
provider and records the transcript; ``evidence`` waits on the listener for the target's
Evidence messages about a Dispatch; ``examine`` checks one of them with the project's library
and with the independent tools; ``check``/``require`` record verdicts. It never reads the
target's files: what the target did is known only from what it says over SMTP.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import ssl
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from conformance import stamps, tools
from conformance.dispatch import Outgoing, build, new_remmd
from conformance.identity import Pki
from conformance.listener import Listener, Received
from conformance.registry import CaseFailed
from conformance.smtp import SmtpClient, SmtpGone, Transaction, Transcript
from interop.envelope.verify import verify_envelope
from interop.errors import MalformedInput
from interop.evidence import xmlio
from interop.evidence.model import Evidence
from interop.limits import DEFAULT_LIMITS

EVIDENCE_SHOWN = 64 * 1024  # bytes of a decoded delil.xml kept for the report


@dataclass(frozen=True, slots=True)
class Options:
    target: tuple[str, int]
    target_provider: str
    as_provider: str
    pki: Path
    listen: tuple[str, int]
    xsd: Path
    only: str | None = None
    report: Path | None = None
    # Mailboxes that exist at the target (two: cases with several recipients need them).
    recipients: tuple[str, ...] = ()
    unknown_recipient: str | None = None
    # A provider of the PKI other than --as whose route at the target also points at the
    # listener: cases that need a second sending provider use it (eTebligat from not-hs01).
    second_provider: str | None = None
    # Where the target's route for the second provider reaches: a listener of its own, since
    # the target checks that the gateway it reaches shows that provider's TLS certificate.
    second_listen: tuple[str, int] | None = None
    evidence_timeout: float = 60.0
    case_timeout: float = 300.0
    # How long "nothing more came" is waited for (a Dispatch sent again after a 5xx, say).
    settle: float = 3.0
    # A shell command that opens (reads) a delivered message at the target: {recipient},
    # {subject}, {remmd} are filled in. Without it the retrieval case is skipped.
    read_command: str | None = None
    # receive mode: a shell command that makes a user of the target send to {recipient} with
    # {subject} (the target then sends a Dispatch to the listener).
    send_command: str | None = None
    # Mailboxes the target's operator prepared for the non-delivery cases: one whose quota is
    # used up at a target whose policy refuses on full mailboxes (§4 R-GW 2), one closed.
    # Without them those cases are skipped.
    full_recipient: str | None = None
    closed_recipient: str | None = None
    # receive mode: a shell command that prints the evidence the target filed for its own
    # user ({sender}, {subject}, {remmd}, {type} filled in): one Evidence message or delil.xml,
    # exit 0; nothing (or a non-zero exit) while there is none yet. Without it the cases about
    # RelayREMMDFailure are skipped.
    evidence_command: str | None = None
    # receive mode: the target's relay timeout (seconds), set short for the run; the case that
    # keeps the listener closed past it waits that long. Without it that case is skipped.
    relay_timeout: float | None = None
    # receive mode: the target's evidence timeout (seconds), set short for the run: how long
    # it waits for Delivery/NonDelivery after relay acceptance before it files
    # RelayREMMDFailure (§4). Without it the case that withholds that evidence is skipped.
    target_evidence_timeout: float | None = None


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Record:
    """One message sent or received, as the report shows it."""

    direction: str  # "sent" or "received"
    title: str
    smtp: list[str] = field(default_factory=list)
    headers: str = ""
    evidence: str = ""  # delil.xml, decoded
    size: int = 0


@dataclass
class EvidenceIn:
    """An Evidence message the target sent to the listener, read."""

    received: Received
    xml: bytes | None
    evidence: Evidence | None
    problem: str | None  # why it could not be read

    @property
    def kind(self) -> str:
        return self.received.header("X-REM-Evidence-Type") or "?"

    @property
    def event(self) -> str:
        return self.received.header("X-REM-Event") or "?"

    @property
    def index(self) -> int | None:
        return self.evidence.refers_to_recipient if self.evidence else None

    @property
    def label(self) -> str:
        index = f" #{self.index}" if self.index else ""
        return f"{self.kind} {self.event}{index}"


def read_evidence(received: Received) -> EvidenceIn:
    """delil.xml found by Python's email package, read with the project's reader."""
    parts = tools.xml_parts(tools.mime(received.data))
    if len(parts) != 1:
        return EvidenceIn(received, None, None, f"{len(parts)} delil.xml parts, not one")
    try:
        return EvidenceIn(received, parts[0], xmlio.parse(parts[0]), None)
    except MalformedInput as exc:
        return EvidenceIn(received, parts[0], None, exc.detail)


def header_block(data: bytes) -> str:
    end = data.find(b"\r\n\r\n")
    return data[: end if end >= 0 else 4096][:8192].decode("utf-8", "replace")


def pretty_xml(xml: bytes) -> str:
    root = tools.parse_xml(xml[:EVIDENCE_SHOWN])
    if root is None:
        return xml[:EVIDENCE_SHOWN].decode("utf-8", "replace")
    return str(etree.tostring(root, pretty_print=True, encoding="unicode"))


class Session:
    def __init__(
        self, options: Options, pki: Pki, listeners: dict[str, Listener], schema: tools.Schema
    ) -> None:
        self.options = options
        self.pki = pki
        self.listeners = listeners
        self.listener = listeners[options.as_provider]
        self.schema = schema
        self.checks: list[Check] = []
        self.records: list[Record] = []
        self._read: dict[int, EvidenceIn] = {}
        self._recorded: set[int] = set()

    # -- who is who ------------------------------------------------------------------------

    @property
    def target(self) -> str:
        return self.options.target_provider

    @property
    def me(self) -> str:
        return self.options.as_provider

    def domain(self, provider: str) -> str:
        return self.pki.provider(provider).domain

    def sender(self, provider: str | None = None, state: str = "valid") -> str:
        return self.pki.user(provider or self.me, state).address

    def recipients(self, count: int = 1) -> tuple[str, ...]:
        names = self.options.recipients or self.pki.addresses.get(self.target, ())[:2]
        if len(names) < count:
            raise CaseFailed(f"{count} recipients at the target are needed (--recipient)")
        return tuple(names[:count])

    @property
    def unknown_recipient(self) -> str:
        return self.options.unknown_recipient or f"yok.boyle.biri@{self.domain(self.target)}"

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def new_remmd(self) -> str:
        return new_remmd(self.domain(self.me))

    # -- verdicts ----------------------------------------------------------------------------

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append(Check(name, bool(ok), detail))
        return bool(ok)

    def require(self, name: str, ok: bool, detail: str = "") -> None:
        if not self.check(name, ok, detail):
            raise CaseFailed(f"{name}: {detail}")

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    # -- sending -----------------------------------------------------------------------------

    def dispatch(self, recipients: tuple[str, ...] | None = None, **kwargs: object) -> Outgoing:
        """A Dispatch from the provider the suite plays (``--as``), to ``recipients`` at the
        target (the first --recipient by default); ``kwargs`` go to ``dispatch.build``."""
        provider = str(kwargs.pop("provider", self.me))
        sender = str(kwargs.pop("sender", self.sender(provider)))
        return build(
            self.pki,
            provider,
            sender,
            recipients or self.recipients(1),
            self.now(),
            **kwargs,  # type: ignore[arg-type]
        )

    async def connect(
        self, provider: str | None = None, tls: ssl.SSLContext | None = None, title: str = ""
    ) -> tuple[SmtpClient, Record]:
        """A connection to the target as ``provider``'s gateway (``tls`` to present something
        else); its transcript is recorded under ``title``."""
        record = Record("sent", title or f"connection as {provider or self.me}")
        self.records.append(record)
        transcript = Transcript(record.smtp)
        context = tls if tls is not None else self.pki.client_tls(provider or self.me)
        host, port = self.options.target
        client = await SmtpClient.connect(
            host, port, context, timeout=self.options.evidence_timeout, transcript=transcript
        )
        return client, record

    async def send(
        self,
        outgoing: Outgoing | bytes,
        *,
        provider: str | None = None,
        mail_from: str | None = None,
        rcpt_to: tuple[str, ...] | None = None,
        title: str = "",
    ) -> Transaction:
        """One transaction on a new connection, as the provider's gateway would send it:
        MAIL FROM the original sender (SIZE=), RCPT TO each recipient, DATA (§2, §3)."""
        data = outgoing.data if isinstance(outgoing, Outgoing) else outgoing
        if isinstance(outgoing, Outgoing):
            provider = provider or outgoing.provider
            mail_from = mail_from or outgoing.sender
            rcpt_to = rcpt_to or outgoing.recipients
            title = title or f"Dispatch {outgoing.remmd}"
        provider = provider or self.me
        client, record = await self.connect(provider, title=title or "message")
        record.headers = header_block(data)
        record.size = len(data)
        try:
            await client.ehlo(f"gw.{self.domain(provider)}")
            done = await client.transaction(
                mail_from or self.sender(provider), list(rcpt_to or ()), data, size=len(data)
            )
            await client.quit()
        finally:
            client.close()
        return done

    async def answered(self, sending: Awaitable[Transaction], name: str) -> Transaction:
        """The transaction ``sending`` made; the connection ending without a reply fails the
        required check ``name``, and the case stops."""
        try:
            return await sending
        except SmtpGone as exc:
            detail = f"the connection ended without a reply: {exc}"
            self.check(name, False, detail)
            raise CaseFailed(f"{name}: {detail}") from exc

    async def send_and_expect_250(self, outgoing: Outgoing) -> None:
        done = await self.answered(self.send(outgoing), "Dispatch accepted (250 after DATA, §2)")
        self.require(
            "Dispatch accepted (250 after DATA, §2)",
            done.accepted,
            f"final reply {done.final}",
        )

    # -- evidence ----------------------------------------------------------------------------

    def _evidence_in(self, received: Received) -> EvidenceIn:
        if received.number not in self._read:
            self._read[received.number] = read_evidence(received)
        found = self._read[received.number]
        if received.number not in self._recorded:
            self._recorded.add(received.number)
            self.records.append(
                Record(
                    "received",
                    f"Evidence {found.label} (listener message {received.number})",
                    [
                        f"MAIL FROM:<{received.mail_from}> {' '.join(received.mail_options)}",
                        *(f"RCPT TO:<{r}>" for r in received.rcpt_to),
                        f"answered: {received.answered}",
                    ],
                    header_block(received.data),
                    pretty_xml(found.xml) if found.xml else found.problem or "",
                    len(received.data),
                )
            )
        return found

    async def evidence(
        self,
        about: Outgoing,
        expected: list[tuple[str, str, int | None]],
        timeout: float | None = None,
    ) -> list[EvidenceIn]:
        """Wait for the target's Evidence messages about ``about``: (type, event, index)
        each; index None matches any. Every one that came is returned and recorded (not
        only those expected); missing ones are the caller's to judge with ``missing``."""
        wait = self.options.evidence_timeout if timeout is None else timeout

        def ours(received: Received) -> bool:
            return received.message_identifier == about.remmd

        def enough(found: list[Received]) -> bool:
            have = [self._evidence_in(r) for r in found]
            return not missing(have, expected)

        listener = self.listeners.get(about.provider)
        if listener is None:
            raise CaseFailed(f"no listener for {about.provider} (--second-listen)")
        found = await listener.wait_for(ours, enough, wait)
        return [self._evidence_in(r) for r in found]

    async def expect(
        self, about: Outgoing, expected: list[tuple[str, str, int | None]]
    ) -> list[EvidenceIn]:
        """``evidence``, requiring every expected one; each is ``examine``d."""
        came = await self.evidence(about, expected)
        for item in came:
            self.examine(item, about)
        gone = missing(came, expected)
        self.require(
            "the expected evidence came back (§4 R-GW 4)",
            not gone,
            "missing: " + ", ".join(f"{t} {e}" + (f" #{i}" if i else "") for t, e, i in gone)
            if gone
            else "came: " + ", ".join(e.label for e in came),
        )
        return came

    def examine(self, item: EvidenceIn, about: Outgoing) -> None:
        """The checks every evidence the target returns must pass: read, signed by the target
        (the project's verifier, OpenSSL and xmlsec1), valid against the XSD, about our
        Dispatch, sent from the target's evidence address to our sender."""
        label = item.label
        received = item.received
        self.check(f"{label}: readable (§5)", item.evidence is not None, item.problem or "read")
        self._transport_checks(label, received, about)
        verification = None
        try:
            verification = verify_envelope(
                io.BytesIO(received.data),
                self.pki.verifiers,
                self.now(),
                peer=self.target,
                limits=DEFAULT_LIMITS,
            )
        except MalformedInput as exc:
            self.check(f"{label}: envelope verifies (project library)", False, exc.detail)
        if verification is not None:
            self.check(
                f"{label}: envelope verifies (project library)",
                verification.ok,
                "; ".join(f"{c.name}: {c.detail}" for c in verification.checks if not c.ok)
                or "every check passed",
            )
        ca = self.pki.pem("ca/process-ca.crt")
        smime = tools.openssl_verify_smime(received.data, ca)
        self.check(f"{label}: smime.p7s verifies (openssl cms)", smime.ok, smime.detail)
        if item.xml is not None:
            xmlsec = tools.xmlsec_verify(item.xml, ca)
            self.check(f"{label}: XAdES verifies (xmlsec1)", xmlsec.ok, xmlsec.detail)
            xsd = self.schema.judge(item.xml)
            self.check(f"{label}: valid against the ETSI XSD (§5)", xsd.ok, xsd.detail)
        self.check_stamps(label, item.xml, received.data)
        evidence = item.evidence
        if evidence is not None:
            self.check(
                f"{label}: issued by the target's evidence address (§3, §5)",
                evidence.issuer.lower() == f"delil@{self.domain(self.target)}",
                evidence.issuer,
            )
            self.check(
                f"{label}: about our Dispatch (MessageIdentifierByREMMD)",
                evidence.message.remmd_message_id == about.remmd,
                evidence.message.remmd_message_id,
            )
            self.check(
                f"{label}: digest of the original (§5 ds:DigestValue)",
                evidence.message.digest == about.digest,
                evidence.message.digest.hex(),
            )
            self.check(
                f"{label}: sender and recipients as in the Dispatch (§5)",
                evidence.sender == about.sender and evidence.recipients == about.recipients,
                f"{evidence.sender} → {', '.join(evidence.recipients)}",
            )

    def check_stamps(self, label: str, xml: bytes | None, message: bytes | None) -> None:
        """Every time-stamp present (XAdES-T on ``xml``, CAdES-T on ``message``'s smime.p7s)
        verified by ``openssl ts`` (§5: verified when present); none present, nothing to check."""
        found = stamps.xades_stamps(xml) if xml is not None else []
        der = tools.smime_signature(message) if message is not None else None
        found += stamps.cades_stamps(der) if der is not None else []
        ca = self.pki.pem("ca/process-ca.crt")
        for stamp in found:
            verdict = stamps.openssl_ts_verify(stamp, ca)
            self.check(f"{label}: {stamp.where} verifies (openssl ts)", verdict.ok, verdict.detail)

    def _transport_checks(self, label: str, received: Received, about: Outgoing) -> None:
        peer = self.pki.check_peer(self.target, received.peer_certificate, self.now())
        self.check(
            f"{label}: sent over TLS as the target (§2)",
            not isinstance(peer, str) and peer.ok,
            peer if isinstance(peer, str) else peer.detail or peer.subject,
        )
        self.check(
            f"{label}: MAIL FROM the target's delil@ and RCPT TO the original sender (§3)",
            received.mail_from.lower() == f"delil@{self.domain(self.target)}"
            and [r.lower() for r in received.rcpt_to] == [about.sender.lower()],
            f"MAIL FROM:<{received.mail_from}> RCPT TO:{', '.join(received.rcpt_to)}",
        )


def missing(
    came: list[EvidenceIn], expected: list[tuple[str, str, int | None]]
) -> list[tuple[str, str, int | None]]:
    left = list(came)
    gone = []
    for kind, event, index in expected:
        match = next(
            (
                e
                for e in left
                if e.kind == kind and e.event == event and (index is None or e.index == index)
            ),
            None,
        )
        if match is None:
            gone.append((kind, event, index))
        else:
            left.remove(match)
    return gone


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
