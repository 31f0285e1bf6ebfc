"""Run one fuzz target under atheris, or replay saved inputs through it.

    python -m fuzz.run TARGET [SECONDS] [--work DIR] [-libfuzzer_flag=N ...]
    python -m fuzz.run TARGET --reproduce FILE...        replay inputs, print any traceback
    python -m fuzz.run --list                            the targets

Everything a campaign keeps lives under the work folder (default ``fuzz/work``, ignored by
git): ``pki/`` (the development PKI the seeds are signed with, reused so reproducers stay
valid), ``TARGET/corpus/`` (seeds and what libFuzzer found interesting) and
``TARGET/crashes/`` (``crash-*``, ``timeout-*``, ``oom-*``: each a reproducer).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported for real only inside _targets, after instrumentation starts
    from fuzz.targets import Target

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_WORK = ROOT / "fuzz" / "work"
# Packages whose code paths guide the fuzzer: ours, and the parsers ours hands bytes to.
INSTRUMENTED = ("interop", "asn1crypto", "email")
# One input taking longer than this is a finding: each parse is bounded (interop.limits), and
# the slowest seed takes well under a second even instrumented.
DEFAULT_TIMEOUT = 10
EXIT_USAGE = 2


def main(argv: list[str] | None = None) -> int:
    parser = _arguments()
    args, libfuzzer = parser.parse_known_args(argv)
    if any(not flag.startswith("-") for flag in libfuzzer):
        parser.error(f"unexpected arguments {libfuzzer}; libFuzzer flags look like -runs=100")
    if args.list:
        print("\n".join(_targets()))
        return 0
    if args.target is None:
        print("a target is needed (see --list)", file=sys.stderr)
        return EXIT_USAGE
    if args.reproduce:
        return _reproduce(args.target, args.work, args.reproduce)
    packages = [name for name in args.instrument.split(",") if name]
    return _fuzz(args.target, args.seconds, args.work, args.timeout, packages, libfuzzer)


def _arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fuzz.run", description=__doc__)
    parser.add_argument("target", nargs="?")
    parser.add_argument("seconds", nargs="?", type=int, default=60)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT, help="per input")
    parser.add_argument(
        "--instrument",
        default=",".join(INSTRUMENTED),
        help="comma-separated packages whose coverage guides the fuzzer",
    )
    parser.add_argument("--reproduce", nargs="+", type=Path, metavar="FILE")
    parser.add_argument("--list", action="store_true")
    return parser


def _targets(*, instrument: Sequence[str] = ()) -> Mapping[str, Target]:
    """``fuzz.targets.TARGETS``, imported with coverage instrumentation when fuzzing.

    atheris instruments modules as they are imported, so nothing of ``interop`` may be imported
    before this (this module imports only the standard library at the top).
    """
    if not instrument:
        from fuzz.targets import TARGETS

        return TARGETS
    import atheris

    with atheris.instrument_imports(include=list(instrument)):
        from fuzz.targets import TARGETS
    return TARGETS


def _target(targets: Mapping[str, Target], name: str) -> Target | None:
    found = targets.get(name)
    if found is None:
        print(f"no target {name!r}; targets: {', '.join(targets)}", file=sys.stderr)
    return found


def _fuzz(
    name: str, seconds: int, work: Path, timeout: int, packages: list[str], extra: list[str]
) -> int:
    try:
        import atheris
    except ImportError:
        print("atheris is not installed: pip install -e '.[test]' (Linux x86_64)", file=sys.stderr)
        return EXIT_USAGE
    target = _target(_targets(instrument=packages), name)
    if target is None:
        return EXIT_USAGE
    from fuzz.world import load_world, make_samples

    world = load_world(work / "pki")
    corpus, crashes = work / name / "corpus", work / name / "crashes"
    crashes.mkdir(parents=True, exist_ok=True)
    _write_seeds(corpus, target.seeds(world, make_samples(world)))

    def one_input(data: bytes) -> None:
        target.run(world, data)

    flags = [
        f"-max_total_time={seconds}",
        f"-timeout={timeout}",
        f"-artifact_prefix={crashes}/",
        "-print_final_stats=1",
        *extra,
    ]
    atheris.Setup([sys.argv[0], *flags, str(corpus)], one_input)
    atheris.Fuzz()  # libFuzzer exits the process: 0 when the time is up, non-zero on a crash
    return 0


def _reproduce(name: str, work: Path, files: list[Path]) -> int:
    target = _target(_targets(), name)
    if target is None:
        return EXIT_USAGE
    from fuzz.world import load_world

    world = load_world(work / "pki")
    failed = 0
    for path in files:
        try:
            target.run(world, path.read_bytes())
        except Exception:
            failed += 1
            print(f"{path}: CRASH", file=sys.stderr)
            traceback.print_exc()
        else:
            print(f"{path}: keeps the contract")
    return 1 if failed else 0


def _write_seeds(corpus: Path, seeds: Sequence[bytes]) -> None:
    corpus.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        path = corpus / f"seed-{hashlib.sha1(seed).hexdigest()}"  # noqa: S324 (a name)
        if not path.exists():
            path.write_bytes(seed)


if __name__ == "__main__":
    sys.exit(main())
