"""The RiskMonitor service: post-trade position states, margin warnings, historical VaR and liquidation.

BROADCAST, beside the PositionTracker: it keeps its own ledger replica from the same events
(`orders.filled` Trades, `trades.executed` prints), publishes `RiskAlert`s on `risk.alerts` when a
state changes, sends reducing market orders to `rpc.oms.submit` when a position is over its limit (and
liquidation is enabled), and answers `rpc.risk.get`. Pre-trade checks live in `pretrade.py`; this module
only watches what already happened. See docs/positions-and-risk-monitor.md.

In distributed mode (`follow=True`) it reads the venue's event stream from its start (`Bus.follow` on
`orders.*`), so a monitor started late replays the history and holds the same state as the others. Its
decisions then come from the trades alone, in venue order, so every monitor takes the same ones: a
liquidation's client_order_id is `liq-{account}-{symbol}-{venue seq}`, and when two monitors send the
same order the OMS executes it once and answers the other from its record. While replaying history it
publishes no alerts and sends no orders (the monitor that saw it live did); once caught up it liquidates
what is still over its limit.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Iterable, Mapping
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from typing import Final

import msgspec

from tradesim.bus import Bus, BusError, Delivery, RemoteError, Subscription, subjects
from tradesim.domain import Instrument, OrderStatus, OrderType, Side, TimeInForce, Trade
from tradesim.services.accounts import LedgerError, UnknownAccountError
from tradesim.services.accounts.replica import DEFAULT_WINDOW, AccountSpec, Applied, LedgerReplica
from tradesim.services.accounts.service import SeqWaiters, StreamFollower
from tradesim.services.accounts.views import AccountView
from tradesim.services.alerts import AlertKind, RiskAlert, Severity
from tradesim.services.oms.messages import OmsError, OrderReply, OrderRequest
from tradesim.services.oms.rpc import OmsUnavailableError, RetryPolicy, call_oms
from tradesim.services.risk.monitor_config import LimitState, MonitorConfig
from tradesim.services.risk.monitor_messages import (
    RISK_MONITOR_MESSAGES,
    GetRisk,
    PositionRisk,
    RiskError,
    RiskReply,
    VarFigure,
)
from tradesim.services.risk.var import VarResult, historical_var, simple_returns, to_money
from tradesim.services.venue.messages import TradePrint

log = logging.getLogger("tradesim.risk.monitor")

RPC_RISK_GET = subjects.rpc("risk", "get")
RPC_OMS_SUBMIT = subjects.rpc("oms", "submit")
_RATIO = Decimal("0.000001")
_TERMINAL = frozenset({OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED, OrderStatus.EXPIRED})
_SEVERITY = {
    LimitState.NORMAL: Severity.INFO,
    LimitState.WARNING: Severity.WARNING,
    LimitState.CRITICAL: Severity.CRITICAL,
    LimitState.OVER_LIMIT: Severity.CRITICAL,
}


class _Liquidation:
    """One reducing order in flight: fills seen on `orders.filled` vs fills the OMS said it made."""

    __slots__ = ("expected", "qty", "replied", "seen")

    def __init__(self, qty: int) -> None:
        self.qty = qty
        self.expected = qty  # until the reply says otherwise, assume it all fills
        self.seen = 0
        self.replied = False

    @property
    def outstanding(self) -> int:
        return max(0, self.expected - self.seen)


def _ratio(value: Fraction) -> Decimal:
    steps = round(value / Fraction(_RATIO))
    return (Decimal(steps) * _RATIO).quantize(_RATIO, rounding=ROUND_HALF_EVEN)


def _pct(confidence: Decimal) -> str:
    """0.95 -> "95", 0.995 -> "99.5" (figure keys such as `var_95`)."""
    return format((confidence * 100).normalize(), "f")


_ZERO_RATIO: Final = Fraction(0)


def margin_ratio(view: AccountView) -> Fraction | None:
    """margin used / equity; 0 without margin in use; None (infinite) when equity <= 0 with margin in use."""
    return _margin_ratio(view.margin_used, view.equity)


def _margin_ratio(margin_used: Decimal, equity: Decimal) -> Fraction | None:
    if margin_used == 0:
        return _ZERO_RATIO
    if equity <= 0:
        return None
    return Fraction(margin_used) / Fraction(equity)


class RiskMonitorService:
    """Post-trade risk of every account, from the venue's events; see the module docstring."""

    def __init__(
        self,
        bus: Bus,
        instruments: Iterable[Instrument],
        accounts: Mapping[str, AccountSpec],
        config: MonitorConfig | None = None,
        *,
        window: int = DEFAULT_WINDOW,
        follow: bool = False,
    ) -> None:
        self.bus = bus
        self.follower = StreamFollower(bus, self._on_followed, on_caught_up=self._caught_up) if follow else None
        self._quiet = False  # replaying history: no alerts, no orders
        self.lag_ns = 0  # how late the last followed trade was handled here (wall clock - venue time)
        self.config = config or MonitorConfig()
        self._margin_warning = Fraction(self.config.margin_warning)  # the config is frozen
        self.instruments = {i.symbol: i for i in instruments}
        self.replica = LedgerReplica(self.instruments.values(), accounts, window=window)
        self._states: dict[tuple[str, str], LimitState] = {}
        self._margin_warned: set[str] = set()
        self._var_breached: set[str] = set()
        self._prices: dict[str, deque[int]] = {}
        self._price_seqs: dict[str, int] = {}
        self._liquidations: dict[tuple[str, str], dict[str, _Liquidation]] = {}
        self._sent: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._subs: list[Subscription] = []
        self._waiters = SeqWaiters()
        self.alerts_published = 0
        self.errors = 0
        bus.codec.register(*RISK_MONITOR_MESSAGES, RiskAlert, TradePrint, OrderRequest, OrderReply, OmsError)

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribes (BROADCAST) and serves `rpc.risk.get`; returns once live."""
        if self._subs:
            return
        if self.follower is not None:
            await self.follower.start()
        else:
            self._subs = [
                await self.bus.subscribe(subjects.ORDERS_FILLED, self._on_filled),
                await self.bus.subscribe(subjects.TRADES_EXECUTED, self._on_print),
            ]
        self._subs.append(await self.bus.serve(RPC_RISK_GET, self._get))

    async def stop(self) -> None:
        """Unsubscribes and waits for liquidation requests in flight."""
        if self.follower is not None:
            await self.follower.stop()
        subs, self._subs = self._subs, []
        for sub in subs:
            await sub.unsubscribe()
        await self.idle()

    async def wait_for_seq(self, seq: int, timeout: float = 5.0, symbol: str | None = None) -> None:
        """Returns once an event of venue seq >= `seq` has been processed and its alerts published; with
        several venue shards name the `symbol` of the event (seqs are per shard)."""
        current = self.replica.last_seq if symbol is None else self.replica.symbol_seq(symbol)
        await self._waiters.wait(current, seq, timeout, symbol)

    async def idle(self) -> None:
        """Returns once no liquidation request is in flight (tests and orderly shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # --- queries (pure reads of the replica) ---------------------------------------------------

    def state(self, account: str, symbol: str) -> LimitState:
        return self._states.get((account, symbol), LimitState.NORMAL)

    def returns(self, symbol: str) -> list[Fraction]:
        """The recorded trade-price returns of `symbol`, oldest first (at most `var_window`)."""
        return simple_returns(self._prices.get(symbol, ()))

    def var(self, account: str) -> VarResult | None:
        """Historical VaR of the account's current positions (None: not enough history)."""
        view = self.replica.ledger.account(account)
        exposures = {p.symbol: p.market_value for p in view.positions if p.qty}
        returns = {s: self.returns(s) for s in exposures}
        return historical_var(
            exposures,
            returns,
            self.config.var_confidences,
            window=self.config.var_window,
            min_observations=self.config.var_min_observations,
        )

    def risk(self, account: str) -> RiskReply:
        """What `rpc.risk.get` answers; raises UnknownAccountError."""
        view = self.replica.ledger.account(account)
        positions = []
        for p in view.positions:
            if not p.qty:
                continue
            limit = self.config.limit(account, p.symbol)
            positions.append(
                PositionRisk(
                    symbol=p.symbol,
                    qty=p.qty,
                    limit=limit,
                    state=None if limit is None else self.config.classify(p.qty, limit),
                    utilization=None if limit is None else _ratio(Fraction(abs(p.qty), limit)),
                )
            )
        ratio = margin_ratio(view)
        result = self.var(account)
        return RiskReply(
            account=account,
            seq=self.replica.last_seq,
            positions=positions,
            equity=view.equity,
            margin_used=view.margin_used,
            margin_ratio=None if ratio is None else _ratio(ratio),
            margin_warning=account in self._margin_warned,
            var=[]
            if result is None
            else [VarFigure(confidence=c, var=to_money(v)) for c, v in sorted(result.var.items())],
            var_observations=0 if result is None else result.observations,
            var_limit=self.config.account_var_limit(account),
            var_breach=account in self._var_breached,
            liquidations_in_flight=sum(len(v) for k, v in self._liquidations.items() if k[0] == account),
        )

    # --- events --------------------------------------------------------------------------------

    async def _on_filled(self, d: Delivery) -> None:
        if isinstance(d.data, Trade):
            await self.on_trade(d.data)
            self._waiters.notify(self.replica.last_seq, self.replica.symbol_seq)

    async def _on_print(self, d: Delivery) -> None:
        if isinstance(d.data, TradePrint):
            await self.on_print(d.data)
            self._waiters.notify(self.replica.last_seq, self.replica.symbol_seq)

    async def _on_followed(self, d: Delivery) -> None:
        if isinstance(d.data, Trade):
            assert self.follower is not None
            self._quiet = self.follower.replaying(d)
            try:
                await self.on_trade(d.data)
            finally:
                self._quiet = False
            self.lag_ns = max(0, time.time_ns() - d.data.ts)
            self._waiters.notify(self.replica.last_seq, self.replica.symbol_seq)

    async def _caught_up(self) -> None:
        """History replayed: liquidate what is still over its limit (it was held back during the replay)."""
        for (account, symbol), state in sorted(self._states.items()):
            if state is LimitState.OVER_LIMIT:
                self._maybe_liquidate(account, symbol, self.replica.last_seq, self.replica.last_ts)

    async def on_trade(self, trade: Trade) -> None:
        """Books a trade and re-evaluates both sides (as if delivered on `orders.filled`)."""
        try:
            if self.replica.apply_trade(trade) is Applied.DUPLICATE:
                return
        except LedgerError as exc:
            self.errors += 1
            log.error("trade %s on %s not booked: %s", trade.trade_id, trade.symbol, exc)
            return
        self.replica.mark(trade.symbol, trade.seq, trade.price, trade.ts)
        self._record_price(trade.symbol, trade.seq, trade.price)
        for account, coid in (
            (trade.maker_account, trade.maker_client_order_id),
            (trade.taker_account, trade.taker_client_order_id),
        ):
            liq = self._liquidations.get((account, trade.symbol), {}).get(coid)
            if liq is not None:
                liq.seen += trade.qty
                self._settle(account, trade.symbol, coid)
        alerts: list[RiskAlert] = []
        for account in dict.fromkeys((trade.maker_account, trade.taker_account)):
            self._check_position(account, trade.symbol, trade.seq, trade.ts, alerts)
            self._check_account(account, trade.ts, alerts)
        await self._publish(alerts)

    async def on_print(self, p: TradePrint) -> None:
        """Records the price and mark; re-checks margin, VaR and limits of everyone holding the symbol."""
        self.replica.mark(p.symbol, p.seq, p.price, p.ts)
        if not self._record_price(p.symbol, p.seq, p.price):
            return
        alerts: list[RiskAlert] = []
        ledger = self.replica.ledger
        for account in ledger.accounts:
            if ledger.qty(account, p.symbol):
                self._check_account(account, p.ts, alerts)
                if self.state(account, p.symbol) is LimitState.OVER_LIMIT:
                    self._maybe_liquidate(account, p.symbol, p.seq, p.ts)
        await self._publish(alerts)

    def _record_price(self, symbol: str, seq: int, price: int) -> bool:
        """Appends a trade price to the symbol's history once (a print and its Trade share a seq)."""
        if seq <= self._price_seqs.get(symbol, -1):
            return False
        self._price_seqs[symbol] = seq
        history = self._prices.get(symbol)
        if history is None:
            history = self._prices[symbol] = deque(maxlen=self.config.var_window + 1)
        history.append(price)
        return True

    # --- checks --------------------------------------------------------------------------------

    def _check_position(self, account: str, symbol: str, seq: int, ts: int, alerts: list[RiskAlert]) -> None:
        limit = self.config.limit(account, symbol)
        if limit is None:
            return
        qty = self.replica.ledger.qty(account, symbol)
        new = self.config.classify(qty, limit)
        old = self._states.get((account, symbol), LimitState.NORMAL)
        if new is not old:
            self._states[(account, symbol)] = new
            note = ""
            if new is LimitState.OVER_LIMIT and not self.config.liquidation_enabled:
                note = " (liquidation disabled)"
            alerts.append(
                RiskAlert(
                    ts=ts,
                    alert=AlertKind.POSITION_STATE,
                    severity=_SEVERITY[new],
                    account=account,
                    symbol=symbol,
                    message=f"{account} {symbol}: {old} -> {new}, position {qty} of limit {limit}{note}",
                    figures={"state": str(new), "previous": str(old), "qty": str(qty), "limit": str(limit)},
                )
            )
        if new is LimitState.OVER_LIMIT:
            self._maybe_liquidate(account, symbol, seq, ts)

    def _check_account(self, account: str, ts: int, alerts: list[RiskAlert]) -> None:
        figures_now = self.replica.ledger.figures(account)  # as account() has them, without the views
        margin_used, equity = figures_now.margin_used, figures_now.equity
        ratio = _margin_ratio(margin_used, equity)
        warn = ratio is None or ratio >= self._margin_warning
        if warn != (account in self._margin_warned):  # the figures are only worked out for an alert
            shown = "inf" if ratio is None else str(_ratio(ratio))
            figures = {
                "margin_used": str(margin_used),
                "equity": str(equity),
                "ratio": shown,
                "threshold": str(self.config.margin_warning),
            }
            if warn:
                self._margin_warned.add(account)
                message = f"{account}: margin used / equity {shown} >= {self.config.margin_warning}"
            else:
                self._margin_warned.discard(account)
                message = f"{account}: margin used / equity {shown} back below {self.config.margin_warning}"
            alerts.append(
                RiskAlert(
                    ts=ts,
                    alert=AlertKind.MARGIN_WARNING,
                    severity=Severity.WARNING if warn else Severity.INFO,
                    account=account,
                    message=message,
                    figures=figures,
                )
            )
        limit = self.config.account_var_limit(account)
        if limit is None:
            return
        result = self.var(account)
        level = self.config.var_limit_confidence
        breach = result is not None and result.var[level] > Fraction(limit)
        if breach != (account in self._var_breached):
            figures = {"limit": str(limit), "confidence": str(level)}
            if result is not None:
                figures.update({f"var_{_pct(c)}": str(to_money(v)) for c, v in sorted(result.var.items())})
                figures["observations"] = str(result.observations)
            if breach:
                self._var_breached.add(account)
                message = f"{account}: VaR {_pct(level)}% {figures.get(f'var_{_pct(level)}')} above limit {limit}"
            else:
                self._var_breached.discard(account)
                message = f"{account}: VaR {_pct(level)}% back within limit {limit}"
            alerts.append(
                RiskAlert(
                    ts=ts,
                    alert=AlertKind.VAR_BREACH,
                    severity=Severity.CRITICAL if breach else Severity.INFO,
                    account=account,
                    message=message,
                    figures=figures,
                )
            )

    # --- liquidation ---------------------------------------------------------------------------

    def _maybe_liquidate(self, account: str, symbol: str, seq: int, ts: int) -> None:
        """Sends one reducing market order for what is over the target, net of orders already in flight."""
        limit = self.config.limit(account, symbol)
        if not self.config.liquidation_enabled or limit is None or self._quiet:
            return
        qty = self.replica.ledger.qty(account, symbol)
        in_flight = sum(liq.outstanding for liq in self._liquidations.get((account, symbol), {}).values())
        reducible = abs(qty) - in_flight
        excess = reducible - self.config.liquidation_floor(limit)
        if excess <= 0 or abs(qty) - in_flight <= limit:
            return
        lot = self.instruments[symbol].lot_size if symbol in self.instruments else 1
        size = min(math.ceil(excess / lot) * lot, reducible // lot * lot)
        coid = f"liq-{account}-{symbol}-{seq}"
        if size <= 0 or coid in self._sent:
            return
        self._sent.add(coid)
        self._liquidations.setdefault((account, symbol), {})[coid] = _Liquidation(size)
        request = OrderRequest(
            account=account,
            symbol=symbol,
            side=Side.SELL if qty > 0 else Side.BUY,
            qty=size,
            type=OrderType.MARKET,
            tif=TimeInForce.IOC,
            client_order_id=coid,
            correlation_id=coid,
        )
        task = asyncio.get_running_loop().create_task(self._submit(request, qty, limit, ts))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _submit(self, request: OrderRequest, position: int, limit: int, ts: int) -> None:
        """Sends the order (retrying with the same client_order_id), then reports it in a LIQUIDATION alert."""
        key = (request.account, request.symbol)
        coid = request.client_order_id
        outcome: str
        filled = 0
        reply: msgspec.Struct | None = None
        timeout = self.config.liquidation_timeout  # retried across an OMS failover (call_oms), same coid
        try:
            reply = await call_oms(self.bus, "submit", request, policy=RetryPolicy(
                timeout=timeout, deadline=timeout * self.config.liquidation_attempts))
        except RemoteError as exc:
            outcome = f"failed: {exc.error_type}: {exc.message}"
        except OmsUnavailableError as exc:
            outcome = f"failed after {exc.attempts} attempt(s): {exc.last}"
        except (BusError, TimeoutError) as exc:
            outcome = f"failed: {type(exc).__name__}: {exc}"
        liq = self._liquidations.get(key, {}).get(coid)
        if isinstance(reply, OrderReply):
            order = reply.order
            filled = order.filled_qty
            outcome = f"{order.status} filled {filled}" + (f" ({order.reason})" if order.reason else "")
            if liq is not None:
                liq.replied = True
                liq.expected = filled if order.status in _TERMINAL else order.qty
        elif isinstance(reply, OmsError):
            outcome = f"refused: {reply.error}: {reply.message}"
        elif reply is not None:
            outcome = f"unexpected reply {type(reply).__name__}"
        if liq is not None and not liq.replied:
            liq.replied = True
            liq.expected = liq.seen  # nothing more will fill
        severity = Severity.CRITICAL if filled < request.qty else Severity.WARNING
        await self._publish(
            [
                RiskAlert(
                    ts=ts,
                    alert=AlertKind.LIQUIDATION,
                    severity=severity,
                    account=request.account,
                    symbol=request.symbol,
                    client_order_id=coid,
                    message=f"liquidation {request.side} {request.qty} {request.symbol} "
                    f"(position {position}, limit {limit}): {outcome}",
                    figures={
                        "qty": str(request.qty),
                        "side": str(request.side),
                        "position": str(position),
                        "limit": str(limit),
                        "filled_qty": str(filled),
                    },
                )
            ]
        )
        self._settle(request.account, request.symbol, coid)

    def _settle(self, account: str, symbol: str, coid: str) -> None:
        """Forgets a liquidation once replied and all its fills are booked."""
        orders = self._liquidations.get((account, symbol))
        liq = None if orders is None else orders.get(coid)
        if orders is None or liq is None or not liq.replied or liq.outstanding:
            return
        del orders[coid]
        if not orders:
            del self._liquidations[(account, symbol)]

    # --- RPC and alerts ------------------------------------------------------------------------

    async def _get(self, req: msgspec.Struct) -> msgspec.Struct:
        if not isinstance(req, GetRisk) or not req.account:
            got = type(req).__name__
            message = (
                "account must be a non-empty string" if isinstance(req, GetRisk) else f"expected GetRisk, got {got}"
            )
            return RiskError(error="malformed", message=message)
        try:
            return self.risk(req.account)
        except UnknownAccountError as exc:
            return RiskError(error="unknown_account", message=str(exc))

    async def _publish(self, alerts: list[RiskAlert]) -> None:
        if self._quiet:
            return
        for alert in alerts:
            log.warning("risk alert %s %s: %s", alert.alert, alert.severity, alert.message)
            await self.bus.publish(subjects.RISK_ALERTS, alert)
            self.alerts_published += 1
