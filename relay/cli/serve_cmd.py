"""``kep-relay serve [--config FILE]``: run the gateway node."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from relay import logs, reload
from relay.config import embedded_default
from relay.config_file import load
from relay.processes import serve


def register(commands: Any) -> None:
    run = commands.add_parser("serve", help="run the gateway")
    run.add_argument("--config", type=Path, help="node configuration (TOML); default: embedded")
    run.add_argument(
        "--log-format",
        choices=("console", "json"),
        default=None,
        help="console when a terminal is attached, else JSON lines",
    )
    run.set_defaults(run=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    # SIGHUP reloads (relay.reload); one that comes while the node starts waits for it.
    reload.hold_hangups()
    config = load(args.config) if args.config else embedded_default()
    logs.set_level(config.log_level)
    if config.dev_pki is not None:
        logs.warn_development(config)
    return serve(config, args.log_format)
