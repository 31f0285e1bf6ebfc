"""``kep-relay conformance run|receive|list``: the conformance suite against any gateway.

Only parses arguments and hands them to ``conformance`` (docs/conformance.md): the suite talks
to the target over SMTP alone and uses nothing of ``relay``. Exit 0 when every required case
passed, 1 when one did not, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from conformance.main import execute
from conformance.registry import catalogue
from conformance.session import Options
from interop.errors import ConfigurationError

XSD_ENV = "KEP_ETSI_XSD"


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "conformance", help="run the KEP-REM conformance suite against a gateway"
    )
    sub = parser.add_subparsers(dest="conformance_command", required=True, metavar="MODE")
    for name, text in (
        ("run", "play the sending provider against a target that receives"),
        ("receive", "play the receiving provider for a target that sends"),
    ):
        mode = sub.add_parser(name, help=text)
        mode.add_argument(
            "--target", type=_address, required=True, help="HOST:PORT of its peer listener"
        )
        mode.add_argument(
            "--target-provider", required=True, help="the target's provider id (hs02)"
        )
        mode.add_argument(
            "--as", dest="as_provider", required=True, help="the provider the suite plays"
        )
        mode.add_argument(
            "--pki", type=Path, required=True, help="PKI folder (docs/conformance.md)"
        )
        mode.add_argument(
            "--listen",
            type=_address,
            required=True,
            help="HOST:PORT the target's route for --as reaches",
        )
        mode.add_argument("--only", help="comma-separated id patterns (KEP-EVF-*,KEP-TR-01)")
        mode.add_argument(
            "--report", type=Path, help="folder for junit.xml, report.json, report.html"
        )
        mode.add_argument(
            "--xsd",
            type=Path,
            default=Path(os.environ[XSD_ENV]) if os.environ.get(XSD_ENV) else None,
            help=f"folder of the ETSI TS 102 640-2 v2 XSD (default ${XSD_ENV})",
        )
        mode.add_argument(
            "--recipient",
            action="append",
            default=[],
            help="a mailbox at the target (twice: cases with two recipients need two)",
        )
        mode.add_argument("--unknown-recipient", help="an address of the target with no account")
        mode.add_argument(
            "--second-provider",
            help="another provider of the PKI whose route at the target also reaches --listen",
        )
        mode.add_argument(
            "--second-listen",
            type=_address,
            help="HOST:PORT the target's route for --second-provider reaches",
        )
        mode.add_argument("--evidence-timeout", type=float, default=60.0, help="seconds (60)")
        mode.add_argument("--case-timeout", type=float, default=300.0, help="seconds (300)")
        mode.add_argument(
            "--read-command",
            help="shell command opening a delivered message ({recipient}, {subject}, {remmd})",
        )
        mode.add_argument(
            "--send-command",
            help="receive: shell command making a target user write to {recipient} with {subject}",
        )
        mode.add_argument(
            "--full-recipient",
            help="run: a mailbox at the target that is full, where its policy refuses on full",
        )
        mode.add_argument("--closed-recipient", help="run: a closed account at the target")
        mode.add_argument(
            "--evidence-command",
            help="receive: shell command printing the evidence the target filed for its user "
            "({sender}, {subject}, {remmd}, {type})",
        )
        mode.add_argument(
            "--relay-timeout",
            type=float,
            help="receive: the target's relay timeout in seconds, set short for the run",
        )
        mode.add_argument(
            "--target-evidence-timeout",
            type=float,
            help="receive: the target's evidence timeout in seconds, set short for the run",
        )
        mode.add_argument(
            "--settle",
            type=float,
            default=10.0,
            help="seconds to watch that nothing more comes (10)",
        )
        mode.set_defaults(run=run, mode=name)
    listing = sub.add_parser("list", help="print the catalogue")
    listing.set_defaults(run=run_list)


def run(args: argparse.Namespace) -> int:
    if args.xsd is None:
        raise ConfigurationError(f"give --xsd DIR (the ETSI XSD folder) or set ${XSD_ENV}")
    if args.mode == "receive" and not args.send_command:
        raise ConfigurationError("conformance receive needs --send-command")
    options = Options(
        target=args.target,
        target_provider=args.target_provider,
        as_provider=args.as_provider,
        pki=args.pki,
        listen=args.listen,
        xsd=args.xsd,
        only=args.only,
        report=args.report,
        recipients=tuple(args.recipient),
        unknown_recipient=args.unknown_recipient,
        second_provider=args.second_provider,
        second_listen=args.second_listen,
        evidence_timeout=args.evidence_timeout,
        case_timeout=args.case_timeout,
        read_command=args.read_command,
        send_command=args.send_command,
        full_recipient=args.full_recipient,
        closed_recipient=args.closed_recipient,
        evidence_command=args.evidence_command,
        relay_timeout=args.relay_timeout,
        target_evidence_timeout=args.target_evidence_timeout,
        settle=args.settle,
    )
    return execute(options, args.mode)


def run_list(args: argparse.Namespace) -> int:
    for item in catalogue():
        need = "required" if item.required else "optional"
        print(f"{item.id:<12} {item.mode:<8} {item.section:<22} {item.etsi:<16} {need:<9}", end="")
        print(f" {item.title}")
    return 0
