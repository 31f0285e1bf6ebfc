"""``kep-relay send``: submit a user-signed message as a provider's own systems would.

With a development PKI it signs for the user (their dev e-imza certificate), so a full round
trip can be shown without any other software. It speaks SMTP to the node's submission
listener with Python's smtplib, then waits for the S-GW's answer (SubmissionAcceptanceRejection)
in the node's store: exit 0 when the message was accepted, 1 with the reasons when it was
refused, 75 when no answer came in time (``--no-wait`` skips the wait: exit 0 once the node
has taken the message).
"""

from __future__ import annotations

import argparse
import mimetypes
import smtplib
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

from interop.errors import ConfigurationError, KepError
from interop.evidence import xmlio
from relay.cli.target import existing, node_config
from relay.config import NodeConfig
from relay.keys import read_pki
from relay.lifecycle import State
from relay.store.reader import StoreReader
from relay.submission import submit

EXIT_NO_ANSWER = 75  # sysexits.h EX_TEMPFAIL: taken, its outcome not known yet
# How often the store is asked for the submission's outcome while waiting.
POLL = 0.2


def register(commands: Any) -> None:
    send = commands.add_parser("send", help="submit a signed message (dev users are signed for)")
    send.add_argument("--config", type=Path, help="node configuration (default: embedded)")
    send.add_argument("--from", dest="sender", required=True)
    send.add_argument("--to", action="append", required=True, help="a recipient (repeatable)")
    send.add_argument("--subject", default="")
    send.add_argument("--body", default="")
    send.add_argument("--attach", type=Path, action="append", default=[])
    send.add_argument("--etebligat", action="store_true", help="mark as eTebligat (hs01 only)")
    send.add_argument(
        "--no-wait", action="store_true", help="do not wait for the provider's acceptance"
    )
    send.add_argument(
        "--wait",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long to wait for the acceptance or rejection (default 60)",
    )
    send.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    attachments = [_attachment(path) for path in args.attach]
    config = existing(node_config(args))
    if config.dev_pki is None:
        print(
            "kep-relay: send signs with development certificates; this node has no dev_pki",
            file=sys.stderr,
        )
        return 2
    try:
        user = read_pki(config.dev_pki).user(args.sender.lower())
    except KeyError:
        print(f"kep-relay: {args.sender} is not a user of the development PKI", file=sys.stderr)
        return 2
    extra = [("X-TR-REM-iletiTip", "eTebligat")] if args.etebligat else []
    listener = config.submission_listener
    try:
        queue_id, size = submit(
            listener,
            user,
            args.to,
            subject=args.subject,
            body=args.body,
            attachments=attachments,
            extra_headers=extra,
        )
    except (OSError, smtplib.SMTPException) as exc:
        print(
            f"kep-relay: the node at {listener.host}:{listener.port} did not take the message: "
            f"{exc}",
            file=sys.stderr,
        )
        return 1
    print(
        f"submitted to {listener.host}:{listener.port} as {queue_id}: {size} bytes, "
        f"{len(args.to)} recipient(s)"
    )
    return 0 if args.no_wait else wait_for_outcome(config, queue_id, args.wait)


def wait_for_outcome(config: NodeConfig, queue_id: str, timeout: float) -> int:
    """Wait until the S-GW has accepted or refused ``queue_id``; print what it said."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with StoreReader(config.store_url) as reader:
                outcome = reader.submission_outcome(queue_id)
        except (sqlite3.Error, psycopg.Error) as exc:
            print(
                f"kep-relay: {queue_id} was taken; its outcome cannot be read here (the store of"
                f" {config.source}: {str(exc).strip()[:200]}); --no-wait skips waiting",
                file=sys.stderr,
            )
            return EXIT_NO_ANSWER
        if outcome is not None and outcome[0] is not State.RECEIVED:
            break
        if time.monotonic() >= deadline:
            print(
                f"kep-relay: {queue_id} was taken but not yet accepted or refused after"
                f" {timeout:g}s; its evidence will be filed in the sender's Delil folder",
                file=sys.stderr,
            )
            return EXIT_NO_ANSWER
        time.sleep(POLL)
    state, xml = outcome
    if state is State.PROCESSED:
        print(f"accepted: {queue_id}@{config.provider.domain}")
        return 0
    reasons = _reasons(xml) if xml is not None else []
    print(
        f"kep-relay: refused ({state}): " + ("; ".join(reasons) or "see the sender's Delil"),
        file=sys.stderr,
    )
    return 1


def _reasons(xml: bytes) -> list[str]:
    try:
        evidence = xmlio.parse(xml)
    except KepError as exc:
        return [f"(its evidence cannot be read: {exc.detail})"]
    return [
        f"{r.reason.name}: {r.details}" if r.details else r.reason.name for r in evidence.reasons
    ]


def _attachment(path: Path) -> tuple[str, str, bytes]:
    """``--attach``'s file as (name, MIME type, content); a file that cannot be read is a
    usage error naming it, before anything is sent."""
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"--attach {path}: cannot be read: {exc.strerror or exc}") from exc
    return path.name, mimetypes.guess_type(path.name)[0] or "application/octet-stream", content
