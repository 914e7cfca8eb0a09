"""Compliance packs: every rule accepting and refusing with exact messages, rule order, pack assignment,
the violation log and its queries, and TOML errors that name the key."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

import pytest

from tradesim.domain import Instrument, NewOrder, OrderType, Side
from tradesim.services.compliance import (
    RULES,
    ComplianceConfig,
    ComplianceEngine,
    CompliancePack,
    Violation,
    ViolationLog,
    parse_compliance_config,
)
from tradesim.services.risk import ACCEPT, ConfigError, DailyCounters, DayCounts, Decision, TradingState, Verdict

STOCK = Instrument(symbol="AAPL.SIM", tick_size=Decimal("0.01"), flags=frozenset({"sharia_compliant"}))
PLAIN = Instrument(symbol="BANK.SIM", tick_size=Decimal("0.01"))
SHORTABLE = Instrument(symbol="MSFT.SIM", tick_size=Decimal("0.01"), flags=frozenset({"shortable", "sharia_compliant"}))
FUT = Instrument(symbol="IF2501.CFFEX", tick_size=Decimal("0.2"), multiplier=Decimal(300), margin_rate=Decimal("0.1"),
                 flags=frozenset({"sharia_compliant"}))
INSTRUMENTS = {i.symbol: i for i in (STOCK, PLAIN, SHORTABLE, FUT)}


@dataclass
class Account:
    cash_available: Decimal = Decimal(0)
    margin_available: Decimal = Decimal(0)
    equity: Decimal = Decimal(100_000)
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
    reference: dict[str, int] = field(default_factory=lambda: {"AAPL.SIM": 10000})

    def reference_price(self, symbol: str) -> int | None:
        return self.reference.get(symbol)

    def last_price(self, symbol: str) -> int | None:
        return None

    def day_volume(self, symbol: str) -> int:
        return 0


def order(side: Side = Side.BUY, qty: int = 10, symbol: str = "AAPL.SIM", account: str = "alice",
          price: int | None = 10000, cid: str = "c1") -> NewOrder:
    kind = OrderType.LIMIT if price is not None else OrderType.MARKET
    return NewOrder(account=account, client_order_id=cid, symbol=symbol, side=side, type=kind, price=price, qty=qty)


def engine(*packs: CompliancePack) -> ComplianceEngine:
    named = {p.name: p for p in packs}
    return ComplianceEngine(ComplianceConfig(packs=named, default_packs=tuple(named)))


def check(eng: ComplianceEngine, o: NewOrder, account: Account | None = None, activity: DayCounts | None = None,
          ts: int = 0) -> Decision:
    return eng.check(o, INSTRUMENTS[o.symbol], account or Account(), Market(), activity or DayCounts(day=0), ts)


def rejected(code: str, message: str) -> Decision:
    return Decision(verdict=Verdict.REJECT, code=code, message=message)


def test_rule_order() -> None:
    assert engine().rules == ("restricted_list", "sharia_instrument", "sharia_margin", "sharia_short_sale",
                              "short_sale", "concentration", "order_to_trade")
    assert [name for name, _ in RULES] == list(engine().rules)


def test_no_pack_accepts_everything() -> None:
    assert check(engine(), order(symbol="BANK.SIM", side=Side.SELL, qty=10**6)) == ACCEPT


def test_restricted_list() -> None:
    eng = engine(CompliancePack(name="std", restricted=frozenset({"BANK.SIM"})))
    assert check(eng, order()) == ACCEPT
    assert check(eng, order(symbol="BANK.SIM")) == rejected("restricted_list", "BANK.SIM is on the restricted list")


def test_short_sale_restriction() -> None:
    eng = engine(CompliancePack(name="std", short_sale_restriction=True))
    long = Account(positions={"AAPL.SIM": 100})
    assert check(eng, order(side=Side.SELL, qty=100), long) == ACCEPT
    assert check(eng, order(side=Side.SELL, qty=101), long) == rejected(
        "short_sale",
        "short sale of AAPL.SIM not allowed: sell 101 with position 100 and open sells 0 would leave -1")
    long.open_orders[("AAPL.SIM", Side.SELL)] = 60
    assert check(eng, order(side=Side.SELL, qty=50), long).message.endswith("open sells 60 would leave -10")
    assert check(eng, order(side=Side.SELL, qty=10, symbol="MSFT.SIM")) == ACCEPT  # flagged shortable
    assert check(eng, order(side=Side.BUY, qty=10)) == ACCEPT
    # a pack without the restriction allows short sales
    assert check(engine(CompliancePack(name="free")), order(side=Side.SELL, qty=10)) == ACCEPT


def test_sharia_profile() -> None:
    eng = engine(CompliancePack(name="islamic", sharia=True))
    assert check(eng, order()) == ACCEPT
    assert check(eng, order(symbol="BANK.SIM")) == rejected("sharia_instrument", "BANK.SIM is not sharia-compliant")
    assert check(eng, order(symbol="IF2501.CFFEX", price=20000)) == rejected(
        "sharia_margin",
        "IF2501.CFFEX is traded on margin (margin rate 0.1): not permitted under the Sharia profile")
    # no short selling, even of a shortable instrument
    assert check(eng, order(symbol="MSFT.SIM", side=Side.SELL, qty=5)) == rejected(
        "sharia_short_sale",
        "short selling is not permitted under the Sharia profile: sell 5 with position 0 and open sells 0 "
        "would leave -5")
    assert check(eng, order(side=Side.SELL, qty=5), Account(positions={"AAPL.SIM": 5})) == ACCEPT


def test_concentration_limit() -> None:
    eng = engine(CompliancePack(name="std", max_concentration_pct=Decimal(25)))
    assert check(eng, order(qty=250)) == ACCEPT  # 25000.00 of 100000 equity
    assert check(eng, order(qty=251)) == rejected(
        "concentration", "position value in AAPL.SIM after the order 25100.00 is 25.10% of equity 100000 > 25%")
    held = Account(positions={"AAPL.SIM": 200}, open_orders={("AAPL.SIM", Side.BUY): 50})
    assert check(eng, order(qty=1), held).message.startswith("position value in AAPL.SIM after the order 25100.00")
    big = Account(positions={"AAPL.SIM": 400})
    assert check(eng, order(side=Side.SELL, qty=100), big) == ACCEPT  # reducing is always allowed
    assert check(eng, order(qty=1), Account(equity=Decimal(0))) == rejected(
        "concentration", "position value in AAPL.SIM after the order 100.00 with equity 0: equity is not positive")
    # a market order is valued at the reference price (no band on this instrument)
    assert check(eng, order(qty=251, price=None)).code == "concentration"


def test_order_to_trade_ratio() -> None:
    eng = engine(CompliancePack(name="std", max_order_to_trade=Decimal(10), order_to_trade_min_orders=20))
    assert check(eng, order(), activity=DayCounts(day=0, orders=18)) == ACCEPT  # 19 orders: below the minimum
    assert check(eng, order(), activity=DayCounts(day=0, orders=19)) == rejected(
        "order_to_trade", "order-to-trade ratio 20.00 > 10 (orders 20, trades 0)")
    assert check(eng, order(), activity=DayCounts(day=0, orders=29, trades=3)) == ACCEPT  # 30 / 3 = 10
    assert check(eng, order(), activity=DayCounts(day=0, orders=30, trades=3)) == rejected(
        "order_to_trade", "order-to-trade ratio 10.33 > 10 (orders 31, trades 3)")


def test_order_to_trade_reads_daily_counters() -> None:
    eng = engine(CompliancePack(name="std", max_order_to_trade=Decimal(2)))
    counters = DailyCounters()
    for _ in range(3):
        counters.add_order("alice", 5)
    counters.add_trade("alice", 5)
    activity = counters.get("alice", 6)
    d = eng.check(order(), STOCK, Account(), Market(), activity, 6)
    assert d.message == "order-to-trade ratio 4.00 > 2 (orders 4, trades 1)"


def test_first_violation_decides_and_all_are_logged() -> None:
    std = CompliancePack(name="std", restricted=frozenset({"BANK.SIM"}), short_sale_restriction=True)
    islamic = CompliancePack(name="islamic", sharia=True)
    cfg = ComplianceConfig(packs={"std": std, "islamic": islamic}, accounts={"alice": ("std", "islamic")})
    eng = ComplianceEngine(cfg)
    d = check(eng, order(symbol="BANK.SIM", side=Side.SELL, qty=5, cid="x1"), ts=42)
    assert d == rejected("restricted_list", "BANK.SIM is on the restricted list")
    logged = eng.log.query()
    assert [(v.rule, v.pack) for v in logged] == [
        ("restricted_list", "std"), ("sharia_instrument", "islamic"), ("sharia_short_sale", "islamic"),
        ("short_sale", "std"),
    ]
    assert logged[0] == Violation(ts=42, account="alice", rule="restricted_list", client_order_id="x1",
                                  symbol="BANK.SIM", message="BANK.SIM is on the restricted list", pack="std")
    # bob has no packs (no default): nothing checked, nothing logged
    assert check(eng, order(symbol="BANK.SIM", account="bob")) == ACCEPT
    assert len(eng.log) == 4


def test_same_violation_from_two_packs_is_logged_once() -> None:
    a = CompliancePack(name="a", restricted=frozenset({"BANK.SIM"}))
    b = CompliancePack(name="b", restricted=frozenset({"BANK.SIM"}))
    eng = engine(a, b)
    check(eng, order(symbol="BANK.SIM"))
    assert [v.pack for v in eng.log.query()] == ["a"]


def test_violation_log_queries() -> None:
    log = ViolationLog()
    for ts, account, rule in [(10, "alice", "short_sale"), (20, "bob", "short_sale"), (30, "alice", "concentration"),
                              (40, "alice", "short_sale")]:
        log.record(Violation(ts=ts, account=account, rule=rule, client_order_id="c", symbol="S.X", message="m"))
    assert [v.ts for v in log.query(account="alice")] == [10, 30, 40]
    assert [v.ts for v in log.query(rule="short_sale")] == [10, 20, 40]
    assert [v.ts for v in log.query(account="alice", rule="short_sale")] == [10, 40]
    assert [v.ts for v in log.query(start_ts=20, end_ts=40)] == [20, 30]  # [start, end)
    assert [v.ts for v in log.query(account="alice", start_ts=11)] == [30, 40]
    assert log.query(account="carol") == []


CONFIG = """
default_packs = ["standard"]

[packs.standard]
restricted = ["BANK.SIM"]
short_sale_restriction = true
max_concentration_pct = 25
max_order_to_trade = 20.5
order_to_trade_min_orders = 100

[packs.islamic]
sharia = true

[accounts]
fatima = ["standard", "islamic"]
desk = []
"""


def test_config_loading() -> None:
    cfg = parse_compliance_config(CONFIG)
    assert cfg.packs["standard"] == CompliancePack(
        name="standard", restricted=frozenset({"BANK.SIM"}), short_sale_restriction=True,
        max_concentration_pct=Decimal(25), max_order_to_trade=Decimal("20.5"), order_to_trade_min_orders=100)
    assert [p.name for p in cfg.packs_for("fatima")] == ["standard", "islamic"]
    assert [p.name for p in cfg.packs_for("anyone")] == ["standard"]
    assert cfg.packs_for("desk") == ()
    eng = ComplianceEngine(cfg)
    assert check(eng, order(symbol="BANK.SIM", account="fatima")).code == "restricted_list"
    assert check(eng, order(symbol="BANK.SIM", account="desk")) == ACCEPT


@pytest.mark.parametrize(("text", "message"), [
    ("[packs.std]\nrestriced = ['A.B']",
     "compliance config: packs.std.restriced: unknown rule 'restriced' (known: max_concentration_pct,"),
    ("[packs.std]\nsharia = 'yes'", "compliance config: packs.std.sharia: Expected `bool`, got `str` (got 'yes')"),
    ("[packs.std]\nrestricted = 'A.B'",
     "compliance config: packs.std.restricted: Expected `array`, got `str` (got 'A.B')"),
    ("[packs.std]\nmax_concentration_pct = -5", "compliance config: packs.std.max_concentration_pct: must be >= 0"),
    ("[packs.std]\n[accounts]\nalice = ['std', 'islamc']",
     "compliance config: accounts.alice: unknown pack 'islamc' (known: std)"),
    ("default_packs = ['nope']", "compliance config: default_packs: unknown pack 'nope' (known: )"),
    ("[rules]\nx = 1", "compliance config: rules: unknown section 'rules'"),
    ("packs = [", "compliance config: invalid TOML:"),
])
def test_bad_config_names_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_compliance_config(text)
    assert str(exc.value).startswith(message)
