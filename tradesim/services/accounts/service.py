"""The PositionTracker service: a Ledger replica fed from the bus, answering `rpc.accounts.*`.

BROADCAST: every instance sees every event and holds the full state, so any instance can answer any
query and two instances fed the same events have equal `state_hash()`. It consumes `orders.filled`
(domain `Trade`, both sides booked once) and `trades.executed` (`TradePrint`, the mark), and serves
`rpc.accounts.get`, `rpc.accounts.positions` and `rpc.accounts.list`. See docs/positions-and-risk-monitor.md.

In distributed mode (`follow=True`) it reads the venue's durable event stream from its first message
instead of subscribing live (`Bus.follow` on `orders.*`; a Trade carries the price it marks at), so
an instance started late, or restarted, replays the history and reaches the state of the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Final

import msgspec

from tradesim.bus import Bus, BusError, Delivery, Handler, StreamError, Subscription, subjects
from tradesim.domain import Instrument, Trade
from tradesim.services.accounts.errors import LedgerError, UnknownAccountError
from tradesim.services.accounts.ledger import Ledger
from tradesim.services.accounts.messages import (
    ACCOUNTS_MESSAGES,
    MALFORMED,
    UNKNOWN_ACCOUNT,
    AccountReply,
    AccountsError,
    AccountsListReply,
    AccountsMetrics,
    GetAccount,
    GetPositions,
    ListAccounts,
    PositionsReply,
    summary,
)
from tradesim.services.accounts.replica import DEFAULT_WINDOW, AccountSpec, LedgerReplica, ReplicaSnapshot
from tradesim.services.venue.messages import TradePrint

log = logging.getLogger("tradesim.accounts")

SERVICE = "accounts"
RPC_GET = subjects.rpc(SERVICE, "get")
RPC_POSITIONS = subjects.rpc(SERVICE, "positions")
RPC_LIST = subjects.rpc(SERVICE, "list")


class SeqWaiters:
    """Futures resolved once a processed seq reaches theirs: lets callers await events instead of sleeping.

    A wait names the symbol of the event it waits for when there are several venue shards (each numbers
    its events from 1, so only that symbol's shard's seq says whether it arrived); without a symbol it
    compares with the highest seq processed (one venue)."""

    def __init__(self) -> None:
        self._waiters: list[tuple[str | None, int, asyncio.Future[None]]] = []

    async def wait(self, current: int, seq: int, timeout: float, symbol: str | None = None) -> None:
        """`current`: the processed seq to compare with (the symbol's when `symbol` is given)."""
        if current >= seq:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((symbol, seq, future))
        try:
            await asyncio.wait_for(future, timeout)
        finally:
            self._waiters = [w for w in self._waiters if w[2] is not future]

    def notify(self, current: int, symbol_seq: Callable[[str], int] | None = None) -> None:
        """`current`: the highest seq processed; `symbol_seq(symbol)`: a symbol's (for waits that name one)."""
        for symbol, seq, future in self._waiters:
            position = current if symbol is None or symbol_seq is None else symbol_seq(symbol)
            if seq <= position and not future.done():
                future.set_result(None)


VENUE_EVENTS_STREAM: Final = "VENUE_EVENTS"
"""The venue's durable event stream in distributed mode (`orders.*`, `trades.*`)."""
FOLLOW_RETRY: Final = 0.5  # seconds between attempts while the venue has not created its stream yet


class StreamFollower:
    """Reads the venue's order events (`orders.*`) from the start of its event stream, then live (`Bus.follow`).

    The stream appears when the venue first starts, which may be after this service: until then
    `start()` leaves a task retrying every FOLLOW_RETRY s, and `following` is False. The stream's newest
    message when following began marks the end of the history: a message at or below its stream seq is
    history being replayed (`replaying(d)`), which lets a service hold back side effects (alerts,
    orders) that the instance that saw it live already had; `caught_up` is set once a handled event's
    venue seq reaches the newest message's (a trade print shares its trade's seq and symbol, so following
    `orders.*` alone is enough to tell) — compared only for an event of the same symbol, as each venue
    shard numbers its own events — or once a message after the history is handled.
    """

    def __init__(self, bus: Bus, handler: Handler, *, stream: str = VENUE_EVENTS_STREAM,
                 on_caught_up: Callable[[], Awaitable[None]] | None = None) -> None:
        self.bus = bus
        self.stream = stream
        self._handler = handler
        self._on_caught_up = on_caught_up
        self.history_end = 0  # stream seq of the newest message when following began
        self.history_seq = 0  # its venue seq
        self.history_symbol: str | None = None  # its symbol (its seq is in that symbol's shard's sequence)
        self.handled_seq = 0  # stream seq of the last message handled
        self.caught_up = asyncio.Event()
        self._sub: Subscription | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def following(self) -> bool:
        return self._sub is not None

    def replaying(self, d: Delivery) -> bool:
        return d.stream_seq is not None and d.stream_seq <= self.history_end

    async def start(self) -> None:
        if self._sub is not None or self._task is not None:
            return
        if not await self._try():
            log.info("stream %s not there yet (no venue started?): retrying every %s s", self.stream, FOLLOW_RETRY)
            self._task = asyncio.create_task(self._retry(), name=f"follow:{self.stream}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._sub is not None:
            with contextlib.suppress(BusError):
                await self._sub.unsubscribe()
            self._sub = None

    async def _try(self) -> bool:
        try:
            last = await self.bus.last_message(self.stream)
        except StreamError:
            return False
        if last is None:
            await self._reached()
        else:
            self.history_end = last.stream_seq or 0
            self.history_seq = int(getattr(last.data, "seq", 0))
            symbol = getattr(last.data, "symbol", None)
            self.history_symbol = symbol if isinstance(symbol, str) else None
        self._sub = await self.bus.follow(subjects.ORDERS_ALL, self._on_message, start_seq=1)
        return True

    async def _retry(self) -> None:
        while True:
            await asyncio.sleep(FOLLOW_RETRY)
            try:
                if await self._try():
                    return
            except BusError as exc:
                log.warning("following %s: %s", self.stream, exc)

    async def _on_message(self, d: Delivery) -> None:
        await self._handler(d)
        if d.stream_seq is not None:
            self.handled_seq = d.stream_seq
        if not self.caught_up.is_set() and self._at_end(d):
            await self._reached()

    def _at_end(self, d: Delivery) -> bool:
        if d.stream_seq is not None and d.stream_seq >= self.history_end:
            return True
        same_shard = self.history_symbol is None or getattr(d.data, "symbol", None) == self.history_symbol
        return same_shard and int(getattr(d.data, "seq", 0)) >= self.history_seq

    async def _reached(self) -> None:
        self.caught_up.set()
        if self._on_caught_up is not None:
            await self._on_caught_up()


class AccountsService:
    """PositionTracker: books every trade once (in venue seq order), marks to the last print, answers queries."""

    def __init__(
        self,
        bus: Bus,
        instruments: Iterable[Instrument],
        accounts: Mapping[str, AccountSpec],
        *,
        window: int = DEFAULT_WINDOW,
        clock: Callable[[], int] = time.time_ns,
        follow: bool = False,
    ) -> None:
        self.bus = bus
        self.replica = LedgerReplica(instruments, accounts, window=window)
        self._clock = clock
        self.follower = StreamFollower(bus, self._on_filled) if follow else None
        self.lag_ns = 0  # how late the last trade was handled here (wall clock - venue time)
        self._subs: list[Subscription] = []
        self._waiters = SeqWaiters()
        self.errors = 0
        self.marks = 0
        bus.codec.register(*ACCOUNTS_MESSAGES, TradePrint)

    @property
    def ledger(self) -> Ledger:
        return self.replica.ledger

    @property
    def last_seq(self) -> int:
        return self.replica.last_seq

    async def start(self) -> None:
        """Subscribes (BROADCAST) or follows the stream, and serves the RPCs; returns once live."""
        if self._subs:
            return
        if self.follower is not None:
            await self.follower.start()
        else:
            self._subs = [
                await self.bus.subscribe(subjects.ORDERS_FILLED, self._on_filled),
                await self.bus.subscribe(subjects.TRADES_EXECUTED, self._on_print),
            ]
        self._subs += [
            await self.bus.serve(RPC_GET, self._get),
            await self.bus.serve(RPC_POSITIONS, self._positions),
            await self.bus.serve(RPC_LIST, self._list),
        ]

    async def stop(self) -> None:
        if self.follower is not None:
            await self.follower.stop()
        subs, self._subs = self._subs, []
        for sub in subs:
            await sub.unsubscribe()

    async def wait_for_seq(self, seq: int, timeout: float = 5.0, symbol: str | None = None) -> None:
        """Returns once an event of venue seq >= `seq` has been processed (TimeoutError otherwise); with
        several venue shards name the `symbol` of the event (seqs are per shard)."""
        current = self.replica.last_seq if symbol is None else self.replica.symbol_seq(symbol)
        await self._waiters.wait(current, seq, timeout, symbol)

    def metrics(self) -> AccountsMetrics:
        r = self.replica
        return AccountsMetrics(
            accounts=len(r.ledger.accounts),
            trades_applied=r.applied,
            duplicates=r.duplicates,
            reordered=r.reordered,
            late=r.late,
            errors=self.errors,
            marks=self.marks,
            last_seq=r.last_seq,
            last_ts=r.last_ts,
            lag_ns=max(0, self._clock() - r.last_ts) if r.last_ts else 0,
        )

    def snapshot(self) -> ReplicaSnapshot:
        return self.replica.snapshot()

    def restore(self, snapshot: ReplicaSnapshot) -> None:
        self.replica.restore(snapshot)

    def state_hash(self) -> str:
        return self.replica.state_hash()

    # --- events --------------------------------------------------------------------------------

    async def _on_filled(self, d: Delivery) -> None:
        if isinstance(d.data, Trade):
            self.apply_trade(d.data)
            self.lag_ns = max(0, self._clock() - d.data.ts)

    async def _on_print(self, d: Delivery) -> None:
        if isinstance(d.data, TradePrint):
            p = d.data
            if self.replica.mark(p.symbol, p.seq, p.price, p.ts):
                self.marks += 1
            self._waiters.notify(self.replica.last_seq, self.replica.symbol_seq)

    def apply_trade(self, trade: Trade) -> None:
        """Books one trade (as if delivered on `orders.filled`); a refused one is logged and counted."""
        try:
            self.replica.apply_trade(trade)
            self.replica.mark(trade.symbol, trade.seq, trade.price, trade.ts)
        except LedgerError as exc:
            self.errors += 1
            log.error("trade %s on %s (seq %s) not booked: %s", trade.trade_id, trade.symbol, trade.seq, exc)
        self._waiters.notify(self.replica.last_seq, self.replica.symbol_seq)

    # --- RPC -----------------------------------------------------------------------------------

    async def _get(self, req: msgspec.Struct) -> msgspec.Struct:
        if not isinstance(req, GetAccount) or not req.account:
            return _malformed(req, GetAccount)
        try:
            return AccountReply(account=self.ledger.account(req.account), seq=self.last_seq)
        except UnknownAccountError as exc:
            return AccountsError(error=UNKNOWN_ACCOUNT, message=str(exc))

    async def _positions(self, req: msgspec.Struct) -> msgspec.Struct:
        if not isinstance(req, GetPositions) or not req.account:
            return _malformed(req, GetPositions)
        try:
            view = self.ledger.account(req.account)
        except UnknownAccountError as exc:
            return AccountsError(error=UNKNOWN_ACCOUNT, message=str(exc))
        positions = [p for p in view.positions if p.qty or not req.open_only]
        return PositionsReply(account=req.account, positions=positions, seq=self.last_seq)

    async def _list(self, req: msgspec.Struct) -> msgspec.Struct:
        if not isinstance(req, ListAccounts):
            return _malformed(req, ListAccounts)
        ledger = self.ledger
        return AccountsListReply(accounts=[summary(ledger.account(a)) for a in ledger.accounts], seq=self.last_seq)


def _malformed(req: msgspec.Struct, expected: type[msgspec.Struct]) -> AccountsError:
    if isinstance(req, expected):
        return AccountsError(error=MALFORMED, message=f"{expected.__name__}: account must be a non-empty string")
    return AccountsError(error=MALFORMED, message=f"expected {expected.__name__}, got {type(req).__name__}")
