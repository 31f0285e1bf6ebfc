"""One run of the suite: load the PKI and the schema, start the listener, run the chosen
cases, write the reports; the exit code is 0 only when every required case passed.

Takes ``Options`` and the mode; prints one line per case and a summary on ``out``; raises
``ConfigurationError`` for a setting that cannot work (the CLI prints it and exits 2).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from typing import TextIO

from conformance import report, tools
from conformance.identity import Pki
from conformance.listener import Listener
from conformance.registry import RECEIVE, RUN, catalogue
from conformance.runner import CaseResult, run_all
from conformance.session import Options, Session
from interop.errors import ConfigurationError


def check_setting(options: Options, pki: Pki) -> None:
    pki.provider(options.target_provider)
    for provider in (options.as_provider, options.second_provider):
        if provider is not None:
            pki.keys(provider)  # the suite signs as them: their keys must be there
    for provider in pki.keyless:  # the suite signs as every other provider in some case
        if provider != options.target_provider:
            pki.keys(provider)
    if options.as_provider == options.target_provider:
        raise ConfigurationError("--as must be another provider than --target-provider")
    if options.second_provider in (options.as_provider, options.target_provider):
        raise ConfigurationError("--second-provider must differ from --as and the target")
    if (options.second_provider is None) != (options.second_listen is None):
        raise ConfigurationError("--second-provider and --second-listen go together")
    tools.need("openssl")
    tools.need("xmlsec1")


async def run_suite(
    options: Options, mode: str, out: TextIO = sys.stdout
) -> tuple[list[CaseResult], report.RunInfo]:
    pki = Pki.load(options.pki)
    check_setting(options, pki)
    schema = tools.Schema(options.xsd)
    cases = catalogue(mode, options.only)
    if not cases:
        raise ConfigurationError(f"no {mode} case matches --only {options.only!r}")
    host, port = options.listen
    listeners = {options.as_provider: Listener(host, port, pki.server_tls(options.as_provider))}
    if options.second_provider is not None and options.second_listen is not None:
        second_host, second_port = options.second_listen
        listeners[options.second_provider] = Listener(
            second_host, second_port, pki.server_tls(options.second_provider)
        )
    started = dt.datetime.now(dt.UTC)
    for listener in listeners.values():
        try:
            await listener.start()
        except OSError as exc:
            for other in listeners.values():
                await other.stop()
            raise ConfigurationError(
                f"cannot listen on {listener.host}:{listener.port}: {exc.strerror}"
            ) from exc
    print(
        f"KEP conformance ({mode}): {options.target_provider} at "
        f"{options.target[0]}:{options.target[1]}, as {options.as_provider}, "
        f"listening on {host}:{port}; {len(cases)} cases",
        file=out,
        flush=True,
    )

    def progress(result: CaseResult) -> None:
        print(report.terminal_line(result), file=out, flush=True)

    try:
        results = await run_all(
            cases,
            lambda: Session(options, pki, listeners, schema),
            options.case_timeout,
            progress,
        )
    finally:
        for listener in listeners.values():
            await listener.stop()
    info = report.RunInfo(
        mode,
        f"{options.target[0]}:{options.target[1]}",
        options.target_provider,
        options.as_provider,
        started,
        dt.datetime.now(dt.UTC),
    )
    return results, info


def execute(options: Options, mode: str, out: TextIO = sys.stdout) -> int:
    if mode not in (RUN, RECEIVE):
        raise ConfigurationError(f"unknown mode {mode}")
    results, info = asyncio.run(run_suite(options, mode, out))
    print(report.summary(results), file=out)
    if options.report is not None:
        for path in report.write(options.report, info, results):
            print(f"report: {path}", file=out)
    return 0 if report.passed(results) else 1
