"""The PositionTracker service: a Ledger replica fed from the bus, answering `rpc.accounts.*`.

BROADCAST: every instance sees every event and holds the full state, so any instance can answer any
query and two instances fed the same events have equal `state_hash()`. It consumes `orders.filled`
(domain `Trade`, both sides booked once) and `trades.executed` (`TradePrint`, the mark), and serves
`rpc.accounts.get`, `rpc.accounts.positions` and `rpc.accounts.list`. See docs/positions-and-risk-monitor.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping

import msgspec

from tradesim.bus import Bus, Delivery, Subscription, subjects
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
    """Futures resolved once a processed seq reaches theirs: lets callers await events instead of sleeping."""

    def __init__(self) -> None:
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    async def wait(self, current: int, seq: int, timeout: float) -> None:
        if current >= seq:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((seq, future))
        try:
            await asyncio.wait_for(future, timeout)
        finally:
            self._waiters = [(s, f) for s, f in self._waiters if f is not future]

    def notify(self, current: int) -> None:
        for seq, future in self._waiters:
            if seq <= current and not future.done():
                future.set_result(None)


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
    ) -> None:
        self.bus = bus
        self.replica = LedgerReplica(instruments, accounts, window=window)
        self._clock = clock
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
        """Subscribes (BROADCAST) and serves the RPCs; returns once live."""
        if self._subs:
            return
        self._subs = [
            await self.bus.subscribe(subjects.ORDERS_FILLED, self._on_filled),
            await self.bus.subscribe(subjects.TRADES_EXECUTED, self._on_print),
            await self.bus.serve(RPC_GET, self._get),
            await self.bus.serve(RPC_POSITIONS, self._positions),
            await self.bus.serve(RPC_LIST, self._list),
        ]

    async def stop(self) -> None:
        subs, self._subs = self._subs, []
        for sub in subs:
            await sub.unsubscribe()

    async def wait_for_seq(self, seq: int, timeout: float = 5.0) -> None:
        """Returns once an event of venue seq >= `seq` has been processed (TimeoutError otherwise)."""
        await self._waiters.wait(self.replica.last_seq, seq, timeout)

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

    async def _on_print(self, d: Delivery) -> None:
        if isinstance(d.data, TradePrint):
            p = d.data
            if self.replica.mark(p.symbol, p.seq, p.price, p.ts):
                self.marks += 1
            self._waiters.notify(self.replica.last_seq)

    def apply_trade(self, trade: Trade) -> None:
        """Books one trade (as if delivered on `orders.filled`); a refused one is logged and counted."""
        try:
            self.replica.apply_trade(trade)
            self.replica.mark(trade.symbol, trade.seq, trade.price, trade.ts)
        except LedgerError as exc:
            self.errors += 1
            log.error("trade %s on %s (seq %s) not booked: %s", trade.trade_id, trade.symbol, trade.seq, exc)
        self._waiters.notify(self.replica.last_seq)

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
