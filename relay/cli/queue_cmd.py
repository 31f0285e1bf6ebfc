"""``kep-relay queue list|show|summary|retry|hold|release|delete|requeue``: a running node's
queue, seen and moved by its operator (docs/operations.md "The queue").

``list``, ``show`` and ``summary`` read through a read-only session (``target.open_reader``):
they take none of the node's locks and change nothing. The moves (``relay.operator``) go through
the store's conditional updates, never a message a node process holds now, and are safe while
the node runs: it takes up what was made due on its next pass over the queue. Moves take queue
ids, or a selection (``--all`` and the filters of ``list``); each message's outcome is printed,
then a count; the exit code is 1 when any was refused.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import itertools
import json
import os
import sys
from collections.abc import Iterator
from typing import Any

from interop.errors import ConfigurationError
from relay.cli import target
from relay.config_file import duration
from relay.lifecycle import HELD, PENDING, Kind, State
from relay.operator import Action, Queue
from relay.store.reader import QueueEntry, QueueFilter

LIST_LIMIT = 1000  # messages `list` prints unless --limit says otherwise: a terminal's worth
PAGE = 500  # messages a selection reads at a time (a move by filters walks the queue in pages)
REPLY_SHOWN = 100  # characters of the last reply `list` prints (`show` prints it whole)
# qshape's age buckets (Postfix): 5 minutes doubling, in minutes.
AGE_EDGES = (5, 10, 20, 40, 80, 160)


def register(commands: Any) -> None:
    queue = commands.add_parser("queue", help="see and move the node's queue (safe while it runs)")
    sub = queue.add_subparsers(dest="queue_command", required=True, metavar="ACTION")
    listing = sub.add_parser("list", help="messages waiting or held, oldest first")
    _filters(listing)
    listing.add_argument("--limit", type=_count, default=LIST_LIMIT, help="print at most N")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(run=run_list)
    show = sub.add_parser("show", help="one message in full")
    target.add_config(show)
    show.add_argument("queue_id")
    show.add_argument("--json", action="store_true", help="one JSON object")
    show.set_defaults(run=run_show)
    summary = sub.add_parser("summary", help="messages by peer and age (like Postfix's qshape)")
    _filters(summary, ages=False)
    summary.set_defaults(run=run_summary)
    helps = {
        Action.RETRY: "make waiting messages due now",
        Action.HOLD: "hold queued or received messages until released",
        Action.RELEASE: "release held messages, or process again what the node put aside",
        Action.DELETE: "end messages for good (their senders get the evidence they are owed)",
        Action.REQUEUE: "send Evidence messages again",
    }
    for action, text in helps.items():
        move = sub.add_parser(action.value, help=text)
        _filters(move)
        move.add_argument("queue_ids", nargs="*", metavar="ID")
        move.add_argument("--all", action="store_true", help="every message the filters select")
        if action is Action.DELETE:
            move.add_argument("--reason", required=True, help="why (kept with the message)")
        move.set_defaults(run=run_move, action=action)


def _filters(parser: Any, *, ages: bool = True) -> None:
    target.add_config(parser)
    parser.add_argument("--peer", help="provider id (this provider's own: its submissions)")
    parser.add_argument(
        "--state",
        action="append",
        type=State,
        choices=list(State),
        default=[],
        metavar="STATE",
        help=f"only in this state (again for more): {', '.join(State)}",
    )
    parser.add_argument(
        "--kind",
        action="append",
        type=Kind,
        choices=list(Kind),
        default=[],
        metavar="KIND",
        help=f"only of this kind (again for more): {', '.join(Kind)}",
    )
    if ages:
        parser.add_argument(
            "--older-than", type=_age, metavar="DURATION", help="accepted or made before (10m)"
        )
        parser.add_argument(
            "--newer-than", type=_age, metavar="DURATION", help="accepted or made since (2h)"
        )


def _age(text: str) -> float:
    try:
        return duration(text, "age")
    except ConfigurationError as exc:
        raise argparse.ArgumentTypeError(exc.detail) from exc


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of messages")
    return int(text)


def _selection(args: argparse.Namespace, states: tuple[State, ...], now: float) -> QueueFilter:
    older, newer = getattr(args, "older_than", None), getattr(args, "newer_than", None)
    return QueueFilter(
        states=tuple(args.state) or states,
        kinds=tuple(args.kind),
        peer=args.peer,
        local=target.node_config(args).provider.id,
        created_before=now - older if older is not None else None,
        created_after=now - newer if newer is not None else None,
    )


def run_list(args: argparse.Namespace) -> int:
    now = _now()
    which = _selection(args, (*PENDING, *HELD), now)
    with target.open_reader(args) as reader:
        entries = reader.entries(which, args.limit + 1)
    if entries and not args.json:
        print(HEADER)
    for entry in entries[: args.limit]:
        if args.json:
            print(json.dumps(_as_json(entry, now), ensure_ascii=False))
        else:
            print(_line(entry, now))
    if args.json:
        return 0
    more = len(entries) > args.limit
    shown = min(len(entries), args.limit)
    print(
        f"{shown} message{'s' if shown != 1 else ''}"
        + ("; more match: narrow the filters or raise --limit" if more else "")
    )
    return 0


COLUMNS = "{:24} {:12} {:11} {:5} {:>9} {:>7} {:>3} {:9} {}"
HEADER = COLUMNS.format(
    "QUEUE ID", "KIND", "STATE", "PEER", "SIZE", "AGE", "TRY", "NEXT", "REMMD ID"
)


def _line(entry: QueueEntry, now: float) -> str:
    row = entry.row
    due = "-"
    if row.next_attempt is not None and row.state in (State.QUEUED, State.RECEIVED):
        due = "now" if row.next_attempt <= now else f"in {_span(row.next_attempt - now)}"
    text = COLUMNS.format(
        row.id,
        str(row.kind),
        str(row.state),
        row.peer or "-",
        _size(row.size),
        _span(now - row.created),
        row.attempts,
        due,
        row.remmd_id or "-",
    )
    if row.last_reply:
        text += f"\n    last reply: {_truncate(row.last_reply, REPLY_SHOWN)}"
    if row.owner is not None and (row.lease_until or 0.0) >= now:
        text += f"\n    being processed by {row.owner}"
    return text


def run_show(args: argparse.Namespace) -> int:
    now = _now()
    with target.open_reader(args) as reader:
        entry = reader.entry(args.queue_id)
        if entry is None:
            print(f"kep-relay: no message {args.queue_id}", file=sys.stderr)
            return 1
        evidence = reader.evidence_of_row(entry.row.id)
        timer = reader.timer_of(entry.row.id)
        made = reader.made_from(entry.row.id)
    row = entry.row
    if args.json:
        details = {
            **_as_json(entry, now),
            "mail_from": row.mail_from,
            "rcpt_to": list(row.rcpt_to),
            "sha256": row.sha256,
            "updated": _iso(entry.updated),
            "sent_at": _iso(entry.sent_at),
            "parent": row.parent,
            "headers": row.headers,
            "spool_file": "removed" if entry.content_gone else "present",
            "timer": None
            if timer is None
            else {
                "relay_deadline": _iso(timer[0]),
                "evidence_deadline": _iso(timer[1]),
                "stopped": timer[2],
            },
            "evidence": [
                {"direction": d, "type": t, "event": e, "recipient": r, "recorded": _iso(c)}
                for d, t, e, r, c in evidence
            ],
            "made_from_it": [
                {"id": i, "kind": str(k), "state": str(s), "peer": p} for i, k, s, p in made
            ],
        }
        print(json.dumps(details, ensure_ascii=False, indent=2))
        return 0
    claimed = row.owner is not None and (row.lease_until or 0.0) >= now
    fields: list[tuple[str, object]] = [
        ("queue id", row.id),
        ("kind", row.kind),
        ("state", row.state),
        ("peer", row.peer),
        ("REMMD id", row.remmd_id),
        ("from", row.mail_from),
        ("recipients", ", ".join(row.rcpt_to)),
        ("size", f"{row.size} bytes, SHA-256 {row.sha256}"),
        ("created", f"{_when(row.created)} ({_span(now - row.created)} ago)"),
        ("updated", _when(entry.updated)),
        ("attempts", row.attempts),
        ("next attempt", _when(row.next_attempt)),
        ("last reply", row.last_reply),
        ("being processed by", f"{row.owner} until {_when(row.lease_until)}" if claimed else None),
        ("accepted by the peer", _when(entry.sent_at)),
        ("made from", row.parent),
        ("content", "removed (profile §7)" if entry.content_gone else "present"),
    ]
    if timer is not None:
        running = "stopped" if timer[2] else "running"
        deadlines = f"relay {_when(timer[0]) or '-'}, evidence {_when(timer[1]) or '-'}"
        fields.append(("timers", f"{running}; {deadlines}"))
    fields += [("header kept", f"{name}: {value}") for name, value in row.headers.items()]
    fields += [
        ("evidence", f"{d} {t} {e}{f' for {r}' if r else ''}, {_when(c)}")
        for d, t, e, r, c in evidence
    ]
    fields += [("made from it", f"{i} {k} {s} {p or '-'}") for i, k, s, p in made]
    for name, value in fields:
        print(f"{name + ':':22}{'-' if value is None else value}")
    return 0


def run_summary(args: argparse.Namespace) -> int:
    now = _now()
    which = _selection(args, (*PENDING, *HELD), now)
    edges = [minutes * 60.0 for minutes in AGE_EDGES]
    with target.open_reader(args) as reader:
        shape = reader.shape(which, edges, now)
    heads = [f"<{AGE_EDGES[0]}m"]
    heads += [f"{a}-{b}m" for a, b in itertools.pairwise(AGE_EDGES)]
    heads += [f">{AGE_EDGES[-1]}m"]
    total = [sum(column) for column in zip(*shape.values(), strict=True)] or [0] * len(heads)
    rows = [("TOTAL", total), *sorted(shape.items(), key=lambda item: (-sum(item[1]), item[0]))]
    print(f"{'':12} {'total':>7}" + "".join(f" {h:>7}" for h in heads))
    for name, counts in rows:
        print(f"{name:12} {sum(counts):>7}" + "".join(f" {c:>7}" for c in counts))
    return 0


def run_move(args: argparse.Namespace) -> int:
    action: Action = args.action
    filtered = args.all or args.peer or args.state or args.kind or args.older_than is not None
    filtered = filtered or args.newer_than is not None
    if args.queue_ids and filtered:
        raise ConfigurationError("give queue ids or a selection (--all and filters), not both")
    if not args.queue_ids and not filtered:
        raise ConfigurationError(f"queue {action}: give queue ids, or --all (with filters)")
    who = getpass.getuser()
    config = target.node_config(args)
    owner = f"{config.name}/queue-{who}-{os.getpid()}"  # claims of this command, by name
    queue = Queue(
        target.open_store(args),
        who,
        node=lambda: target.open_node(args, owner=owner),
        reason=getattr(args, "reason", None),
    )
    done = refused = 0
    try:
        for queue_id in args.queue_ids or _selected(args, action):
            outcome = queue.act(action, queue_id)
            if outcome.done:
                done += 1
                due = (
                    ", due now" if action in (Action.RETRY, Action.RELEASE, Action.REQUEUE) else ""
                )
                print(f"{queue_id}: {outcome.source} -> {outcome.to}{due}")
            else:
                refused += 1
                print(f"kep-relay: {queue_id}: {outcome.why}", file=sys.stderr)
    finally:
        queue.close()
        queue.store.close()
    print(f"{action}: {done} done, {refused} refused")
    return 1 if refused else 0


def _selected(args: argparse.Namespace, action: Action) -> Iterator[str]:
    """The queue ids the selection names, oldest first, read a page at a time."""
    which = _selection(args, action.sources, _now())
    after: tuple[float, str] | None = None
    while True:
        with target.open_reader(args) as reader:
            page = reader.entries(which, PAGE, after)
        yield from (entry.row.id for entry in page)
        if len(page) < PAGE:
            return
        after = (page[-1].row.created, page[-1].row.id)


def _as_json(entry: QueueEntry, now: float) -> dict[str, Any]:
    row = entry.row
    claimed = row.owner is not None and (row.lease_until or 0.0) >= now
    return {
        "id": row.id,
        "kind": str(row.kind),
        "state": str(row.state),
        "peer": row.peer,
        "remmd_id": row.remmd_id,
        "size": row.size,
        "created": _iso(row.created),
        "age_seconds": round(now - row.created, 3),
        "attempts": row.attempts,
        "next_attempt": _iso(row.next_attempt),
        "last_reply": row.last_reply,
        "owner": row.owner if claimed else None,
    }


def _now() -> float:
    """The node's one clock (the machine's), as the store reads it."""
    return dt.datetime.now(dt.UTC).timestamp()


def _when(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat().replace("+00:00", "Z")


def _span(seconds: float) -> str:
    """A duration in its two largest units: 45s, 5m02s, 2h05m, 3d04h."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size / 1024 / 1024:.1f} MiB"


def _truncate(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
