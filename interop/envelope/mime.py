"""Locate MIME entities in a seekable stream by byte offsets (RFC 2045, RFC 2046 §5.1).

Only structure is parsed here: header fields of an entity (bounded) and the byte spans of the
parts of a multipart body. Bodies are never read whole. Lines end in CRLF: a bare LF or CR in a
header block is refused, as SMTP smuggling defences require (RFC 5321 §2.3.8).
"""

from __future__ import annotations

import base64
import binascii
import itertools
import quopri
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email.headerregistry import ContentTypeHeader
from email.policy import default as default_policy
from typing import BinaryIO

from interop.errors import EnvelopeFormatError, LimitExceeded, translated
from interop.limits import DEFAULT_LIMITS, STREAM_CHUNK, Limits

CRLF = b"\r\n"
_FIELD_NAME = re.compile(rb"^[\x21-\x39\x3b-\x7e]+$")  # RFC 5322 §3.6.8 ftext
# RFC 2046 §5.1.1: boundary = 1*70 of bchars, not ending in space.
_BOUNDARY = re.compile(r"^[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]$")


@dataclass(frozen=True, slots=True)
class Span:
    """Bytes ``[start, end)`` of a stream."""

    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class ContentType:
    type: str  # "multipart/signed", lower case
    params: dict[str, str]

    def param(self, name: str) -> str | None:
        return self.params.get(name.lower())


@dataclass(frozen=True, slots=True)
class Headers:
    """Header fields of one entity, unfolded; raw values kept for byte-faithful copying."""

    fields: tuple[tuple[str, str], ...]

    def get(self, name: str) -> str | None:
        lname = name.lower()
        for key, value in self.fields:
            if key.lower() == lname:
                return value.strip()
        return None

    def get_all(self, name: str) -> list[str]:
        lname = name.lower()
        return [value.strip() for key, value in self.fields if key.lower() == lname]

    def count(self, name: str) -> int:
        return len(self.get_all(name))

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.fields)

    def content_type(self, limits: Limits = DEFAULT_LIMITS) -> ContentType:
        raw = self.get("Content-Type")
        if raw is None:
            return ContentType("text/plain", {"charset": "us-ascii"})  # RFC 2045 §5.2
        return parse_content_type(raw, limits)

    def transfer_encoding(self) -> str:
        return (self.get("Content-Transfer-Encoding") or "7bit").lower()


# RFC 2045 §5.1 token and quoted-string; the fast path for the plain forms gateways write.
_RFC2045_ATOM = r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+"
_SIMPLE_TYPE = re.compile(rf"^\s*({_RFC2045_ATOM})/({_RFC2045_ATOM})\s*(;.*)?$", re.DOTALL)
_SIMPLE_PARAM = re.compile(
    rf'\s*;\s*({_RFC2045_ATOM})\s*=\s*(?:({_RFC2045_ATOM})|"((?:[^"\\\r\n]|\\.)*)")\s*',
    re.DOTALL,
)


def parse_content_type(raw: str, limits: Limits = DEFAULT_LIMITS) -> ContentType:
    """Content-Type with its parameters.

    Plain ``type/subtype; name=value; name="quoted"`` forms (all a gateway writes) are read
    with one regular expression; anything else (comments, RFC 2231 continuations, encoded
    words) goes to the standard library's full parser, which is exact but ten times slower,
    and is bounded first (``Limits.content_type_bytes``, ``Limits.content_type_params``).
    """
    match = _SIMPLE_TYPE.match(raw)
    if match is not None:
        params: dict[str, str] = {}
        rest = match.group(3) or ""
        position = 0
        while position < len(rest):
            param = _SIMPLE_PARAM.match(rest, position)
            if param is None or "*" in param.group(1) or set("'*") & set(param.group(2) or ""):
                break  # RFC 2231 forms (name*=, charset'lang'value) go to the full parser
            name = param.group(1).lower()
            value = param.group(2)
            if value is None:
                value = re.sub(r"\\(.)", r"\1", param.group(3))
            params.setdefault(name, value)
            position = param.end()
        else:
            return ContentType(f"{match.group(1)}/{match.group(2)}".lower(), params)
    _check_work(raw, limits)
    shown = _shown(raw)
    with translated(EnvelopeFormatError, f"Content-Type {shown} is malformed"):
        header = default_policy.header_factory("content-type", raw)
        if not isinstance(header, ContentTypeHeader) or header.defects:  # type: ignore[attr-defined]
            raise EnvelopeFormatError(f"Content-Type {shown} is malformed")
        return ContentType(
            header.content_type.lower(), {k.lower(): str(v) for k, v in header.params.items()}
        )


def _check_work(raw: str, limits: Limits) -> None:
    """Refuse a value the full parser would spend too long on (counted in one linear pass)."""
    if len(raw) > limits.content_type_bytes:
        raise LimitExceeded(
            "a Content-Type with comments, RFC 2231 parameters or encoded words may have "
            f"{limits.content_type_bytes} characters; this one has {len(raw)}"
        )
    items = raw.count(";") + raw.count('"') // 2 + raw.count("(")
    if items > limits.content_type_params:
        raise LimitExceeded(
            f"a Content-Type has more than {limits.content_type_params} parameters, "
            "quoted strings and comments"
        )


def _shown(raw: str) -> str:
    # The start of a hostile value is enough to recognise it in a reply or a log.
    return repr(raw) if len(raw) <= 80 else repr(raw[:80]) + "..."


def read_headers(
    stream: BinaryIO, span: Span, limits: Limits = DEFAULT_LIMITS
) -> tuple[Headers, int]:
    """Header fields of the entity in ``span`` and the offset where its body starts."""
    stream.seek(span.start)
    block = stream.read(min(span.size, limits.header_block + 4))
    if block.startswith(CRLF):
        return Headers(()), span.start + 2
    end = block.find(b"\r\n\r\n")
    if end < 0:
        if len(block) > limits.header_block:
            raise LimitExceeded(f"header fields exceed {limits.header_block} bytes")
        raise EnvelopeFormatError("the header block does not end with an empty line (truncated?)")
    raw = block[:end]
    if b"\n" in raw.replace(CRLF, b"") or b"\r" in raw.replace(CRLF, b""):
        raise EnvelopeFormatError("bare CR or LF in header fields; lines must end in CRLF")
    fields: list[tuple[str, str]] = []
    for line in raw.split(CRLF):
        if line[:1] in (b" ", b"\t"):
            if not fields:
                raise EnvelopeFormatError("the header block starts with a continuation line")
            name, value = fields[-1]
            value = value + line.decode("utf-8", "surrogateescape")
            if len(value) > limits.header_field:
                raise LimitExceeded(f"header field {name} exceeds {limits.header_field} bytes")
            fields[-1] = (name, value)
            continue
        name_bytes, colon, value_bytes = line.partition(b":")
        if not colon or not _FIELD_NAME.match(name_bytes):
            raise EnvelopeFormatError(f"malformed header line {line[:60]!r}")
        if len(line) > limits.header_field:
            raise LimitExceeded(
                f"header field {name_bytes[:40]!r} exceeds {limits.header_field} bytes"
            )
        fields.append((name_bytes.decode("ascii"), value_bytes.decode("utf-8", "surrogateescape")))
        if len(fields) > limits.header_fields:
            raise LimitExceeded(f"more than {limits.header_fields} header fields")
    return Headers(tuple(fields)), span.start + end + 4


def boundary_of(content_type: ContentType) -> str:
    boundary = content_type.param("boundary")
    if not boundary or not _BOUNDARY.match(boundary):
        raise EnvelopeFormatError(f"{content_type.type} has a missing or invalid boundary")
    return boundary


def split_multipart(
    stream: BinaryIO, body: Span, boundary: str, limits: Limits = DEFAULT_LIMITS
) -> list[Span]:
    """Spans of the parts of a multipart body (each part: its header fields and body).

    A part ends before the CRLF that precedes the next delimiter (RFC 2046 §5.1.1). The close
    delimiter must be present: a body cut short is refused, not guessed at.
    """
    dash = b"--" + boundary.encode("ascii")
    delimiter = CRLF + dash
    # Positions just after each delimiter's dash-boundary (the delimiter may open the body).
    found: list[tuple[int, int]] = []  # (delimiter start, after dash-boundary)
    stream.seek(body.start)
    head = stream.read(len(dash))
    if head == dash:
        found.append((body.start, body.start + len(dash)))
    overlap = len(delimiter) - 1
    pos = body.start
    carry = b""
    closed_at: int | None = None
    while pos < body.end and closed_at is None:
        stream.seek(pos)
        chunk = stream.read(min(STREAM_CHUNK, body.end - pos))
        if not chunk:
            break
        # Delimiters straddling the previous chunk are found in a small seam; the chunk itself
        # is searched in place (joining the two would copy every chunk once more).
        seam = carry + chunk[:overlap]
        hits = [pos - len(carry) + i for i in _find_all(seam, delimiter) if i < len(carry)]
        hits += [pos + i for i in _find_all(chunk, delimiter)]
        for start in hits:
            after = start + len(delimiter)
            kind = _delimiter_kind(stream, after, body.end)
            if kind == "close":
                found.append((start, after))
                closed_at = start
                break
            if kind == "open":
                found.append((start, after))
                if len(found) > limits.mime_parts:
                    raise LimitExceeded(f"a multipart body has more than {limits.mime_parts} parts")
        pos += len(chunk)
        carry = (carry + chunk)[-overlap:] if len(chunk) < overlap else chunk[-overlap:]
    if closed_at is None:
        raise EnvelopeFormatError(
            "the multipart body has no closing boundary (the message is truncated)"
        )
    if len(found) < 2:
        raise EnvelopeFormatError("the multipart body has no parts")
    spans = []
    for (_start, after), (next_start, _next_after) in itertools.pairwise(found):
        part_start = _skip_to_line_end(stream, after, body.end)
        spans.append(Span(part_start, max(part_start, next_start)))
    return spans


def _find_all(data: bytes, needle: bytes) -> Iterator[int]:
    index = data.find(needle)
    while index >= 0:
        yield index
        index = data.find(needle, index + 1)


def _delimiter_kind(stream: BinaryIO, after: int, end: int) -> str:
    """'open', 'close', or 'none' for the bytes after a dash-boundary (RFC 2046 §5.1.1)."""
    here = stream.tell()
    stream.seek(after)
    tail = stream.read(min(80, max(0, end - after)))
    stream.seek(here)
    if tail.startswith(b"--"):
        return "close"
    stripped = tail.lstrip(b" \t")  # transport-padding
    return "open" if stripped.startswith(CRLF) else "none"


def _skip_to_line_end(stream: BinaryIO, after: int, end: int) -> int:
    stream.seek(after)
    tail = stream.read(min(80, max(0, end - after)))
    index = tail.find(CRLF)
    if index < 0:
        raise EnvelopeFormatError("a boundary line does not end in CRLF")
    return after + index + 2


def read_body(stream: BinaryIO, span: Span, encoding: str, limit: int, what: str) -> bytes:
    """Read and decode a small body (evidence, signature), refusing more than ``limit`` bytes."""
    if span.size > limit * 2:
        raise LimitExceeded(f"{what} is larger than allowed ({span.size} bytes)")
    stream.seek(span.start)
    raw = stream.read(span.size)
    try:
        if encoding == "base64":
            data = base64.b64decode(b"".join(raw.split()), validate=True)
        elif encoding == "quoted-printable":
            data = quopri.decodestring(raw)
        elif encoding in ("7bit", "8bit", "binary"):
            data = raw
        else:
            raise EnvelopeFormatError(f"{what} has unknown transfer encoding {encoding!r}")
    except binascii.Error as exc:
        raise EnvelopeFormatError(f"{what} is not valid base64: {exc}") from exc
    if len(data) > limit:
        raise LimitExceeded(f"{what} is larger than {limit} bytes")
    return data
