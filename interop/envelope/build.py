"""Write Dispatch and Evidence envelopes (INTEROP-PROFILE.md §3) to a stream.

The signed first part is written and hashed in one pass, then signed; the original message is
copied in chunks, byte for byte, so a 100 MiB original never sits in memory.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
from collections.abc import Callable
from html import escape
from typing import BinaryIO

from interop.cms.sign import TimestampFunction, sign_digest
from interop.envelope import fields as F
from interop.envelope.mime import Span, read_headers
from interop.envelope.smime import base64_lines, encode_header, new_boundary, signature_part
from interop.evidence.model import Evidence
from interop.limits import STREAM_CHUNK
from interop.pki.signer import Signer

_INTRO_DISPATCH = (
    "Bu bir KEP (Kayıtlı Elektronik Posta) iletisidir. {sender} adresinden gönderilen ileti ekte "
    "(ileti.eml), gönderen hizmet sağlayıcısının kabul delili delil.xml dosyasındadır.\n\n"
    "This is a KEP (registered electronic mail) message. The message sent by {sender} is "
    "attached (ileti.eml); the sending provider's acceptance evidence is in delil.xml.\n"
)
_INTRO_EVIDENCE = (
    "Bu bir KEP delilidir: {type} / {event}. İmzalı delil delil.xml dosyasındadır.\n\n"
    "This is KEP evidence: {type} / {event}. The signed evidence is in delil.xml.\n"
)


class _HashingWriter:
    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.hash = hashlib.sha256()

    def write(self, data: bytes) -> None:
        self.out.write(data)
        self.hash.update(data)


def _html(text: str) -> str:
    paragraphs = "".join(f"<p>{escape(p)}</p>" for p in text.strip().split("\n\n"))
    return f"<!DOCTYPE html><html><body>{paragraphs}</body></html>\n"


def _crlf(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


def _intro_part(text: str) -> bytes:
    boundary = new_boundary("alt")
    return b"".join(
        [
            f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'.encode(),
            f"--{boundary}\r\n".encode(),
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n",
            base64_lines(_crlf(text)),
            f"--{boundary}\r\n".encode(),
            b"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n",
            base64_lines(_crlf(_html(text))),
            f"--{boundary}--\r\n".encode(),
        ]
    )


def _evidence_part(evidence_xml: bytes) -> bytes:
    return (
        b'Content-Type: application/xml; name="delil.xml"\r\n'
        b"Content-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="delil.xml"\r\n\r\n'
        + base64_lines(evidence_xml)
    )


def _rem_headers(
    evidence: Evidence, msg_type: F.MsgType, ileti_tip: str, ileti_id: str | None
) -> list[tuple[str, str]]:
    headers = [
        (F.MSG_TYPE, msg_type.value),
        (F.MESSAGE_IDENTIFIER, evidence.message.remmd_message_id),
        (F.EVIDENCE_TYPE, evidence.type.value),
        (F.EVENT, evidence.event.value),
        (F.EVIDENCE_IDENTIFIER, evidence.identifier),
        (F.ILETI_TIP, ileti_tip),
    ]
    if ileti_id:
        headers.append((F.ILETI_ID, ileti_id))
    return headers


def _write_signed(
    out: BinaryIO,
    headers: list[tuple[str, str]],
    write_first_part: Callable[[_HashingWriter], None],
    signer: Signer,
    now: dt.datetime,
    timestamp: TimestampFunction | None,
) -> None:
    boundary = new_boundary("signed")
    head = b"".join(F.fold(name, value) for name, value in headers)
    head += F.fold(
        "Content-Type",
        f'multipart/signed; protocol="application/pkcs7-signature"; micalg=sha-256; '
        f'boundary="{boundary}"',
    )
    out.write(head + b"\r\nThis is an S/MIME signed KEP message.\r\n")
    out.write(f"--{boundary}\r\n".encode())
    writer = _HashingWriter(out)
    write_first_part(writer)
    der = sign_digest(signer, writer.hash.digest(), now, timestamp=timestamp)
    out.write(f"\r\n--{boundary}\r\n".encode())
    out.write(signature_part(der))
    out.write(f"\r\n--{boundary}--\r\n".encode())


def _common_headers(now: dt.datetime, message_id: str) -> list[tuple[str, str]]:
    return [("Date", email.utils.format_datetime(now)), ("Message-ID", message_id)]


def write_dispatch(
    out: BinaryIO,
    original: BinaryIO,
    evidence: Evidence,
    evidence_xml: bytes,
    signer: Signer,
    now: dt.datetime,
    *,
    message_id: str,
    timestamp: TimestampFunction | None = None,
) -> None:
    """Write a Dispatch carrying ``original`` (a seekable stream, copied byte for byte)."""
    size = original.seek(0, 2)
    original_headers, _body = read_headers(original, Span(0, size))
    headers: list[tuple[str, str]] = []
    for name in F.COPIED_FROM_ORIGINAL:
        for value in original_headers.get_all(name):
            headers.append((name, value))
    headers += _common_headers(now, message_id)
    headers.append(("MIME-Version", "1.0"))
    headers += _rem_headers(
        evidence,
        F.MsgType.Dispatch,
        original_headers.get(F.ILETI_TIP) or F.IletiTip.standart.value,
        original_headers.get(F.ILETI_ID),
    )
    mixed = new_boundary("mixed")
    intro = _INTRO_DISPATCH.format(sender=evidence.sender)

    def first_part(w: _HashingWriter) -> None:
        w.write(f'Content-Type: multipart/mixed; boundary="{mixed}"\r\n\r\n'.encode())
        w.write(f"--{mixed}\r\n".encode() + _intro_part(intro))
        w.write(f"\r\n--{mixed}\r\n".encode() + _evidence_part(evidence_xml))
        w.write(
            f"\r\n--{mixed}\r\n".encode()
            + b'Content-Type: message/rfc822; name="ileti.eml"\r\n'
            + b'Content-Disposition: attachment; filename="ileti.eml"\r\n\r\n'
        )
        original.seek(0)
        while block := original.read(STREAM_CHUNK):
            w.write(block)
        w.write(f"\r\n--{mixed}--\r\n".encode())

    _write_signed(out, headers, first_part, signer, now, timestamp)


def write_evidence_message(
    out: BinaryIO,
    evidence: Evidence,
    evidence_xml: bytes,
    signer: Signer,
    now: dt.datetime,
    *,
    message_id: str,
    issuer_id: str,
    dispatch_message_id: str | None = None,
    ileti_tip: str = F.IletiTip.standart.value,
    ileti_id: str | None = None,
    timestamp: TimestampFunction | None = None,
) -> None:
    """Write an Evidence message about ``evidence`` to the original sender (§3 table)."""
    subject = (
        f"KEP delili: {evidence.type.value} {evidence.event.value}: {evidence.message.subject}"
    )
    headers = [
        ("From", f'"KEP {issuer_id}" <{evidence.issuer}>'),
        ("To", evidence.sender),
        ("Subject", encode_header(subject)),
        *_common_headers(now, message_id),
    ]
    if dispatch_message_id:
        headers += [("In-Reply-To", dispatch_message_id), ("References", dispatch_message_id)]
    headers.append(("MIME-Version", "1.0"))
    headers += _rem_headers(evidence, F.MsgType.Evidence, ileti_tip, ileti_id)
    mixed = new_boundary("mixed")
    intro = _INTRO_EVIDENCE.format(type=evidence.type.value, event=evidence.event.value)

    def first_part(w: _HashingWriter) -> None:
        w.write(f'Content-Type: multipart/mixed; boundary="{mixed}"\r\n\r\n'.encode())
        w.write(f"--{mixed}\r\n".encode() + _intro_part(intro))
        w.write(f"\r\n--{mixed}\r\n".encode() + _evidence_part(evidence_xml))
        w.write(f"\r\n--{mixed}--\r\n".encode())

    _write_signed(out, headers, first_part, signer, now, timestamp)
