"""``kep-relay mailbox list|show|read``: an account's folders, from the node's data folder.

``read`` opens a message as its recipient would, so it issues the Retrieval evidence; the
running node sends it on its next pass over the queue.
"""

from __future__ import annotations

import argparse
import sys
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

from interop.envelope.fields import MESSAGE_IDENTIFIER, decode_text
from relay.config import embedded_default, load
from relay.context import NodeContext, build_context
from relay.stages.retrieval import retrieve


def register(commands: Any) -> None:
    mailbox = commands.add_parser("mailbox", help="read an account's mailbox")
    sub = mailbox.add_subparsers(dest="mailbox_command", required=True, metavar="ACTION")
    for action, text in (
        ("list", "list messages"),
        ("show", "print a message"),
        ("read", "open a message as its recipient (issues Retrieval evidence)"),
    ):
        p = sub.add_parser(action, help=text)
        p.add_argument("--config", type=Path)
        p.add_argument("address")
        p.add_argument("--folder", choices=("INBOX", "Sent", "Delil"), default="INBOX")
        if action != "list":
            p.add_argument("number", type=int, help="the number `list` shows")
        p.set_defaults(run=run_mailbox, action=action)


def _context(args: argparse.Namespace) -> NodeContext:
    return build_context(load(args.config) if args.config else embedded_default())


def run_mailbox(args: argparse.Namespace) -> int:
    context = _context(args)
    if context.mailboxes.account(args.address) is None:
        print(f"kep-relay: {args.address} has no account here", file=sys.stderr)
        return 2
    messages = context.mailboxes.list(args.address, args.folder)
    if args.action == "list":
        for number, (path, seen) in enumerate(messages, 1):
            with path.open("rb") as handle:
                headers = BytesHeaderParser(policy=default_policy).parse(handle)
            subject = decode_text(str(headers.get("Subject", "")))
            # Evidence names the message it is about: the id `evidence export` takes.
            remmd = str(headers.get(MESSAGE_IDENTIFIER, ""))
            print(
                f"{number:4} {'   ' if seen else 'new'} {headers.get('Date', '')[:31]:31} "
                f"{str(headers.get('From', ''))[:32]:32} {subject}"
                + (f"  [{remmd}]" if remmd and args.folder == "Delil" else "")
            )
        if not messages:
            print("(empty)")
        return 0
    if not 1 <= args.number <= len(messages):
        print(f"kep-relay: there is no message {args.number} in {args.folder}", file=sys.stderr)
        return 2
    path, _seen = messages[args.number - 1]
    sys.stdout.buffer.write(path.read_bytes())
    if args.action == "read" and args.folder == "INBOX":
        issued = retrieve(context, args.address, path)
        if issued is not None:
            print(f"\n-- Retrieval evidence {issued.evidence.identifier} issued", file=sys.stderr)
    return 0
