"""``kep-relay``: the command line. Exit codes: 0 done/valid, 1 invalid, 2 usage error."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
from collections.abc import Sequence

from interop.errors import ConfigurationError
from relay import logs
from relay.cli import (
    account_cmd,
    config_cmd,
    conformance_cmd,
    ledger_cmd,
    mailbox_cmd,
    mesh_cmd,
    message_cmd,
    pki_cmd,
    queue_cmd,
    selfcheck_cmd,
    send_cmd,
    serve_cmd,
    verify_cmd,
)
from relay.errors import TemporaryTrouble

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2
EXIT_TRY_AGAIN = 75  # sysexits.h EX_TEMPFAIL: temporary trouble (a TSA down); nothing was done
EXIT_PIPE_CLOSED = 141  # what a shell reports for a program ended by SIGPIPE (`… | head`)


def version() -> str:
    try:
        return importlib.metadata.version("kep-relay")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that is not installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kep-relay",
        description="Interoperability gateway between KEP (registered e-mail) providers.",
    )
    parser.add_argument("--version", action="version", version=f"kep-relay {version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve_cmd.register(commands)
    config_cmd.register(commands)
    send_cmd.register(commands)
    mailbox_cmd.register(commands)
    message_cmd.register(commands)
    account_cmd.register(commands)
    queue_cmd.register(commands)
    ledger_cmd.register(commands)
    pki_cmd.register(commands)
    verify_cmd.register(commands)
    selfcheck_cmd.register(commands)
    mesh_cmd.register(commands)
    conformance_cmd.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Log lines go to stderr in every command, so what a command prints on stdout (a message
    # saved with `mailbox show … > msg.eml`, a listing piped on) is only its output.
    logs.configure(getattr(args, "log_format", None))
    try:
        code: int = args.run(args)
    except BrokenPipeError:
        # The reader went away (`kep-relay queue list | head`): stop quietly, and keep Python
        # from complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_PIPE_CLOSED
    except ConfigurationError as exc:
        for line in exc.detail.splitlines():  # a configuration's problems: one line each
            print(f"kep-relay: {line}", file=sys.stderr)
        return EXIT_USAGE
    except TemporaryTrouble as exc:
        print(f"kep-relay: {exc.detail}; try again later", file=sys.stderr)
        return EXIT_TRY_AGAIN
    return code


if __name__ == "__main__":
    sys.exit(main())
