"""Which node an operator command acts on, and how it opens it without creating anything.

Every command that acts on a node takes ``--config FILE`` (the node's TOML); without it, the
embedded default (``./var`` of the current folder, as ``kep-relay serve`` uses). ``serve`` is
the one command that may make a node where there is none (its data folder, its store, a
development PKI on first run). Every other command opens an existing node: when the data
folder, the store or the development PKI the configuration names is not there, it stops with
one line saying where it looked and what to give instead (exit 2), and has created nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from interop.errors import ConfigurationError
from relay.config import NodeConfig, embedded_default
from relay.config_file import load
from relay.context import NodeContext, build_context
from relay.store import Store
from relay.store.database import open_database, sqlite_path
from relay.store.reader import StoreReader


def add_config(parser: Any) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        help="the node's configuration (TOML); default: the embedded one, data under ./var",
    )


def node_config(args: argparse.Namespace) -> NodeConfig:
    """The configuration the command names (``--config``) or the embedded default."""
    config: Path | None = getattr(args, "config", None)
    return load(config) if config else embedded_default()


def existing(config: NodeConfig) -> NodeConfig:
    """``config`` when the node it describes exists here; otherwise ``ConfigurationError``
    naming what is missing (nothing is created)."""
    hint = (
        "give --config FILE (the node's configuration)"
        if config.source == "embedded default"
        else f"check node.data_dir in {config.source}, or start the node once"
    )
    data = config.data_dir.resolve()
    if not data.is_dir():
        raise ConfigurationError(
            f"no node here: its data folder {data} does not exist ({config.source}); {hint}"
        )
    url = config.store_url
    if url.startswith("sqlite:///") and not sqlite_path(url).is_file():
        raise ConfigurationError(
            f"no node here: its store {sqlite_path(url)} does not exist ({config.source}); {hint}"
        )
    if config.dev_pki is not None and not (config.dev_pki / "pki.json").is_file():
        raise ConfigurationError(
            f"no node here: its development PKI {config.dev_pki.resolve()} does not exist"
            f" ({config.source}); {hint}"
        )
    return config


def open_node(args: argparse.Namespace, owner: str | None = None) -> NodeContext:
    """The context of the existing node the command names (its signer, store, mailboxes),
    claiming work as ``owner`` (default: as the node's first process would)."""
    return build_context(existing(node_config(args)), owner=owner)


def open_store(args: argparse.Namespace) -> Store:
    """The existing node's store, to write to, and nothing else of the node (no keys)."""
    config = existing(node_config(args))
    return Store(
        open_database(config.store_url, synchronous=config.store.sqlite_synchronous, connections=2)
    )


def open_reader(args: argparse.Namespace) -> StoreReader:
    """A read-only session on the existing node's store (use it with ``with``)."""
    config = existing(node_config(args))
    return StoreReader(config.store_url)
