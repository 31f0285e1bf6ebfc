"""``kep-relay mesh up|status|traffic|down``: every provider's gateway on this machine.

See ``relay/mesh.py`` for the folder's layout and the ports; the README shows how to point
Prometheus and Grafana at a running mesh.
"""

from __future__ import annotations

import argparse
import smtplib
import sys
import time
from pathlib import Path
from typing import Any

from interop.providers import BUILTIN_PROVIDERS
from relay import mesh
from relay.keys import DEV_WARNING, read_pki

DEFAULT_DIR = Path("var/mesh")


def register(commands: Any) -> None:
    parser = commands.add_parser("mesh", help="run every provider's gateway on this machine")
    sub = parser.add_subparsers(dest="mesh_command", required=True, metavar="ACTION")
    up = sub.add_parser("up", help="make a PKI and configurations, start one gateway each")
    up.add_argument(
        "--providers",
        default=",".join(BUILTIN_PROVIDERS),
        help="comma-separated provider ids (default: hs01 to hs08)",
    )
    up.add_argument("--base-port", type=int, default=24000, help="ports are base+n, +100, +200")
    up.set_defaults(run=run_up)
    for name, run, text in (
        ("status", run_status, "show each gateway: running, ready, addresses"),
        ("traffic", run_traffic, "send a signed message from each provider to each provider"),
        ("down", run_down, "stop every gateway (SIGTERM: they drain)"),
    ):
        action = sub.add_parser(name, help=text)
        action.set_defaults(run=run)
        if name == "traffic":
            action.add_argument(
                "--timeout", type=float, default=300.0, help="seconds to wait for evidence"
            )
    for action in sub.choices.values():
        action.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="the mesh's folder")


def run_up(args: argparse.Namespace) -> int:
    providers = [p.strip() for p in args.providers.split(",") if p.strip()]
    if (args.dir / mesh.LAYOUT).exists():
        layout = mesh.load(args.dir)
        if [n.provider for n in layout.nodes] != providers:
            have = ",".join(n.provider for n in layout.nodes)
            print(
                f"kep-relay: {args.dir} holds a mesh of {have}; use it or another --dir",
                file=sys.stderr,
            )
            return 2
    else:
        layout = mesh.plan(args.dir, providers, args.base_port)
    mesh.write(layout)
    try:
        started = mesh.start(layout)
    except mesh.StartFailed as exc:  # the nodes it had started are stopped again
        print(f"kep-relay: {exc}", file=sys.stderr)
        return 1
    print(f"mesh in {args.dir}: started {len(started)}, {len(layout.nodes)} ready")
    _print_nodes(layout)
    print(f"Prometheus: prometheus --config.file={args.dir / 'prometheus.yml'}")
    print(f"WARNING: {DEV_WARNING}")
    return 0


def _print_nodes(layout: mesh.Mesh) -> bool:
    all_ready = True
    print(f"{'provider':<9}{'pid':>8}  {'state':<8} peer / submission / metrics")
    for node in layout.nodes:
        pid = mesh.running_pid(layout, node.provider)
        state = "stopped" if pid is None else ("ready" if mesh.ready(node) else "starting")
        all_ready &= state == "ready"
        print(
            f"{node.provider:<9}{pid or '-':>8}  {state:<8} 127.0.0.1:{node.peer_port} / "
            f"127.0.0.1:{node.submission_port} / http://127.0.0.1:{node.monitoring_port}/metrics"
        )
    return all_ready


def run_status(args: argparse.Namespace) -> int:
    return 0 if _print_nodes(mesh.load(args.dir)) else 1


def run_traffic(args: argparse.Namespace) -> int:
    layout = mesh.load(args.dir)
    pki = read_pki(args.dir / "pki")
    began = time.monotonic()
    try:
        sent = mesh.send_all(layout, pki)
    except (OSError, smtplib.SMTPException) as exc:
        print(f"kep-relay: a gateway did not take a message: {exc}", file=sys.stderr)
        return 1
    print(f"submitted {len(sent)} signed messages ({len(layout.nodes)} x {len(layout.nodes)})")
    missing = mesh.wait_delivered(layout, sent, args.timeout)
    took = time.monotonic() - began
    if missing:
        for item in missing:
            print(f"no Delivery evidence: {item.sender} -> {item.recipient} ({item.remmd_id})")
        print(f"{len(sent) - len(missing)} of {len(sent)} delivered in {took:.1f} s")
        return 1
    print(f"Delivery evidence for all {len(sent)} back at their senders in {took:.1f} s")
    return 0


def run_down(args: argparse.Namespace) -> int:
    stopped = mesh.stop(mesh.load(args.dir))
    print(f"stopped {len(stopped)}: {', '.join(stopped) or 'none were running'}")
    return 0
