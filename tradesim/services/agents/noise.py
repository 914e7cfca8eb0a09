"""Noise traders: random but seeded order flow that gives the book life and the makers someone to trade with.

Arrivals are a Poisson process: the wait before each action is exponential with mean 1/rate_per_s,
drawn from `random.Random(seed)`. Each arrival sends a market order with probability `market_prob`,
otherwise a limit order `distance` ticks from the reference price (passive side: buys below, sells
above; with probability `aggressive_prob` on the other side, so it may trade), where distance is
`min_distance_ticks` + a geometric draw with mean `mean_distance_ticks`. Sizes are a uniform number
of lots in [min_lots, max_lots]. Orders older than `order_ttl_s` are cancelled at the next arrival.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random

import msgspec

from tradesim.bus import Bus, Delivery, register, subjects
from tradesim.domain import TERMINAL, Instrument, OrderCanceled, OrderExpired, OrderType, Side, TimeInForce, Trade
from tradesim.services.agents.feed import Feed, SharedFeed, Unsubscribe
from tradesim.services.agents.fills import FillTracker
from tradesim.services.agents.gateway import Clock, OmsGateway
from tradesim.services.marketdata.messages import MARKETDATA_MESSAGES, Tick
from tradesim.services.oms.messages import OMS_MESSAGES, OrderReply, OrderRequest
from tradesim.services.venue.messages import VENUE_MESSAGES, DepthUpdate

log = logging.getLogger("tradesim.agents.noise")

register(*OMS_MESSAGES, *VENUE_MESSAGES, *MARKETDATA_MESSAGES)

NS_PER_S = 1_000_000_000


class NoiseTraderParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    rate_per_s: float = 1.0  # Poisson arrival rate
    market_prob: float = 0.1
    buy_prob: float = 0.5
    aggressive_prob: float = 0.05  # a limit order placed on the far side of the reference
    mean_distance_ticks: float = 5.0  # mean of the geometric part of the distance
    min_distance_ticks: int = 0
    min_lots: int = 1
    max_lots: int = 100
    order_ttl_s: float = 30.0  # cancel resting orders older than this
    max_open_orders: int = 20  # no new limit order while this many rest
    keep_history: bool = False

    def __post_init__(self) -> None:
        for name in ("market_prob", "buy_prob", "aggressive_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1]")
        if self.rate_per_s <= 0 or self.mean_distance_ticks < 0 or self.min_distance_ticks < 0:
            raise ValueError("rate_per_s > 0 and non-negative distances are required")
        if not 1 <= self.min_lots <= self.max_lots or self.order_ttl_s <= 0 or self.max_open_orders < 1:
            raise ValueError("1 <= min_lots <= max_lots, order_ttl_s > 0, max_open_orders >= 1 are required")


def geometric(rng: random.Random, mean: float) -> int:
    """A geometric draw on {0, 1, 2, …} with the given mean (0 when mean is 0)."""
    if mean <= 0:
        return 0
    p = 1 / (1 + mean)
    u = 1.0 - rng.random()  # (0, 1]
    return math.floor(math.log(u) / math.log(1 - p))


class NoiseTraderAgent:
    """One random participant in one symbol, trading through the OMS with its own account."""

    def __init__(self, bus: Bus, account: str, symbol: str, instrument: Instrument,
                 params: NoiseTraderParams | None = None, *, clock: Clock, seed: int,
                 reference: int | None = None, feed: Feed | None = None) -> None:
        self.bus = bus
        # Subscriptions go through a shared feed when many agents run together (AgentsService).
        self.feed: Feed = feed if feed is not None else bus
        self.account = account
        self.symbol = symbol
        self.instrument = instrument
        self.params = params = params if params is not None else NoiseTraderParams()
        self.clock = clock
        self.seed = seed
        self.rng = random.Random(seed)
        self.gateway = OmsGateway(bus, account, keep_history=params.keep_history)
        self.fills = FillTracker(account, symbol)
        self.reference = reference
        self.open: dict[str, int] = {}  # client_order_id -> placed at (ns)
        self._seen_seq = 0
        self.id_prefix = f"{account}-{seed}-"
        self._next_id = 0
        self._subs: list[Unsubscribe] = []
        self._depth_sub: Unsubscribe | None = None  # dropped once a reference is known (see _depth_handler)
        self._task: asyncio.Task[None] | None = None

    async def start(self, *, autorun: bool = True) -> None:
        """Subscribes to the market and to fills; with `autorun` the Poisson loop runs on asyncio.sleep,
        otherwise whoever drives the simulation calls `arrive()`."""
        self.id_prefix = f"{self.account}-{self.seed}-{self.clock():x}-"
        self._subs.append(await self.feed.subscribe(subjects.market_tick(self.symbol), self._tick_handler))
        self._depth_sub = await self.feed.subscribe(subjects.market_depth(self.symbol), self._depth_handler)
        self._subs.append(self._depth_sub)
        feed = self.feed
        if isinstance(feed, SharedFeed):  # only our own fills and cancels: see SharedFeed
            self._subs.append(await feed.subscribe_account(subjects.ORDERS_FILLED, self.account, self._fill_handler))
            self._subs.append(await feed.subscribe_account(subjects.ORDERS_CANCELLED, self.account,
                                                           self._gone_handler))
        else:
            self._subs.append(await feed.subscribe(subjects.ORDERS_FILLED, self._fill_handler))
            self._subs.append(await feed.subscribe(subjects.ORDERS_CANCELLED, self._gone_handler))
        if autorun:
            self._task = asyncio.create_task(self._run(), name=f"noise-{self.account}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for sub in self._subs:
            await sub.unsubscribe()
        self._subs.clear()

    @property
    def seen_seq(self) -> int:
        """Highest venue seq seen on orders.filled (any account): lets tests settle."""
        if isinstance(self.feed, SharedFeed):
            return max(self._seen_seq, self.feed.last_trade_seq.get(subjects.ORDERS_FILLED, 0))
        return self._seen_seq

    def next_wait_s(self) -> float:
        """Exponential inter-arrival time (seconds) from the seeded generator."""
        return self.rng.expovariate(self.params.rate_per_s)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.next_wait_s())
            try:
                await self.arrive()
            except Exception:
                log.exception("%s: arrival failed", self.account)

    # ---- market view --------------------------------------------------------------------------
    async def _tick_handler(self, d: Delivery) -> None:
        if isinstance(d.data, Tick):
            self.on_tick(d.data)

    async def _depth_handler(self, d: Delivery) -> None:
        if isinstance(d.data, DepthUpdate) and self.reference is None and d.data.bids and d.data.asks:
            self.reference = (d.data.bids[0][0] + d.data.asks[0][0]) // 2
        if self.reference is not None and self._depth_sub is not None and isinstance(self.feed, SharedFeed):
            # Depth only ever gives the first reference (ticks keep it current): once there is one, every
            # further call is a no-op, and in a simulation those were a fifth of all handler calls.
            sub, self._depth_sub = self._depth_sub, None
            if sub in self._subs:
                self._subs.remove(sub)
            await sub.unsubscribe()

    def on_tick(self, tick: Tick) -> None:
        if tick.reference is not None:
            self.reference = tick.reference
        elif tick.bid is not None and tick.ask is not None:
            self.reference = (tick.bid + tick.ask) // 2
        elif tick.last is not None:
            self.reference = tick.last

    async def _fill_handler(self, d: Delivery) -> None:
        if isinstance(d.data, Trade):
            self._seen_seq = max(self._seen_seq, d.data.seq)
            self._on_trades([d.data])

    async def _gone_handler(self, d: Delivery) -> None:
        event = d.data
        if isinstance(event, OrderCanceled | OrderExpired) and event.account == self.account:
            self.open.pop(event.client_order_id, None)

    def _on_trades(self, trades: list[Trade]) -> None:
        for trade in trades:
            for fill in self.fills.on_trade(trade):
                if fill.leaves <= 0:
                    self.open.pop(fill.client_order_id, None)

    # ---- one arrival --------------------------------------------------------------------------
    async def arrive(self) -> None:
        """Cancels stale orders, then sends one new order (the draws happen even when nothing is sent,
        so the random stream does not depend on fills)."""
        await self.cancel_stale()
        is_market = self.rng.random() < self.params.market_prob
        side = Side.BUY if self.rng.random() < self.params.buy_prob else Side.SELL
        aggressive = self.rng.random() < self.params.aggressive_prob
        distance = self.params.min_distance_ticks + geometric(self.rng, self.params.mean_distance_ticks)
        lots = self.rng.randint(self.params.min_lots, self.params.max_lots)
        qty = lots * self.instrument.lot_size
        self._next_id += 1
        cid = f"{self.id_prefix}{self._next_id}"
        if is_market:
            request = OrderRequest(account=self.account, symbol=self.symbol, side=side, qty=qty,
                                   type=OrderType.MARKET, tif=TimeInForce.IOC, client_order_id=cid)
        else:
            if self.reference is None or len(self.open) >= self.params.max_open_orders:
                return
            away = -distance if aggressive else distance
            price = self.reference - away if side is Side.BUY else self.reference + away
            if price <= 0:
                return
            request = OrderRequest(account=self.account, symbol=self.symbol, side=side, qty=qty, price=price,
                                   client_order_id=cid)
            self.open[cid] = self.clock()
        reply = await self.gateway.submit(request)
        if isinstance(reply, OrderReply):
            self._on_trades(reply.trades)
            if reply.order.status in TERMINAL:
                self.open.pop(cid, None)
        else:
            self.open.pop(cid, None)

    async def cancel_stale(self) -> None:
        cutoff = self.clock() - int(self.params.order_ttl_s * NS_PER_S)
        for cid, placed in sorted(self.open.items(), key=lambda item: (item[1], item[0])):
            if placed <= cutoff:
                await self.gateway.cancel(cid)
                self.open.pop(cid, None)
