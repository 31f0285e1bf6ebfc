"""A deliberately broken gateway for testing the suite itself: each ``Breakage`` is one way a
gateway can be wrong, and the suite's named cases must fail against it.

aiosmtpd on a thread (its ``Controller``), implicit TLS; after a 250 it may send Evidence
messages back to the route of the sending provider, made with the project's library, wrongly
as its breakage says. (Its sending side, for ``conformance receive``, is
``broken_sender.py``.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import enum
import io
import smtplib
import ssl
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from conformance.identity import Pki
from interop.cms.timestamp import LocalTsa
from interop.envelope.build import write_evidence_message
from interop.envelope.parse import parse_envelope
from interop.envelope.verify import verify_envelope
from interop.evidence import xmlio
from interop.evidence.codes import Event, EvidenceType
from interop.evidence.issue import follow_up
from interop.evidence.model import Evidence
from interop.evidence.xades import sign_evidence
from tests.conformance.broken_sender import filed_name


class Breakage(enum.Enum):
    ACCEPTS_EVERYTHING = "accepts everything, asks no certificate, never sends evidence"
    SILENT = "checks the transport, then never sends evidence"
    WRONG_CERTIFICATE = "signs its evidence with another provider's process certificate"
    WRONG_EVIDENCE = "sends evidence recording another digest than the original's"
    IGNORES_ACCOUNTS = "delivers to every recipient, even a full mailbox or a closed account"
    WRONG_TIMESTAMP = "time-stamps its signatures over other bytes than the signature value"
    DEFERS_BAD_EVIDENCE = "answers evidence it cannot verify with 451 instead of 5xx or 250"
    FILES_ANY_EVIDENCE = "files every Evidence message for its user, verified or not"


ANSWERING = {
    Breakage.WRONG_CERTIFICATE,
    Breakage.WRONG_EVIDENCE,
    Breakage.IGNORES_ACCOUNTS,
    Breakage.WRONG_TIMESTAMP,
}


class _Handler:
    def __init__(self, gateway: BrokenGateway) -> None:
        self.gateway = gateway

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.gateway.breakage is not Breakage.ACCEPTS_EVERYTHING and not address.endswith(
            "@" + self.gateway.pki.provider(self.gateway.peer).domain
        ):
            return "550 5.7.1 not your domain"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.gateway.breakage is not Breakage.ACCEPTS_EVERYTHING and not address.endswith(
            "@" + self.gateway.pki.provider(self.gateway.provider).domain
        ):
            return "550 5.7.1 relay denied"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content: Any = envelope.content
        data = bytes(content)
        if self.gateway.breakage in ANSWERING:
            about = _read(data)
            if about is not None:
                asyncio.get_running_loop().run_in_executor(None, self.gateway.answer, about)
        if self.gateway.breakage is Breakage.DEFERS_BAD_EVIDENCE and not self.gateway.verifies(
            data
        ):
            return "451 4.3.0 Try again later"
        if self.gateway.breakage is Breakage.FILES_ANY_EVIDENCE:
            self.gateway.file(data)
        return "250 2.0.0 OK"


def _read(data: bytes) -> Evidence | None:
    try:
        return xmlio.parse(parse_envelope(io.BytesIO(data)).evidence_xml)
    except Exception:  # a hostile case's envelope: this gateway answers nothing
        return None


@dataclasses.dataclass
class BrokenGateway:
    breakage: Breakage
    pki: Pki
    provider: str  # the provider it pretends to be
    peer: str  # the provider the suite plays
    peer_route: tuple[str, int]  # where that provider's evidence goes (the suite's listener)
    port: int
    # Where FILES_ANY_EVIDENCE files what comes: <remmd>.<evidence type>.eml, which
    # ``broken_sender.py evidence`` prints.
    filed: Path | None = None
    controller: Controller | None = None

    def start(self) -> None:
        folder = self.pki.folder
        tls = ssl.create_default_context(
            ssl.Purpose.CLIENT_AUTH, cafile=str(folder / "ca/tls-ca.crt")
        )
        tls.load_cert_chain(
            str(folder / f"providers/{self.provider}/tls.crt"),
            str(folder / f"providers/{self.provider}/tls.key"),
        )
        tls.verify_mode = (
            ssl.CERT_NONE if self.breakage is Breakage.ACCEPTS_EVERYTHING else ssl.CERT_REQUIRED
        )
        self.controller = Controller(
            _Handler(self),
            hostname="127.0.0.1",
            port=self.port,
            ssl_context=tls,
            data_size_limit=None,
        )
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()

    def file(self, data: bytes) -> None:
        """File an Evidence message by its headers alone, as a gateway that verifies nothing."""
        headers = BytesParser(policy=policy.default).parsebytes(data, headersonly=True)
        remmd, kind = headers["X-REM-Message-Identifier"], headers["X-REM-Evidence-Type"]
        if self.filed is not None and remmd and kind:
            (self.filed / filed_name(remmd, kind)).write_bytes(data)

    def verifies(self, data: bytes) -> bool:
        try:
            result = verify_envelope(
                io.BytesIO(data), self.pki.verifiers, dt.datetime.now(dt.UTC), peer=self.peer
            )
        except Exception:  # unreadable: what this breakage defers
            return False
        return result.ok

    def answer(self, about: Evidence) -> None:
        """Relay acceptance and delivery for each recipient, broken as the breakage says."""
        now = dt.datetime.now(dt.UTC)
        issuer = self.pki.directory_entry(self.provider)
        signer_id = self.provider
        if self.breakage is Breakage.WRONG_CERTIFICATE:
            signer_id = next(
                p for p in self.pki.dev.providers if p not in (self.provider, self.peer)
            )
        signer = self.pki.process(signer_id)
        tsa = LocalTsa(self.pki.tsa())

        def wrong_stamp(data: bytes) -> bytes:  # over the signature value with a prefix
            return tsa.stamp(b"not this: " + data, now)

        stamp = wrong_stamp if self.breakage is Breakage.WRONG_TIMESTAMP else None
        if self.breakage is Breakage.WRONG_EVIDENCE:
            about = dataclasses.replace(
                about, message=dataclasses.replace(about.message, digest=b"\x01" * 32)
            )
        for index in range(1, len(about.recipients) + 1):
            for kind, event in (
                (EvidenceType.RelayREMMDAcceptanceRejection, Event.Acceptance),
                (EvidenceType.DeliveryNonDeliveryToRecipient, Event.Delivery),
            ):
                evidence = follow_up(about, issuer, kind, event, now, recipient=index)
                out = io.BytesIO()
                write_evidence_message(
                    out,
                    evidence,
                    sign_evidence(evidence, signer, now, timestamp=stamp),
                    signer,
                    now,
                    message_id=f"<e-{evidence.identifier}@{issuer.domain}>",
                    issuer_id=self.provider,
                    timestamp=stamp,
                )
                self._send(issuer.evidence_address, about.sender, out.getvalue())

    def _send(self, mail_from: str, to: str, data: bytes) -> None:
        folder: Path = self.pki.folder
        tls = ssl.create_default_context(cafile=str(folder / "ca/tls-ca.crt"))
        tls.check_hostname = False
        tls.load_cert_chain(
            str(folder / f"providers/{self.provider}/tls.crt"),
            str(folder / f"providers/{self.provider}/tls.key"),
        )
        host, port = self.peer_route
        with smtplib.SMTP_SSL(host, port, context=tls, timeout=30) as client:
            client.sendmail(mail_from, [to], data)
