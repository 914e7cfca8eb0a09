"""Failover benchmark: how long the OMS is unavailable when its leader crashes, and when it hands over cleanly.

Prints ONE JSON line; progress goes to stderr. Starts a local cluster (`tradesim.cluster.local`: a private
nats-server, a fresh PostgreSQL database, the venue and three OMS instances as `tradesim run --role`
processes, the quiet demo config) and, with a trade flowing before each trial:
  * crash (`--trials`, default 10): SIGKILL the leader; time until the first order answered through a
    `NatsClient` (retrying as clients do), and until a new leader holds the election key;
  * clean (`--clean-trials`, default 5): SIGTERM the leader; the hand-over on the election key (the old
    leader's release → the new leader's create, as one watcher saw them) and the time to the first order.
The killed instance is started again (same instance id) before the next trial, so three always contend.
Targets (issue 7): crash failover median < 1 s (seed: < 2 s), clean hand-over < 100 ms.

`--venue` (issue 8) benchmarks the venue instead: two venue instances (a leader and a warm standby on the
JetStream journal) and one OMS. Crash trials: SIGKILL the active venue; time until the first order through
a `NatsClient` is FILLED again (`venue_crash_first_order_s`) and until the standby holds the election key.
Before each trial the restarted instance must be LIVE on its own registry entry (a warm standby again).
Then the standby's replication lag while `--rate` orders/s (default 5,000) go straight into `rpc.venue.submit`
for `--seconds` (default 10), offered open-loop by `--drivers` separate processes (default 3; the rate
reached is reported as measured, `orders_per_s`): an in-process `VenueStandby` (the standby's own code,
alone on this process's loop) samples, per record, stored in the stream -> applied (`standby_lag_ms`) and
the venue's command timestamp -> applied (`command_to_standby_ms`). At the end the leader, the venue's
standby instance and the in-process standby are compared at ONE seq (the leader's final one): seq and
state hash. `--keep DIR` keeps the cluster directory (every instance's log). Targets (issue 8): failover
median < 1 s, max < 2 s; lag p99 < 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from tradesim.bus import Bus, open_bus
from tradesim.client.nats import AsyncNatsClient
from tradesim.cluster.local import LeaderLog, LocalCluster, scratch_database, write_quiet_config
from tradesim.domain import Event, NewOrder, OrderStatus, OrderType, Side, TimeInForce
from tradesim.services.config import load_config
from tradesim.services.oms.rpc import RetryPolicy
from tradesim.services.venue import RPC_SUBMIT
from tradesim.services.venue.standby import VenueStandby
from tradesim.store import JetStreamJournal
from tradesim.store.journal import JournalRecord

SYMBOL = "AAPL.SIM"
PRICE = 19_000  # 190.00 in ticks
PROBE = RetryPolicy(timeout=0.5, deadline=30.0, backoff=0.005, max_backoff=0.05)


def progress(message: str) -> None:
    print(f"bench/failover: {message}", file=sys.stderr, flush=True)


def summary(samples: list[float], scale: float = 1.0, digits: int = 3) -> dict[str, float]:
    if not samples:
        return {}
    return {"min": round(min(samples) * scale, digits), "median": round(statistics.median(samples) * scale, digits),
            "max": round(max(samples) * scale, digits)}


async def first_order_after(alice: AsyncNatsClient, n: int) -> float:
    """Send orders until one is FILLED (one in flight at a venue crash may come back pending); returns the
    monotonic time of that answer."""
    for k in range(1000):
        reply = await alice.buy(SYMBOL, 1, PRICE, tif=TimeInForce.IOC, client_order_id=f"probe-{n}-{k}")
        if reply.order.status is OrderStatus.FILLED:
            break
    return time.monotonic()


async def trial(cluster: LocalCluster, bus: Bus, alice: AsyncNatsClient, n: int, sig: signal.Signals,
                role: str = "oms", election: str = "oms") -> tuple[float, float, float | None]:
    """One failover: (first order answered, new leader on the key, hand-over gap) in s after the signal."""
    async with LeaderLog(bus, election) as leaders:
        leader = await leaders.wait_leader()
        await alice.buy(SYMBOL, 1, PRICE, tif=TimeInForce.IOC, client_order_id=f"warm-{n}")  # leader serving
        t0 = time.monotonic()
        victim = await cluster.kill(role, instance=leader.instance_id, sig=sig)
        served = await first_order_after(alice, n)
        new = await leaders.wait_leader(other_than=victim.name, after=t0, timeout=30)
        handover = leaders.handover(victim.name)
    for _ in range(200):  # reap before restarting it under the same id
        if not cluster.running(victim):
            break
        await asyncio.sleep(0.05)
    again = cluster.spawn(role, instance_id=victim.name)
    await cluster.wait_live([again], timeout=60)
    return served - t0, new.at - t0, handover


async def run(trials: int, clean_trials: int, db_server: str) -> dict[str, Any]:
    async with scratch_database(db_server, "tradesim_bench_failover") as db:
        return await _run(trials, clean_trials, db)


@contextlib.asynccontextmanager
async def seeded_cluster(tmp: str, db: str, topology: dict[str, int]) -> AsyncIterator[
        tuple[LocalCluster, Bus, AsyncNatsClient]]:
    """A local cluster of `topology` under `tmp`, a bus to it, and alice's client, with mm1's liquidity
    resting; the cluster goes down on exit."""
    config = write_quiet_config(os.path.join(tmp, "quiet.toml"))
    cluster = LocalCluster.create(os.path.join(tmp, "cluster"), db=db, config=config, api_port=None,
                                  progress=progress)
    try:
        await cluster.up(topology, timeout=180)
        bus = await open_bus(cluster.nats_url)
        try:
            mm1 = AsyncNatsClient(bus, "mm1", policy=PROBE)
            await mm1.sell(SYMBOL, 10_000, PRICE, tif=TimeInForce.GTC, client_order_id="liquidity")
            yield cluster, bus, AsyncNatsClient(bus, "alice", policy=PROBE)
        finally:
            await bus.close()
    finally:
        await cluster.down()


async def _run(trials: int, clean_trials: int, db: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tradesim-bench-failover-") as tmp:
        async with seeded_cluster(tmp, db, {"venue": 1, "oms": 3}) as (cluster, bus, alice):
            crash: list[tuple[float, float, float | None]] = []
            for n in range(trials):
                crash.append(await trial(cluster, bus, alice, n, signal.SIGKILL))
                progress(f"crash {n + 1}/{trials}: order served after {crash[-1][0] * 1000:.0f} ms, "
                         f"leader elected after {crash[-1][1] * 1000:.0f} ms")
            clean: list[tuple[float, float, float | None]] = []
            for n in range(clean_trials):
                clean.append(await trial(cluster, bus, alice, trials + n, signal.SIGTERM))
                gap = clean[-1][2]
                progress(f"clean {n + 1}/{clean_trials}: hand-over {gap * 1000 if gap else float('nan'):.1f} ms, "
                         f"order served after {clean[-1][0] * 1000:.0f} ms")
    return {
        "bench": "failover",
        "trials": trials,
        "clean_trials": clean_trials,
        "oms_instances": 3,
        "election_ttl_s": 1.0,
        "crash_first_order_s": summary([c[0] for c in crash]),
        "crash_new_leader_s": summary([c[1] for c in crash]),
        "clean_handover_ms": summary([c[2] for c in clean if c[2] is not None], 1000.0, 1),
        "clean_first_order_s": summary([c[0] for c in clean]),
        "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def percentiles(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {}
    ordered = sorted(samples)
    return {"p50": round(ordered[len(ordered) // 2], 3), "p99": round(ordered[min(len(ordered) - 1,
                                                                                 int(len(ordered) * 0.99))], 3),
            "max": round(ordered[-1], 3), "samples": len(ordered)}


async def drive(bus: Bus, rate: float, seconds: float, prefix: str = "lag-") -> tuple[int, int, list[float]]:
    """Open-loop orders at `rate`/s for `seconds` into rpc.venue.submit (buys and sells of 1 at one price,
    from two accounts: every second one trades, the book stays small). Returns (answered, failed, the
    answered requests' latencies in ms)."""
    answered = failed = 0
    latencies: list[float] = []
    tick = 0.01
    per_tick = rate * tick
    running: set[asyncio.Task[None]] = set()

    async def one(n: int) -> None:
        nonlocal answered, failed
        side = Side.BUY if n % 2 else Side.SELL
        order = NewOrder(account="alice" if side is Side.BUY else "bob", client_order_id=f"{prefix}{n}",
                         symbol=SYMBOL, side=side, type=OrderType.LIMIT, tif=TimeInForce.GTC, price=PRICE - 100, qty=1)
        sent = time.monotonic()
        try:
            await bus.request(RPC_SUBMIT, order, timeout=10.0)
        except Exception:
            failed += 1
            return
        answered += 1
        latencies.append((time.monotonic() - sent) * 1000)

    start = time.monotonic()
    n = 0
    while (now := time.monotonic()) - start < seconds:
        due = (now - start) * rate + per_tick
        while n < int(due):
            task = asyncio.create_task(one(n))
            running.add(task)
            task.add_done_callback(running.discard)
            n += 1
        await asyncio.sleep(max(0.0, now + tick - time.monotonic()))
    await asyncio.gather(*running)
    return answered, failed, latencies


async def _drive_from(url: str, rate: float, seconds: float, prefix: str, start_at: float) -> tuple[
        int, int, list[float]]:
    bus = await open_bus(url)
    try:
        await asyncio.sleep(max(0.0, start_at - time.time()))
        return await drive(bus, rate, seconds, prefix)
    finally:
        await bus.close()


def drive_process(url: str, rate: float, seconds: float, prefix: str, start_at: float) -> tuple[
        int, int, list[float]]:
    """One driver process (its own interpreter and NATS connection): `drive` from wall time `start_at`."""
    return asyncio.run(_drive_from(url, rate, seconds, prefix, start_at))


async def measure_lag(cluster: LocalCluster, bus: Bus, rate: float, seconds: float, drivers: int) -> dict[str, Any]:
    """The standby's replication lag under `rate` orders/s (see the module docstring).

    The load comes from `drivers` separate processes (rate/drivers each): one Python loop cannot offer
    5,000 requests/s and answer-time them too, and sharing this process's loop would delay the measuring
    standby itself. After the load, the leader, the venue's own standby instance and the in-process
    standby are compared at ONE seq: the leader's final one (its registry entry, once it stopped moving)."""
    journal = await JetStreamJournal.open(cluster.nats_url, shard="main", create=False)
    lag: list[float] = []
    since_command: list[float] = []
    standby: VenueStandby | None = None

    def on_apply(record: JournalRecord, events: list[Event]) -> None:
        assert standby is not None
        lag.append(standby.lag.delay_ms)
        since_command.append((time.time_ns() - record.ts) / 1e6)

    standby = VenueStandby(journal, on_apply=on_apply)
    try:
        await standby.start()
        await standby.catch_up()  # start() follows in the background: the trials' records are not load
        lag.clear()
        since_command.clear()
        loop = asyncio.get_running_loop()
        start_at = time.time() + 3.0  # the driver processes start their interpreters meanwhile
        with ProcessPoolExecutor(drivers, mp_context=multiprocessing.get_context("spawn")) as pool:
            runs = [loop.run_in_executor(pool, drive_process, cluster.nats_url, rate / drivers, seconds,
                                         f"lag-{k}-", start_at) for k in range(drivers)]
            results = await asyncio.gather(*runs)
        drain = max(0.0, time.time() - (start_at + seconds))  # the last answers after the load stopped
        answered = sum(r[0] for r in results)
        failed = sum(r[1] for r in results)
        latencies = [x for r in results for x in r[2]]
        same = await compare_at_one_seq(cluster, bus, standby)
        return {"drivers": drivers, "orders": answered, "failed": failed,
                # served: answered over the time until the last answer (the venue's real throughput)
                "orders_per_s": round(answered / (seconds + drain), 1), "drain_s": round(drain, 2),
                "request_ms": percentiles(latencies), "standby_lag_ms": percentiles(lag),
                "command_to_standby_ms": percentiles(since_command), **same}
    finally:
        await standby.stop()
        await journal.close()


async def compare_at_one_seq(cluster: LocalCluster, bus: Bus, standby: VenueStandby) -> dict[str, Any]:
    """The leader's journal seq and state hash once it stopped moving (registry), against the venue's standby
    instance and the in-process standby at that same seq."""
    from tradesim.cluster.registry import list_instances

    leader = await cluster.active_instance("venue")
    deadline = time.monotonic() + 30
    previous: tuple[Any, Any] | None = None
    rows: dict[str, Any] = {}
    while time.monotonic() < deadline:
        rows = {r.info.instance_id: r.info.metrics for r in await list_instances(bus)}
        now = (rows[leader.name].get("seq"), rows[leader.name].get("state_hash"))
        peers = [m for name, m in rows.items() if name != leader.name and m.get("service") == "venue"]
        if now == previous and all(m.get("seq") == now[0] for m in peers):
            break
        previous = now
        await asyncio.sleep(1.5)  # registry entries refresh at heartbeats
    seq, leader_hash = rows[leader.name].get("seq"), rows[leader.name].get("state_hash")
    await standby.catch_up()
    others = {name: m for name, m in rows.items() if name != leader.name and m.get("service") == "venue"}
    return {"compared_at_seq": seq,
            "bench_standby_equals_leader": standby.last_seq == seq
            and standby.engine.state_hash()[:16] == leader_hash,
            "standby_instances_equal_leader": bool(others) and all(
                m.get("seq") == seq and m.get("state_hash") == leader_hash for m in others.values())}


async def run_venue(trials: int, rate: float, seconds: float, db_server: str, keep: str | None = None,
                    drivers: int = 3) -> dict[str, Any]:
    async with scratch_database(db_server, "tradesim_bench_failover") as db:
        return await _run_venue(trials, rate, seconds, db, keep, drivers)


async def _run_venue(trials: int, rate: float, seconds: float, db: str, keep: str | None,
                     drivers: int) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        tmp = keep or stack.enter_context(tempfile.TemporaryDirectory(prefix="tradesim-bench-failover-"))
        async with seeded_cluster(tmp, db, {"venue": 2, "oms": 1}) as (cluster, bus, alice):
            crash: list[tuple[float, float, float | None]] = []
            for n in range(trials):
                crash.append(await trial(cluster, bus, alice, n, signal.SIGKILL, "venue", "venue.main"))
                progress(f"venue crash {n + 1}/{trials}: order filled after {crash[-1][0] * 1000:.0f} ms, "
                         f"standby elected after {crash[-1][1] * 1000:.0f} ms")
            progress(f"replication lag at {rate:.0f} orders/s for {seconds:.0f} s")
            lag = await measure_lag(cluster, bus, rate, seconds, drivers)
    return {
        "bench": "failover-venue",
        "trials": trials,
        "venue_instances": 2,
        "venue_ttl_s": load_config(None).settings.venue_ttl,
        "venue_crash_first_order_s": summary([c[0] for c in crash]),
        "venue_crash_new_leader_s": summary([c[1] for c in crash]),
        "lag_rate": rate,
        "lag_seconds": seconds,
        **lag,
        "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--trials", type=int, default=10, help="crash trials (SIGKILL of the leader)")
    parser.add_argument("--clean-trials", type=int, default=5, help="clean hand-overs (SIGTERM of the leader)")
    parser.add_argument("--venue", action="store_true",
                        help="benchmark venue failover (2 venue instances) and the standby's replication lag instead")
    parser.add_argument("--rate", type=float, default=5000.0, help="--venue: orders/s for the lag measurement")
    parser.add_argument("--seconds", type=float, default=10.0, help="--venue: how long the lag load runs")
    parser.add_argument("--drivers", type=int, default=3,
                        help="--venue: processes offering the lag load (--rate split evenly over them)")
    parser.add_argument("--keep", metavar="DIR", default=None,
                        help="--venue: run the cluster in DIR and keep it (the instances' logs) instead of a temp dir")
    parser.add_argument("--db", default="postgresql://127.0.0.1:5432/postgres",
                        help="PostgreSQL server (a fresh database is created on it and dropped afterwards)")
    args = parser.parse_args(argv)
    if args.trials < 1 or args.clean_trials < 0 or args.drivers < 1:
        parser.error("--trials and --drivers must be at least 1, --clean-trials not negative")
    if args.venue:
        result = asyncio.run(run_venue(args.trials, args.rate, args.seconds, args.db, args.keep,
                                           args.drivers))
    else:
        result = asyncio.run(run(args.trials, args.clean_trials, args.db))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
