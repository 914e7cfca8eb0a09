"""Market-data processors: the first stage of the market maker's pipeline (seed 02).

Each processor is a small deterministic state machine fed with `MarketSnapshot`s and fills; it
writes one field of the `MarketView` the quote generator reads. They are chained by
`MarketDataPipeline` (chain of responsibility), so a strategy can add or drop one without touching
the others. Time is the snapshot's `ts` (ns from the agent's injected clock), never the wall clock.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Protocol

import msgspec

from tradesim.domain import Side

NS_PER_S = 1_000_000_000


class MarketSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """What the agent knows of the market at `ts`: best prices and sizes (ticks/units), last, reference."""

    ts: int
    bid: int | None = None
    ask: int | None = None
    bid_qty: int = 0  # summed over the levels the source gave (depth) or at the touch (tick)
    ask_qty: int = 0
    last: int | None = None
    reference: int | None = None

    @property
    def mid(self) -> float | None:
        if self.bid is None or self.ask is None:
            return None
        return (self.bid + self.ask) / 2


class MarketView(msgspec.Struct, frozen=True, kw_only=True):
    """The processed market: what the quote generator needs, all prices in ticks."""

    ts: int = 0
    fair: float | None = None  # the anchor price the quotes are built around
    mid: float | None = None
    best_bid: int | None = None
    best_ask: int | None = None
    imbalance: float = 0.0  # (bid_qty - ask_qty) / (bid_qty + ask_qty), in [-1, 1]
    sigma: float = 0.0  # volatility of fair-price returns, fraction per sqrt(second)
    adverse: float = 0.0  # EWMA of post-fill drift against us, ticks (positive = adverse)


class Processor(Protocol):
    """One stage: reads the snapshot, returns the view with its field filled in."""

    def process(self, snapshot: MarketSnapshot, view: MarketView) -> MarketView: ...


class FairPriceProcessor:
    """Picks the anchor: with `anchor="reference"` the reference price, else mid, else last (in the
    order given by `anchor`). Anchoring to the reference keeps a maker that *is* the book from chasing
    its own skewed quotes."""

    ORDERS = {"reference": ("reference", "mid", "last"), "mid": ("mid", "last", "reference"),
              "last": ("last", "mid", "reference")}

    def __init__(self, anchor: str = "reference") -> None:
        if anchor not in self.ORDERS:
            raise ValueError(f"anchor must be one of {sorted(self.ORDERS)}, got {anchor!r}")
        self.order = self.ORDERS[anchor]
        self.fair: float | None = None

    def process(self, snapshot: MarketSnapshot, view: MarketView) -> MarketView:
        values = {"reference": snapshot.reference, "mid": snapshot.mid, "last": snapshot.last}
        for name in self.order:
            value = values[name]
            if value is not None and value > 0:
                self.fair = float(value)
                break
        return msgspec.structs.replace(view, ts=snapshot.ts, fair=self.fair, mid=snapshot.mid,
                                       best_bid=snapshot.bid, best_ask=snapshot.ask)


class ImbalanceProcessor:
    """Order-book imbalance (bid_qty - ask_qty)/(bid_qty + ask_qty); 0 when the book is empty."""

    def process(self, snapshot: MarketSnapshot, view: MarketView) -> MarketView:
        total = snapshot.bid_qty + snapshot.ask_qty
        imbalance = 0.0 if total <= 0 else (snapshot.bid_qty - snapshot.ask_qty) / total
        return msgspec.structs.replace(view, imbalance=imbalance)


class VolatilityProcessor:
    """EWMA of squared log returns of the fair price per second: var ← lambda·var + (1-lambda)·r²/Δt, with
    lambda = 0.5^(Δt/halflife), so irregular sampling weighs by elapsed time, not by update count."""

    def __init__(self, initial_sigma: float, halflife_s: float, min_dt_s: float = 0.001) -> None:
        if initial_sigma < 0 or halflife_s <= 0 or min_dt_s <= 0:
            raise ValueError("initial_sigma >= 0, halflife_s > 0 and min_dt_s > 0 are required")
        self.var = initial_sigma ** 2
        self.halflife_s = halflife_s
        self.min_dt_s = min_dt_s
        self._last: tuple[int, float] | None = None

    @property
    def sigma(self) -> float:
        return math.sqrt(self.var)

    def update(self, ts: int, price: float) -> None:
        if price <= 0:
            return
        if self._last is not None:
            last_ts, last_price = self._last
            if price != last_price or ts > last_ts:
                dt = max((ts - last_ts) / NS_PER_S, self.min_dt_s)
                r = math.log(price / last_price)
                lam = 0.5 ** (dt / self.halflife_s)
                self.var = lam * self.var + (1 - lam) * r * r / dt
        self._last = (ts, price)

    def process(self, snapshot: MarketSnapshot, view: MarketView) -> MarketView:
        if view.fair is not None:
            self.update(snapshot.ts, view.fair)
        return msgspec.structs.replace(view, sigma=self.sigma)


class AdverseSelectionProcessor:
    """How far the fair price moves against our fills: for a fill at p, `horizon_s` later a buy
    scores p - fair and a sell fair - p (ticks; positive = we were picked off). EWMA with weight
    `alpha` per scored fill. The quote generator widens the spread by it."""

    def __init__(self, horizon_s: float, alpha: float = 0.2) -> None:
        if horizon_s < 0 or not 0 < alpha <= 1:
            raise ValueError("horizon_s >= 0 and 0 < alpha <= 1 are required")
        self.horizon_ns = int(horizon_s * NS_PER_S)
        self.alpha = alpha
        self.adverse = 0.0
        self._pending: deque[tuple[int, Side, int]] = deque()

    def on_fill(self, ts: int, side: Side, price: int) -> None:
        """`side` is our side of the fill."""
        self._pending.append((ts, side, price))

    def update(self, ts: int, fair: float) -> None:
        while self._pending and ts - self._pending[0][0] >= self.horizon_ns:
            _, side, price = self._pending.popleft()
            drift = price - fair if side is Side.BUY else fair - price
            self.adverse += self.alpha * (drift - self.adverse)

    def process(self, snapshot: MarketSnapshot, view: MarketView) -> MarketView:
        if view.fair is not None:
            self.update(snapshot.ts, view.fair)
        return msgspec.structs.replace(view, adverse=self.adverse)


class MarketDataPipeline:
    """Runs the processors in order over each snapshot and keeps the latest view."""

    def __init__(self, processors: list[Processor]) -> None:
        self.processors = processors
        self.view = MarketView()

    def process(self, snapshot: MarketSnapshot) -> MarketView:
        view = self.view
        for processor in self.processors:
            view = processor.process(snapshot, view)
        self.view = view
        return view
