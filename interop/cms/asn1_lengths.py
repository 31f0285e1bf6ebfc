"""Keep asn1crypto from re-encoding values whose definite length happens to end in 0x80.

asn1crypto 1.5.1 (the latest release) decides that a value it read has an indefinite length
when the last byte of its header is 0x80 (wbond/asn1crypto#249, still open). That byte is also
the last length byte of every definite length of 128, 384, 640, … bytes (``81 80``, ``82 01 80``,
…). Such a value is then re-encoded from its parsed children on every ``dump()``, and because
each level asks for its children's contents several times, the work grows exponentially with
depth: a signature time-stamp token of 1,664 bytes made one CMS signature take seconds, and a
signature from outside could be built to cost far more (an input must not decide our CPU time).
Re-encoding also replaces the bytes that were received with asn1crypto's idea of them.

The guard below runs before each ``dump`` of the five classes with that check: when the
header is definite, it drops only the header, which ``dump`` then rebuilds from the untouched
contents (the same bytes for DER). Indefinite lengths still go the library's way. It is
installed once, when ``interop.cms`` is imported.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from asn1crypto import core

_DUMPERS = (core.Asn1Value, core.Choice, core.Primitive, core.Sequence, core.SequenceOf)


def indefinite(header: bytes) -> bool:
    """True when a header (outer explicit tags included) holds an indefinite length (0x80)."""
    i = 0
    while i < len(header):
        if header[i] & 0x1F == 0x1F:  # high tag number: continuation bytes have bit 8 set
            i += 1
            while i < len(header) and header[i] & 0x80:
                i += 1
        i += 1
        if i >= len(header):
            return False
        length = header[i]
        if length == 0x80:
            return True
        i += 1 + (length & 0x7F if length & 0x80 else 0)
    return False


def _guarded(dump: Callable[..., bytes]) -> Callable[..., bytes]:
    @functools.wraps(dump)
    def guarded_dump(self: Any, force: bool = False) -> bytes:
        header = self._header
        if not force and header and header[-1] == 0x80 and not indefinite(header):
            self._header = None  # rebuilt by dump from the contents, which stay as read
        return dump(self, force)

    guarded_dump.__dict__["_kep_guard"] = True
    return guarded_dump


def install() -> None:
    for cls in _DUMPERS:
        dump = cls.__dict__["dump"]
        if not getattr(dump, "_kep_guard", False):
            cls.dump = _guarded(dump)
