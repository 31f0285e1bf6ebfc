"""Every fuzz target (fuzz/targets.py) runs briefly under atheris: a crash fails the suite.

A smoke test, not a campaign (``scripts/fuzz`` runs those): each target gets a few seconds,
two at a time, from seeds made by the project's builders. A failure prints the reproducer and
the command that replays it (fuzz/README.md: "From a crash to a regression test").
"""

from __future__ import annotations

import base64
import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from fuzz.targets import TARGETS

ROOT = Path(__file__).resolve().parents[1]
SECONDS = 2  # per target
# Only our own code guides the short runs: instrumenting asn1crypto and email as well
# (what campaigns do) costs two seconds of start-up per target.
PARALLEL = 2  # processes at once (CI machines have two cores)
_SHOWN = 600  # bytes of a reproducer printed inline


def _need_atheris() -> None:
    if importlib.util.find_spec("atheris") is None:
        message = (
            "atheris is not installed (pip install -e '.[test]'; it has wheels for CPython "
            "3.11-3.13 on Linux x86_64 only)"
        )
        if os.environ.get("KEP_REQUIRE_TOOLS") == "1":
            pytest.fail(f"{message}, and KEP_REQUIRE_TOOLS=1 says it must be")
        pytest.skip(message)


@dataclass(frozen=True)
class Run:
    target: str
    work: Path
    returncode: int
    output: str

    @property
    def reproducers(self) -> list[Path]:
        return sorted((self.work / self.target / "crashes").glob("*"))

    def report(self) -> str:
        lines = [f"fuzz target {self.target!r} exited {self.returncode}"]
        for path in self.reproducers:
            data = path.read_bytes()
            lines += [
                f"reproducer {path} ({len(data)} bytes): {data[:_SHOWN]!r}",
                f"  base64: {base64.b64encode(data[:_SHOWN]).decode()}",
                f"  replay: .venv/bin/python -m fuzz.run {self.target} --work {self.work} "
                f"--reproduce {path}",
            ]
        tail = [line for line in self.output.splitlines() if "INFO: Instrumenting" not in line]
        return "\n".join([*lines, "--- output (end) ---", *tail[-60:]])


class Campaigns:
    """Runs the selected targets in the background, ``PARALLEL`` at a time."""

    def __init__(self, work: Path, targets: list[str]) -> None:
        self.work = work
        self._pool = ThreadPoolExecutor(max_workers=PARALLEL)
        self._runs: dict[str, Future[Run]] = {t: self._pool.submit(self._run, t) for t in targets}

    def _run(self, target: str) -> Run:
        done = subprocess.run(
            [
                *(sys.executable, "-m", "fuzz.run", target, str(SECONDS)),
                *("--work", str(self.work), "--instrument", "interop"),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        return Run(target, self.work, done.returncode, done.stdout + done.stderr)

    def result(self, target: str) -> Run:
        if target not in self._runs:
            self._runs[target] = self._pool.submit(self._run, target)
        return self._runs[target].result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="module")
def campaigns(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Campaigns]:
    _need_atheris()
    # Start every selected target at once (so two run while the tests wait in order).
    selected = [
        str(item.callspec.params["target"])
        for item in request.session.items
        if isinstance(item, pytest.Function)
        and item.originalname == test_fuzz_target_keeps_its_contract.__name__
    ]
    running = Campaigns(tmp_path_factory.mktemp("fuzz"), selected)
    yield running
    running.close()


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_fuzz_target_keeps_its_contract(campaigns: Campaigns, target: str) -> None:
    run = campaigns.result(target)
    assert run.returncode == 0 and not run.reproducers, run.report()
    assert "Done " in run.output, run.report()  # libFuzzer ran to its time limit
