"""The market-data service: conflated ticks from the venue's real book, 1-minute bars, ticker/bars RPCs.

It listens to the venue's `market.depth.{symbol}` (DepthUpdate) and `trades.executed` (TradePrint)
and only updates a per-symbol view when they arrive; a timer (asyncio.sleep, so a simulated-time
loop can drive it) publishes one Tick per symbol every `interval` from that view. Publishing the
latest state only (conflation) means a burst of book changes costs one tick, and a slow consumer of
ticks never holds the venue back. Time comes only from the injected `clock` (ns).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Final

import msgspec

from tradesim.bus import Bus, BusError, Delivery, RemoteError, Subscription, register, subjects
from tradesim.domain import Instrument
from tradesim.services.marketdata.bars import BarBuilder, aggregate
from tradesim.services.marketdata.messages import (
    MARKETDATA_MESSAGES,
    Bar,
    BarsReply,
    BarsRequest,
    MarketDataError,
    Tick,
    TickerRequest,
)
from tradesim.services.marketdata.reference import DEFAULT_GBM, GbmParams, ReferenceSource, gbm_processes
from tradesim.services.venue.messages import BookReply, BookRequest, DepthUpdate, TradePrint

if TYPE_CHECKING:  # the store imports our messages; at run time we only call its methods
    from tradesim.services.marketdata.store import MarketDataStore

log = logging.getLogger("tradesim.marketdata")

SERVICE: Final = "marketdata"
RPC_BARS: Final = subjects.rpc(SERVICE, "bars")
RPC_TICKER: Final = subjects.rpc(SERVICE, "ticker")
RPC_VENUE_BOOK: Final = subjects.rpc("venue", "book")
NS_PER_DAY: Final = 86_400 * 1_000_000_000
MAX_BARS_KEPT: Final = 10_000  # closed bars kept in memory per symbol (bars RPC without a store)


def market_bar(symbol: str) -> str:
    """`market.bar.{symbol}`: closed bars."""
    return subjects.validate_subject(f"market.bar.{symbol}")


class _View:
    """One symbol's latest state, updated by the venue's messages and read by the tick timer."""

    __slots__ = ("ask", "ask_qty", "bid", "bid_qty", "day", "depth_seq", "last", "last_qty", "seq", "trade_seq",
                 "trades", "ts", "turnover", "volume")

    def __init__(self) -> None:
        self.bid: int | None = None
        self.bid_qty = 0
        self.ask: int | None = None
        self.ask_qty = 0
        self.last: int | None = None
        self.last_qty = 0
        self.volume = 0
        self.turnover = 0
        self.trades = 0
        self.day: int | None = None  # the UTC day (ts // 1 day) the volume counters belong to
        self.seq = 0  # newest venue seq reflected
        self.depth_seq = 0
        self.trade_seq = 0
        self.ts = 0

    def apply_depth(self, bids: list[tuple[int, int, int]], asks: list[tuple[int, int, int]], seq: int,
                    ts: int, last_price: int | None) -> bool:
        if seq <= self.depth_seq:  # stale or repeated (e.g. the start-up book after a newer update)
            return False
        self.depth_seq = seq
        self.bid, self.bid_qty = (bids[0][0], bids[0][1]) if bids else (None, 0)
        self.ask, self.ask_qty = (asks[0][0], asks[0][1]) if asks else (None, 0)
        if last_price is not None and self.last is None:
            self.last = last_price
        self.seq = max(self.seq, seq)
        self.ts = max(self.ts, ts)
        return True


class MarketDataService:
    """Ticks every `interval` seconds, bars every `bar_interval_s`, `rpc.marketdata.bars|ticker`.

    `reference` gives initial reference prices (ticks) for a GBM per symbol (`gbm`: one GbmParams or
    one per symbol; `seed` makes the paths reproducible); `sources` replaces the GBM of a symbol by any
    other ReferenceSource (e.g. a FileReference). `store` (optional, owned by the caller) records every
    `record_every`-th tick and every closed bar.

    `active` (default: always) makes the service one of several single-active instances: all of them
    follow the venue and build the same views and bars, so a standby that becomes active goes on from
    the same state, but only while `active()` is true does an instance publish ticks and bars and
    record them (one tick stream, one writer of the store).
    """

    def __init__(self, bus: Bus, instruments: Iterable[Instrument], *, clock: Callable[[], int] = time.time_ns,
                 interval: float = 0.1, reference: Mapping[str, int] | None = None,
                 gbm: GbmParams | Mapping[str, GbmParams] = DEFAULT_GBM, seed: int = 0,
                 sources: Mapping[str, ReferenceSource] | None = None, store: MarketDataStore | None = None,
                 bar_interval_s: int = 60, record_every: int = 1, fetch_book: bool = True,
                 active: Callable[[], bool] | None = None) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval}")
        if record_every < 1:
            raise ValueError(f"record_every must be at least 1, got {record_every}")
        self.bus = bus
        self.instruments = {i.symbol: i for i in instruments}
        self.clock = clock
        self.interval = interval
        self.store = store
        self.bar_interval_s = bar_interval_s
        self.record_every = record_every
        self.fetch_book = fetch_book
        self.active: Callable[[], bool] = active or (lambda: True)
        ref = {s: p for s, p in (reference or {}).items() if s in self.instruments}
        self.references: dict[str, ReferenceSource] = dict(gbm_processes(ref, gbm, seed=seed))
        self.references.update({s: src for s, src in (sources or {}).items() if s in self.instruments})
        self._views = {s: _View() for s in self.instruments}
        self._bars = {s: BarBuilder(s, bar_interval_s) for s in self.instruments}
        self._closed: dict[str, deque[Bar]] = {s: deque(maxlen=MAX_BARS_KEPT) for s in self.instruments}
        self._reference_now: dict[str, int | None] = {}
        self._subs: list[Subscription] = []
        self._task: asyncio.Task[None] | None = None
        self.ticks_published = 0
        self.bars_published = 0
        self.rounds = 0

    # ---- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Subscribe, take the current books from the venue if one answers, serve, start the timer."""
        register(*MARKETDATA_MESSAGES)
        self._subs.append(await self.bus.subscribe(subjects.MARKET_DEPTH_ALL, self._on_depth))
        self._subs.append(await self.bus.subscribe(subjects.TRADES_EXECUTED, self._on_trade))
        if self.fetch_book:
            await self._fetch_books()
        self._subs.append(await self.bus.serve(RPC_BARS, self._serve_bars))
        self._subs.append(await self.bus.serve(RPC_TICKER, self._serve_ticker))
        self._task = asyncio.create_task(self._run(), name="marketdata-ticks")

    async def stop(self) -> None:
        """Stop the timer and the subscriptions; close the open bars and queue them in the store."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for sub in self._subs:
            with contextlib.suppress(BusError):
                await sub.unsubscribe()
        self._subs.clear()
        if self.store is not None and self.active():
            for builder in self._bars.values():
                bar = builder.current
                if bar is not None:
                    self.store.add_bar(bar)  # the open bar as it stands; a restart's bars upsert over it

    async def _fetch_books(self) -> None:
        for symbol in self.instruments:
            try:
                reply = await self.bus.request(RPC_VENUE_BOOK, BookRequest(symbol=symbol, depth=1), timeout=1.0)
            except RemoteError as exc:  # e.g. a symbol the venue does not list (yet)
                log.info("marketdata: no book for %s from the venue at start (%s)", symbol, exc)
                continue
            except BusError as exc:  # no venue up: the depth updates will bring the books
                log.info("marketdata: no venue book at start (%s)", exc)
                return
            if isinstance(reply, BookReply):
                self._views[symbol].apply_depth(reply.bids, reply.asks, reply.seq, 0, reply.last_price)

    # ---- venue messages (cheap: they only update the view) ---------------------------------------
    async def _on_depth(self, d: Delivery) -> None:
        msg = d.data
        if isinstance(msg, DepthUpdate) and msg.symbol in self._views:
            self._views[msg.symbol].apply_depth(msg.bids, msg.asks, msg.seq, msg.ts, msg.last_price)

    async def _on_trade(self, d: Delivery) -> None:
        msg = d.data
        if isinstance(msg, TradePrint) and msg.symbol in self._views:
            closed = self.on_trade(msg)
            if closed is not None:
                await self._bar_closed(closed)

    def on_trade(self, t: TradePrint) -> Bar | None:
        """Folds one print into the view and the bar (repeats, by seq, are ignored); returns a bar it closed."""
        view = self._views[t.symbol]
        if t.seq <= view.trade_seq:
            return None
        view.trade_seq = t.seq
        day = t.ts // NS_PER_DAY
        if view.day != day:
            view.day = day
            view.volume = view.turnover = view.trades = 0
        view.last, view.last_qty = t.price, t.qty
        view.volume += t.qty
        view.turnover += t.price * t.qty
        view.trades += 1
        view.seq = max(view.seq, t.seq)
        view.ts = max(view.ts, t.ts)
        return self._bars[t.symbol].add(t.ts, t.price, t.qty)

    async def _bar_closed(self, bar: Bar) -> None:
        self._closed[bar.symbol].append(bar)
        if not self.active():
            return  # a standby keeps the bar (it may serve or take over) but the leader publishes it
        if self.store is not None:
            self.store.add_bar(bar)
        self.bars_published += 1
        await self.bus.publish(market_bar(bar.symbol), bar)

    # ---- the timer -----------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.publish_round()
            except BusError as exc:  # a bus hiccup must not end the ticks
                log.warning("marketdata: publishing ticks failed: %s", exc)

    async def publish_round(self) -> list[Tick]:
        """One round: advance the reference prices to now, publish a Tick per symbol, close due bars.

        A standby (not `active()`) only closes its due bars, and publishes nothing."""
        now = self.clock()
        if not self.active():
            for builder in self._bars.values():
                closed = builder.close_due(now)
                if closed is not None:
                    await self._bar_closed(closed)
            return []
        self.rounds += 1
        record = self.store is not None and self.rounds % self.record_every == 0
        ticks: list[Tick] = []
        for symbol in self.instruments:
            source = self.references.get(symbol)
            self._reference_now[symbol] = source.at(now) if source is not None else None
            tick = self.tick(symbol, now)
            ticks.append(tick)
            await self.bus.publish(subjects.market_tick(symbol), tick)
            self.ticks_published += 1
            if record and self.store is not None:
                self.store.add_tick(tick)
            closed = self._bars[symbol].close_due(now)
            if closed is not None:
                await self._bar_closed(closed)
        return ticks

    def tick(self, symbol: str, now: int | None = None) -> Tick:
        """The symbol's current Tick (KeyError for an unknown symbol)."""
        v = self._views[symbol]
        return Tick(symbol=symbol, ts=self.clock() if now is None else now, seq=v.seq, bid=v.bid, bid_qty=v.bid_qty,
                    ask=v.ask, ask_qty=v.ask_qty, last=v.last, last_qty=v.last_qty, volume=v.volume,
                    turnover=v.turnover, trades=v.trades, reference=self._reference_now.get(symbol))

    def reference(self, symbol: str) -> int | None:
        """The reference price of the last round (None before the first, or without a source)."""
        return self._reference_now.get(symbol)

    # ---- RPCs ----------------------------------------------------------------------------------
    async def _serve_ticker(self, req: msgspec.Struct) -> msgspec.Struct:
        if not isinstance(req, TickerRequest):
            return MarketDataError(error="bad_request", message=f"expected TickerRequest, got {type(req).__name__}")
        if req.symbol not in self._views:
            return _unknown(req.symbol)
        return self.tick(req.symbol)

    async def _serve_bars(self, req: msgspec.Struct) -> msgspec.Struct:
        if not isinstance(req, BarsRequest):
            return MarketDataError(error="bad_request", message=f"expected BarsRequest, got {type(req).__name__}")
        if req.symbol not in self._views:
            return _unknown(req.symbol)
        if req.interval_s <= 0 or req.interval_s % self.bar_interval_s:
            return MarketDataError(error="bad_request", message=(
                f"interval_s must be a positive multiple of {self.bar_interval_s}, got {req.interval_s}"))
        if req.limit < 0:
            return MarketDataError(error="bad_request", message=f"limit must be >= 0, got {req.limit}")
        return BarsReply(symbol=req.symbol, bars=await self.bars(req.symbol, req.interval_s, start_ts=req.start_ts,
                                                                   end_ts=req.end_ts, limit=req.limit))

    async def bars(self, symbol: str, interval_s: int = 60, *, start_ts: int | None = None,
                   end_ts: int | None = None, limit: int = 500) -> list[Bar]:
        """Closed bars, oldest first: from `start_ts` on (at most `limit`), or else the newest `limit`.

        Longer intervals (multiples of the bar interval) are aggregated from the base bars.
        """
        factor = interval_s // self.bar_interval_s
        span_ns = interval_s * 1_000_000_000
        lo = None if start_ts is None else start_ts - start_ts % span_ns  # whole aggregated bars
        if self.store is not None:
            await self.store.flush()
            base_limit = limit * factor if start_ts is not None else (limit + 1) * factor
            base = await self.store.bars(symbol, self.bar_interval_s, start_ts=lo, end_ts=end_ts, limit=base_limit)
        else:
            base = [b for b in self._closed[symbol]
                    if (lo is None or b.start_ts >= lo) and (end_ts is None or b.start_ts < end_ts)]
        out = aggregate(base, interval_s) if factor > 1 else list(base)
        if start_ts is not None:
            out = [b for b in out if b.start_ts >= start_ts]
            return out[:limit]
        return out[-limit:] if limit else []


def _unknown(symbol: str) -> MarketDataError:
    return MarketDataError(error="unknown_symbol", message=f"symbol {symbol} is not listed")
