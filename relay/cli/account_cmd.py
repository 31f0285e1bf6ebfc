"""``kep-relay account list|show|add|set``: accounts managed in the node's store.

Changes take effect at once in a running node (it reads accounts from the store for every
decision). Accounts from the configuration file are listed too; a stored account of the same
address overrides the file's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from interop.address import KepAddress
from interop.errors import AddressError
from interop.limits import MiB
from relay.config import embedded_default, load
from relay.context import NodeContext, build_context
from relay.mailbox import AccountState, AccountType


def register(commands: Any) -> None:
    account = commands.add_parser("account", help="manage accounts")
    sub = account.add_subparsers(dest="account_command", required=True, metavar="ACTION")
    listing = sub.add_parser("list", help="every account, with state and mailbox use")
    listing.add_argument("--config", type=Path)
    listing.set_defaults(run=run_list)
    for action in ("add", "set"):
        p = sub.add_parser(action, help=f"{action} an account")
        p.add_argument("address")
        p.add_argument("--config", type=Path)
        p.add_argument("--type", choices=[t.value for t in AccountType])
        p.add_argument("--state", choices=[s.value for s in AccountState])
        p.add_argument("--quota-mib", type=float)
        p.set_defaults(run=run_put, action=action)


def _context(args: argparse.Namespace) -> NodeContext:
    return build_context(load(args.config) if args.config else embedded_default())


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
        int(args.quota_mib * MiB)
        if args.quota_mib
        else (current.quota if current else context.config.limits.default_quota)
    )
    context.store.put_account(
        str(address),
        args.type or (current.type.value if current else AccountType.SEND_RECEIVE.value),
        args.state or (current.state.value if current else AccountState.ACTIVE.value),
        quota,
    )
    account = context.mailboxes.account(str(address))
    assert account is not None
    quota_mib = account.quota / MiB
    print(f"{address}: {account.type.value}, {account.state.value}, quota {quota_mib:.0f} MiB")
    return 0
