"""The pre-trade risk engine: runs the limit rules on one new order, in a fixed order, first REJECT wins.

Pure: no bus, no I/O, no clock. The OMS passes the order, its instrument, read-only views of the account
and the market, and `ts`. Orders that go forward (ACCEPT or HOLD) are recorded in the daily counters and
in the rate and duplicate windows; the OMS feeds cancels (`check_cancel`) and trades (`on_trade`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from tradesim.domain import Instrument, NewOrder, Side
from tradesim.services.risk.config import DEFAULT_RATE_WINDOW_MS, Limits, RiskConfig
from tradesim.services.risk.counters import DailyCounters
from tradesim.services.risk.decision import ACCEPT, Decision, hold, reject
from tradesim.services.risk.pricing import check_price, notional, pct, plain
from tradesim.services.risk.state import AccountState, MarketState, TradingState
from tradesim.services.risk.throttle import NS_PER_MS, DuplicateWindow, RateWindow


@dataclass(frozen=True, slots=True)
class _Order:
    """Everything one evaluation needs, computed once."""

    order: NewOrder
    instrument: Instrument
    account: AccountState
    market: MarketState
    limits: Limits
    ts: int
    price: int | None
    position: int
    open_same: int

    @property
    def signed_qty(self) -> int:
        return self.order.qty if self.order.side is Side.BUY else -self.order.qty

    @property
    def signed_open(self) -> int:
        return self.open_same if self.order.side is Side.BUY else -self.open_same


class PreTradeRisk:
    """Pre-trade limits per account and instrument; see `RULES` for the evaluation order."""

    def __init__(self, config: RiskConfig, counters: DailyCounters | None = None) -> None:
        self.config = config
        self.counters = counters if counters is not None else DailyCounters()
        self._rate = RateWindow()
        self._dups = DuplicateWindow()
        self._states: dict[str, TradingState] = {}
        self._rules: tuple[tuple[str, Callable[[_Order], Decision | None]], ...] = (
            ("trading_state", self._trading_state),
            ("loss_limit", self._loss_limit),
            ("max_order_qty", self._max_order_qty),
            ("no_reference_price", self._no_reference_price),
            ("max_order_notional", self._max_order_notional),
            ("price_band", self._price_band),
            ("position_limit", self._position_limit),
            ("max_open_orders", self._max_open_orders),
            ("max_orders_per_day", self._max_orders_per_day),
            ("max_trades_per_day", self._max_trades_per_day),
            ("duplicate_order", self._duplicate_order),
            ("order_rate", self._order_rate),
            ("buying_power", self._buying_power),
            ("pct_of_day_volume", self._pct_of_day_volume),
        )

    @property
    def rules(self) -> tuple[str, ...]:
        """Rule names in evaluation order."""
        return tuple(name for name, _ in self._rules)

    # -- account state ------------------------------------------------------------------------------

    def trading_state(self, account_id: str, account: AccountState) -> TradingState:
        """The stricter of the ledger's state and the one set here (kill switch or operator)."""
        return account.trading_state.worst(self._states.get(account_id, TradingState.ACTIVE))

    def set_trading_state(self, account_id: str, state: TradingState) -> None:
        """Operator override; ACTIVE clears it (a kill-switch halt stays until someone does this)."""
        if state is TradingState.ACTIVE:
            self._states.pop(account_id, None)
        else:
            self._states[account_id] = state

    # -- entry points -------------------------------------------------------------------------------

    def check(
        self, order: NewOrder, instrument: Instrument, account: AccountState, market: MarketState, ts: int
    ) -> Decision:
        """ACCEPT, the first REJECT in rule order, or HOLD if some rule holds and none rejects."""
        limits = self.config.limits_for(order.account, instrument)
        ctx = _Order(
            order=order, instrument=instrument, account=account, market=market, limits=limits, ts=ts,
            price=check_price(order, market, limits.price_band),
            position=account.position(order.symbol), open_same=account.open_qty(order.symbol, order.side),
        )
        held: Decision | None = None
        for _, rule in self._rules:
            decision = rule(ctx)
            if decision is None:
                continue
            if decision.rejected:
                return decision
            held = held or decision
        self._record(ctx)
        return held or ACCEPT

    def check_cancel(self, account_id: str, ts: int) -> Decision:
        """Daily cancel limit; an accepted cancel is counted."""
        limit = self.config.account_limits(account_id).max_cancels_per_day
        counts = self.counters.get(account_id, ts)
        if limit is not None and counts.cancels + 1 > limit:
            return reject("max_cancels_per_day", f"daily cancel limit exceeded: {counts.cancels + 1} > {limit}")
        counts.cancels += 1
        return ACCEPT

    def on_trade(self, account_id: str, ts: int) -> None:
        """One fill of one of the account's orders (feeds the daily trade count)."""
        self.counters.add_trade(account_id, ts)

    def _record(self, c: _Order) -> None:
        o = c.order
        self.counters.add_order(o.account, c.ts)
        self._rate.record(o.account, c.ts)
        self._dups.record(_dup_key(o), c.ts)

    # -- rules, in order ----------------------------------------------------------------------------

    def _trading_state(self, c: _Order) -> Decision | None:
        o = c.order
        state = self.trading_state(o.account, c.account)
        if state is TradingState.HALTED:
            return reject("account_halted", f"account {o.account} is halted: no orders accepted")
        if state is TradingState.REDUCING:
            reduces = c.position < 0 if o.side is Side.BUY else c.position > 0
            if not reduces or c.open_same + o.qty > abs(c.position):
                return reject(
                    "account_reducing",
                    f"account {o.account} may only reduce positions: {o.side} {o.qty} with position "
                    f"{c.position} and open {o.side} qty {c.open_same} does not reduce it",
                )
        return None

    def _loss_limit(self, c: _Order) -> Decision | None:
        limit = c.limits.loss_limit
        pnl = c.account.pnl_today
        if limit is None or pnl > -limit:
            return None
        self._states[c.order.account] = TradingState.HALTED
        return reject("loss_limit", f"day P&L {pnl} <= -{limit} loss limit: account {c.order.account} halted")

    def _max_order_qty(self, c: _Order) -> Decision | None:
        limit = c.limits.max_order_qty
        if limit is None or c.order.qty <= limit:
            return None
        return reject("max_order_qty", f"order qty exceeds limit: {c.order.qty} > {limit}")

    def _no_reference_price(self, c: _Order) -> Decision | None:
        if c.price is not None:
            return None
        return reject("no_reference_price", f"no reference or last price for {c.order.symbol} to value a market order")

    def _max_order_notional(self, c: _Order) -> Decision | None:
        limit = c.limits.max_order_notional
        if limit is None or c.price is None:
            return None
        value = notional(c.instrument, c.price, c.order.qty)
        if value <= limit:
            return None
        return reject("max_order_notional", f"order notional exceeds limit: {value} > {limit}")

    def _price_band(self, c: _Order) -> Decision | None:
        band, o = c.limits.price_band, c.order
        if band is None or o.price is None or c.price != o.price:
            return None  # market and stop orders have no limit price to compare
        ref = c.market.reference_price(o.symbol)
        if ref is None:
            ref = c.market.last_price(o.symbol)
        if ref is None or ref <= 0:
            return None
        distance = Decimal(abs(o.price - ref)) / ref
        if distance <= band:
            return None
        ins = c.instrument
        return reject(
            "price_band",
            f"price {ins.from_ticks(o.price)} is {distance * 100:.2f}% from reference {ins.from_ticks(ref)}, "
            f"band {pct(band)}%",
        )

    def _position_limit(self, c: _Order) -> Decision | None:
        limit = c.limits.position_limit
        if limit is None:
            return None
        before = c.position + c.signed_open
        after = before + c.signed_qty
        if abs(after) <= limit or abs(after) <= abs(before):
            return None
        return reject("position_limit", f"position limit exceeded: {abs(after)} > {limit}")

    def _max_open_orders(self, c: _Order) -> Decision | None:
        limit = c.limits.max_open_orders
        count = c.account.open_order_count + 1
        if limit is None or count <= limit:
            return None
        return reject("max_open_orders", f"open order limit exceeded: {count} > {limit}")

    def _max_orders_per_day(self, c: _Order) -> Decision | None:
        limit = c.limits.max_orders_per_day
        count = self.counters.get(c.order.account, c.ts).orders + 1
        if limit is None or count <= limit:
            return None
        return reject("max_orders_per_day", f"daily order limit exceeded: {count} > {limit}")

    def _max_trades_per_day(self, c: _Order) -> Decision | None:
        limit = c.limits.max_trades_per_day
        count = self.counters.get(c.order.account, c.ts).trades
        if limit is None or count < limit:
            return None
        return reject("max_trades_per_day", f"daily trade limit reached: {count} >= {limit}")

    def _duplicate_order(self, c: _Order) -> Decision | None:
        window = c.limits.duplicate_window_ms
        if window is None:
            return None
        seen = self._dups.last_seen(_dup_key(c.order), c.ts, window)
        if seen is None:
            return None
        o = c.order
        ago = (c.ts - seen) / NS_PER_MS
        at = "market" if o.price is None else o.price
        return reject(
            "duplicate_order",
            f"duplicate order: {o.side} {o.qty} {o.symbol} at {at} sent {ago:g} ms ago (window {window} ms)",
        )

    def _order_rate(self, c: _Order) -> Decision | None:
        limit = c.limits.max_order_rate
        if limit is None:
            return None
        window = c.limits.rate_window_ms or DEFAULT_RATE_WINDOW_MS
        count = self._rate.count(c.order.account, c.ts, window) + 1
        if count <= limit:
            return None
        return reject("order_rate", f"order rate exceeded: {count} orders in {window} ms > {limit}")

    def _buying_power(self, c: _Order) -> Decision | None:
        o, ins = c.order, c.instrument
        if c.price is None:
            return None
        if ins.margin_rate == 0:
            if o.side is Side.SELL:
                return None  # selling needs no cash; short selling is compliance's business
            value = notional(ins, c.price, o.qty)
            required = value + value * ins.taker_fee_bps / 10_000
            available = c.account.cash_available
            if required <= available:
                return None
            return reject("buying_power", f"buying power exceeded: cash required {required} > available {available}")
        # Futures: only the part of the order that opens or extends a position needs margin.
        opposite = -c.position if o.side is Side.BUY else c.position
        closing = max(0, opposite - c.open_same)
        opening = max(0, o.qty - closing)
        required = notional(ins, c.price, opening) * ins.margin_rate
        available = c.account.margin_available
        if required <= available:
            return None
        return reject("buying_power", f"buying power exceeded: margin required {required} > available {available}")

    def _pct_of_day_volume(self, c: _Order) -> Decision | None:
        limit = c.limits.max_pct_day_volume
        if limit is None:
            return None
        volume = c.market.day_volume(c.order.symbol)
        if volume <= 0 or volume < (c.limits.min_day_volume or 0):
            return None
        share = Decimal(c.order.qty * 100) / volume
        if share <= limit:
            return None
        return hold(
            "pct_of_day_volume",
            f"order qty {c.order.qty} is {share:.2f}% of day volume {volume} > {plain(limit)}%: held for approval",
        )


def _dup_key(order: NewOrder) -> tuple[str, str, str, int | None, int]:
    return (order.account, order.symbol, order.side.value, order.price, order.qty)
