"""SMTP DATA in blocks (RFC 5321 §4.5.2 transparency, §4.1.1.4 end of data), both ways.

Feeding received blocks gives the message bytes, dot-unstuffed, and tells where the data ends,
without splitting into lines (a 100 MiB message has over a million). Bare CR or LF anywhere is
recorded: a message containing one is refused, which defeats SMTP smuggling (RFC 5321 §2.3.8).
"""

from __future__ import annotations

from dataclasses import dataclass

END = b"\r\n.\r\n"


@dataclass
class DataDecoder:
    """Feed blocks with ``feed``; it returns decoded bytes and sets ``done`` at the end mark.

    Bytes after the end mark are kept in ``leftover`` (pipelined commands that followed).
    """

    done: bool = False
    bare_line_ending: bool = False
    leftover: bytes = b""
    # The message starts at a line beginning: a CRLF is pretended before it, and dropped again.
    _pending: bytes = b"\r\n"
    _pretended: bool = True

    def feed(self, block: bytes) -> bytes:
        if self.done:
            self.leftover += block
            return b""
        data = self._pending + block
        end = data.find(END)
        if end >= 0:
            self.done = True
            self.leftover = data[end + len(END) :]
            self._pending = b""
            return self._decode(data[: end + 2])
        # Hold back what may begin the end mark; never cut a CRLF in two, and never cut right
        # after a CRLF (a "." starting the next line must be seen together with it).
        cut = max(0, len(data) - (len(END) - 1))
        if data[:cut].endswith(b"\r\n"):
            cut -= 2
        elif data[:cut].endswith(b"\r"):
            cut -= 1
        self._pending = data[cut:]
        return self._decode(data[:cut])

    def _decode(self, body: bytes) -> bytes:
        if not body:
            return b""
        crlf = body.count(b"\r\n")
        if body.count(b"\n") != crlf or body.count(b"\r") != crlf:
            self.bare_line_ending = True
        # A line starting with "." had one dot added by the sender (§4.5.2).
        out = body.replace(b"\r\n.", b"\r\n")
        if self._pretended:
            self._pretended = False
            out = out[2:]
        return out


def stuff(message: bytes) -> bytes:
    """What a client sends for ``message`` (CRLF-terminated), end mark included."""
    if message and not message.endswith(b"\r\n"):
        message += b"\r\n"
    stuffed = message.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    return stuffed + b".\r\n"


class DotStuffer:
    """RFC 5321 §4.5.2 transparency for a message fed in chunks of any size.

    The chunks' outputs followed by ``end()`` are exactly ``stuff`` of the
    whole message: a "." beginning a line gets another in front, wherever the chunks were cut
    (a CRLF split across two chunks, a "." first in a chunk); a message not ending in CRLF gets
    one; then the end mark. Bare CR or LF are left alone (the message goes out byte for byte).
    """

    def __init__(self) -> None:
        # The last two bytes fed; the message starts at a line beginning, so a CRLF is
        # pretended before it (as ``DataDecoder`` does on the other side).
        self._tail = b"\r\n"

    def feed(self, chunk: bytes) -> bytes:
        if not chunk:
            return b""
        # A match cannot lie inside the 2-byte tail, so dots are only added after it.
        joined = self._tail + chunk
        self._tail = joined[-2:]
        return joined.replace(b"\r\n.", b"\r\n..")[2:]

    def end(self) -> bytes:
        """The end mark (§4.1.1.4), after the CRLF the last line lacked, if it did."""
        return b".\r\n" if self._tail == b"\r\n" else b"\r\n.\r\n"
