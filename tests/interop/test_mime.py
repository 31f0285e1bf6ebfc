from __future__ import annotations

import base64
import io
from email.header import decode_header, make_header
from email.policy import default as default_policy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from interop.envelope.fields import decode_text, fold
from interop.envelope.mime import Span, parse_content_type, read_headers, split_multipart
from interop.envelope.smime import encode_header
from interop.errors import EnvelopeFormatError, LimitExceeded
from interop.limits import Limits

_token = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+\-]{0,15}", fullmatch=True)
_quoted = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)


@given(
    kind=_token,
    sub=_token,
    params=st.lists(
        st.tuples(_token, st.one_of(_token, _quoted), st.booleans()),
        max_size=4,
        unique_by=lambda p: p[0].lower(),
    ),
    spaces=st.sampled_from(["", " ", "\t", "  "]),
)
def test_fast_content_type_parser_agrees_with_the_standard_library(
    kind: str, sub: str, params: list[tuple[str, str, bool]], spaces: str
) -> None:
    text = f"{kind}/{sub}"
    for name, value, want_quotes in params:
        # RFC 2045 tspecials, plus the RFC 2231 characters the stdlib reads specially unquoted.
        quote = want_quotes or not value or any(c in value for c in " ()<>@,;:\\\"/[]?=*'%")
        shown = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"' if quote else value
        text += f";{spaces}{name}={shown}"
    ours = parse_content_type(text)
    theirs = default_policy.header_factory("content-type", text)
    assert ours.type == theirs.content_type
    assert ours.params == {k.lower(): str(v) for k, v in theirs.params.items()}


def test_unusual_content_types_fall_back_to_the_full_parser() -> None:
    assert (
        parse_content_type("text/plain; (comment) charset=us-ascii").param("charset") == "us-ascii"
    )
    assert parse_content_type("application/x; name*=utf-8''%C3%A7").param("name") == "ç"
    with pytest.raises(EnvelopeFormatError):
        parse_content_type("not a content type")


def test_headers_unfold_and_preserve_case_insensitivity() -> None:
    data = b"Subject: a\r\n b\r\nX-REM-Event: Delivery\r\nx-rem-event: again\r\n\r\nbody"
    headers, body = read_headers(io.BytesIO(data), Span(0, len(data)))
    assert headers.get("subject") == "a b"
    assert headers.get_all("X-REM-EVENT") == ["Delivery", "again"]
    assert data[body:] == b"body"


def test_fold_keeps_lines_short_and_round_trips() -> None:
    value = ", ".join(f"kullanici{i}@hs02.kep.tr" for i in range(30))
    folded = fold("To", value)
    assert all(len(line) <= 78 for line in folded.split(b"\r\n"))
    headers, _ = read_headers(io.BytesIO(folded + b"\r\n"), Span(0, len(folded) + 2))
    assert headers.get("To") == value
    assert decode_text("=?utf-8?q?=C3=A7?=") == "ç"


def test_boundary_that_only_prefixes_a_line_is_not_a_delimiter() -> None:
    body = b"--b\r\nA\r\n--bX not a delimiter\r\n--b\r\nB\r\n--b--\r\n"
    spans = split_multipart(io.BytesIO(body), Span(0, len(body)), "b")
    assert [body[s.start : s.end] for s in spans] == [b"A\r\n--bX not a delimiter", b"B"]


def test_delimiter_split_across_chunks_is_found() -> None:
    filler = b"x" * (1024 * 1024 - 3)
    body = b"--b\r\n" + filler + b"\r\n--b\r\nB\r\n--b--\r\n"
    spans = split_multipart(io.BytesIO(body), Span(0, len(body)), "b")
    assert [s.size for s in spans] == [len(filler), 1]


# Found by fuzzing (fuzz/targets.py content_type): the standard library's parser raised
# IndexError and ValueError on these; one boundary now turns any failure into our error.
@pytest.mark.parametrize("raw", ["text/plain; x*", "text/plain; name*=\x00''x"])
def test_malformed_content_type_is_an_envelope_format_error(raw: str) -> None:
    with pytest.raises(EnvelopeFormatError, match="is malformed") as caught:
        parse_content_type(raw)
    assert caught.value.__cause__ is not None  # raised from the library's own exception


def test_deeply_nested_comments_are_refused_not_a_recursion_error() -> None:
    raw = "text/plain; " + "(" * 1000 + ")" * 1000
    with pytest.raises(LimitExceeded, match="comments"):
        parse_content_type(raw)
    # Past the limit (a caller may raise it), the parser's RecursionError is still ours.
    with pytest.raises(EnvelopeFormatError, match="is malformed") as caught:
        parse_content_type(raw, Limits(content_type_params=5000))
    assert isinstance(caught.value.__cause__, RecursionError)


@pytest.mark.parametrize(
    "text",
    [
        "ç",
        "KEP delili: RelayREMMDAcceptanceRejection Acceptance: Şirket sözleşmesi hakkında",
        "ğ" * 22,  # 44 bytes: a character across the first word's 42
        "a" + "ş" * 40,
        "İhtarname 📨 " * 12,  # four-byte characters too
        "x" * 41 + "é" + "y" * 100,
    ],
)
def test_non_ascii_header_text_is_encoded_in_whole_characters_the_stdlib_reads_back(
    text: str,
) -> None:
    encoded = encode_header(text)
    assert encoded.isascii()
    words = encoded.split(" ")
    for word in words:  # RFC 2047 §2 and §5: short words, no character split between two
        assert len(word) <= 75 and word.startswith("=?utf-8?b?") and word.endswith("?=")
        base64.b64decode(word[10:-2]).decode("utf-8")
    assert str(make_header(decode_header(encoded))) == text  # the stdlib's reading
    assert decode_text(encoded) == text  # and ours
    folded = fold("Subject", encoded)
    assert all(len(line) <= 78 for line in folded.split(b"\r\n"))
    assert encode_header("plain ASCII") == "plain ASCII"


@given(st.text(min_size=1, max_size=200).filter(lambda text: not text.isascii()))
def test_any_non_ascii_text_encodes_to_words_the_stdlib_decodes_back(text: str) -> None:
    encoded = encode_header(text)
    assert all(len(word) <= 75 for word in encoded.split(" "))
    assert str(make_header(decode_header(encoded))) == text


@pytest.mark.parametrize(
    "raw",
    [
        "=?utf-8?b?A?=",  # HeaderParseError: bad base64
        "=?é?q?x?=",  # CharsetError: a charset name that is not ASCII
        "=?utf-8?q?ok?= =?\udcff?b?A?=",
    ],
)
def test_decode_text_keeps_undecodable_text_as_written(raw: str) -> None:
    assert decode_text(raw) == raw


def _continuations(count: int, segment: str = "x") -> str:
    return "application/octet-stream; " + "; ".join(f"f*{i}={segment}" for i in range(count))


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        # ~16 KiB of RFC 2231 continuations: 48 ms each in the standard library, 3 s a Dispatch.
        (_continuations(1700), "may have 4096 characters"),
        (_continuations(200), "more than 128 parameters"),
        ("text/plain; f=x " + "(a)" * 200, "more than 128 parameters, quoted strings and comm"),
        ("text/plain; f=x" + '""' * 200, "more than 128 parameters, quoted strings and comm"),
    ],
)
def test_content_type_work_is_bounded(raw: str, fragment: str) -> None:
    with pytest.raises(LimitExceeded, match=fragment):
        parse_content_type(raw)


def test_legitimate_content_type_forms_still_parse() -> None:
    quoted = parse_content_type('application/pdf; name="Yıllık rapor; 2026.pdf"; charset=x')
    assert quoted.param("name") == "Yıllık rapor; 2026.pdf"
    encoded = parse_content_type("application/pdf; name*=utf-8''%C3%A7al%C4%B1%C5%9Fma.pdf")
    assert encoded.param("name") == "çalışma.pdf"
    # A long file name in 40 RFC 2231 continuations (~3 KB), as mail clients split them.
    segments = ["%C3%A7" * 12] * 40
    long_name = "application/pdf; " + "; ".join(
        f"name*{i}*={'utf-8' + chr(39) * 2 if i == 0 else ''}{s}" for i, s in enumerate(segments)
    )
    assert 2500 < len(long_name) < 4096
    assert parse_content_type(long_name).param("name") == "ç" * 480
    quoted_parts = "; ".join(f'name*{i}="part {i} "' for i in range(40))
    assert parse_content_type(f"text/plain; {quoted_parts}").param("name") == "".join(
        f"part {i} " for i in range(40)
    )
    commented = parse_content_type('multipart/mixed (KEP) ; boundary="b" (sınır)')
    assert commented.type == "multipart/mixed" and commented.param("boundary") == "b"
