"""``kep-relay message status ID | --address A``: what happened to a message, without SQL.

ID is a REMMD id (the MessageIdentifier evidence and envelopes carry; ``mailbox list --folder
Delil`` shows it in brackets) or a queue id (a message's row). The story is read from the
node's store through a read-only session (``relay.cli.target.open_reader``): it creates
nothing and is safe while the node runs. Text for people by default (times in ISO 8601 UTC
with their age), ``--json`` for scripts (``relay.story``). Exit 0 when something matched, 1
when nothing did ("kep-relay: no message ... here"), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Sequence
from typing import Any

from interop.errors import ConfigurationError
from relay.cli.target import add_config, open_reader
from relay.lifecycle import State
from relay.story import Story, Summary, listing_json, story, story_json, summaries

DEFAULT_LIMIT = 20  # lines of an --address listing: a screen's worth


def register(commands: Any) -> None:
    message = commands.add_parser("message", help="what happened to a message")
    sub = message.add_subparsers(dest="message_command", required=True, metavar="ACTION")
    status = sub.add_parser(
        "status",
        help="a message's rows, evidence, timers and delivery attempts",
        description="ID: a REMMD id or a queue id; or --address for an account's recent"
        " messages (one line each; a single match in full).",
    )
    add_config(status)
    status.add_argument("id", nargs="?", metavar="ID", help="a REMMD id or a queue id")
    status.add_argument("--address", help="an account: the messages it sent or was sent")
    status.add_argument(
        "--limit",
        type=_positive,
        default=DEFAULT_LIMIT,
        help=f"with --address, this many newest messages (default {DEFAULT_LIMIT})",
    )
    status.add_argument("--json", action="store_true", help="JSON for scripts")
    status.set_defaults(run=run_status)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a whole number above 0: {text!r}")
    return value


def run_status(args: argparse.Namespace) -> int:
    if (args.id is None) == (args.address is None):
        raise ConfigurationError("give one of ID (a REMMD id or a queue id) and --address")
    now = dt.datetime.now(dt.UTC).timestamp()
    with open_reader(args) as reader:
        if args.id is not None:
            found = story(reader, args.id, now)
            if found is None:
                print(f"kep-relay: no message {args.id} here", file=sys.stderr)
                return 1
            _out(story_json(found) if args.json else render_story(found), args.json)
            return 0
        listed = summaries(reader, args.address, args.limit)
        if not listed:
            print(f"kep-relay: no message of {args.address} here", file=sys.stderr)
            return 1
        only = listed[0].message if len(listed) == 1 else None
        full = story(reader, only.remmd_id or only.id, now) if only is not None else None
    if args.json:
        _out(listing_json(args.address, listed, now, full), True)
    elif full is not None:
        _out(render_story(full), False)
    else:
        _out(render_listing(args.address, listed, now), False)
    return 0


def _out(value: Any, as_json: bool) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False) if as_json else value)


# -- text for people -----------------------------------------------------------------------


def stamp(at: float) -> str:
    """ISO 8601 in UTC, to the second: ``2026-01-05T10:12:03Z``."""
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat(timespec="seconds")[:-6] + "Z"


def when(at: float | None, now: float) -> str:
    """``2026-01-05T10:12:03Z (2m04s ago)``, ``… (in 23h59m)``; ``-`` for none."""
    return "-" if at is None else f"{stamp(at)} ({relative(at - now)})"


def relative(seconds: float) -> str:
    """An age or a time left, to two units: ``45s ago``, ``3h04m ago``, ``in 2d05h``."""
    s = int(abs(seconds))
    if s < 60:
        span = f"{s}s"
    elif s < 3600:
        span = f"{s // 60}m{s % 60:02d}s"
    elif s < 86400:
        span = f"{s // 3600}h{s % 3600 // 60:02d}m"
    else:
        span = f"{s // 86400}d{s % 86400 // 3600:02d}h"
    return f"in {span}" if seconds > 0 else f"{span} ago"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Columns aligned, two spaces apart, indented; the last column not padded."""
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header) - 1)]
    return [
        "  " + "  ".join([*(c.ljust(w) for c, w in zip(r, widths, strict=False)), r[-1]])
        for r in (header, *rows)
    ]


def render_story(s: Story) -> str:
    lines = [
        f"message {s.remmd_id or s.asked}"
        + (f" (queue id {s.asked})" if s.remmd_id not in (None, s.asked) else "")
        + f", as of {stamp(s.now)}",
        "",
        "rows",
    ]
    rows = []
    for m in s.messages:
        state = str(m.state)
        if m.state is State.QUEUED and m.next_attempt is not None:
            state += f" (next {relative(m.next_attempt - s.now)})"
        rows.append(
            [
                ("*" if m.id == s.asked else "") + m.id,
                str(m.kind),
                state,
                m.peer or "-",
                when(m.created, s.now),
                when(m.updated, s.now),
                str(m.attempts),
                ", ".join(m.recipients),
            ]
        )
    head = ["id", "kind", "state", "peer", "created", "updated", "tries", "recipients"]
    lines += table(head, rows) if rows else ["  (none: evidence only)"]
    lines += ["", "evidence"]
    evidence = [
        [
            when(e.stored.recorded, s.now),
            e.stored.direction,
            e.stored.issuer,
            e.stored.type,
            e.stored.event,
            e.stored.recipient or "-",
            "; ".join(f"{r.name}: {r.details}" if r.details else r.name for r in e.reasons) or "-",
        ]
        for e in s.evidence
    ]
    head = ["time", "direction", "issuer", "type", "event", "recipient", "reason"]
    lines += table(head, evidence) if evidence else ["  (none yet)"]
    lines += ["", "timers running"]
    timers = [
        [d.which, d.peer, d.dispatch_id, when(d.at, s.now) + (" OVERDUE" if d.at <= s.now else "")]
        for d in s.deadlines
    ]
    lines += table(["timer", "peer", "dispatch", "deadline"], timers) if timers else ["  (none)"]
    lines += ["", "delivery attempts"]
    peers = {m.id: m.peer or "-" for m in s.messages}
    attempts = [
        [
            when(a.attempted, s.now),
            a.message_id,
            str(a.number),
            peers.get(a.message_id, "-"),
            a.host or "-",
            a.outcome,
            a.reply,
        ]
        for a in s.attempts
    ]
    head = ["time", "message", "#", "peer", "host", "outcome", "reply"]
    lines += table(head, attempts) if attempts else ["  (none)"]
    return "\n".join(lines)


def render_listing(address: str, found: list[Summary], now: float) -> str:
    rows = []
    for f in found:
        m = f.message
        to = m.recipients[0] if m.recipients else "-"
        if len(m.recipients) > 1:
            to += f" +{len(m.recipients) - 1}"
        last = "-"
        if f.last is not None:
            last = f"{f.last.stored.event} ({f.last.stored.type})"
            if f.last.stored.recipient:
                last += f" for {f.last.stored.recipient}"
        rows.append(
            [
                when(m.created, now),
                f.direction,
                m.remmd_id or m.id,
                str(m.state),
                m.mail_from if f.direction == "received" else to,
                f"{f.evidence} evidence, last: {last}",
            ]
        )
    head = ["created", "direction", "REMMD id", "state", "from / to", "evidence"]
    return "\n".join([f"messages of {address}, newest first", *table(head, rows)])
