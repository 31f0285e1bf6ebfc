"""The catalogue: one ``Case`` per behaviour, each with its id, the profile section it checks,
the ETSI TR 103 071 test family it corresponds to, and the profile text it rests on.

Cases register themselves with ``@case(...)`` when their module is imported
(``conformance.cases``); ``catalogue(mode)`` lists them in id order. A case is an async function
taking a ``Session``; it passes when it returns with every check it recorded passing, fails on
a failed check (``Session.require`` stops it there), and is skipped when it raises
``CaseSkipped`` (an optional behaviour the target does not offer, or a setting not given).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conformance.session import Session

RUN, RECEIVE = "run", "receive"
_ID = re.compile(r"^[A-Z]+-[A-Z0-9]+(?:-[A-Z0-9]+)*$")

CaseFunction = Callable[["Session"], Awaitable[None]]


class CaseFailed(Exception):
    """A required check failed; the case stops (its checks say which)."""


class CaseSkipped(Exception):
    """The case does not apply to this target or run (the message says why)."""


@dataclass(frozen=True, slots=True)
class Case:
    id: str
    title: str
    mode: str  # RUN: the target receives; RECEIVE: the target sends
    section: str  # INTEROP-PROFILE.md section, "§2"
    etsi: str  # the TR 103 071 family: EVF-DELREC, MSGF-EVIDENCE, SIG-SMIME, OF-..., COF-...
    rule: str  # the profile's words this case checks
    run: CaseFunction
    required: bool = True


_CASES: dict[str, Case] = {}


def case(
    id: str,
    title: str,
    *,
    section: str,
    etsi: str,
    rule: str,
    mode: str = RUN,
    required: bool = True,
) -> Callable[[CaseFunction], CaseFunction]:
    if not _ID.match(id):
        raise ValueError(f"case id {id!r} is not of the form AREA-NN")
    if mode not in (RUN, RECEIVE):
        raise ValueError(f"case {id}: mode must be {RUN} or {RECEIVE}")

    def register(function: CaseFunction) -> CaseFunction:
        if id in _CASES:
            raise ValueError(f"case {id} is registered twice")
        _CASES[id] = Case(
            id, title, mode, section, etsi, " ".join(rule.split()), function, required
        )
        return function

    return register


def catalogue(mode: str | None = None, only: str | None = None) -> list[Case]:
    """The cases of ``mode`` (all when None) whose id matches one of the comma-separated
    shell patterns of ``only`` (``KEP-EVF-*,KEP-TR-01``), in id order."""
    import conformance.cases  # noqa: F401, PLC0415  (registers every case; they import us)

    patterns = [p.strip() for p in (only or "").split(",") if p.strip()]
    chosen = [
        c
        for c in _CASES.values()
        if (mode is None or c.mode == mode)
        and (not patterns or any(fnmatch.fnmatchcase(c.id, p) for p in patterns))
    ]
    return sorted(chosen, key=lambda c: c.id)
