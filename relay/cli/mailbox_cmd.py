"""``kep-relay mailbox list|show|read``: an account's folders, from the node's data folder.

``list`` gives the messages in the order they were filed; ``show`` prints one decoded
(headers, text, attachments listed; ``--raw`` for its bytes, to save or verify); ``read``
opens a message as its recipient would, so it issues the Retrieval evidence; the running node
sends it on its next pass over the queue.
"""

from __future__ import annotations

import argparse
import sys
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from typing import Any

from interop.envelope.fields import MESSAGE_IDENTIFIER, decode_text
from relay.cli import message_view
from relay.cli.target import add_config, open_node
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
        add_config(p)
        p.add_argument("address")
        p.add_argument("--folder", choices=("INBOX", "Sent", "Delil"), default="INBOX")
        if action != "list":
            p.add_argument("number", type=int, help="the number `list` shows")
            p.add_argument("--raw", action="store_true", help="the message's bytes, undecoded")
        p.set_defaults(run=run_mailbox, action=action)


def run_mailbox(args: argparse.Namespace) -> int:
    context = open_node(args)
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
    data = path.read_bytes()
    if args.raw:
        sys.stdout.buffer.write(data)
    else:
        sys.stdout.write(message_view.render(data))
    sys.stdout.flush()
    if args.action == "read" and args.folder == "INBOX":
        issued = retrieve(context, args.address, path)
        if issued is not None:
            print(f"\n-- Retrieval evidence {issued.evidence.identifier} issued", file=sys.stderr)
    return 0
