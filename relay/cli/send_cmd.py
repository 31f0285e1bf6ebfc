"""``kep-relay send``: submit a user-signed message as a provider's own systems would.

With a development PKI it signs for the user (their dev e-imza certificate), so a full round
trip can be shown without any other software. It speaks SMTP to the node's submission
listener with Python's smtplib.
"""

from __future__ import annotations

import argparse
import mimetypes
import smtplib
import sys
from pathlib import Path
from typing import Any

from interop.errors import ConfigurationError
from relay.config import embedded_default, load
from relay.keys import read_pki
from relay.submission import submit


def register(commands: Any) -> None:
    send = commands.add_parser("send", help="submit a signed message (dev users are signed for)")
    send.add_argument("--config", type=Path, help="node configuration (default: embedded)")
    send.add_argument("--from", dest="sender", required=True)
    send.add_argument("--to", action="append", required=True, help="a recipient (repeatable)")
    send.add_argument("--subject", default="")
    send.add_argument("--body", default="")
    send.add_argument("--attach", type=Path, action="append", default=[])
    send.add_argument("--etebligat", action="store_true", help="mark as eTebligat (hs01 only)")
    send.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    attachments = [_attachment(path) for path in args.attach]
    config = load(args.config) if args.config else embedded_default()
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
    return 0


def _attachment(path: Path) -> tuple[str, str, bytes]:
    """``--attach``'s file as (name, MIME type, content); a file that cannot be read is a
    usage error naming it, before anything is sent."""
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"--attach {path}: cannot be read: {exc.strerror or exc}") from exc
    return path.name, mimetypes.guess_type(path.name)[0] or "application/octet-stream", content
