"""Read the structure of a Dispatch or Evidence envelope (INTEROP-PROFILE.md §3).

Structure only: where the signed part, the evidence, the original and the signature lie, and
the §3 header fields. Signatures and digests are checked in ``interop.envelope.verify``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

from interop.cms.parse import ParsedSignedData
from interop.envelope import fields as F
from interop.envelope.mime import (
    Headers,
    Span,
    boundary_of,
    read_body,
    read_headers,
    split_multipart,
)
from interop.envelope.smime import MICALG_NAMES, SIGNATURE_TYPES
from interop.errors import EnvelopeFormatError
from interop.limits import DEFAULT_LIMITS, Limits

# RFC 2046 §5.2.1: message/rfc822 bodies are never encoded beyond 7bit/8bit/binary.
_IDENTITY_ENCODINGS = ("7bit", "8bit", "binary")


@dataclass(frozen=True, slots=True)
class ParsedEnvelope:
    headers: Headers
    msg_type: F.MsgType
    message_identifier: str
    evidence_type: str
    event: str
    evidence_identifier: str
    ileti_tip: F.IletiTip
    ileti_id: str | None
    signed: Span  # the first part of multipart/signed, as covered by smime.p7s
    signature: ParsedSignedData
    evidence_xml: bytes
    original: Span | None  # Dispatch: the original message bytes (ileti.eml)
    size: int

    @property
    def message_id(self) -> str | None:
        return self.headers.get("Message-ID")


def _required(headers: Headers, name: str) -> str:
    values = headers.get_all(name)
    if len(values) != 1 or not values[0]:
        raise EnvelopeFormatError(
            f"the envelope {'lacks' if not values else 'repeats'} the header field {name}"
        )
    return values[0]


def parse_envelope(stream: BinaryIO, limits: Limits = DEFAULT_LIMITS) -> ParsedEnvelope:
    size = stream.seek(0, 2)
    headers, body_start = read_headers(stream, Span(0, size), limits)
    try:
        msg_type = F.MsgType.parse(_required(headers, F.MSG_TYPE))
        ileti_tip = F.IletiTip.parse(headers.get(F.ILETI_TIP))
    except ValueError as exc:
        raise EnvelopeFormatError(str(exc)) from exc
    content_type = headers.content_type(limits)
    if content_type.type != "multipart/signed":
        raise EnvelopeFormatError(f"the envelope is {content_type.type}, not multipart/signed")
    protocol = (content_type.param("protocol") or "").lower()
    if protocol not in SIGNATURE_TYPES:
        raise EnvelopeFormatError(f"the envelope's signature protocol {protocol!r} is not S/MIME")
    micalg = (content_type.param("micalg") or "").lower()
    if micalg and micalg not in MICALG_NAMES:
        raise EnvelopeFormatError(f"the envelope's micalg {micalg!r} is not supported")
    outer = split_multipart(stream, Span(body_start, size), boundary_of(content_type), limits)
    if len(outer) != 2:
        raise EnvelopeFormatError(f"multipart/signed must have 2 parts, found {len(outer)}")
    signed, signature_span = outer
    sig_headers, sig_body = read_headers(stream, signature_span, limits)
    if sig_headers.content_type(limits).type not in SIGNATURE_TYPES:
        raise EnvelopeFormatError("the second part of the envelope is not smime.p7s")
    der = read_body(
        stream,
        Span(sig_body, signature_span.end),
        sig_headers.transfer_encoding(),
        limits.signature_part,
        "smime.p7s",
    )
    signature = ParsedSignedData.parse(der, limits)

    mixed_headers, mixed_body = read_headers(stream, signed, limits)
    mixed_type = mixed_headers.content_type(limits)
    if mixed_type.type != "multipart/mixed":
        raise EnvelopeFormatError(f"the signed part is {mixed_type.type}, not multipart/mixed")
    parts = split_multipart(stream, Span(mixed_body, signed.end), boundary_of(mixed_type), limits)
    evidence_xml: bytes | None = None
    original: Span | None = None
    for part in parts:
        part_headers, part_body = read_headers(stream, part, limits)
        kind = part_headers.content_type(limits)
        if kind.type in ("application/xml", "text/xml"):
            if evidence_xml is not None:
                raise EnvelopeFormatError("the envelope carries more than one delil.xml")
            evidence_xml = read_body(
                stream,
                Span(part_body, part.end),
                part_headers.transfer_encoding(),
                limits.evidence_xml,
                "delil.xml",
            )
        elif kind.type == "message/rfc822":
            if original is not None:
                raise EnvelopeFormatError("the envelope carries more than one ileti.eml")
            if part_headers.transfer_encoding() not in _IDENTITY_ENCODINGS:
                raise EnvelopeFormatError(
                    "ileti.eml must not be transfer-encoded (RFC 2046 §5.2.1); the original "
                    "travels byte for byte"
                )
            original = Span(part_body, part.end)
        elif kind.type.startswith("multipart/alternative") or kind.type.startswith("text/"):
            continue  # the introduction for people
        else:
            raise EnvelopeFormatError(f"the envelope carries an unexpected part {kind.type}")
    if evidence_xml is None:
        raise EnvelopeFormatError("the envelope carries no delil.xml")
    if msg_type is F.MsgType.Dispatch and original is None:
        raise EnvelopeFormatError("the Dispatch carries no ileti.eml (message/rfc822)")
    if msg_type is F.MsgType.Evidence and original is not None:
        raise EnvelopeFormatError("an Evidence message must not carry the original message")
    return ParsedEnvelope(
        headers=headers,
        msg_type=msg_type,
        message_identifier=_required(headers, F.MESSAGE_IDENTIFIER),
        evidence_type=_required(headers, F.EVIDENCE_TYPE),
        event=_required(headers, F.EVENT),
        evidence_identifier=_required(headers, F.EVIDENCE_IDENTIFIER),
        ileti_tip=ileti_tip,
        ileti_id=headers.get(F.ILETI_ID),
        signed=signed,
        signature=signature,
        evidence_xml=evidence_xml,
        original=original,
        size=size,
    )
