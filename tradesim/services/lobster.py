"""LOBSTER replay: a LOBSTER message file turned into venue commands for one symbol (background order flow).

Mapping (one message → at most one command):
- 1 new limit order → `NewOrder` LIMIT GTC from `account` ("lobster"), `client_order_id` = the LOBSTER
  order id, price dollars x 10000 converted to the instrument's ticks, `ts` from the file.
- 2 partial cancel → `ModifyOrder` lowering the total quantity (keeps time priority), or a
  `CancelOrder` when nothing would be left.
- 3 delete → `CancelOrder`.
- 4 execution of a visible order → an IOC LIMIT order from `taker_account` ("lobster-taker") on the
  other side, at the resting order's price, for the executed size. Crossing (not just reducing the
  order) makes the venue produce a real trade, on the tape and in the bars. Our book holds only
  orders seen in the file, so the executed order is at the front of its level and the IOC meets it.
- 5 execution of a hidden order → no command (hidden liquidity is not in the book); counted.
- 6 cross trade (auction) → no command; counted.
- 7 trading halt/resume → no command; counted and logged.
Messages about an order id the file never added (it predates the file) produce no command and are
counted as `unknown_ids`. The replay keeps its own record of live LOBSTER orders (side, price,
quantity, time priority), so it needs no engine to know which ids are known.

Stale orders: LOBSTER files add orders that later vanish without a message (the AMZN sample has
~9,700 such ids). Left in our book they would take executions meant for others, so the replay
cancels (`stale_cancels`) our orders that (a) are priced better than the real top of book given by
the orderbook file of the same row, when there is one, and (b) are ahead of an executed order in
price-time priority (an execution proves nothing visible was ahead of it). With both, every
execution on the AMZN sample trades exactly its target order.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Final, Literal

import msgspec

from tradesim.bus import Bus
from tradesim.domain import (
    CancelOrder,
    Event,
    Instrument,
    ModifyOrder,
    NewOrder,
    OffTickError,
    OrderRejected,
    OrderType,
    Side,
    TimeInForce,
    Trade,
)
from tradesim.engine import MatchingEngine

log = logging.getLogger("tradesim.lobster")

NEW, PARTIAL_CANCEL, DELETE, EXECUTE, EXECUTE_HIDDEN, CROSS, HALT = 1, 2, 3, 4, 5, 6, 7
PRICE_SCALE: Final = Decimal(10_000)  # LOBSTER prices are dollars x 10000
NS_PER_S: Final = 1_000_000_000
EMPTY_ASK: Final = 9_999_999_999  # LOBSTER's price of an empty ask side (bids: -9999999999)
_FILE_DATE = re.compile(r"_(\d{4}-\d{2}-\d{2})_")

LobsterCommand = NewOrder | CancelOrder | ModifyOrder


class LobsterError(ValueError):
    """A line of a LOBSTER file that cannot be read; the message names the file and the line."""


class LobsterMessage(msgspec.Struct, frozen=True, gc=False):
    """One message-file row. `ts` is ns (midnight of the trading day + the file's seconds)."""

    line: int
    ts: int
    type: int
    order_id: int
    size: int
    price: int  # dollars x 10000
    direction: int  # 1 buy, -1 sell (for executions: the side of the resting order)


class LobsterStats(msgspec.Struct, kw_only=True):
    """Counts of a replay; `trades`/`rejected`/`mismatched` are filled only when commands are applied."""

    lines: int = 0
    commands: int = 0
    new: int = 0
    modifies: int = 0
    cancels: int = 0
    executions: int = 0
    hidden_executions: int = 0
    crosses: int = 0
    halts: int = 0
    unknown_ids: int = 0
    duplicate_ids: int = 0
    trades: int = 0
    traded_qty: int = 0
    rejected: int = 0
    stale_cancels: int = 0  # our orders canceled because the orderbook file shows them gone
    mismatched: int = 0  # executions whose IOC did not trade (fully) against the order it targeted
    elapsed_s: float = 0.0


def day_start_ns(path: str | Path) -> int:
    """Midnight UTC (ns) of the date in a LOBSTER file name (`AMZN_2012-06-21_…`), else 0."""
    m = _FILE_DATE.search(Path(path).name)
    if m is None:
        return 0
    day = datetime.strptime(m.group(1), "%Y-%m-%d").replace(tzinfo=UTC)
    return int(day.timestamp()) * NS_PER_S


def _seconds_to_ns(text: str) -> int:
    whole, _, frac = text.strip().partition(".")
    if not whole.isdigit() or (frac and not frac.isdigit()) or len(frac) > 9:
        raise ValueError(f"time {text!r} is not seconds after midnight")
    return int(whole) * NS_PER_S + int(frac.ljust(9, "0") or 0)


def read_messages(path: str | Path, *, day_start: int | None = None) -> Iterator[LobsterMessage]:
    """Streams the message file row by row; a malformed row raises LobsterError naming its line."""
    start = day_start_ns(path) if day_start is None else day_start
    with Path(path).open() as f:
        for n, raw in enumerate(f, start=1):
            text = raw.strip()
            if not text:
                continue
            fields = text.split(",")
            try:
                if len(fields) < 6:
                    raise ValueError(f"expected 6 fields (time,type,order id,size,price,direction), got {len(fields)}")
                kind = int(fields[1])
                if not 1 <= kind <= 7:
                    raise ValueError(f"unknown event type {kind}")
                direction = int(fields[5])
                if direction not in (1, -1):
                    raise ValueError(f"direction must be 1 or -1, got {direction}")
                msg = LobsterMessage(line=n, ts=start + _seconds_to_ns(fields[0]), type=kind,
                                     order_id=int(fields[2]), size=int(fields[3]), price=int(fields[4]),
                                     direction=direction)
            except ValueError as exc:
                raise LobsterError(f"{path}:{n}: {exc}: {text!r}") from None
            yield msg


class _Live:
    __slots__ = ("filled", "price", "qty", "side")

    def __init__(self, side: Side, price: int, qty: int) -> None:
        self.side = side
        self.price = price  # ticks
        self.qty = qty  # total quantity (FIX OrderQty), lowered by partial cancels
        self.filled = 0


class LobsterTranslator:
    """Turns LOBSTER messages into commands for one instrument, keeping the live orders it created.

    `sync(best_bid, best_ask)` (the orderbook file's top of book after the message, in file units)
    cancels live orders priced better than the real best: LOBSTER sometimes drops an order without a
    message, and a stale order left in our book would take executions meant for others.
    """

    def __init__(self, instrument: Instrument, *, account: str = "lobster", taker_account: str = "lobster-taker",
                 stats: LobsterStats | None = None, path: str = "") -> None:
        self.instrument = instrument
        self.account = account
        self.taker_account = taker_account
        self.stats = stats if stats is not None else LobsterStats()
        self.live: dict[int, _Live] = {}
        self.path = path
        self._asks: list[tuple[int, int]] = []  # (price ticks, order id), lazily cleaned
        self._bids: list[tuple[int, int]] = []  # (-price ticks, order id)
        # per (side, price): live order ids in time priority (dicts keep insertion order)
        self._levels: dict[tuple[Side, int], dict[int, None]] = {}

    def ticks(self, msg: LobsterMessage) -> int:
        try:
            return self.instrument.to_ticks(Decimal(msg.price) / PRICE_SCALE)
        except OffTickError as exc:
            raise LobsterError(f"{self.path}:{msg.line}: {exc}") from None

    def translate(self, msg: LobsterMessage) -> list[LobsterCommand]:
        """The commands for one message (usually one; none for hidden executions, halts, unknown ids)."""
        st = self.stats
        st.lines += 1
        kind = msg.type
        if kind == EXECUTE_HIDDEN:
            st.hidden_executions += 1
            return []
        if kind == CROSS:
            st.crosses += 1
            return []
        if kind == HALT:
            st.halts += 1
            log.info("lobster: trading halt message at line %d (price field %d)", msg.line, msg.price)
            return []
        symbol = self.instrument.symbol
        oid = msg.order_id
        if kind == NEW:
            if oid in self.live:
                st.duplicate_ids += 1
                return []
            side = Side.BUY if msg.direction == 1 else Side.SELL
            price = self.ticks(msg)
            if msg.size <= 0:
                raise LobsterError(f"{self.path}:{msg.line}: size {msg.size} must be positive")
            self.live[oid] = _Live(side, price, msg.size)
            self._levels.setdefault((side, price), {})[oid] = None
            heapq.heappush(self._bids if side is Side.BUY else self._asks,
                           (-price if side is Side.BUY else price, oid))
            st.new += 1
            return [self._count(NewOrder(account=self.account, client_order_id=str(oid), symbol=symbol, side=side,
                                         type=OrderType.LIMIT, tif=TimeInForce.GTC, price=price, qty=msg.size,
                                         ts=msg.ts))]
        order = self.live.get(oid)
        if order is None:
            st.unknown_ids += 1
            return []
        leaves = order.qty - order.filled
        size = min(msg.size, leaves)
        if kind == DELETE or (kind == PARTIAL_CANCEL and size >= leaves):
            self._drop(oid, order)
            st.cancels += 1
            return [self._cancel(oid, msg.ts)]
        if kind == PARTIAL_CANCEL:
            order.qty -= size
            st.modifies += 1
            return [self._count(ModifyOrder(account=self.account, client_order_id=str(oid), symbol=symbol,
                                            qty=order.qty, ts=msg.ts))]
        # EXECUTE: price-time priority says nothing visible was ahead of this order; whatever our book
        # still has ahead of it is stale (LOBSTER dropped it silently) and is canceled first, so the
        # IOC meets exactly this order.
        out = self._stale_ahead(oid, order, msg.ts)
        order.filled += size
        if order.filled >= order.qty:
            self._drop(oid, order)
        st.executions += 1
        taker_side = Side.SELL if order.side is Side.BUY else Side.BUY
        out.append(self._count(NewOrder(account=self.taker_account, client_order_id=f"{oid}-{msg.line}",
                                        symbol=symbol, side=taker_side, type=OrderType.LIMIT, tif=TimeInForce.IOC,
                                        price=order.price, qty=size, ts=msg.ts)))
        return out

    def _stale_ahead(self, oid: int, order: _Live, ts: int) -> list[LobsterCommand]:
        price = order.price
        out = self._sync_side(order.side, price, ts, inclusive=False)
        level = self._levels.get((order.side, price), {})
        for other in list(level):
            if other == oid:
                break
            self._drop(other, self.live[other])
            self.stats.stale_cancels += 1
            out.append(self._cancel(other, ts))
        return out

    def _drop(self, oid: int, order: _Live) -> None:
        del self.live[oid]
        key = (order.side, order.price)
        level = self._levels[key]
        del level[oid]
        if not level:
            del self._levels[key]

    def _cancel(self, oid: int, ts: int) -> LobsterCommand:
        return self._count(CancelOrder(account=self.account, client_order_id=str(oid),
                                       symbol=self.instrument.symbol, ts=ts))

    def sync(self, best_bid: int | None, best_ask: int | None, ts: int) -> list[LobsterCommand]:
        """Cancels for live orders priced better than the real top of book (prices in file units)."""
        out: list[LobsterCommand] = []
        for side, best in ((Side.SELL, best_ask), (Side.BUY, best_bid)):
            if best is not None:
                out += self._sync_side(side, Decimal(best) / PRICE_SCALE / self.instrument.tick_size, ts,
                                       inclusive=False)
        return out

    def _sync_side(self, side: Side, best: Decimal | int, ts: int, *, inclusive: bool) -> list[LobsterCommand]:
        """Cancels live orders of `side` priced better than `best` ticks (or equal, with `inclusive`)."""
        out: list[LobsterCommand] = []
        heap, sign = (self._asks, 1) if side is Side.SELL else (self._bids, -1)
        limit = sign * best
        while heap:
            key, oid = heap[0]
            order = self.live.get(oid)
            if order is None or sign * order.price != key or order.side is not side:
                heapq.heappop(heap)  # finished (or a reused id): dropped lazily
                continue
            if key > limit or (key == limit and not inclusive):
                break
            heapq.heappop(heap)
            self._drop(oid, order)
            self.stats.stale_cancels += 1
            out.append(self._cancel(oid, ts))
        return out

    def _count(self, cmd: LobsterCommand) -> LobsterCommand:
        self.stats.commands += 1
        return cmd


def orderbook_path(message_path: str | Path) -> Path | None:
    """The orderbook file next to a message file (`…_message_N.csv` → `…_orderbook_N.csv`), if it exists."""
    p = Path(message_path)
    if "_message_" not in p.name:
        return None
    sibling = p.with_name(p.name.replace("_message_", "_orderbook_"))
    return sibling if sibling.exists() else None


def _tops(path: Path) -> Iterator[tuple[int | None, int | None]]:
    """(best bid, best ask) per orderbook-file row, in file units; LOBSTER's ±9999999999 = empty side."""
    with path.open() as f:
        for n, raw in enumerate(f, start=1):
            fields = raw.split(",")
            try:
                ask, bid = int(fields[0]), int(fields[2])
            except (ValueError, IndexError):
                raise LobsterError(f"{path}:{n}: expected ask price,ask size,bid price,bid size,…: "
                                   f"{raw.strip()!r}") from None
            yield (None if bid <= 0 else bid), (None if ask <= 0 or ask >= EMPTY_ASK else ask)


def lobster_commands(path: str | Path, instrument: Instrument, *, account: str = "lobster",
                     taker_account: str = "lobster-taker", day_start: int | None = None,
                     limit: int | None = None, stats: LobsterStats | None = None,
                     orderbook: str | Path | Literal["auto"] | None = "auto") -> Iterator[LobsterCommand]:
    """Streams the commands of a LOBSTER message file (at most `limit` lines); counts go into `stats`.

    With an orderbook file (`"auto"`: the sibling of the message file, if present) each message is
    followed by cancels of our orders that the real top of book says are gone (`stale_cancels`).
    """
    translator = LobsterTranslator(instrument, account=account, taker_account=taker_account, stats=stats,
                                   path=str(path))
    book = orderbook_path(path) if orderbook == "auto" else None if orderbook is None else Path(orderbook)
    tops = _tops(book) if book is not None else None
    for msg in read_messages(path, day_start=day_start):
        if limit is not None and msg.line > limit:
            return
        yield from translator.translate(msg)
        if tops is not None:
            top = next(tops, None)
            if top is None:
                raise LobsterError(f"{book}: fewer rows than {path} (ends before line {msg.line})")
            yield from translator.sync(top[0], top[1], msg.ts)


def count_events(stats: LobsterStats, cmd: LobsterCommand, events: Iterable[Event], taker_account: str) -> None:
    """Adds a command's outcome to `stats`: trades, rejections, executions that missed their target."""
    filled = 0
    for e in events:
        if isinstance(e, Trade):
            stats.trades += 1
            stats.traded_qty += e.qty
            if (isinstance(cmd, NewOrder) and cmd.account == taker_account
                    and e.maker_client_order_id == cmd.client_order_id.rsplit("-", 1)[0]):
                filled += e.qty
        elif isinstance(e, OrderRejected):
            stats.rejected += 1
    if isinstance(cmd, NewOrder) and cmd.account == taker_account and filled != cmd.qty:
        stats.mismatched += 1


def replay_into_engine(engine: MatchingEngine, path: str | Path, instrument: Instrument, *,
                       limit: int | None = None, account: str = "lobster", taker_account: str = "lobster-taker",
                       orderbook: str | Path | Literal["auto"] | None = "auto") -> LobsterStats:
    """The fast path: applies every command straight to an engine (which must list the instrument)."""
    stats = LobsterStats()
    started = time.perf_counter()
    for cmd in lobster_commands(path, instrument, account=account, taker_account=taker_account, limit=limit,
                                stats=stats, orderbook=orderbook):
        count_events(stats, cmd, engine.apply(cmd), taker_account)
    stats.elapsed_s = time.perf_counter() - started
    return stats


class LobsterReplay:
    """Submits a LOBSTER file's commands to the venue over the bus (`rpc.venue.submit|cancel|modify`).

    One command at a time, in file order (an execution must follow the order it hits). `speed=None`
    sends as fast as the venue answers; `speed=x` paces by the file's timestamps x times faster than
    real time, measured with the injected `clock` (ns) and waited with asyncio.sleep. `on_progress`
    gets the stats after every `progress_every` commands sent. `stop()` ends a run early.
    """

    def __init__(self, bus: Bus, path: str | Path, instrument: Instrument, *, speed: float | None = None,
                 limit: int | None = None, account: str = "lobster", taker_account: str = "lobster-taker",
                 orderbook: str | Path | Literal["auto"] | None = "auto",
                 clock: Callable[[], int] = time.monotonic_ns, timeout: float = 5.0, progress_every: int = 10_000,
                 on_progress: Callable[[LobsterStats], None] | None = None) -> None:
        if speed is not None and speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self.bus = bus
        self.path = path
        self.instrument = instrument
        self.speed = speed
        self.limit = limit
        self.account = account
        self.taker_account = taker_account
        self.orderbook = orderbook
        self.clock = clock
        self.timeout = timeout
        self.progress_every = progress_every
        self.on_progress = on_progress
        self.stats = LobsterStats()
        self._stopping = False

    def stop(self) -> None:
        self._stopping = True

    async def run(self) -> LobsterStats:
        """Replays the file; returns the summary (also in `self.stats`)."""
        from tradesim.services.venue import RPC_CANCEL, RPC_MODIFY, RPC_SUBMIT, VenueReply

        stats = self.stats
        started = self.clock()
        first_ts: int | None = None
        for sent, cmd in enumerate(lobster_commands(self.path, self.instrument, account=self.account,
                                    taker_account=self.taker_account, limit=self.limit, stats=stats,
                                    orderbook=self.orderbook), start=1):
            if self._stopping:
                break
            if self.speed is not None:
                first_ts = cmd.ts if first_ts is None else first_ts
                due = (cmd.ts - first_ts) / self.speed - (self.clock() - started)
                if due > 0:
                    await asyncio.sleep(due / NS_PER_S)
            subject = RPC_SUBMIT if isinstance(cmd, NewOrder) else RPC_CANCEL if isinstance(cmd, CancelOrder) \
                else RPC_MODIFY
            reply = await self.bus.request(subject, cmd, timeout=self.timeout)
            if isinstance(reply, VenueReply):
                count_events(stats, cmd, reply.events, self.taker_account)
            if self.on_progress is not None and sent % self.progress_every == 0:
                self.on_progress(stats)
        stats.elapsed_s = (self.clock() - started) / NS_PER_S
        log.info("lobster replay of %s: %s", self.path, stats)
        return stats
