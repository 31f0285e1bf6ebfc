"""Header fields of the KEP-REM envelopes (INTEROP-PROFILE.md §3 table)."""

from __future__ import annotations

import enum
from email.header import decode_header, make_header

MSG_TYPE = "X-REM-Msg-Type"
MESSAGE_IDENTIFIER = "X-REM-Message-Identifier"
EVIDENCE_TYPE = "X-REM-Evidence-Type"
EVENT = "X-REM-Event"
EVIDENCE_IDENTIFIER = "X-REM-Evidence-Identifier"
ILETI_TIP = "X-TR-REM-iletiTip"
ILETI_ID = "X-TR-REM-iletiID"

# Fields copied from the original into a Dispatch (§3 "as in the original").
COPIED_FROM_ORIGINAL = ("From", "To", "Cc", "Subject")


class MsgType(enum.Enum):
    Dispatch = "Dispatch"
    Evidence = "Evidence"

    @classmethod
    def parse(cls, value: str) -> MsgType:
        # §3: values are compared case-sensitively, except X-REM-Msg-Type.
        for member in cls:
            if member.value.lower() == value.strip().lower():
                return member
        raise ValueError(f"{MSG_TYPE} {value!r} is neither Dispatch nor Evidence")


class IletiTip(enum.Enum):
    standart = "standart"
    eTebligat = "eTebligat"
    eYazisma = "eYazisma"

    @classmethod
    def parse(cls, value: str | None) -> IletiTip:
        if value is None or not value.strip():
            return cls.standart  # §3: absent = standart
        try:
            return cls(value.strip())
        except ValueError:
            raise ValueError(
                f"{ILETI_TIP} {value!r} is not standart, eTebligat or eYazisma"
            ) from None


def fold(name: str, value: str, width: int = 76) -> bytes:
    """``Name: value`` folded at spaces so lines stay short (RFC 5322 §2.2.3)."""
    # Unfold first (RFC 5322 §2.2.3: remove CRLF before WSP), then fold again at our width.
    words = value.replace("\r\n", "").split(" ")
    lines: list[str] = []
    line = f"{name}:"
    for word in words:
        if not word:
            continue
        if len(line) + 1 + len(word) > width and line != f"{name}:":
            lines.append(line)
            line = " " + word
        else:
            line += " " + word
    lines.append(line)
    return ("\r\n".join(lines) + "\r\n").encode("utf-8", "surrogateescape")


def decode_text(raw: str | None) -> str:
    """A header value with RFC 2047 encoded words decoded (for MessageSubject); never raises.

    Lenient by design: a subject is recorded, not judged, so text that cannot be decoded is kept
    as written. The ``email`` package raises HeaderParseError, CharsetError, LookupError,
    UnicodeError and more on such text, so any failure counts as undecodable.
    """
    if not raw:
        return ""
    try:
        return str(make_header(decode_header(raw)))
    except Exception:
        return raw
