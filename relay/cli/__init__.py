"""``kep-relay``: the command line. Exit codes: 0 done/valid, 1 invalid, 2 usage error."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from interop.errors import ConfigurationError
from relay.cli import (
    account_cmd,
    ledger_cmd,
    mailbox_cmd,
    mesh_cmd,
    pki_cmd,
    selfcheck_cmd,
    send_cmd,
    serve_cmd,
    verify_cmd,
)
from relay.errors import TemporaryTrouble

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2
EXIT_TRY_AGAIN = 75  # sysexits.h EX_TEMPFAIL: temporary trouble (a TSA down); nothing was done


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kep-relay",
        description="Interoperability gateway between KEP (registered e-mail) providers.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve_cmd.register(commands)
    send_cmd.register(commands)
    mailbox_cmd.register(commands)
    account_cmd.register(commands)
    ledger_cmd.register(commands)
    pki_cmd.register(commands)
    verify_cmd.register(commands)
    selfcheck_cmd.register(commands)
    mesh_cmd.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.run(args)
    except ConfigurationError as exc:
        print(f"kep-relay: {exc.detail}", file=sys.stderr)
        return EXIT_USAGE
    except TemporaryTrouble as exc:
        print(f"kep-relay: {exc.detail}; try again later", file=sys.stderr)
        return EXIT_TRY_AGAIN
    return code


if __name__ == "__main__":
    sys.exit(main())
