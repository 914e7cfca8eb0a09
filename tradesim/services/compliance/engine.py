"""The compliance engine: runs an account's rule packs on one new order and logs every violation.

Pure like pre-trade risk (no bus, no I/O, no clock). The OMS calls it before risk. Every failing rule of
every pack is recorded in the `ViolationLog`; the decision is the first violation in rule order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from tradesim.domain import Instrument, NewOrder, Side
from tradesim.services.compliance.config import ComplianceConfig, CompliancePack
from tradesim.services.compliance.violations import Violation, ViolationLog
from tradesim.services.risk.decision import ACCEPT, Decision, reject
from tradesim.services.risk.pricing import check_price, notional, plain
from tradesim.services.risk.state import AccountState, Activity, MarketState


@dataclass(frozen=True, slots=True)
class _Order:
    order: NewOrder
    instrument: Instrument
    account: AccountState
    market: MarketState
    activity: Activity
    position: int
    open_same: int

    @property
    def short_after(self) -> int:
        """Position after this sell and the account's other working sells (< 0 means short)."""
        return self.position - self.open_same - self.order.qty


Rule = Callable[[CompliancePack, _Order], str | None]


def _restricted_list(p: CompliancePack, c: _Order) -> str | None:
    if c.order.symbol not in p.restricted:
        return None
    return f"{c.order.symbol} is on the restricted list"


def _sharia_instrument(p: CompliancePack, c: _Order) -> str | None:
    if not p.sharia or c.instrument.sharia_compliant:
        return None
    return f"{c.order.symbol} is not sharia-compliant"


def _sharia_margin(p: CompliancePack, c: _Order) -> str | None:
    if not p.sharia or c.instrument.margin_rate == 0:
        return None
    return (f"{c.order.symbol} is traded on margin (margin rate {c.instrument.margin_rate}): "
            f"not permitted under the Sharia profile")


def _sells_short(c: _Order) -> bool:
    return c.order.side is Side.SELL and c.short_after < 0


def _sharia_short_sale(p: CompliancePack, c: _Order) -> str | None:
    if not p.sharia or not _sells_short(c):
        return None
    return (f"short selling is not permitted under the Sharia profile: sell {c.order.qty} with position "
            f"{c.position} and open sells {c.open_same} would leave {c.short_after}")


def _short_sale(p: CompliancePack, c: _Order) -> str | None:
    if not p.short_sale_restriction or not _sells_short(c) or "shortable" in c.instrument.flags:
        return None
    return (f"short sale of {c.order.symbol} not allowed: sell {c.order.qty} with position {c.position} "
            f"and open sells {c.open_same} would leave {c.short_after}")


def _concentration(p: CompliancePack, c: _Order) -> str | None:
    limit = p.max_concentration_pct
    if limit is None:
        return None
    o = c.order
    price = check_price(o, c.market, c.instrument.price_band)
    if price is None:
        return None  # a market order with no price at all is refused by risk (no_reference_price)
    sign = 1 if o.side is Side.BUY else -1
    before = c.position + sign * c.open_same
    after = before + sign * o.qty
    if abs(after) <= abs(before):
        return None  # reducing concentration is always allowed
    value = notional(c.instrument, price, abs(after))
    equity = c.account.equity
    if equity <= 0:
        return f"position value in {o.symbol} after the order {value} with equity {equity}: equity is not positive"
    share = value * 100 / equity
    if share <= limit:
        return None
    return (f"position value in {o.symbol} after the order {value} is {share:.2f}% of equity {equity} "
            f"> {plain(limit)}%")


def _order_to_trade(p: CompliancePack, c: _Order) -> str | None:
    limit = p.max_order_to_trade
    if limit is None:
        return None
    orders = c.activity.orders + 1
    trades = c.activity.trades
    if orders < p.order_to_trade_min_orders:
        return None
    ratio = Decimal(orders) / max(trades, 1)
    if ratio <= limit:
        return None
    return f"order-to-trade ratio {ratio:.2f} > {plain(limit)} (orders {orders}, trades {trades})"


RULES: tuple[tuple[str, Rule], ...] = (
    ("restricted_list", _restricted_list),
    ("sharia_instrument", _sharia_instrument),
    ("sharia_margin", _sharia_margin),
    ("sharia_short_sale", _sharia_short_sale),
    ("short_sale", _short_sale),
    ("concentration", _concentration),
    ("order_to_trade", _order_to_trade),
)


class ComplianceEngine:
    """Compliance packs per account (see `ComplianceConfig`); `RULES` gives the evaluation order."""

    def __init__(self, config: ComplianceConfig, log: ViolationLog | None = None) -> None:
        self.config = config
        self.log = log if log is not None else ViolationLog()

    @property
    def rules(self) -> tuple[str, ...]:
        return tuple(name for name, _ in RULES)

    def check(
        self,
        order: NewOrder,
        instrument: Instrument,
        account: AccountState,
        market: MarketState,
        activity: Activity,
        ts: int,
    ) -> Decision:
        """ACCEPT or the first violation (rule order, then pack order); all violations are logged."""
        packs = self.config.packs_for(order.account)
        if not packs:
            return ACCEPT
        ctx = _Order(
            order=order, instrument=instrument, account=account, market=market, activity=activity,
            position=account.position(order.symbol), open_same=account.open_qty(order.symbol, order.side),
        )
        first: Decision | None = None
        seen: set[tuple[str, str]] = set()
        for name, rule in RULES:
            for pack in packs:
                message = rule(pack, ctx)
                if message is None or (name, message) in seen:
                    continue
                seen.add((name, message))
                self.log.record(Violation(
                    ts=ts, account=order.account, rule=name, client_order_id=order.client_order_id,
                    symbol=order.symbol, message=message, pack=pack.name,
                ))
                first = first or reject(name, message)
        return first or ACCEPT
