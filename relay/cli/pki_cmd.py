"""``kep-relay pki init``: write a development PKI (certs/README.md)."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any

from interop.errors import ConfigurationError
from interop.pki.devpki import ALGORITHMS, generate
from interop.providers import BUILTIN_PROVIDERS, provider_id_problem
from relay.keys import DEV_WARNING, MANIFEST, write_pki


def register(commands: Any) -> None:
    pki = commands.add_parser("pki", help="development PKI")
    sub = pki.add_subparsers(dest="pki_command", required=True, metavar="ACTION")
    init = sub.add_parser("init", help="generate a complete development PKI")
    init.add_argument("--out", type=Path, required=True, help="folder to write")
    init.add_argument(
        "--providers",
        default=",".join(BUILTIN_PROVIDERS),
        help="comma-separated provider ids (default: hs01 to hs08)",
    )
    init.add_argument(
        "--algorithm", choices=ALGORITHMS, default="ec", help="ec (P-256) or rsa (2048)"
    )
    init.add_argument("--force", action="store_true", help="replace an existing PKI in --out")
    init.set_defaults(run=run_init)


def run_init(args: argparse.Namespace) -> int:
    out: Path = args.out
    if (out / MANIFEST).exists() and not args.force:
        print(f"kep-relay: {out} already holds a PKI (use --force to replace it)", file=sys.stderr)
        return 2
    providers = [p.strip() for p in args.providers.split(",") if p.strip()]
    for provider in providers:
        problem = provider_id_problem(provider)
        if problem is not None:  # the id names the domain and every file of the provider
            raise ConfigurationError(f"--providers: {problem}")
    pki = generate(dt.datetime.now(dt.UTC), providers, args.algorithm)
    written = write_pki(pki, out)
    print(
        f"wrote a development PKI ({args.algorithm}, providers {', '.join(providers)}) "
        f"to {out}: {len(written)} files"
    )
    print(f"WARNING: {DEV_WARNING}")
    return 0
