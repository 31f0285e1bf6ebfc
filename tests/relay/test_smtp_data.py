from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from relay.smtp.data import DataDecoder, stuff

_lines = st.lists(
    st.one_of(
        st.sampled_from([b"", b".", b"..", b".x", b"a.b", b"x."]),
        st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    ),
    max_size=30,
)


@given(lines=_lines, cuts=st.lists(st.integers(1, 50), min_size=1, max_size=40))
def test_decoding_any_split_gives_the_message_back(lines: list[bytes], cuts: list[int]) -> None:
    message = b"".join(line + b"\r\n" for line in lines)
    wire = stuff(message) + b"QUIT\r\n"
    decoder, out, position, index = DataDecoder(), b"", 0, 0
    while position < len(wire) and not decoder.done:
        size = cuts[index % len(cuts)]
        out += decoder.feed(wire[position : position + size])
        position, index = position + size, index + 1
    decoder.feed(wire[position:])
    assert decoder.done
    assert out == message
    assert decoder.leftover == b"QUIT\r\n"
    assert not decoder.bare_line_ending


def test_bare_line_endings_are_flagged() -> None:
    for wire in (b"a\nb\r\n.\r\n", b"a\rb\r\n.\r\n", b"x\n.\nz\r\n.\r\n"):
        decoder = DataDecoder()
        decoder.feed(wire)
        assert decoder.done and decoder.bare_line_ending, wire


def test_smuggled_end_marks_do_not_end_the_data() -> None:
    # "\n.\n" and "\n.\r\n" are not the end of data (RFC 5321 2.3.8); only CRLF.CRLF is.
    decoder = DataDecoder()
    decoder.feed(b"MAIL\r\n\n.\nRCPT TO:<x>\r\n")
    assert not decoder.done
    decoder.feed(b"\r\n.\r\n")
    assert decoder.done and decoder.bare_line_ending


def test_empty_message() -> None:
    decoder = DataDecoder()
    assert decoder.feed(b".\r\n") == b""
    assert decoder.done
