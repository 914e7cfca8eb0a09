"""`tradesim cluster status`: list the instances in the service registry, as a table or JSON."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import TYPE_CHECKING, TextIO

import msgspec

from tradesim.cli import CliError

if TYPE_CHECKING:
    from tradesim.cluster.registry import InstanceStatus

DEFAULT_BUS = "nats://127.0.0.1:4222"
EXIT_UNREACHABLE = 3


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("cluster", help="inspect the distributed deployment",
                            description="Inspect the services of a distributed deployment.")
    actions = parser.add_subparsers(dest="cluster_command", required=True, metavar="ACTION")
    status = actions.add_parser(
        "status", help="list registered service instances",
        description="List every instance in the service registry with its role, state, heartbeat age "
                    "and metrics. Exit 3 if the bus cannot be reached.")
    status.add_argument("--bus", default=None,
                        help=f"bus URL (default $TRADESIM_BUS or {DEFAULT_BUS})")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.add_argument("--service", help="only this service")
    status.add_argument("--stale-after", type=float, default=None, metavar="S",
                        help="heartbeat age (s) after which an instance is STALE (default 3)")
    status.add_argument("--dead-after", type=float, default=None, metavar="S",
                        help="heartbeat age (s) after which an instance is DEAD (default 15)")
    status.set_defaults(handler=run_status)


def run_status(args: argparse.Namespace) -> int:
    url = args.bus or os.environ.get("TRADESIM_BUS") or DEFAULT_BUS
    return asyncio.run(status(url, as_json=args.json, service=args.service,
                              stale_after=args.stale_after, dead_after=args.dead_after))


async def status(
    url: str,
    *,
    as_json: bool = False,
    service: str | None = None,
    stale_after: float | None = None,
    dead_after: float | None = None,
    out: TextIO | None = None,
) -> int:
    """Print the registry of the bus at `url`; raises CliError (exit 3) if it cannot be reached."""
    from tradesim.bus import BusConnectionError, BusError, open_bus
    from tradesim.cluster import registry

    out = out or sys.stdout
    try:
        bus = await open_bus(url, timeout=2.0)
    except BusConnectionError as exc:
        raise CliError(f"cannot reach the bus at {url}: {exc}", code=EXIT_UNREACHABLE) from exc
    try:
        rows = await registry.list_instances(
            bus, service=service,
            stale_after=registry.DEFAULT_STALE_AFTER if stale_after is None else stale_after,
            dead_after=registry.DEFAULT_DEAD_AFTER if dead_after is None else dead_after)
    except BusError as exc:
        raise CliError(f"cannot read the service registry on {url}: {exc}", code=EXIT_UNREACHABLE) from exc
    finally:
        await bus.close()
    if as_json:
        out.write(msgspec.json.encode(rows).decode() + "\n")
    else:
        out.write(render_table(rows))
    return 0


def render_table(rows: list[InstanceStatus]) -> str:
    if not rows:
        return "no instances registered\n"
    now = time.time()
    header = ("SERVICE", "INSTANCE", "ROLE", "STATE", "HEALTH", "HEARTBEAT", "UPTIME", "VERSION", "METRICS")
    table = [header]
    for r in rows:
        i = r.info
        metrics = " ".join(f"{k}={_fmt(v)}" for k, v in sorted(i.metrics.items()))
        table.append((i.service, i.instance_id, i.role, i.state.value, r.health.value, f"{r.age:.1f}s ago",
                      _duration(now - i.started), i.version, metrics))
    widths = [max(len(row[c]) for row in table) for c in range(len(header) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
             for row in table]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _fmt(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _duration(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"

