"""Pre-trade risk: every rule accepting and refusing with exact messages, rule order, account states,
kill switch, time windows, counters, TOML config, held orders, and the docs example."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest

from tradesim.domain import Instrument, NewOrder, OrderType, Side
from tradesim.services.risk import (
    ACCEPT,
    ConfigError,
    DailyCounters,
    Decision,
    HeldOrders,
    HoldAlreadyDecidedError,
    HoldStatus,
    Limits,
    PreTradeRisk,
    RiskConfig,
    TradingState,
    UnknownHoldError,
    Verdict,
    hold,
    load_risk_config,
    parse_risk_config,
    reject,
)
from tradesim.services.risk.counters import NS_PER_DAY

ROOT = Path(__file__).resolve().parents[2]
MS = 1_000_000
AAPL = Instrument(symbol="AAPL.SIM", tick_size=Decimal("0.01"))
FUT = Instrument(symbol="IF2501.CFFEX", tick_size=Decimal("0.2"), multiplier=Decimal(300), margin_rate=Decimal("0.1"))


@dataclass
class Account:
    cash_available: Decimal = Decimal(10_000_000)
    margin_available: Decimal = Decimal(10_000_000)
    equity: Decimal = Decimal(10_000_000)
    pnl_today: Decimal = Decimal(0)
    open_order_count: int = 0
    trading_state: TradingState = TradingState.ACTIVE
    positions: dict[str, int] = field(default_factory=dict)
    open_orders: dict[tuple[str, Side], int] = field(default_factory=dict)

    def position(self, symbol: str) -> int:
        return self.positions.get(symbol, 0)

    def open_qty(self, symbol: str, side: Side) -> int:
        return self.open_orders.get((symbol, side), 0)


@dataclass
class Market:
    reference: dict[str, int] = field(default_factory=lambda: {"AAPL.SIM": 10000, "IF2501.CFFEX": 20000})
    last: dict[str, int] = field(default_factory=dict)
    volume: dict[str, int] = field(default_factory=dict)

    def reference_price(self, symbol: str) -> int | None:
        return self.reference.get(symbol)

    def last_price(self, symbol: str) -> int | None:
        return self.last.get(symbol)

    def day_volume(self, symbol: str) -> int:
        return self.volume.get(symbol, 0)


_ids = iter(range(1, 1_000_000))


def order(side: Side = Side.BUY, qty: int = 10, price: int | None = 10000, symbol: str = "AAPL.SIM",
          account: str = "alice", type: OrderType = OrderType.LIMIT, **kw: object) -> NewOrder:
    if type is OrderType.MARKET:
        price = None
    return NewOrder(account=account, client_order_id=f"c{next(_ids)}", symbol=symbol, side=side, type=type,
                    price=price, qty=qty, **kw)  # type: ignore[arg-type]


def engine(**defaults: object) -> PreTradeRisk:
    return PreTradeRisk(RiskConfig(defaults=Limits(**defaults)))  # type: ignore[arg-type]


def check(risk: PreTradeRisk, o: NewOrder, account: Account | None = None, market: Market | None = None,
          ts: int = 0) -> Decision:
    ins = FUT if o.symbol == FUT.symbol else AAPL
    return risk.check(o, ins, account or Account(), market or Market(), ts)


def rejected(code: str, message: str) -> Decision:
    return Decision(verdict=Verdict.REJECT, code=code, message=message)


# -- decisions ----------------------------------------------------------------------------------------


def test_decision_helpers_and_error_body() -> None:
    d = reject("position_limit", "position limit exceeded: 10400 > 10000")
    assert d.rejected and not d.accepted and not d.held
    assert d.to_error() == {"error": "position_limit", "message": "position limit exceeded: 10400 > 10000"}
    assert hold("x", "y").held and ACCEPT.accepted and ACCEPT.code == ""


def test_no_limits_accepts() -> None:
    assert check(engine(), order()) == ACCEPT


# -- one rule at a time -------------------------------------------------------------------------------


def test_max_order_qty() -> None:
    risk = engine(max_order_qty=1000)
    assert check(risk, order(qty=1000)) == ACCEPT
    assert check(risk, order(qty=1001)) == rejected("max_order_qty", "order qty exceeds limit: 1001 > 1000")


def test_max_order_notional() -> None:
    risk = engine(max_order_notional=Decimal(10_000))
    assert check(risk, order(qty=100, price=10000)) == ACCEPT
    assert check(risk, order(qty=101, price=10000)) == rejected(
        "max_order_notional", "order notional exceeds limit: 10100.00 > 10000")


def test_max_order_notional_uses_multiplier() -> None:
    fut = order(symbol=FUT.symbol, qty=1, price=20000)  # 4000.0 * 1 * 300
    assert check(engine(max_order_notional=Decimal(1_200_000)), fut) == ACCEPT
    assert check(engine(max_order_notional=Decimal(1_199_999)), fut) == rejected(
        "max_order_notional", "order notional exceeds limit: 1200000.0 > 1199999")


def test_price_band_from_config() -> None:
    risk = engine(price_band=Decimal("0.1"))
    assert check(risk, order(price=11000)) == ACCEPT  # exactly 10% away
    assert check(risk, order(price=9000, side=Side.SELL)) == ACCEPT
    assert check(risk, order(price=11001)) == rejected(
        "price_band", "price 110.01 is 10.01% from reference 100.00, band 10%")
    assert check(risk, order(price=8999)) == rejected(
        "price_band", "price 89.99 is 10.01% from reference 100.00, band 10%")


def test_price_band_from_instrument_and_fallback_to_last() -> None:
    banded = Instrument(symbol="AAPL.SIM", tick_size=Decimal("0.01"), price_band=Decimal("0.05"))
    risk = engine(price_band=Decimal("0.5"))  # the instrument's own band beats the config default
    d = risk.check(order(price=10600), banded, Account(), Market(), 0)
    assert d == rejected("price_band", "price 106.00 is 6.00% from reference 100.00, band 5%")
    no_ref = Market(reference={}, last={"AAPL.SIM": 10500})
    assert risk.check(order(price=11000), banded, Account(), no_ref, 0) == ACCEPT  # 4.76% from last 105.00
    assert risk.check(order(price=11100), banded, Account(), Market(reference={}), 0) == ACCEPT  # nothing to compare


def test_position_limit_counts_open_same_side_orders() -> None:
    risk = engine(position_limit=10_000)
    acct = Account(positions={"AAPL.SIM": 9000}, open_orders={("AAPL.SIM", Side.BUY): 1000})
    assert check(risk, order(qty=400), acct) == rejected("position_limit", "position limit exceeded: 10400 > 10000")
    acct.open_orders[("AAPL.SIM", Side.BUY)] = 600
    assert check(risk, order(qty=400), acct) == ACCEPT
    short = Account(positions={"AAPL.SIM": -9000}, open_orders={("AAPL.SIM", Side.SELL): 1000})
    assert check(risk, order(side=Side.SELL, qty=400), short) == rejected(
        "position_limit", "position limit exceeded: 10400 > 10000")


def test_position_limit_lets_a_reducing_order_through() -> None:
    risk = engine(position_limit=10_000)
    acct = Account(positions={"AAPL.SIM": 12_000})
    assert check(risk, order(side=Side.SELL, qty=100), acct) == ACCEPT
    assert check(risk, order(side=Side.BUY, qty=1), acct).code == "position_limit"


def test_max_open_orders() -> None:
    risk = engine(max_open_orders=200)
    assert check(risk, order(), Account(open_order_count=199)) == ACCEPT
    assert check(risk, order(), Account(open_order_count=200)) == rejected(
        "max_open_orders", "open order limit exceeded: 201 > 200")


def test_daily_order_limit_and_rollover() -> None:
    risk = engine(max_orders_per_day=2)
    assert check(risk, order(), ts=1).accepted
    assert check(risk, order(), ts=2).accepted
    assert check(risk, order(), ts=3) == rejected("max_orders_per_day", "daily order limit exceeded: 3 > 2")
    assert check(risk, order(), ts=NS_PER_DAY).accepted  # a new day
    assert risk.counters.get("alice", NS_PER_DAY).orders == 1


def test_daily_trade_limit_and_rollover() -> None:
    risk = engine(max_trades_per_day=2)
    risk.on_trade("alice", 10)
    assert check(risk, order(), ts=11).accepted
    risk.on_trade("alice", 12)
    assert check(risk, order(), ts=13) == rejected("max_trades_per_day", "daily trade limit reached: 2 >= 2")
    assert check(risk, order(), ts=NS_PER_DAY + 1).accepted


def test_daily_cancel_limit_and_rollover() -> None:
    text = "[defaults]\nmax_cancels_per_day = 1\n[accounts.bob]\nmax_cancels_per_day = 2"
    risk = PreTradeRisk(parse_risk_config(text))
    assert risk.check_cancel("alice", 5) == ACCEPT
    assert risk.check_cancel("alice", 6) == rejected("max_cancels_per_day", "daily cancel limit exceeded: 2 > 1")
    assert risk.check_cancel("bob", 6).accepted and risk.check_cancel("bob", 7).accepted
    assert risk.check_cancel("alice", NS_PER_DAY + 6) == ACCEPT


def test_duplicate_order_window() -> None:
    risk = engine(duplicate_window_ms=500)
    assert check(risk, order(qty=10), ts=0).accepted
    assert check(risk, order(qty=10), ts=300 * MS) == rejected(
        "duplicate_order", "duplicate order: buy 10 AAPL.SIM at 10000 sent 300 ms ago (window 500 ms)")
    assert check(risk, order(qty=11), ts=300 * MS).accepted  # different qty
    assert check(risk, order(qty=10, side=Side.SELL), ts=300 * MS).accepted
    assert check(risk, order(qty=10, account="bob"), ts=300 * MS).accepted
    # the refused copy did not restart the window: 500 ms after the first one it is fine again
    assert check(risk, order(qty=10), ts=500 * MS).accepted
    assert check(risk, order(qty=10), ts=999 * MS).code == "duplicate_order"


def test_order_rate_sliding_window() -> None:
    risk = engine(max_order_rate=3, rate_window_ms=1000)
    for i in range(3):
        assert check(risk, order(qty=10 + i), ts=i * 100 * MS).accepted
    assert check(risk, order(qty=20), ts=300 * MS) == rejected(
        "order_rate", "order rate exceeded: 4 orders in 1000 ms > 3")
    assert check(risk, order(qty=20, account="bob"), ts=300 * MS).accepted  # per account
    assert check(risk, order(qty=21), ts=999 * MS).code == "order_rate"
    assert check(risk, order(qty=22), ts=1000 * MS).accepted  # the order at 0 left the window


def test_order_rate_default_window_is_one_second() -> None:
    risk = engine(max_order_rate=1)
    assert check(risk, order(qty=1), ts=0).accepted
    assert check(risk, order(qty=2), ts=999 * MS).message == "order rate exceeded: 2 orders in 1000 ms > 1"


def test_buying_power_cash_with_fees() -> None:
    risk = engine()
    feed = Instrument(symbol="AAPL.SIM", tick_size=Decimal("0.01"), taker_fee_bps=Decimal(10))
    assert risk.check(order(qty=100), AAPL, Account(cash_available=Decimal(10_000)), Market(), 0) == ACCEPT
    assert risk.check(order(qty=100), feed, Account(cash_available=Decimal(10_000)), Market(), 0) == rejected(
        "buying_power", "buying power exceeded: cash required 10010.00 > available 10000")
    assert risk.check(order(qty=100), feed, Account(cash_available=Decimal(10_010)), Market(), 0) == ACCEPT
    # selling needs no cash
    assert risk.check(order(side=Side.SELL, qty=100), feed, Account(cash_available=Decimal(0)), Market(), 0).accepted


def test_buying_power_margin_for_futures() -> None:
    risk = engine()
    acct = Account(margin_available=Decimal(120_000))
    assert check(risk, order(symbol=FUT.symbol, qty=1, price=20000), acct) == ACCEPT  # 4000.0*1*300*0.1
    assert check(risk, order(symbol=FUT.symbol, qty=2, price=20000, side=Side.SELL), acct) == rejected(
        "buying_power", "buying power exceeded: margin required 240000.00 > available 120000")
    # closing a short needs no margin; only the part that opens a new position does
    short = Account(margin_available=Decimal(0), positions={FUT.symbol: -2})
    assert check(risk, order(symbol=FUT.symbol, qty=2, price=20000), short) == ACCEPT
    assert check(risk, order(symbol=FUT.symbol, qty=3, price=20000), short).message == \
        "buying power exceeded: margin required 120000.00 > available 0"
    # working buys already use up the closing part
    short.open_orders[(FUT.symbol, Side.BUY)] = 2
    assert check(risk, order(symbol=FUT.symbol, qty=1, price=20000), short).code == "buying_power"


def test_market_order_priced_at_reference_plus_band() -> None:
    risk = engine(price_band=Decimal("0.1"))
    acct = Account(cash_available=Decimal(10_000))
    assert check(risk, order(type=OrderType.MARKET, qty=100), acct) == rejected(
        "buying_power", "buying power exceeded: cash required 11000.00 > available 10000")
    assert check(risk, order(type=OrderType.MARKET, qty=90), acct) == ACCEPT  # 9900.00


def test_market_order_without_band_uses_last_then_reference() -> None:
    risk = engine()
    acct = Account(cash_available=Decimal(10_000))
    assert check(risk, order(type=OrderType.MARKET, qty=100), acct, Market(last={"AAPL.SIM": 10001})).message == \
        "buying power exceeded: cash required 10001.00 > available 10000"
    assert check(risk, order(type=OrderType.MARKET, qty=100), acct) == ACCEPT  # reference 100.00
    assert check(risk, order(type=OrderType.MARKET), acct, Market(reference={})) == rejected(
        "no_reference_price", "no reference or last price for AAPL.SIM to value a market order")


def test_stop_order_valued_at_stop_price() -> None:
    risk = engine()
    stop = order(type=OrderType.STOP, qty=100, stop_price=10050)
    assert check(risk, stop, Account(cash_available=Decimal(10_000))) == rejected(
        "buying_power", "buying power exceeded: cash required 10050.00 > available 10000")


def test_duplicate_market_order() -> None:
    risk = engine(duplicate_window_ms=100)
    assert check(risk, order(type=OrderType.MARKET), ts=0).accepted
    assert check(risk, order(type=OrderType.MARKET), ts=MS // 2).message == \
        "duplicate order: buy 10 AAPL.SIM at market sent 0.5 ms ago (window 100 ms)"


def test_pct_of_day_volume_holds() -> None:
    risk = engine(max_pct_day_volume=Decimal(5), min_day_volume=1000)
    market = Market(volume={"AAPL.SIM": 10_000})
    assert check(risk, order(qty=500), market=market) == ACCEPT
    assert check(risk, order(qty=501), market=market) == Decision(
        verdict=Verdict.HOLD, code="pct_of_day_volume",
        message="order qty 501 is 5.01% of day volume 10000 > 5%: held for approval")
    assert check(risk, order(qty=501), market=Market(volume={"AAPL.SIM": 999})) == ACCEPT  # below the minimum
    assert check(risk, order(qty=501), market=Market()) == ACCEPT  # no volume yet


def test_hold_only_when_nothing_rejects() -> None:
    risk = engine(max_pct_day_volume=Decimal(5), max_order_qty=1000)
    market = Market(volume={"AAPL.SIM": 10_000})
    assert check(risk, order(qty=1001), market=market).code == "max_order_qty"


# -- account states and the kill switch ---------------------------------------------------------------


def test_reducing_state_allows_only_reducing_orders() -> None:
    risk = engine()
    acct = Account(trading_state=TradingState.REDUCING, positions={"AAPL.SIM": 100})
    assert check(risk, order(side=Side.SELL, qty=100), acct) == ACCEPT
    assert check(risk, order(side=Side.BUY, qty=10), acct) == rejected(
        "account_reducing",
        "account alice may only reduce positions: buy 10 with position 100 and open buy qty 0 does not reduce it")
    assert check(risk, order(side=Side.SELL, qty=101), acct).code == "account_reducing"  # would flip short
    acct.open_orders[("AAPL.SIM", Side.SELL)] = 60
    assert check(risk, order(side=Side.SELL, qty=50), acct).code == "account_reducing"
    flat = Account(trading_state=TradingState.REDUCING)
    assert check(risk, order(side=Side.SELL, qty=1), flat).code == "account_reducing"
    short = Account(trading_state=TradingState.REDUCING, positions={"AAPL.SIM": -5})
    assert check(risk, order(side=Side.BUY, qty=5), short) == ACCEPT


def test_halted_state_refuses_everything() -> None:
    risk = engine()
    acct = Account(trading_state=TradingState.HALTED, positions={"AAPL.SIM": 100})
    assert check(risk, order(side=Side.SELL, qty=10), acct) == rejected(
        "account_halted", "account alice is halted: no orders accepted")


def test_operator_state_override() -> None:
    risk = engine()
    risk.set_trading_state("alice", TradingState.REDUCING)
    assert check(risk, order()).code == "account_reducing"
    assert check(risk, order(account="bob")).accepted
    risk.set_trading_state("alice", TradingState.HALTED)
    assert check(risk, order()).code == "account_halted"
    risk.set_trading_state("alice", TradingState.ACTIVE)
    assert check(risk, order()).accepted
    # ACTIVE here does not lift a halt that comes from the ledger
    assert check(risk, order(), Account(trading_state=TradingState.HALTED)).code == "account_halted"


def test_kill_switch_halts_the_account() -> None:
    risk = engine(loss_limit=Decimal(10_000))
    assert check(risk, order(), Account(pnl_today=Decimal("-9999.99"))) == ACCEPT
    assert risk.trading_state("alice", Account()) is TradingState.ACTIVE
    assert check(risk, order(), Account(pnl_today=Decimal(-10_000))) == rejected(
        "loss_limit", "day P&L -10000 <= -10000 loss limit: account alice halted")
    assert risk.trading_state("alice", Account()) is TradingState.HALTED
    # stays halted even once P&L recovers, until an operator re-activates it
    assert check(risk, order(side=Side.SELL), Account(pnl_today=Decimal(0))).code == "account_halted"
    assert check(risk, order(account="bob")).accepted
    risk.set_trading_state("alice", TradingState.ACTIVE)
    assert check(risk, order()).accepted


# -- evaluation order ---------------------------------------------------------------------------------


def test_rule_order() -> None:
    assert engine().rules == (
        "trading_state", "loss_limit", "max_order_qty", "no_reference_price", "max_order_notional", "price_band",
        "position_limit", "max_open_orders", "max_orders_per_day", "max_trades_per_day", "duplicate_order",
        "order_rate", "buying_power", "pct_of_day_volume",
    )


def test_first_reject_wins_in_rule_order() -> None:
    risk = engine(max_order_qty=10, max_order_notional=Decimal(1), price_band=Decimal("0.01"), position_limit=5,
                  max_open_orders=0, loss_limit=Decimal(100))
    big = order(qty=11, price=20000)
    acct = Account(cash_available=Decimal(0), pnl_today=Decimal(-1))
    codes = []
    for _ in range(6):
        d = check(risk, big, acct)
        codes.append(d.code)
        if d.code == "buying_power":
            break
        # disable the rule that fired to expose the next one
        risk.config = RiskConfig(defaults=msgspec.structs.replace(risk.config.defaults, **{d.code: None}))
    assert codes == ["max_order_qty", "max_order_notional", "price_band", "position_limit", "max_open_orders",
                     "buying_power"]
    acct.trading_state = TradingState.HALTED
    assert check(risk, big, acct).code == "account_halted"


def test_only_orders_that_go_forward_are_counted() -> None:
    risk = engine(max_order_qty=10, max_pct_day_volume=Decimal(1))
    market = Market(volume={"AAPL.SIM": 100})
    assert check(risk, order(qty=11), market=market).rejected
    assert check(risk, order(qty=2), market=market).held
    assert check(risk, order(qty=1), market=market).accepted
    assert risk.counters.get("alice", 0).orders == 2


# -- counters -----------------------------------------------------------------------------------------


def test_daily_counters_rollover_and_offset() -> None:
    counters = DailyCounters(day_offset_ns=7 * 3600 * 10**9)  # the day starts at 17:00 UTC
    five_pm = 17 * 3600 * 10**9
    counters.add_order("a", five_pm - 1)
    counters.add_trade("a", five_pm - 1)
    assert (counters.get("a", five_pm - 1).orders, counters.get("a", five_pm - 1).trades) == (1, 1)
    counters.add_cancel("a", five_pm)
    today = counters.get("a", five_pm)
    assert (today.orders, today.cancels, today.trades) == (0, 1, 0)
    counters.add_order("a", five_pm - 10)  # a late event never reopens yesterday
    assert counters.get("a", five_pm).orders == 1
    assert counters.get("b", five_pm).orders == 0


# -- configuration ------------------------------------------------------------------------------------

CONFIG = """
[defaults]
max_order_qty = 1000
price_band = 0.1
max_open_orders = 50
loss_limit = 5000.50

[instruments."AAPL.SIM"]
max_order_qty = 500
position_limit = 2000

[accounts.alice]
max_order_qty = 800
max_open_orders = 10

[accounts.alice.instruments."AAPL.SIM"]
position_limit = 100
"""


def test_config_precedence() -> None:
    cfg = parse_risk_config(CONFIG)
    other = Instrument(symbol="MSFT.SIM", tick_size=Decimal("0.01"), price_band=Decimal("0.2"))
    assert cfg.limits_for("bob", other) == Limits(max_order_qty=1000, price_band=Decimal("0.2"), max_open_orders=50,
                                                  loss_limit=Decimal("5000.50"))
    assert cfg.limits_for("bob", AAPL) == Limits(max_order_qty=500, price_band=Decimal("0.1"), position_limit=2000,
                                                 max_open_orders=50, loss_limit=Decimal("5000.50"))
    assert cfg.limits_for("alice", AAPL) == Limits(max_order_qty=800, price_band=Decimal("0.1"), position_limit=100,
                                                   max_open_orders=10, loss_limit=Decimal("5000.50"))
    assert cfg.account_limits("alice").max_open_orders == 10
    risk = PreTradeRisk(cfg)
    assert check(risk, order(qty=801)).message == "order qty exceeds limit: 801 > 800"
    assert check(risk, order(qty=501, account="bob")).message == "order qty exceeds limit: 501 > 500"


def test_example_config_loads() -> None:
    cfg = load_risk_config(ROOT / "examples" / "risk.toml")
    assert cfg.limits_for("mm1", AAPL).position_limit == 5000
    assert cfg.limits_for("intern", FUT).max_order_qty == 100
    assert cfg.limits_for("anyone", FUT).price_band == Decimal("0.05")


@pytest.mark.parametrize(("text", "message"), [
    ("[defaults]\nmax_ordr_qty = 5",
     "risk config: defaults.max_ordr_qty: unknown rule 'max_ordr_qty' (known: duplicate_window_ms,"),
    ('[accounts.alice]\nmax_order_qty = "10"',
     "risk config: accounts.alice.max_order_qty: Expected `int`, got `str` (got '10')"),
    ("[defaults]\nmax_open_orders = true",
     "risk config: defaults.max_open_orders: Expected `int`, got `bool` (got True)"),
    ("[defaults]\nprice_band = 'wide'",
     "risk config: defaults.price_band: Invalid decimal string (got 'wide')"),
    ("[defaults]\nposition_limit = -1", "risk config: defaults.position_limit: must be >= 0 (got -1)"),
    ('[instruments."AAPL.SIM"]\nmax_order_qtty = 1',
     "risk config: instruments.\"AAPL.SIM\".max_order_qtty: unknown rule 'max_order_qtty' (known: max_order_notional,"),
    ('[instruments."AAPL.SIM"]\nmax_open_orders = 1',
     "risk config: instruments.\"AAPL.SIM\".max_open_orders: 'max_open_orders' is an account-wide rule"),
    ('[accounts.bob.instruments."AAPL.SIM"]\nloss_limit = 1',
     "risk config: accounts.bob.instruments.\"AAPL.SIM\".loss_limit: 'loss_limit' is an account-wide rule"),
    ("[limits]\nmax_order_qty = 1", "risk config: limits: unknown section 'limits'"),
    ("defaults = 3", "risk config: defaults: expected a table, got int (3)"),
    ("[defaults\nx=1", "risk config: invalid TOML:"),
])
def test_bad_config_names_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_risk_config(text)
    assert str(exc.value).startswith(message)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="risk config: cannot read"):
        load_risk_config(tmp_path / "nope.toml")


# -- held orders --------------------------------------------------------------------------------------


def test_held_orders_approve_and_reject() -> None:
    held = HeldOrders()
    decision = hold("pct_of_day_volume", "big")
    first = held.hold(order(), decision, ts=10)
    second = held.hold(order(account="bob"), decision, ts=11)
    assert (first, second) == ("H1", "H2")
    assert [h.hold_id for h in held.pending()] == ["H1", "H2"]
    assert [h.hold_id for h in held.pending("bob")] == ["H2"]
    approved = held.approve("H1", "risk-officer", ts=20)
    assert (approved.status, approved.decided_by, approved.decided_ts) == (HoldStatus.APPROVED, "risk-officer", 20)
    refused = held.reject("H2", "risk-officer", "too big for this book", ts=21)
    assert (refused.status, refused.reason) == (HoldStatus.REJECTED, "too big for this book")
    assert held.pending() == []
    assert held.get("H2") == refused


def test_held_orders_errors() -> None:
    held = HeldOrders()
    hid = held.hold(order(), hold("pct_of_day_volume", "big"), ts=1)
    with pytest.raises(UnknownHoldError, match="unknown hold id 'H9'") as unknown:
        held.approve("H9", "u")
    assert unknown.value.code == "unknown_hold"
    with pytest.raises(UnknownHoldError):
        held.reject("H9", "u", "r")
    held.approve(hid, "ann")
    with pytest.raises(HoldAlreadyDecidedError, match="hold H1 was already approved by ann") as twice:
        held.approve(hid, "bob")
    assert twice.value.code == "hold_already_decided"
    with pytest.raises(HoldAlreadyDecidedError):
        held.reject(hid, "bob", "late")
    with pytest.raises(ValueError, match="only a HOLD decision can be held"):
        held.hold(order(), ACCEPT, ts=2)


# -- docs ---------------------------------------------------------------------------------------------


def test_docs_example_runs() -> None:
    doc = (ROOT / "docs" / "risk-and-compliance.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", doc, re.S) if "import" in b]  # skip API sketches
    assert blocks
    for block in blocks:
        exec(compile(block, "risk-and-compliance.md", "exec"), {})
