"""The API's `Hub`: one bus subscription per channel (and symbol), fanned out to every WebSocket client
of this API process, and the bounded trade tape behind GET /api/v1/trades.

Fan-out never waits on a client: a frame is encoded once and offered to each subscriber's bounded queue
(`Sink.offer`, synchronous); a client whose queue is full is dropped by its own connection, so a slow
reader can cost the bus handler nothing but a failed append. The bus handlers themselves only do
in-memory work, so the venue's publishing is never held up by the API.

Level 2 uses the venue's conflated `DepthUpdate`s (full top-of-book states with the venue seq): the hub
keeps the current top `depth` levels per symbol and sends the difference to the previous state as an
update chained by `prev_seq`; a new subscriber's snapshot is that state, taken in the same step of the
event loop that adds it to the subscribers, so snapshot + updates never miss or repeat a change.
Feeds, once started, stay subscribed until the hub stops (their state keeps new snapshots instant).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Final, Protocol

import msgspec

from tradesim.api.errors import ApiError
from tradesim.api.rpc import Services
from tradesim.api.wsmodels import (
    FillMsg,
    Level2Snapshot,
    Level2Update,
    OrderEventMsg,
    PositionsMsg,
    PriceLevel,
    TickerMsg,
    TickerOut,
    TickerSnapshot,
    TradeMsg,
    TradeOut,
    TradesSnapshot,
    encode,
)
from tradesim.bus import Bus, BusError, Delivery, Subscription, subjects
from tradesim.domain import (
    Instrument,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderModified,
    OrderRejected,
    OrderTriggered,
    Side,
    Trade,
)
from tradesim.services.accounts.messages import GetPositions, PositionsReply
from tradesim.services.marketdata.messages import Tick, TickerRequest
from tradesim.services.venue.messages import BookReply, BookRequest, DepthUpdate, Level, TradePrint

log = logging.getLogger("tradesim.api.ws")

TAPE_SIZE: Final = 1000  # trades kept per symbol for GET /trades and the trades snapshot
TRADES_SNAPSHOT: Final = 50  # trades in a trades-channel snapshot
L2_DEPTH: Final = 10  # levels per side on the level2 channel (the venue's default depth_levels)
POSITIONS_WAIT: Final = 2.0  # how long a positions push waits for the tracker to catch up with a fill

CHANNELS: Final = ("trades", "level2", "ticker", "orders", "positions")
PUBLIC: Final = frozenset({"trades", "level2", "ticker"})


class Sink(Protocol):
    """A subscriber: takes a frame without waiting (a full queue drops the client, not the frame's sender)."""

    def offer(self, frame: str) -> None: ...


def price(instrument: Instrument, ticks: int | None) -> str | None:
    return None if ticks is None else str(instrument.from_ticks(ticks))


def trade_out(instrument: Instrument, t: TradePrint) -> TradeOut:
    return TradeOut(trade_id=str(t.trade_id), symbol=t.symbol, price=str(instrument.from_ticks(t.price)), qty=t.qty,
                    aggressor=t.aggressor.value, seq=t.seq, ts=t.ts)


def ticker_out(instrument: Instrument, tick: Tick) -> TickerOut:
    tick_size = instrument.tick_size
    vwap = None
    if tick.volume:
        exponent = tick_size.as_tuple().exponent
        places = -exponent if isinstance(exponent, int) else 0
        vwap = str(round(tick.turnover * tick_size / tick.volume, places + 4).normalize())
    return TickerOut(symbol=tick.symbol, seq=tick.seq, ts=tick.ts, bid=price(instrument, tick.bid),
                     bid_qty=tick.bid_qty, ask=price(instrument, tick.ask), ask_qty=tick.ask_qty,
                     last=price(instrument, tick.last), last_qty=tick.last_qty, volume=tick.volume,
                     turnover=str(tick.turnover * tick_size), trades=tick.trades, vwap=vwap,
                     reference=price(instrument, tick.reference))


def _fan(subs: Iterable[Sink], frame: str) -> None:
    for sink in list(subs):  # a sink may unsubscribe itself (dropped) while we go
        sink.offer(frame)


class _Lazy:
    """A feed's one-time start (bus subscription + initial state) that concurrent subscribers share."""

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None

    async def ensure(self, start: Callable[[], Awaitable[None]]) -> None:
        if self._task is None or (self._task.done() and self._task.exception() is not None):
            self._task = asyncio.ensure_future(start())
        await asyncio.shield(self._task)


class _Book:
    """Level 2 of one symbol: the current top levels, and who gets the changes."""

    def __init__(self, symbol: str, instrument: Instrument, depth: int) -> None:
        self.symbol = symbol
        self.instrument = instrument
        self.depth = depth
        self.subs: dict[Sink, None] = {}
        self.bids: dict[int, tuple[int, int]] = {}
        self.asks: dict[int, tuple[int, int]] = {}
        self.seq = 0  # the seq of the state the last sent frame (or snapshot) describes
        self.latest = -1  # the newest seq seen (updates at or below it are stale)
        self.ready = False
        self.pending: DepthUpdate | None = None  # arrived while the first snapshot was on its way
        self.lazy = _Lazy()
        self.sub: Subscription | None = None

    def _levels(self, side: dict[int, tuple[int, int]], reverse: bool) -> list[PriceLevel]:
        fmt = self.instrument.from_ticks
        return [(str(fmt(p)), q, n) for p, (q, n) in sorted(side.items(), reverse=reverse)]

    def snapshot(self) -> str:
        return encode(Level2Snapshot(channel="level2", symbol=self.symbol, seq=self.seq,
                                     bids=self._levels(self.bids, True), asks=self._levels(self.asks, False)))

    def _diff(self, side: dict[int, tuple[int, int]], levels: list[Level]) -> tuple[
            dict[int, tuple[int, int]], list[PriceLevel]]:
        new = {p: (q, n) for p, q, n in levels[:self.depth]}
        fmt = self.instrument.from_ticks
        changes = [(str(fmt(p)), q, n) for p, (q, n) in new.items() if side.get(p) != (q, n)]
        changes += [(str(fmt(p)), 0, 0) for p in side if p not in new]
        return new, changes

    def reset(self, seq: int, bids: list[Level], asks: list[Level]) -> None:
        self.bids = {p: (q, n) for p, q, n in bids[:self.depth]}
        self.asks = {p: (q, n) for p, q, n in asks[:self.depth]}
        self.seq = seq
        self.latest = max(self.latest, seq)

    def on_update(self, u: DepthUpdate) -> None:
        if u.seq <= self.latest:
            return
        self.latest = u.seq
        if not self.ready:
            self.pending = u
            return
        self.bids, bid_changes = self._diff(self.bids, u.bids)
        self.asks, ask_changes = self._diff(self.asks, u.asks)
        if not bid_changes and not ask_changes:
            return  # the top levels did not move (a change deeper down): nothing to chain
        prev, self.seq = self.seq, u.seq
        if self.subs:
            _fan(self.subs, encode(Level2Update(channel="level2", symbol=self.symbol, seq=u.seq, prev_seq=prev,
                                                ts=u.ts, bids=bid_changes, asks=ask_changes)))


class _Ticker:
    def __init__(self, symbol: str, instrument: Instrument) -> None:
        self.symbol = symbol
        self.instrument = instrument
        self.subs: dict[Sink, None] = {}
        self.last: TickerOut | None = None
        self.lazy = _Lazy()
        self.sub: Subscription | None = None

    def snapshot(self) -> str:
        return encode(TickerSnapshot(channel="ticker", symbol=self.symbol, seq=self.last.seq if self.last else 0,
                                     ticker=self.last))

    def on_tick(self, tick: Tick) -> None:
        if self.last is not None and tick.ts < self.last.ts:
            return
        prev = self.last.seq if self.last else 0
        self.last = ticker_out(self.instrument, tick)
        if self.subs:
            _fan(self.subs, encode(TickerMsg(channel="ticker", symbol=self.symbol, seq=tick.seq, prev_seq=prev,
                                             ticker=self.last)))


class _Positions:
    """One account's positions subscribers and the refresh that follows its fills."""

    def __init__(self) -> None:
        self.subs: dict[Sink, None] = {}
        self.want = 0  # the newest fill seq the subscribers should see
        self.sent = 0
        self.task: asyncio.Task[None] | None = None


class HubStats(msgspec.Struct, kw_only=True):
    clients: int = 0  # connected WebSocket clients
    slow_dropped: int = 0  # clients dropped because their queue was full
    frames: int = 0  # frames offered to clients


class Hub:
    """The shared feeds of one API process (see the module docstring)."""

    def __init__(self, bus: Bus, services: Services, instruments: dict[str, Instrument], *,
                 tape_size: int = TAPE_SIZE, depth: int = L2_DEPTH) -> None:
        self.bus = bus
        self.services = services
        self.instruments = instruments
        self.tape_size = tape_size
        self.depth = depth
        self.stats = HubStats()
        self._tapes: dict[str, deque[TradePrint]] = {}
        self._trade_subs: dict[str, dict[Sink, None]] = {}
        self._books: dict[str, _Book] = {}
        self._tickers: dict[str, _Ticker] = {}
        self._orders: dict[str, dict[Sink, None]] = {}
        self._positions: dict[str, _Positions] = {}
        self._subs: list[Subscription] = []
        self._started = _Lazy()
        self._private = _Lazy()
        self._stopped = False

    # ---- life -------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Subscribe the trade tape (idempotent; the first REST or WebSocket use also starts it)."""
        await self._started.ensure(self._start)

    async def _start(self) -> None:
        self._subs.append(await self.bus.subscribe(subjects.TRADES_EXECUTED, self._on_trade))

    async def stop(self) -> None:
        self._stopped = True
        for p in self._positions.values():
            if p.task is not None:
                p.task.cancel()
        subs = [*self._subs, *(b.sub for b in self._books.values() if b.sub is not None),
                *(t.sub for t in self._tickers.values() if t.sub is not None)]
        self._subs.clear()
        for sub in subs:
            with contextlib.suppress(BusError):
                await sub.unsubscribe()

    # ---- the tape ---------------------------------------------------------------------------------
    def tape(self, symbol: str, limit: int) -> list[TradePrint]:
        """Up to `limit` of the symbol's latest trades, newest first."""
        tape = self._tapes.get(symbol)
        if not tape:
            return []
        out = list(tape)[-limit:]
        out.reverse()
        return out

    async def _on_trade(self, d: Delivery) -> None:
        t = d.data
        if not isinstance(t, TradePrint):
            return
        tape = self._tapes.get(t.symbol)
        if tape is None:
            tape = self._tapes[t.symbol] = deque(maxlen=self.tape_size)
        prev = tape[-1].seq if tape else 0
        tape.append(t)
        subs = self._trade_subs.get(t.symbol)
        instrument = self.instruments.get(t.symbol)
        if subs and instrument is not None:
            _fan(subs, encode(TradeMsg(channel="trades", symbol=t.symbol, seq=t.seq, prev_seq=prev,
                                       trade_id=str(t.trade_id), price=str(instrument.from_ticks(t.price)),
                                       qty=t.qty, aggressor=t.aggressor.value, ts=t.ts)))

    # ---- subscriptions ----------------------------------------------------------------------------
    async def subscribe(self, sink: Sink, channel: str, key: str, ack: str) -> None:
        """Add `sink` to channel/key (a symbol, or an account for private channels): once the feed is live,
        `ack` then the snapshot are offered and the sink joins the subscribers in one step. Raises ApiError
        (unknown_symbol, service_unavailable…)."""
        if channel in PUBLIC and key not in self.instruments:
            raise ApiError(404, "unknown_symbol", f"unknown symbol {key!r} (see GET /api/v1/instruments)")
        await self.start()
        if channel == "trades":
            subs = self._trade_subs.setdefault(key, {})
            tape = self._tapes.get(key, ())
            recent = list(tape)[-TRADES_SNAPSHOT:]
            instrument = self.instruments[key]
            snap = encode(TradesSnapshot(channel="trades", symbol=key, seq=recent[-1].seq if recent else 0,
                                         trades=[trade_out(instrument, t) for t in recent]))
        elif channel == "level2":
            book = self._books.get(key)
            if book is None:
                book = self._books[key] = _Book(key, self.instruments[key], self.depth)
            await book.lazy.ensure(lambda: self._start_book(book))
            subs, snap = book.subs, book.snapshot()
        elif channel == "ticker":
            ticker = self._tickers.get(key)
            if ticker is None:
                ticker = self._tickers[key] = _Ticker(key, self.instruments[key])
            await ticker.lazy.ensure(lambda: self._start_ticker(ticker))
            subs, snap = ticker.subs, ticker.snapshot()
        elif channel == "orders":
            await self._private.ensure(self._start_private)
            subs, snap = self._orders.setdefault(key, {}), ""
        elif channel == "positions":
            await self._private.ensure(self._start_private)
            feed = self._positions.setdefault(key, _Positions())  # fills during the snapshot raise feed.want
            reply = await self.services.call("accounts", "positions", GetPositions(account=key), PositionsReply)
            feed.sent = max(feed.sent, reply.seq)
            subs = feed.subs
            snap = encode(PositionsMsg(channel="positions", account=key, seq=reply.seq,
                                       positions=list(reply.positions), snapshot=True))
        else:
            raise ApiError(400, "unknown_channel", f"unknown channel {channel!r} (known: {', '.join(CHANNELS)})")
        sink.offer(ack)
        if snap:
            sink.offer(snap)
        subs[sink] = None
        if channel == "positions":
            feed = self._positions[key]
            if feed.want > feed.sent:  # a fill the snapshot may not include
                self._refresh_positions(key, feed, feed.want)

    def unsubscribe(self, sink: Sink, channel: str, key: str) -> bool:
        """Remove `sink` from channel/key; False if it was not there."""
        subs: dict[Sink, None] | None
        if channel == "trades":
            subs = self._trade_subs.get(key)
        elif channel == "level2":
            subs = self._books[key].subs if key in self._books else None
        elif channel == "ticker":
            subs = self._tickers[key].subs if key in self._tickers else None
        elif channel == "orders":
            subs = self._orders.get(key)
        elif channel == "positions":
            subs = self._positions[key].subs if key in self._positions else None
        else:
            subs = None
        if subs is None or sink not in subs:
            return False
        del subs[sink]
        return True

    def drop(self, sink: Sink, subscriptions: Iterable[tuple[str, str]]) -> None:
        for channel, key in list(subscriptions):
            self.unsubscribe(sink, channel, key)

    # ---- level 2 ----------------------------------------------------------------------------------
    async def _start_book(self, book: _Book) -> None:
        async def on_depth(d: Delivery) -> None:
            if isinstance(d.data, DepthUpdate):
                book.on_update(d.data)

        if book.sub is None:  # subscribe first, so nothing after the snapshot can be missed
            book.sub = await self.bus.subscribe(subjects.market_depth(book.symbol), on_depth)
        reply = await self.services.call("venue", "book", BookRequest(symbol=book.symbol, depth=book.depth),
                                         BookReply)
        book.reset(reply.seq, reply.bids, reply.asks)
        book.ready = True
        pending, book.pending = book.pending, None
        if pending is not None and pending.seq > reply.seq:
            book.latest = reply.seq
            book.on_update(pending)

    # ---- ticker -----------------------------------------------------------------------------------
    async def _start_ticker(self, ticker: _Ticker) -> None:
        async def on_tick(d: Delivery) -> None:
            if isinstance(d.data, Tick):
                ticker.on_tick(d.data)

        if ticker.sub is None:
            ticker.sub = await self.bus.subscribe(subjects.market_tick(ticker.symbol), on_tick)
        with contextlib.suppress(ApiError):  # no market-data service: the snapshot says so (ticker null)
            tick = await self.services.call("marketdata", "ticker", TickerRequest(symbol=ticker.symbol), Tick,
                                            timeout=min(self.services.timeout, 2.0))
            if ticker.last is None or tick.ts >= ticker.last.ts:
                ticker.last = ticker_out(ticker.instrument, tick)

    # ---- private: orders and positions ------------------------------------------------------------
    async def _start_private(self) -> None:
        self._subs.append(await self.bus.subscribe(subjects.ORDERS_ALL, self._on_order_event))

    async def _on_order_event(self, d: Delivery) -> None:
        e = d.data
        if isinstance(e, Trade):
            for account in dict.fromkeys((e.maker_account, e.taker_account)):
                subs = self._orders.get(account)
                if subs:
                    for frame in self._fills(e, account):
                        _fan(subs, frame)
                feed = self._positions.get(account)
                if feed is not None:
                    self._refresh_positions(account, feed, e.seq)
            return
        owner = getattr(e, "account", None)
        if not isinstance(owner, str):
            return
        subs = self._orders.get(owner)
        if subs:
            frame = self._order_event(e)
            if frame:
                _fan(subs, frame)

    def _fills(self, t: Trade, account: str) -> list[str]:
        instrument = self.instruments.get(t.symbol)
        px = str(instrument.from_ticks(t.price)) if instrument else str(t.price)
        taker_side = t.aggressor
        maker_side = Side.SELL if taker_side is Side.BUY else Side.BUY
        out = []
        if t.maker_account == account:
            out.append(encode(FillMsg(channel="orders", account=account, seq=t.seq, ts=t.ts, trade_id=str(t.trade_id),
                                      order_id=str(t.maker_order_id), client_order_id=t.maker_client_order_id,
                                      symbol=t.symbol, side=maker_side.value, price=px, qty=t.qty, liquidity="maker",
                                      cum_qty=t.maker_cum_qty, leaves_qty=t.maker_leaves_qty)))
        if t.taker_account == account:
            out.append(encode(FillMsg(channel="orders", account=account, seq=t.seq, ts=t.ts, trade_id=str(t.trade_id),
                                      order_id=str(t.taker_order_id), client_order_id=t.taker_client_order_id,
                                      symbol=t.symbol, side=taker_side.value, price=px, qty=t.qty, liquidity="taker",
                                      cum_qty=t.taker_cum_qty, leaves_qty=t.taker_leaves_qty)))
        return out

    def _order_event(self, e: msgspec.Struct) -> str:
        instrument = self.instruments.get(getattr(e, "symbol", ""))
        if instrument is None:
            return ""
        if isinstance(e, OrderAccepted):
            msg = self._order_msg(e, "accepted", order_id=str(e.order_id), side=e.side.value, order_type=e.type.value,
                                  tif=e.tif.value, price=price(instrument, e.price),
                                  stop_price=price(instrument, e.stop_price), qty=e.qty)
        elif isinstance(e, OrderRejected):
            msg = self._order_msg(e, "rejected", order_id=None if e.order_id is None else str(e.order_id),
                                  reason=e.reason.value, message=e.message)
        elif isinstance(e, OrderCanceled):
            msg = self._order_msg(e, "canceled", order_id=str(e.order_id), reason=e.reason.value,
                                  canceled_qty=e.canceled_qty, leaves_qty=0)
        elif isinstance(e, OrderExpired):
            msg = self._order_msg(e, "expired", order_id=str(e.order_id), canceled_qty=e.canceled_qty, leaves_qty=0)
        elif isinstance(e, OrderModified):
            msg = self._order_msg(e, "modified", order_id=str(e.order_id), price=price(instrument, e.price),
                                  qty=e.qty, leaves_qty=e.leaves_qty)
        elif isinstance(e, OrderTriggered):
            msg = self._order_msg(e, "triggered", order_id=str(e.order_id))
        else:
            return ""
        return encode(msg)

    @staticmethod
    def _order_msg(e: OrderAccepted | OrderRejected | OrderCanceled | OrderExpired | OrderModified | OrderTriggered,
                   event: str, **fields: object) -> OrderEventMsg:
        return msgspec.convert({"channel": "orders", "account": e.account, "event": event, "seq": e.seq, "ts": e.ts,
                                "client_order_id": e.client_order_id, "symbol": e.symbol, **fields}, OrderEventMsg)

    def _refresh_positions(self, account: str, feed: _Positions, seq: int) -> None:
        feed.want = max(feed.want, seq)
        if feed.subs and (feed.task is None or feed.task.done()):
            feed.task = asyncio.create_task(self._push_positions(account, feed), name=f"ws-positions:{account}")

    async def _push_positions(self, account: str, feed: _Positions) -> None:
        """Ask the tracker until it has seen the fills (`reply.seq >= want`, or POSITIONS_WAIT passed), then
        push; loop while newer fills arrived meanwhile. One task per account, so pushes never pile up."""
        while feed.want > feed.sent and feed.subs and not self._stopped:
            want = feed.want
            deadline = time.monotonic() + POSITIONS_WAIT
            try:
                while True:
                    reply = await self.services.call("accounts", "positions", GetPositions(account=account),
                                                     PositionsReply)
                    if reply.seq >= want or time.monotonic() >= deadline:
                        break
                    await asyncio.sleep(0.01)
            except ApiError as exc:
                log.warning("ws: positions of %s not pushed: %s", account, exc.message)
                return
            feed.sent = max(feed.sent, want, reply.seq)
            _fan(feed.subs, encode(PositionsMsg(channel="positions", account=account, seq=reply.seq,
                                                positions=list(reply.positions))))
