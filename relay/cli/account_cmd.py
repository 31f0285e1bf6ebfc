"""``kep-relay account list|show|add|set``: accounts managed in the node's store.

Changes take effect at once in a running node (it reads accounts from the store for every
decision). Accounts from the configuration file are listed too; a stored account of the same
address overrides the file's (``set`` on a file's account copies it into the store first).

Who may sign for an account (INTEROP-PROFILE.md §1) is kept with its history: ``--holder``
names a person's holder, ``--operator`` adds and ``--remove-operator`` removes an authorised
operator of a legal person; nothing is deleted, so ``show`` tells who was allowed when.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import sys
from pathlib import Path
from typing import Any

from interop.address import KepAddress
from interop.errors import AddressError, ConfigurationError, IdentityNumberError
from interop.identity import NationalId
from interop.limits import MiB
from relay.cli.target import open_node
from relay.context import NodeContext
from relay.mailbox import Account, AccountState, AccountType, SignerRole


def register(commands: Any) -> None:
    account = commands.add_parser("account", help="manage accounts")
    sub = account.add_subparsers(dest="account_command", required=True, metavar="ACTION")
    listing = sub.add_parser("list", help="every account, with state and mailbox use")
    listing.add_argument("--config", type=Path)
    listing.set_defaults(run=run_list)
    show = sub.add_parser("show", help="one account, and who could sign for it when")
    show.add_argument("address")
    show.add_argument("--config", type=Path)
    show.set_defaults(run=run_show)
    for action in ("add", "set"):
        p = sub.add_parser(action, help=f"{action} an account")
        p.add_argument("address")
        p.add_argument("--config", type=Path)
        p.add_argument("--type", choices=[t.value for t in AccountType])
        p.add_argument("--state", choices=[s.value for s in AccountState])
        p.add_argument("--quota-mib", type=float)
        p.add_argument(
            "--holder", type=_number, help="the holder's TC Kimlik No or YKN (a person's account)"
        )
        p.add_argument(
            "--operator",
            type=_number,
            action="append",
            default=[],
            help="add an authorised operator's TC Kimlik No or YKN (a legal person's account)",
        )
        p.add_argument(
            "--remove-operator", type=_number, action="append", default=[], metavar="NUMBER"
        )
        p.add_argument(
            "--etebligat", choices=["yes", "no"], help="authorised to send eTebligat (public body)"
        )
        p.set_defaults(run=run_put, action=action)


def _number(text: str) -> str:
    try:
        return NationalId.parse(text).number
    except IdentityNumberError as exc:
        raise argparse.ArgumentTypeError(exc.detail) from exc


def _context(args: argparse.Namespace) -> NodeContext:
    return open_node(args)


def run_list(args: argparse.Namespace) -> int:
    context = _context(args)
    addresses = sorted(
        {*context.mailboxes.accounts, *(r["address"] for r in context.store.account_rows())}
    )
    for address in addresses:
        account = context.mailboxes.account(address)
        assert account is not None
        used = context.mailboxes.usage(address)
        print(
            f"{address:40} {account.type.value:13} {account.state.value:8} "
            f"{used / MiB:7.1f} / {account.quota / MiB:.0f} MiB"
        )
    if not addresses:
        print("(no accounts)")
    return 0


def run_put(args: argparse.Namespace) -> int:
    if args.quota_mib is not None and not 0 < args.quota_mib < math.inf:
        # 0 never meant "no limit": it was taken as "not given" and left the quota as it was.
        raise ConfigurationError(
            f"--quota-mib {args.quota_mib:g}: a quota is more than 0 MiB; leave --quota-mib"
            " out to keep the account's quota (a new account gets limits.default_quota_mib)"
        )
    context = _context(args)
    try:
        address = KepAddress.parse(args.address, context.verifiers.trust.directory)
    except AddressError as exc:
        print(f"kep-relay: {exc.detail}", file=sys.stderr)
        return 2
    if address.provider_id != context.provider.id:
        print(f"kep-relay: {address} is not an address of {context.provider.id}", file=sys.stderr)
        return 2
    current = context.mailboxes.account(str(address))
    if args.action == "add" and current is not None:
        print(f"kep-relay: {address} exists; use account set", file=sys.stderr)
        return 2
    if args.action == "set" and current is None:
        print(f"kep-relay: {address} has no account; use account add", file=sys.stderr)
        return 2
    quota = (
        max(1, int(args.quota_mib * MiB))
        if args.quota_mib is not None
        else (current.quota if current else context.config.limits.default_quota)
    )
    etebligat = (args.etebligat == "yes") if args.etebligat else bool(current and current.etebligat)
    store, now = context.store, context.now()
    if current is not None and store.account_row(str(address)) is None:
        for number, role in current.signers().items():  # the file's account, into the store
            store.allow_signer(str(address), number, role.value, now)
    store.put_account(
        str(address),
        args.type or (current.type.value if current else AccountType.SEND_RECEIVE.value),
        args.state or (current.state.value if current else AccountState.ACTIVE.value),
        quota,
        etebligat,
    )
    if args.holder:
        store.allow_signer(str(address), args.holder, SignerRole.HOLDER.value, now)
    for number in args.operator:
        store.allow_signer(str(address), number, SignerRole.OPERATOR.value, now)
    for number in args.remove_operator:
        if not store.end_signer(str(address), number, SignerRole.OPERATOR.value, now):
            print(f"kep-relay: {number} is not an operator of {address}", file=sys.stderr)
            return 2
    account = context.mailboxes.account(str(address))
    assert account is not None
    print(_summary(account))
    return 0


def _summary(account: Account) -> str:
    signers = ", ".join(f"{role.value} {n}" for n, role in account.signers().items()) or "none"
    return (
        f"{account.address}: {account.type.value}, {account.state.value},"
        f" quota {account.quota / MiB:.0f} MiB, eTebligat {'yes' if account.etebligat else 'no'},"
        f" may sign: {signers}"
    )


def run_show(args: argparse.Namespace) -> int:
    context = _context(args)
    account = context.mailboxes.account(args.address)
    if account is None:
        print(f"kep-relay: {args.address} has no account", file=sys.stderr)
        return 2
    print(_summary(account))
    history = context.store.signer_history(account.address)
    if not history:
        print("  (from the configuration file: no history)")
    for row in history:
        until = _when(row["until"]) if row["until"] is not None else "now"
        print(f"  {row['role']:8} {row['number']}  {_when(row['since'])} - {until}")
    return 0


def _when(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
