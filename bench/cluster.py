"""Cluster benchmark: orders through NATS RPC into the distributed topology, event delivery, position sync.

Prints ONE JSON line; progress goes to stderr. Starts a local cluster (`tradesim.cluster.local`: a private
nats-server, a fresh PostgreSQL database, venue 1, OMS 3, accounts 1, risk 2 as `tradesim run --role`
processes; no agents, limits raised so only the machine limits the rate) and measures:
  * orders: `--lanes` closed-loop `NatsClient`s (next order once the previous is answered) send `--orders`
    orders, half crossing IOC buys that trade against a resting sell, half passive buys that rest:
    orders/s and the latency a client sees from `rpc.oms.submit` to the answer (the venue journals on
    PostgreSQL before it answers), p50/p99 in ms;
  * event delivery: every trade print (`trades.executed`) as a JetStream consumer receives it, from the
    server's store time (the venue's publish) to the subscriber — and, for reference, from the venue's
    command timestamp (journal commit, matching and publishing included) to a plain subscriber;
  * position sync (`--sync-trials`): one trade at a time, the time from the venue's command timestamp
    until every position tracker (accounts and both risk monitors, each asked on its own /readyz) has
    applied it.
Targets (issue 7): order latency p99 < 2 ms, event delivery p99 < 1 ms, sync < 20 ms (seed: 10/5/100 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from typing import Any

import httpx
import nats
from nats.js.api import DeliverPolicy

from tradesim.bus import Bus, Delivery, open_bus, subjects
from tradesim.client.nats import AsyncNatsClient
from tradesim.cluster.local import QUIET_CONFIG, LocalCluster, Proc, scratch_database
from tradesim.domain import TimeInForce
from tradesim.services.oms.rpc import RetryPolicy
from tradesim.services.venue.messages import TradePrint

SYMBOL = "AAPL.SIM"
PRICE = 19_000  # 190.00 in ticks
PASSIVE = 18_500  # 185.00: rests, never trades
POLICY = RetryPolicy(timeout=5.0, deadline=30.0)


def progress(message: str) -> None:
    print(f"bench/cluster: {message}", file=sys.stderr, flush=True)


def config_text(lanes: int) -> str:
    """The quiet demo venue with bench accounts and limits no client of the bench reaches."""
    accounts = "".join(f'\n[[accounts]]\nid = "t{n}"\ncash = "100000000"\nkind = "margin"\ncurrency = "USD"\n'
                       for n in range(lanes))
    return QUIET_CONFIG + accounts + """
[[accounts]]
id = "maker"
cash = "10000000000"
kind = "margin"
currency = "USD"

[risk.defaults]
max_order_qty = 100_000
max_order_notional = 1_000_000_000
position_limit = 100_000_000
max_open_orders = 1_000_000
max_order_rate = 1_000_000
rate_window_ms = 1_000
loss_limit = 1_000_000_000

[compliance]
default_packs = []
"""


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return round(s[min(len(s) - 1, int(q * len(s)))], 3) if s else 0.0


class Deliveries:
    """Trade prints as two subscribers see them: a JetStream consumer (server store time → arrival) and a
    plain subscriber (venue command ts → arrival), both in ms."""

    def __init__(self) -> None:
        self.stream_ms: list[float] = []
        self.command_ms: list[float] = []
        self.recording = False

    async def on_stream(self, msg: Any) -> None:
        now = time.time()
        if self.recording:
            self.stream_ms.append((now - msg.metadata.timestamp.timestamp()) * 1000)

    async def on_print(self, d: Delivery) -> None:
        now = time.time_ns()
        if self.recording and isinstance(d.data, TradePrint):
            self.command_ms.append((now - d.data.ts) / 1e6)


async def order_flow(bus: Bus, lanes: int, orders: int) -> tuple[float, list[float]]:
    """`orders` orders over `lanes` closed-loop clients; returns (elapsed s, latencies ms)."""
    latencies: list[float] = []
    per_lane = orders // lanes

    async def lane(n: int) -> None:
        client = AsyncNatsClient(bus, f"t{n}", policy=POLICY)
        for i in range(per_lane):
            crossing = i % 2 == 0
            t0 = time.perf_counter()
            await client.buy(SYMBOL, 1, PRICE if crossing else PASSIVE,
                             tif=TimeInForce.IOC if crossing else TimeInForce.GTC, client_order_id=f"b{n}-{i}")
            latencies.append((time.perf_counter() - t0) * 1000)

    start = time.perf_counter()
    await asyncio.gather(*(lane(n) for n in range(lanes)))
    return time.perf_counter() - start, latencies


async def position_sync(bus: Bus, trackers: list[Proc], trials: int) -> list[float]:
    """Per trade: ms from the venue's command ts until every tracker's /readyz shows it applied."""
    client = AsyncNatsClient(bus, "t0", policy=POLICY)
    out: list[float] = []
    async with httpx.AsyncClient(timeout=5.0) as http:
        async def applied(proc: Proc, seq: int) -> int:
            while True:
                body = (await http.get(f"http://127.0.0.1:{proc.port}/readyz")).json()
                if int(body["detail"].get("last_seq", 0)) >= seq:
                    return time.time_ns()

        for n in range(trials):
            reply = await client.buy(SYMBOL, 1, PRICE, tif=TimeInForce.IOC, client_order_id=f"sync-{n}")
            trade = reply.trades[0]
            reached = await asyncio.gather(*(applied(p, trade.seq) for p in trackers))
            out.append((max(reached) - trade.ts) / 1e6)
            await asyncio.sleep(0.05)
    return out


async def run(orders: int, lanes: int, sync_trials: int, db_server: str) -> dict[str, Any]:
    async with scratch_database(db_server, "tradesim_bench_cluster") as db:
        return await _run(orders, lanes, sync_trials, db)


async def _run(orders: int, lanes: int, sync_trials: int, db: str) -> dict[str, Any]:
    topology = {"venue": 1, "oms": 3, "accounts": 1, "risk": 2}
    with tempfile.TemporaryDirectory(prefix="tradesim-bench-cluster-") as tmp:
        config = os.path.join(tmp, "bench.toml")
        with open(config, "w") as f:
            f.write(config_text(lanes))
        cluster = LocalCluster.create(os.path.join(tmp, "cluster"), db=db, config=config, api_port=None,
                                      progress=progress)
        try:
            await cluster.up(topology, timeout=180)
            bus = await open_bus(cluster.nats_url)
            nc = await nats.connect(cluster.nats_url)
            deliveries = Deliveries()
            try:
                maker = AsyncNatsClient(bus, "maker", policy=POLICY)
                for n in range(5):
                    await maker.sell(SYMBOL, 100_000, PRICE, tif=TimeInForce.GTC, client_order_id=f"liquidity-{n}")
                js_sub = await nc.jetstream().subscribe(subjects.TRADES_EXECUTED, cb=deliveries.on_stream,
                                                        ordered_consumer=True, deliver_policy=DeliverPolicy.NEW)
                plain = await bus.subscribe(subjects.TRADES_EXECUTED, deliveries.on_print)
                warm = max(lanes * 20, orders // 10)
                progress(f"warm-up: {warm} orders")
                await order_flow(bus, lanes, warm)
                deliveries.recording = True
                progress(f"measuring: {orders} orders over {lanes} clients")
                elapsed, latencies = await order_flow(bus, lanes, orders)
                for _ in range(60):  # the last prints in flight to both subscribers
                    await asyncio.sleep(0.05)
                    if len(deliveries.stream_ms) >= len(deliveries.command_ms) >= orders // 2:
                        break
                deliveries.recording = False
                trackers = [*cluster.state.instances("accounts"), *cluster.state.instances("risk")]
                progress(f"position sync: {sync_trials} trades, {len(trackers)} trackers")
                sync = await position_sync(bus, trackers, sync_trials)
                await plain.unsubscribe()
                await js_sub.unsubscribe()
            finally:
                await nc.close()
                await bus.close()
        finally:
            await cluster.down()
    done = len(latencies)
    return {
        "bench": "cluster",
        "topology": topology,
        "orders": done,
        "clients": lanes,
        "orders_per_s": round(done / elapsed, 1),
        "order_p50_ms": pct(latencies, 0.50),
        "order_p99_ms": pct(latencies, 0.99),
        "trades_delivered": len(deliveries.stream_ms),
        "event_delivery_p50_ms": pct(deliveries.stream_ms, 0.50),
        "event_delivery_p99_ms": pct(deliveries.stream_ms, 0.99),
        "venue_command_to_subscriber_p50_ms": pct(deliveries.command_ms, 0.50),
        "venue_command_to_subscriber_p99_ms": pct(deliveries.command_ms, 0.99),
        "position_sync_trials": len(sync),
        "position_sync_median_ms": pct(sync, 0.50),
        "position_sync_max_ms": round(max(sync), 3) if sync else 0.0,
        "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--orders", type=int, default=4_000, help="orders measured (after a warm-up)")
    parser.add_argument("--lanes", type=int, default=8, help="concurrent closed-loop clients")
    parser.add_argument("--sync-trials", type=int, default=20, help="trades timed until every tracker has them")
    parser.add_argument("--db", default="postgresql://127.0.0.1:5432/postgres",
                        help="PostgreSQL server (a fresh database is created on it and dropped afterwards)")
    args = parser.parse_args(argv)
    if args.lanes < 1 or args.orders < args.lanes or args.sync_trials < 1:
        parser.error("need --lanes >= 1, --orders >= --lanes and --sync-trials >= 1")
    print(json.dumps(asyncio.run(run(args.orders, args.lanes, args.sync_trials, args.db))), flush=True)


if __name__ == "__main__":
    main()
