"""``kep-relay config check|show [--config FILE]``: a configuration judged, or shown, offline.

``check`` prints every problem of the file, one a line (``FILE: section.key: what is wrong``),
then what can be checked without a network (``relay.config_check``: files, certificates and
keys, folders, the store URL's form); warnings say ``warning:`` and change nothing. Exit 2
when there is a problem, else 0 with ``FILE: configuration valid``. ``show`` prints the
effective configuration as TOML, defaults included and secrets redacted
(``relay.config_show``). Neither creates anything.
"""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from interop.errors import ConfigurationError
from relay.cli.target import add_config, node_config
from relay.config_check import check
from relay.config_show import show

EXIT_OK, EXIT_PROBLEMS = 0, 2


def register(commands: Any) -> None:
    config = commands.add_parser("config", help="check or show a node's configuration")
    sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    checking = sub.add_parser(
        "check", help="every problem of the configuration, and what can be checked offline"
    )
    add_config(checking)
    checking.set_defaults(run=run_check)
    showing = sub.add_parser(
        "show", help="the effective configuration as TOML, defaults included, secrets redacted"
    )
    add_config(showing)
    showing.set_defaults(run=run_show)


def run_check(args: argparse.Namespace) -> int:
    source = str(args.config) if args.config else "embedded default"
    try:
        config = node_config(args)
    except ConfigurationError as exc:  # every problem of the file (ConfigurationProblems)
        for line in exc.detail.splitlines():
            print(line)
        return EXIT_PROBLEMS
    findings = check(config, dt.datetime.now(dt.UTC))
    for finding in findings:
        print(finding.line(source))
    if any(not f.warning for f in findings):
        return EXIT_PROBLEMS
    print(f"{source}: configuration valid")
    return EXIT_OK


def run_show(args: argparse.Namespace) -> int:
    print(show(node_config(args)), end="")
    return EXIT_OK
