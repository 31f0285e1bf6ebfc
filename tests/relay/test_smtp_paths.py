"""MAIL FROM and RCPT TO paths: ``KepSMTP`` reads the plain ``<dot-atom@domain>`` form itself
and leaves every other form to aiosmtpd, with the same answer as aiosmtpd in every case."""

from __future__ import annotations

import pytest
from aiosmtpd.smtp import SMTP
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.smtp.server import KepSMTP, SessionLimits


class _Intake:
    """Nothing of the intake is used to read a path."""


def _servers() -> tuple[KepSMTP, SMTP]:
    limits = SessionLimits(
        command_timeout=60,
        data_timeout=60,
        min_transfer_rate=0,
        slow_transfer_limit=60,
        max_junk_commands=10,
    )
    ours = KepSMTP(_Intake(), limits=limits)  # type: ignore[arg-type]
    return ours, SMTP(object())


OURS, LIBRARY = _servers()


def _read(server: SMTP, arg: str) -> object:
    """What ``server`` makes of ``arg``, or the error it raises (aiosmtpd raises IndexError on
    a lone ``<``; the node answers that 451, ``relay.smtp.server``)."""
    try:
        return server._getaddr(arg)
    except Exception as exc:
        return type(exc)


PATHS = [
    "<ali.yilmaz@hs01.kep.tr>",
    "<ali@hs01.kep.tr> SIZE=1234 BODY=8BITMIME",
    " <a@b.c>",
    "<a@b>x",
    "<a@b.c> ",
    "<a@b> SIZE=1 ",
    "<a@b>\t SIZE=1",
    "<a@b>  (a comment) SIZE=1",
    "<a@b>(c)",
    "<a@b>\r\n",
    "<-@a> \r",
    "<a@b> \x0b\u00a0 SIZE=1",
    "<a@b> (c) (d) SIZE=1",
    "<a..b@c>",
    "<.a@c>",
    "<a.@c>",
    "<>",
    '<"q r"@x.y>',
    "<@route:a@b>",
    "a@b",
    "<a@b..c>",
    "<a@b.c.>",
    "<a@[127.0.0.1]>",
    "<ali@hs01.kep.tr",
    "ali@hs01.kep.tr>",
    "<a@b> <c@d>",
    "",
]


@pytest.mark.parametrize("arg", PATHS)
def test_a_path_reads_as_aiosmtpd_reads_it(arg: str) -> None:
    assert _read(OURS, arg) == _read(LIBRARY, arg)


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet='<>@.ab-_+"() \t\r\n\x0b\u00a0=:[]', max_size=24))
def test_any_path_reads_as_aiosmtpd_reads_it(arg: str) -> None:
    assert _read(OURS, arg) == _read(LIBRARY, arg)


_PIECE = st.text(alphabet='ab.-_+"()[]@ \t', max_size=8)
_REST = st.text(alphabet="ab=() \t\r\n\x0b\x0c\x85\u00a0\u2028", max_size=8)


@settings(max_examples=2000, deadline=None)
@given(_PIECE, _PIECE, _REST, st.sampled_from(["", " "]))
def test_any_near_plain_path_reads_as_aiosmtpd_reads_it(
    local: str, domain: str, rest: str, lead: str
) -> None:
    arg = f"{lead}<{local}@{domain}>{rest}"
    assert _read(OURS, arg) == _read(LIBRARY, arg)


def test_the_local_part_limit_still_applies() -> None:
    ours, library = _servers()
    ours.local_part_limit = library.local_part_limit = 5
    for arg in ("<abcdef@b.c>", "<abcde@b.c>"):
        assert ours._getaddr(arg) == library._getaddr(arg)
    assert ours._getaddr("<abcdef@b.c>") == (None, None)
