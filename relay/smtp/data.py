"""SMTP DATA decoding in blocks (RFC 5321 §4.5.2 transparency, §4.1.1.4 end of data).

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
