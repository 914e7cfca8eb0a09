"""`tradesim cluster`: `status` lists the service registry; `up`, `down` and `kill` drive a local cluster.

The local-cluster actions are thin: the work is in `tradesim.cluster.local.LocalCluster`, which tests
and benchmarks use directly.
"""

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
    parser = sub.add_parser("cluster", help="inspect the distributed deployment; run a local cluster",
                            description="Inspect the services of a distributed deployment, or start, stop "
                                        "and break a local one (one process per service instance).")
    actions = parser.add_subparsers(dest="cluster_command", required=True, metavar="ACTION")
    status = actions.add_parser(
        "status", help="list registered service instances",
        description="List every instance in the service registry with its role, state, heartbeat age "
                    "and metrics. Exit 3 if the bus cannot be reached.")
    status.add_argument("--bus", default=None,
                        help=f"bus URL (default $TRADESIM_BUS, else the NATS of the local cluster in --dir, "
                             f"else {DEFAULT_BUS})")
    status.add_argument("--dir", default=None,
                        help="a local cluster's directory, to find its bus (default ./cluster if it has one)")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.add_argument("--service", help="only this service")
    status.add_argument("--stale-after", type=float, default=None, metavar="S",
                        help="heartbeat age (s) after which an instance is STALE (default 3)")
    status.add_argument("--dead-after", type=float, default=None, metavar="S",
                        help="heartbeat age (s) after which an instance is DEAD (default 15)")
    status.set_defaults(handler=run_status)
    _register_local(actions)


def run_status(args: argparse.Namespace) -> int:
    url = args.bus or os.environ.get("TRADESIM_BUS") or _local_bus(args.dir) or DEFAULT_BUS
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



# -- local cluster: up, down, kill --------------------------------------------------------------------


def _local_bus(directory: str | None) -> str | None:
    """The NATS URL of the local cluster in `directory` (or ./cluster), if there is one."""
    from tradesim.cluster.local import DEFAULT_DIR, ClusterError, LocalCluster

    try:
        return LocalCluster.load(directory or DEFAULT_DIR).nats_url
    except ClusterError:
        if directory is not None:
            raise CliError(f"no local cluster in {directory} (no cluster.json)") from None
        return None


def _register_local(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from tradesim.cluster.local import DEFAULT_API_PORT, DEFAULT_DB, DEFAULT_DIR, DEFAULT_NATS, ROLES, SIGNALS

    up = actions.add_parser(
        "up", help="start a local cluster: one process per service instance",
        description="Start seed 01's topology (venue 1, oms 3, accounts 1, risk 2, marketdata 2, algos 3, "
                    "api 1) as detached `tradesim run --role` processes; return once every instance is "
                    "registered and LIVE. State, logs and data go under --dir.")
    nats = up.add_mutually_exclusive_group()
    nats.add_argument("--nats", metavar="URL", help=f"an existing NATS server with JetStream (default {DEFAULT_NATS})")
    nats.add_argument("--start-nats", action="store_true",
                      help="start a private nats-server -js on a free port, its store under --dir")
    up.add_argument("--db", default=DEFAULT_DB, help=f"PostgreSQL URL, created if missing (default {DEFAULT_DB})")
    up.add_argument("--config", help="TOML configuration file for every instance (default: the demo venue)")
    up.add_argument("--dir", default=DEFAULT_DIR, help=f"state, logs and data directory (default {DEFAULT_DIR})")
    up.add_argument("--api-port", type=int, default=DEFAULT_API_PORT,
                    help=f"HTTP port of the api instance (default {DEFAULT_API_PORT})")
    up.add_argument("--topology", metavar="ROLE=N,...",
                    help=f"instance counts over the default (0 drops a role); roles: {', '.join(ROLES)}")
    up.add_argument("--agents", action="store_true", help="also run one agents instance (market makers, noise)")
    up.add_argument("--signals", action="store_true", help="also run one signals instance (webhook decisions)")
    up.add_argument("--shards", type=int, default=1, metavar="N",
                    help="split the instruments over N venue shards, each with --topology's venue count of "
                         "instances (one leader, the rest warm standbys); default 1")
    up.add_argument("--timeout", type=float, default=180.0,
                    help="seconds to wait for every instance to be LIVE (default 180)")
    up.set_defaults(handler=run_up)

    down = actions.add_parser(
        "down", help="stop the local cluster",
        description="SIGTERM every instance (order sources first, the venue last, nats-server after all), "
                    "wait, SIGKILL the stragglers, and report.")
    down.add_argument("--dir", default=DEFAULT_DIR, help=f"the cluster's directory (default {DEFAULT_DIR})")
    down.add_argument("--grace", type=float, default=10.0,
                      help="seconds to wait after SIGTERM before SIGKILL (default 10)")
    down.set_defaults(handler=run_down)

    kill = actions.add_parser(
        "kill", help="signal one instance of a role (fault drills)",
        description="Send a signal to one instance of ROLE and print which: with --active the one the registry "
                    "lists as ACTIVE, with --instance the named one, else the first that can take the signal. "
                    "ROLE 'nats' is the cluster's nats-server.")
    kill.add_argument("role", metavar="ROLE", help=f"one of {', '.join(ROLES)}, or nats")
    kill.add_argument("--active", action="store_true", help="the instance the registry lists as ACTIVE")
    kill.add_argument("--instance", metavar="ID", help="this instance id (e.g. oms-2)")
    kill.add_argument("--signal", default="KILL", type=str.upper, choices=sorted(SIGNALS),
                      help="the signal (default KILL)")
    kill.add_argument("--shard", metavar="NAME", help="with venue --active: the leader of this venue shard (s1, ...)")
    kill.add_argument("--dir", default=DEFAULT_DIR, help=f"the cluster's directory (default {DEFAULT_DIR})")
    kill.set_defaults(handler=run_kill)


def _say(message: str) -> None:
    print(f"tradesim: {message}", file=sys.stderr, flush=True)


def run_up(args: argparse.Namespace) -> int:
    from tradesim.cluster.local import DEFAULT_NATS, ClusterError, LocalCluster, parse_topology

    try:
        topology = parse_topology(args.topology)
        if args.agents:
            topology["agents"] = max(1, topology.get("agents", 0))
        if args.signals:
            topology["signals"] = max(1, topology.get("signals", 0))
        nats_url = None if args.start_nats else (args.nats or DEFAULT_NATS)
        cluster = LocalCluster.create(args.dir, nats_url=nats_url, db=args.db, config=args.config,
                                      api_port=args.api_port if topology.get("api") else None, progress=_say)
        if args.shards < 1:
            raise ClusterError(f"--shards must be at least 1, got {args.shards}")
        state = asyncio.run(cluster.up(topology, timeout=args.timeout, shards=args.shards))
    except ClusterError as exc:
        raise CliError(str(exc)) from exc
    width = max(len(p.name) for p in state.processes)
    print(f"nats   {state.nats_url}")
    print(f"db     {state.db}")
    if state.api_url:
        print(f"api    {state.api_url}")
    print(f"state  {cluster.state_path}")
    for p in state.processes:
        print(f"  {p.name.ljust(width)}  pid {p.pid:<7}  port {p.port:<5}  log {p.log}")
    print(f"next: tradesim cluster status --dir {args.dir}; tradesim cluster down --dir {args.dir}")
    return 0


def run_down(args: argparse.Namespace) -> int:
    from tradesim.cluster.local import ClusterError, LocalCluster

    if args.grace < 0:
        raise CliError(f"--grace must not be negative, got {args.grace}")
    try:
        cluster = LocalCluster.load(args.dir, stop_grace=args.grace)
    except ClusterError as exc:
        raise CliError(str(exc)) from exc
    reports = asyncio.run(cluster.down())
    for r in reports:
        took = f" after {r.seconds:.1f}s" if r.outcome in ("stopped", "killed") else ""
        print(f"{r.name:<14} pid {r.pid:<7} {r.outcome}{took}")
    stuck = [r.name for r in reports if r.outcome == "did not die"]
    if stuck:
        raise CliError(f"still running after SIGKILL: {', '.join(stuck)}", code=1)
    return 0


def run_kill(args: argparse.Namespace) -> int:
    from tradesim.cluster.local import SIGNALS, ClusterError, LocalCluster

    try:
        cluster = LocalCluster.load(args.dir)
        if args.shard is not None and (args.role != "venue" or not args.active):
            raise ClusterError("--shard picks the ACTIVE instance of a venue shard: use it with venue --active")
        proc = asyncio.run(cluster.kill(args.role, active=args.active, sig=SIGNALS[args.signal],
                                        instance=args.instance,
                                        service=f"venue-{args.shard}" if args.shard is not None else None))
    except ClusterError as exc:
        raise CliError(str(exc)) from exc
    print(f"sent SIG{args.signal} to {proc.name} (pid {proc.pid}{', ACTIVE' if args.active else ''})")
    return 0
