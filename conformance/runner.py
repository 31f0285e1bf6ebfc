"""Runs cases one after another, each in a fresh ``Session`` and under a time limit.

Takes the chosen cases and a session maker; promises one ``CaseResult`` per case, whatever the
case does: a failed check is ``fail``, ``CaseSkipped`` is ``skip``, a case over its time limit
is ``fail`` (the target did not answer in time), and an exception nobody foresaw is ``error``
(a fault of the suite or of its setting, shown with its message, never hidden).
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from conformance.registry import Case, CaseFailed, CaseSkipped
from conformance.session import Check, Record, Session
from conformance.smtp import SmtpGone

PASS, FAIL, SKIP, ERROR = "pass", "fail", "skip", "error"


@dataclass
class CaseResult:
    case: Case
    verdict: str
    detail: str
    seconds: float
    checks: list[Check] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)

    @property
    def counts_against(self) -> bool:
        """Does this result stop the run from passing? A required case that did not pass."""
        return self.case.required and self.verdict in (FAIL, ERROR)


async def run_case(case: Case, session: Session, timeout: float) -> CaseResult:
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            await case.run(session)
        failed = session.failed
        verdict = FAIL if failed else PASS
        detail = (
            f"{failed[0].name}: {failed[0].detail}"
            if failed
            else (f"{len(session.checks)} checks passed")
        )
    except CaseFailed as exc:
        failed = session.failed
        verdict = FAIL
        detail = f"{failed[0].name}: {failed[0].detail}" if failed else str(exc)
    except CaseSkipped as exc:
        verdict, detail = SKIP, str(exc)
    except TimeoutError:
        verdict, detail = FAIL, f"no conclusion within the case's {timeout:g} s"
    except SmtpGone as exc:  # the target ended or refused a connection where it must not
        verdict, detail = FAIL, f"the connection to the target failed: {exc}"
    except Exception as exc:
        verdict = ERROR
        detail = f"{type(exc).__name__}: {exc}"
        session.records.append(
            Record("note", "suite error", traceback.format_exc().splitlines()[-12:])
        )
    return CaseResult(
        case, verdict, detail, time.monotonic() - started, session.checks, session.records
    )


async def run_all(
    cases: list[Case],
    make_session: Callable[[], Session],
    timeout: float,
    progress: Callable[[CaseResult], None] | None = None,
) -> list[CaseResult]:
    results = []
    for case in cases:
        result = await run_case(case, make_session(), timeout)
        results.append(result)
        if progress is not None:
            progress(result)
    return results
