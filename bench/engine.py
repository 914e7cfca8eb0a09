"""Matching engine benchmark: throughput and per-op latency, printed as ONE JSON line on stdout.

Workloads are generated up front from `--seed` (not timed), then fed to a fresh engine:
  mixed          55% passive limits within 20 ticks of a slowly random-walking mid, 15% limits
                 crossing the opposite best by 1-5 ticks, 5% market orders, 25% cancels of live
                 orders; quantities 1-100.
  exchange_core  modelled on exchange-core's benchmark: 9% GTC, 3% IOC, 6% cancels, 82% price
                 moves (modify) of live orders, around 1,000 resting orders over ~750 price levels.
Generation runs the commands through a scratch engine so that cancels and modifies name orders
that really are live at that point; the timed run is a second, fresh engine fed the same commands
(the engine is deterministic, so both runs see the same book). Progress goes to stderr.

    python bench/engine.py --workload all --ops 1000000 --seed 1
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import sys
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from tradesim.domain import (
    CancelOrder,
    Command,
    Event,
    Instrument,
    ModifyOrder,
    NewOrder,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderType,
    Side,
    TimeInForce,
    Trade,
)
from tradesim.engine import MatchingEngine

SYMBOL = "BENCH.SIM"
INSTRUMENT = Instrument(symbol=SYMBOL, tick_size=Decimal("0.01"), lot_size=1)
WORKLOADS = ("mixed", "exchange_core")
ACCOUNTS = [f"u{i}" for i in range(1000)]  # many participants: self-trades are rare, as in exchange-core
PROGRESS_EVERY = 100_000


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class LiveOrders:
    """Open orders of the scratch engine (O(1) add, remove and random pick), learned from its events."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []  # (account, client order id)
        self.index: dict[tuple[str, str], int] = {}
        self.by_id: dict[int, tuple[str, str]] = {}
        self.side: dict[tuple[str, str], Side] = {}

    def __len__(self) -> int:
        return len(self.items)

    def observe(self, events: Sequence[Event]) -> None:
        for e in events:
            if isinstance(e, OrderAccepted):
                key = (e.account, e.client_order_id)
                if e.type is OrderType.LIMIT and e.tif not in (TimeInForce.IOC, TimeInForce.FOK):
                    self.by_id[e.order_id] = key
                    self.side[key] = e.side
                    self.index[key] = len(self.items)
                    self.items.append(key)
            elif isinstance(e, Trade):
                if e.maker_leaves_qty == 0:
                    self._drop(e.maker_order_id)
                if e.taker_leaves_qty == 0:
                    self._drop(e.taker_order_id)
            elif isinstance(e, OrderCanceled | OrderExpired):
                self._drop(e.order_id)

    def _drop(self, order_id: int) -> None:
        key = self.by_id.pop(order_id, None)
        if key is None:
            return
        i = self.index.pop(key)
        last = self.items.pop()
        if i < len(self.items):
            self.items[i] = last
            self.index[last] = i
        del self.side[key]

    def pick(self, rng: random.Random) -> tuple[str, str]:
        return self.items[rng.randrange(len(self.items))]


class Generator:
    """Builds one workload's commands, feeding each to a scratch engine to know what is live."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.engine = MatchingEngine(instruments=[INSTRUMENT])
        self.live = LiveOrders()
        self.commands: list[Command] = []
        self.ts = 0
        self.cid = 0
        self.events = 0
        self.trades = 0

    def add(self, cmd: Command) -> None:
        events = self.engine.apply(cmd)
        self.events += len(events)
        self.trades += sum(1 for e in events if isinstance(e, Trade))
        self.live.observe(events)
        self.commands.append(cmd)

    def next_ts(self) -> int:
        self.ts += 1_000
        return self.ts

    def new(self, side: Side, otype: OrderType, tif: TimeInForce, price: int | None) -> NewOrder:
        self.cid += 1
        return NewOrder(account=self.rng.choice(ACCOUNTS), client_order_id=str(self.cid), symbol=SYMBOL,
                        side=side, type=otype, tif=tif, price=price, qty=self.rng.randint(1, 100),
                        ts=self.next_ts())

    def cancel(self) -> CancelOrder:
        account, cid = self.live.pick(self.rng)
        return CancelOrder(account=account, client_order_id=cid, symbol=SYMBOL, ts=self.next_ts())

    def best(self, side: Side) -> int | None:
        book = self.engine.book(SYMBOL)
        return book.best_bid() if side is Side.BUY else book.best_ask()

    def progress(self, name: str, i: int, total: int) -> None:
        if i and i % PROGRESS_EVERY == 0:
            log(f"[{name}] generated {i:,}/{total:,} ops")


def gen_mixed(ops: int, seed: int) -> Generator:
    g = Generator(seed)
    rng = g.rng
    mid = 10_000
    for i in range(ops):
        g.progress("mixed", i, ops)
        if rng.random() < 0.1:
            mid += rng.choice((-1, 1))  # slow random walk
        roll = rng.random()
        side = rng.choice((Side.BUY, Side.SELL))
        if roll < 0.25 and len(g.live):
            g.add(g.cancel())
        elif roll < 0.80:
            offset = rng.randint(1, 20)
            price = mid - offset if side is Side.BUY else mid + offset
            g.add(g.new(side, OrderType.LIMIT, TimeInForce.GTC, price))
        elif roll < 0.95:
            opposite = g.best(side.opposite)
            ref = opposite if opposite is not None else mid
            cross = rng.randint(1, 5) - 1  # at the opposite best (1 tick through) up to 4 beyond it
            price = ref + cross if side is Side.BUY else ref - cross
            g.add(g.new(side, OrderType.LIMIT, TimeInForce.GTC, price))
        else:
            g.add(g.new(side, OrderType.MARKET, TimeInForce.GTC, None))
    return g


EC_TARGET_ORDERS = 1_000
EC_HALF_RANGE = 375  # prices within mid ± 375 ticks: ~750 levels


def gen_exchange_core(ops: int, seed: int) -> Generator:
    """9% GTC, 3% IOC, 6% cancel, 82% move; GTC and cancel slots swap to hold ~1,000 resting orders."""
    g = Generator(seed)
    rng = g.rng
    mid = 100_000

    def passive_price(side: Side) -> int:
        offset = rng.randint(1, EC_HALF_RANGE)
        return mid - offset if side is Side.BUY else mid + offset

    # Fill the book to the target first (part of the workload, as exchange-core's pre-fill).
    while len(g.live) < EC_TARGET_ORDERS:
        side = rng.choice((Side.BUY, Side.SELL))
        g.add(g.new(side, OrderType.LIMIT, TimeInForce.GTC, passive_price(side)))
    for i in range(ops):
        g.progress("exchange_core", i, ops)
        roll = rng.random()
        side = rng.choice((Side.BUY, Side.SELL))
        n = len(g.live)
        if roll < 0.09 and n > EC_TARGET_ORDERS * 1.1:
            g.add(g.cancel())  # too many resting orders: this GTC slot cancels instead
        elif roll < 0.09 or (0.12 <= roll < 0.18 and n < EC_TARGET_ORDERS * 0.9) or n == 0:
            price = passive_price(side) if rng.random() < 0.9 else mid + (5 if side is Side.BUY else -5)
            g.add(g.new(side, OrderType.LIMIT, TimeInForce.GTC, price))
        elif roll < 0.12:
            opposite = g.best(side.opposite)
            ref = opposite if opposite is not None else mid
            price = ref + rng.randint(0, 10) if side is Side.BUY else ref - rng.randint(0, 10)
            g.add(g.new(side, OrderType.LIMIT, TimeInForce.IOC, price))
        elif roll < 0.18:
            g.add(g.cancel())
        else:
            account, cid = g.live.pick(rng)
            own_side = g.live.side[(account, cid)]
            price = passive_price(own_side) if rng.random() < 0.97 else mid + (
                3 if own_side is Side.BUY else -3)  # a few moves cross and trade
            g.add(ModifyOrder(account=account, client_order_id=cid, symbol=SYMBOL, price=price,
                              ts=g.next_ts()))
    return g


def percentile(sorted_ns: list[int], q: float) -> int:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_ns:
        return 0
    return sorted_ns[min(len(sorted_ns) - 1, int(q * len(sorted_ns)))]


def timed_run(name: str, commands: list[Command], sample_every: int) -> dict[str, Any]:
    """Feeds the commands to a fresh engine; times the whole run and every `sample_every`-th op."""
    engine = MatchingEngine(instruments=[INSTRUMENT])
    dispatch: dict[type, Callable[[Any], list[Event]]] = {
        NewOrder: engine.submit, CancelOrder: engine.cancel, ModifyOrder: engine.modify,
    }
    ops = [(dispatch[type(c)], c) for c in commands]
    n = len(ops)
    samples: list[int] = []
    events = 0
    ns = time.perf_counter_ns
    chunk = max(sample_every, PROGRESS_EVERY - PROGRESS_EVERY % sample_every)
    # The pre-built workload is not the engine's garbage: keep the collector from walking it.
    gc.collect()
    gc.freeze()
    t0 = time.perf_counter()
    for start in range(0, n, chunk):
        for base in range(start, min(start + chunk, n), sample_every):
            fn, cmd = ops[base]
            t = ns()
            out = fn(cmd)
            samples.append(ns() - t)
            events += len(out)
            for fn, cmd in ops[base + 1 : min(base + sample_every, n)]:
                events += len(fn(cmd))
        done = min(start + chunk, n)
        log(f"[{name}] ran {done:,}/{n:,} ops, {done / (time.perf_counter() - t0):,.0f} ops/s")
    seconds = time.perf_counter() - t0
    gc.unfreeze()
    samples.sort()
    bids, asks = engine.book(SYMBOL).depth(1_000_000)
    return {
        "ops": n,
        "seconds": round(seconds, 4),
        "ops_per_sec": round(n / seconds) if seconds > 0 else 0,
        "latency_ns": {"p50": percentile(samples, 0.5), "p99": percentile(samples, 0.99),
                       "p99.9": percentile(samples, 0.999), "max": samples[-1] if samples else 0},
        "latency_samples": len(samples),
        "latency_sample_every": sample_every,
        "events": events,
        "resting_orders": sum(c for _, _, c in bids) + sum(c for _, _, c in asks),
        "price_levels": len(bids) + len(asks),
    }


def bench(name: str, ops: int, seed: int, sample_every: int) -> dict[str, Any]:
    log(f"[{name}] generating {ops:,} ops (seed {seed}, not timed)")
    g = gen_mixed(ops, seed) if name == "mixed" else gen_exchange_core(ops, seed)
    g.engine = MatchingEngine()  # drop the scratch engine's orders before the timed run
    g.live = LiveOrders()
    figures = timed_run(name, g.commands, sample_every)
    if figures["events"] != g.events:
        raise SystemExit(f"{name}: timed run gave {figures['events']} events, generation {g.events}: "
                         "the engine is not deterministic")
    figures["trades"] = g.trades  # same commands, same deterministic engine: same trades
    figures["prefill_ops"] = len(g.commands) - ops
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=(*WORKLOADS, "all"), default="mixed")
    parser.add_argument("--ops", type=int, default=1_000_000, help="operations per workload")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--sample-every", type=int, default=16,
                        help="time one op in this many for the latency figures")
    args = parser.parse_args(argv)
    if args.ops < 1 or args.sample_every < 1:
        parser.error("--ops and --sample-every must be positive")
    names = WORKLOADS if args.workload == "all" else (args.workload,)
    results = {name: bench(name, args.ops, args.seed, args.sample_every) for name in names}
    # Tail latencies on a shared machine mostly measure the neighbours: say how busy it was.
    print(json.dumps({"bench": "engine", "workload": args.workload, "seed": args.seed,
                      "python": platform.python_version(), "cpus": os.cpu_count(),
                      "loadavg_1m": round(os.getloadavg()[0], 2), "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
