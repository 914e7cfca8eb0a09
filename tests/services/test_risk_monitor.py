"""RiskMonitor over the memory bus: position states and their alerts, margin warnings, historical VaR (pure,
hand-computed) and its breach alert, emergency liquidation through a test double of rpc.oms.submit, rpc.risk.get."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from fractions import Fraction
from itertools import count
from pathlib import Path

import msgspec
import pytest

from tradesim.bus import Bus, Delivery, open_bus, subjects
from tradesim.domain import OrderStatus, OrderType, Side, TimeInForce, Trade
from tradesim.domain.instrument import Instrument
from tradesim.services.alerts import AlertKind, RiskAlert, Severity
from tradesim.services.oms.messages import OrderReply, OrderRequest, OrderView
from tradesim.services.risk.monitor import RPC_OMS_SUBMIT, RPC_RISK_GET, RiskMonitorService
from tradesim.services.risk.monitor_config import LimitState, MonitorConfig
from tradesim.services.risk.monitor_messages import GetRisk, RiskError, RiskReply
from tradesim.services.risk.var import historical_var, quantile_loss, scenario_losses, simple_returns, to_money
from tradesim.services.venue.messages import TradePrint

AAPL = Instrument(symbol="AAPL.SIM", tick_size=Decimal("0.01"))
IF = Instrument(symbol="IF2501.CFFEX", tick_size=Decimal("0.2"), multiplier=Decimal(300), margin_rate=Decimal("0.12"))
ACCOUNTS = {
    "alice": (Decimal(1_000_000), "cash", "USD"),
    "bob": (Decimal(200_000), "margin", "USD"),
    "mm": (Decimal(10_000_000), "margin", "USD"),
}
LIMITS = {"alice": {"AAPL.SIM": 100}}


class Tape:
    """Publishes venue events with increasing seqs: a Trade on orders.filled and its print on trades.executed."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.seqs = count(1)

    async def trade(
        self,
        buyer: str,
        seller: str,
        qty: int,
        price: int = 10_000,
        symbol: str = "AAPL.SIM",
        buyer_coid: str = "b",
        seller_coid: str = "s",
    ) -> int:
        seq = next(self.seqs)
        t = Trade(
            seq=seq,
            ts=seq,
            trade_id=seq,
            symbol=symbol,
            price=price,
            qty=qty,
            aggressor=Side.BUY,
            maker_order_id=1,
            maker_account=seller,
            maker_client_order_id=seller_coid,
            maker_cum_qty=qty,
            maker_leaves_qty=0,
            taker_order_id=2,
            taker_account=buyer,
            taker_client_order_id=buyer_coid,
            taker_cum_qty=qty,
            taker_leaves_qty=0,
        )
        await self.bus.publish(subjects.ORDERS_FILLED, t)
        await self.bus.publish(subjects.TRADES_EXECUTED, self.print_of(t))
        return seq

    async def print(self, price: int, symbol: str = "AAPL.SIM") -> int:
        seq = next(self.seqs)
        await self.bus.publish(
            subjects.TRADES_EXECUTED,
            TradePrint(seq=seq, ts=seq, trade_id=seq, symbol=symbol, price=price, qty=1, aggressor=Side.BUY),
        )
        return seq

    @staticmethod
    def print_of(t: Trade) -> TradePrint:
        return TradePrint(
            seq=t.seq, ts=t.ts, trade_id=t.trade_id, symbol=t.symbol, price=t.price, qty=t.qty, aggressor=t.aggressor
        )


class Alerts:
    """Every RiskAlert on risk.alerts, awaited by count (no sleeps)."""

    def __init__(self) -> None:
        self.items: list[RiskAlert] = []
        self._changed = asyncio.Event()

    async def on(self, d: Delivery) -> None:
        assert isinstance(d.data, RiskAlert)
        self.items.append(d.data)
        self._changed.set()

    async def wait(self, n: int, timeout: float = 5.0) -> list[RiskAlert]:
        async with asyncio.timeout(timeout):
            while len(self.items) < n:
                self._changed.clear()
                await self._changed.wait()
        return self.items

    async def wait_kind(self, kind: AlertKind, n: int, timeout: float = 5.0) -> list[RiskAlert]:
        async with asyncio.timeout(timeout):
            while len(self.of(kind)) < n:
                self._changed.clear()
                await self._changed.wait()
        return self.of(kind)

    def of(self, kind: AlertKind) -> list[RiskAlert]:
        return [a for a in self.items if a.alert is kind]


@pytest.fixture
async def bus() -> AsyncIterator[Bus]:
    b = await open_bus(f"memory://risk-{uuid.uuid4().hex[:8]}")
    yield b
    await b.close()


@pytest.fixture
async def alerts(bus: Bus) -> Alerts:
    collector = Alerts()
    await bus.subscribe(subjects.RISK_ALERTS, collector.on)
    return collector


async def started(bus: Bus, **config: object) -> RiskMonitorService:
    cfg = msgspec.convert({"position_limits": LIMITS, **config}, MonitorConfig)
    monitor = RiskMonitorService(bus, [AAPL, IF], ACCOUNTS, cfg)
    await monitor.start()
    return monitor


# --- position states --------------------------------------------------------------------------------------


def test_classification_boundaries_are_exact() -> None:
    cfg = MonitorConfig()
    assert [cfg.classify(q, 100) for q in (0, 79, 80, 94, 95, 100, 101, -101, -80)] == [
        LimitState.NORMAL,
        LimitState.NORMAL,
        LimitState.WARNING,
        LimitState.WARNING,
        LimitState.CRITICAL,
        LimitState.CRITICAL,
        LimitState.OVER_LIMIT,
        LimitState.OVER_LIMIT,
        LimitState.WARNING,
    ]
    assert MonitorConfig(position_limits={"*": {"X.SIM": 5}, "a": {"X.SIM": 9}}).limit("b", "X.SIM") == 5
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"warning_fraction": "0.9", "critical_fraction": "0.8"}, MonitorConfig)


async def test_each_state_change_publishes_one_alert(bus: Bus, alerts: Alerts) -> None:
    monitor = await started(bus)
    tape = Tape(bus)
    await tape.trade("alice", "mm", 79)  # Normal: no alert
    await tape.trade("alice", "mm", 1)  # 80: Warning
    await tape.trade("alice", "mm", 15)  # 95: Critical
    await tape.trade("alice", "mm", 6)  # 101: OverLimit (liquidation disabled)
    await tape.trade("mm", "alice", 31)  # 70: Normal
    seq = await tape.trade("mm", "alice", 1)
    await monitor.wait_for_seq(seq)
    await alerts.wait_kind(AlertKind.POSITION_STATE, 4)
    got = [
        (a.figures["previous"], a.figures["state"], a.severity, a.figures["qty"])
        for a in alerts.of(AlertKind.POSITION_STATE)
    ]
    assert got == [
        ("normal", "warning", Severity.WARNING, "80"),
        ("warning", "critical", Severity.CRITICAL, "95"),
        ("critical", "over_limit", Severity.CRITICAL, "101"),
        ("over_limit", "normal", Severity.INFO, "70"),
    ]
    over = alerts.of(AlertKind.POSITION_STATE)[2]
    assert (over.account, over.symbol) == ("alice", "AAPL.SIM")
    assert "liquidation disabled" in over.message
    await monitor.idle()
    assert alerts.of(AlertKind.LIQUIDATION) == []  # disabled: alert only, no order
    await monitor.stop()


async def test_margin_warning_on_crossing_and_recovery(bus: Bus, alerts: Alerts) -> None:
    monitor = await started(bus)
    tape = Tape(bus)
    # bob (200,000) buys 1 IF at 3850.2: margin 138,607.2 / equity 200,000 = 0.693 < 0.8.
    await tape.trade("bob", "mm", 1, price=19251, symbol="IF2501.CFFEX")
    # Print at 3700.0: equity 200,000 - 45,060 = 154,940; margin 133,200 -> 0.859688 >= 0.8.
    await tape.print(18500, symbol="IF2501.CFFEX")
    # Print at 3900.0: equity 214,940; margin 140,400 -> 0.6532055..: back below.
    seq = await tape.print(19500, symbol="IF2501.CFFEX")
    await monitor.wait_for_seq(seq)
    await alerts.wait_kind(AlertKind.MARGIN_WARNING, 2)
    margin = [a for a in alerts.of(AlertKind.MARGIN_WARNING) if a.account == "bob"]
    assert [(a.severity, a.figures["ratio"], a.figures["equity"]) for a in margin] == [
        (Severity.WARNING, "0.859688", "154940.0"),
        (Severity.INFO, "0.653206", "214940.0"),
    ]
    await monitor.stop()


# --- VaR --------------------------------------------------------------------------------------------------

RETURNS = [
    Fraction(x)
    for x in (
        "0.01",
        "-0.02",
        "0.015",
        "-0.005",
        "0.03",
        "-0.04",
        "0",
        "0.02",
        "-0.01",
        "0.005",
        "-0.025",
        "0.01",
        "-0.015",
        "0.035",
        "-0.03",
        "0.002",
        "-0.001",
        "0.012",
        "-0.008",
        "0.004",
    )
]


def test_var_hand_computed_single_symbol() -> None:
    # Long 100,000: losses are -100,000 * r. The largest is 4,000 (r = -4%), then 3,000 (-3%), 2,500, 2,000.
    # n = 20: VaR 95% = L(ceil(19)) = L(19) = 3,000 (second largest); VaR 99% = L(ceil(19.8)) = L(20) = 4,000.
    result = historical_var({"X.SIM": Decimal(100_000)}, {"X.SIM": RETURNS}, [Decimal("0.95"), Decimal("0.99")])
    assert result is not None
    assert result.observations == 20
    assert result.var == {Decimal("0.95"): 3000, Decimal("0.99"): 4000}
    # A short of the same size: losses 100,000 * r; largest 3,500, then 3,000.
    short = historical_var({"X.SIM": Decimal(-100_000)}, {"X.SIM": RETURNS}, [Decimal("0.95"), Decimal("0.99")])
    assert short is not None and short.var == {Decimal("0.95"): 3000, Decimal("0.99"): 3500}
    # 90%: L(18) = 2,500 (third largest); the window keeps the 10 most recent returns: L(ceil(9.5)) = L(10) = 3,000.
    assert quantile_loss(scenario_losses({"X.SIM": Decimal(100_000)}, {"X.SIM": RETURNS}, 20), Decimal("0.9")) == 2500
    windowed = historical_var({"X.SIM": Decimal(100_000)}, {"X.SIM": RETURNS}, [Decimal("0.95")], window=10)
    assert windowed is not None and windowed.var == {Decimal("0.95"): 3000}


def test_var_two_symbols_scenarios_are_aligned_by_recency() -> None:
    returns = {"A.SIM": [Fraction(1, 100), Fraction(-2, 100)], "B.SIM": [Fraction(5, 100), Fraction(1, 100)]}
    # most recent scenario: A -2%, B +1% on long 1,000 A / short 500 B: P&L -20 - 5 = -25 -> loss 25.
    # previous: A +1%, B +5%: 10 - 25 = -15 -> loss 15.
    losses = scenario_losses({"A.SIM": Decimal(1000), "B.SIM": Decimal(-500)}, returns, 2)
    assert losses == [25, 15]
    assert (
        historical_var({"A.SIM": Decimal(1), "B.SIM": Decimal(1)}, returns, [Decimal("0.99")], min_observations=3)
        is None
    )
    flat = historical_var({"A.SIM": Decimal(0)}, {}, [Decimal("0.99")])
    assert flat is not None and flat.var == {Decimal("0.99"): 0}
    gains = historical_var({"A.SIM": Decimal(100)}, {"A.SIM": [Fraction(1, 10)]}, [Decimal("0.99")])
    assert gains is not None and gains.var[Decimal("0.99")] == 0  # never negative


def test_returns_and_money_rounding() -> None:
    assert simple_returns([10000, 9700, 10000, 0, 100]) == [Fraction(-3, 100), Fraction(300, 9700)]
    assert to_money(Fraction(1, 3)) == Decimal("0.33")
    assert to_money(Fraction(5, 1000)) == Decimal("0.00")  # half-even
    assert to_money(Fraction(15, 1000)) == Decimal("0.02")


async def test_var_breach_alert_and_recovery(bus: Bus, alerts: Alerts) -> None:
    monitor = await started(bus, var_limits={"alice": "400"}, var_window=20, var_min_observations=20)
    tape = Tape(bus)
    await tape.trade("alice", "mm", 100)  # long 100 at 100.00: exposure 10,000 once marked back at 100.00
    # 20 prints -> 20 returns: -3%, +300/9700, -5%, +500/9500, then 16 x 0%.
    for price in [9700, 10000, 9500, 10000] + [10000] * 16:
        seq = await tape.print(price)
    await monitor.wait_for_seq(seq)
    await alerts.wait_kind(AlertKind.VAR_BREACH, 1)
    # Losses on 10,000: 300, -309.28, 500, -526.32, 0 x 16 -> VaR 95% = L(19) = 300, VaR 99% = L(20) = 500.
    (breach,) = alerts.of(AlertKind.VAR_BREACH)
    assert breach.severity is Severity.CRITICAL and breach.account == "alice"
    assert (breach.figures["var_95"], breach.figures["var_99"], breach.figures["observations"]) == (
        "300.00",
        "500.00",
        "20",
    )
    reply = await bus.request(RPC_RISK_GET, GetRisk(account="alice"))
    assert isinstance(reply, RiskReply) and reply.var_breach
    assert [(f.confidence, f.var) for f in reply.var] == [
        (Decimal("0.95"), Decimal("300.00")),
        (Decimal("0.99"), Decimal("500.00")),
    ]
    seq = await tape.trade("mm", "alice", 99)  # exposure 100: VaR 99% = 5
    await monitor.wait_for_seq(seq)
    await alerts.wait_kind(AlertKind.VAR_BREACH, 2)
    recovered = alerts.of(AlertKind.VAR_BREACH)[-1]
    assert recovered.severity is Severity.INFO and recovered.figures["var_99"] == "5.00"
    await monitor.stop()


# --- liquidation ------------------------------------------------------------------------------------------


class FakeOms:
    """Serves rpc.oms.submit: records each request, publishes the fill(s) it makes, answers an OrderReply."""

    def __init__(self, bus: Bus, tape: Tape, fills: Callable[[OrderRequest], int], delay: float = 0.0) -> None:
        self.bus, self.tape, self.fills, self.delay = bus, tape, fills, delay
        self.requests: list[OrderRequest] = []

    async def handle(self, req: msgspec.Struct) -> msgspec.Struct:
        assert isinstance(req, OrderRequest)
        self.requests.append(req)
        if self.delay and len(self.requests) == 1:
            await asyncio.sleep(self.delay)  # the first attempt times out at the monitor
        filled = self.fills(req)
        if filled:
            buyer, seller = ("mm", req.account) if req.side is Side.SELL else (req.account, "mm")
            coids = (
                {"buyer_coid": req.client_order_id} if req.side is Side.BUY else {"seller_coid": req.client_order_id}
            )
            await self.tape.trade(buyer, seller, filled, **coids)  # type: ignore[arg-type]
        status = OrderStatus.FILLED if filled == req.qty else OrderStatus.CANCELED
        order = OrderView(
            order_id=len(self.requests),
            client_order_id=req.client_order_id,
            account=req.account,
            symbol=req.symbol,
            side=req.side,
            type=req.type,
            tif=req.tif,
            price=None,
            stop_price=None,
            qty=req.qty,
            filled_qty=filled,
            leaves_qty=0,
            fill_value=filled * 10_000,
            status=status,
            reason="" if filled == req.qty else "no_liquidity",
        )
        return OrderReply(order=order)


async def test_liquidation_sends_one_reducing_market_order_and_stops(bus: Bus, alerts: Alerts) -> None:
    monitor = await started(bus, liquidation_enabled=True)
    tape = Tape(bus)
    oms = FakeOms(bus, tape, fills=lambda req: req.qty)
    await bus.serve(RPC_OMS_SUBMIT, oms.handle)
    seq = await tape.trade("alice", "mm", 130)  # 130 > 100: OverLimit
    await alerts.wait_kind(AlertKind.POSITION_STATE, 2)  # over_limit, then critical after the fill
    await alerts.wait_kind(AlertKind.LIQUIDATION, 1)
    await monitor.idle()
    assert oms.requests == [
        OrderRequest(
            account="alice",
            symbol="AAPL.SIM",
            side=Side.SELL,
            qty=30,
            type=OrderType.MARKET,
            tif=TimeInForce.IOC,
            client_order_id=f"liq-alice-AAPL.SIM-{seq}",
            correlation_id=f"liq-alice-AAPL.SIM-{seq}",
        )
    ]
    (liq,) = alerts.of(AlertKind.LIQUIDATION)
    assert liq.client_order_id == f"liq-alice-AAPL.SIM-{seq}"
    assert (liq.figures["qty"], liq.figures["filled_qty"], liq.figures["position"]) == ("30", "30", "130")
    states = [a.figures["state"] for a in alerts.of(AlertKind.POSITION_STATE)]
    assert states == ["over_limit", "critical"]
    assert monitor.replica.ledger.position("alice", "AAPL.SIM").qty == 100
    last = await tape.print(10_000)  # more market activity: nothing more to do
    await monitor.wait_for_seq(last)
    await monitor.idle()
    assert len(oms.requests) == 1
    reply = await bus.request(RPC_RISK_GET, GetRisk(account="alice"))
    assert isinstance(reply, RiskReply) and reply.liquidations_in_flight == 0
    await monitor.stop()


async def test_partial_liquidation_resumes_on_the_next_print(bus: Bus, alerts: Alerts) -> None:
    monitor = await started(bus, liquidation_enabled=True, liquidation_target="0.9")
    tape = Tape(bus)
    fills = iter([10, 0])  # first: only 10 of 40 (thin book); second attempt... see below
    oms = FakeOms(bus, tape, fills=lambda req: next(fills, req.qty))
    await bus.serve(RPC_OMS_SUBMIT, oms.handle)
    await tape.trade("alice", "mm", 130)  # target |qty| <= 90: sell 40; 10 fill
    await alerts.wait_kind(AlertKind.LIQUIDATION, 1)
    await monitor.idle()
    assert [r.qty for r in oms.requests] == [40]
    assert monitor.replica.ledger.position("alice", "AAPL.SIM").qty == 120
    seq = await tape.print(10_000)  # still OverLimit, nothing in flight: sell 30 more; nothing fills
    await monitor.wait_for_seq(seq)
    await monitor.idle()
    seq = await tape.print(10_000)  # again: sell 30, fills completely
    await monitor.wait_for_seq(seq)
    await monitor.idle()
    assert [(r.qty, r.side) for r in oms.requests] == [(40, Side.SELL), (30, Side.SELL), (30, Side.SELL)]
    assert len({r.client_order_id for r in oms.requests}) == 3
    assert monitor.replica.ledger.position("alice", "AAPL.SIM").qty == 90
    seq = await tape.print(10_000)
    await monitor.wait_for_seq(seq)
    await monitor.idle()
    assert len(oms.requests) == 3  # within the limit: stopped
    assert monitor.state("alice", "AAPL.SIM") is LimitState.WARNING
    await monitor.stop()


async def test_a_timed_out_liquidation_is_retried_with_the_same_client_order_id(bus: Bus, alerts: Alerts) -> None:
    monitor = await started(bus, liquidation_enabled=True, liquidation_timeout=0.3)
    tape = Tape(bus)
    oms = FakeOms(bus, tape, fills=lambda req: 0, delay=0.5)
    await bus.serve(RPC_OMS_SUBMIT, oms.handle)
    await monitor.wait_for_seq(await tape.trade("mm", "alice", 105))  # short 105: buy 5 back
    await monitor.idle()
    assert [(r.side, r.qty) for r in oms.requests] == [(Side.BUY, 5), (Side.BUY, 5)]
    assert oms.requests[0].client_order_id == oms.requests[1].client_order_id
    (liq,) = await alerts.wait_kind(AlertKind.LIQUIDATION, 1)
    assert "canceled filled 0" in liq.message
    await monitor.stop()


async def test_liquidation_without_an_oms_reports_the_failure(bus: Bus, alerts: Alerts) -> None:
    monitor = await started(bus, liquidation_enabled=True, liquidation_attempts=2)
    await monitor.wait_for_seq(await Tape(bus).trade("alice", "mm", 101))
    await monitor.idle()
    (liq,) = await alerts.wait_kind(AlertKind.LIQUIDATION, 1)
    # retried (call_oms) until the deadline, liquidation_attempts x liquidation_timeout
    assert re.search(r"failed after \d+ attempt\(s\): NoRespondersError", liq.message), liq.message
    assert liq.severity is Severity.CRITICAL
    await monitor.stop()


# --- rpc.risk.get -----------------------------------------------------------------------------------------


async def test_risk_get_reply_and_errors(bus: Bus) -> None:
    monitor = await started(bus)
    seq = await Tape(bus).trade("alice", "mm", 85)
    await monitor.wait_for_seq(seq)
    reply = await bus.request(RPC_RISK_GET, GetRisk(account="alice"))
    assert isinstance(reply, RiskReply)
    (pos,) = reply.positions
    assert (pos.symbol, pos.qty, pos.limit, pos.state, pos.utilization) == (
        "AAPL.SIM",
        85,
        100,
        LimitState.WARNING,
        Decimal("0.850000"),
    )
    assert (reply.margin_ratio, reply.margin_warning, reply.var, reply.seq) == (Decimal("0.000000"), False, [], seq)
    assert await bus.request(RPC_RISK_GET, GetRisk(account="nobody")) == RiskError(
        error="unknown_account", message="unknown account 'nobody'"
    )
    bad = await bus.request(
        RPC_RISK_GET, TradePrint(seq=1, ts=1, trade_id=1, symbol="A.B", price=1, qty=1, aggressor=Side.BUY)
    )
    assert isinstance(bad, RiskError) and bad.error == "malformed"
    await monitor.stop()


# --- end to end: the real venue and OMS ---------------------------------------------------------------------


async def test_liquidation_end_to_end_through_the_real_oms_and_venue(tmp_path: Path, alerts: Alerts) -> None:
    from tradesim.services.compliance import parse_compliance_config
    from tradesim.services.oms.service import OmsService
    from tradesim.services.risk import parse_risk_config
    from tradesim.services.venue.service import VenueService
    from tradesim.store import open_journal

    bus = await open_bus(f"memory://risk-e2e-{uuid.uuid4().hex[:8]}", on_error=lambda s, e: None)
    await bus.subscribe(subjects.RISK_ALERTS, alerts.on)
    journal = await open_journal(tmp_path)
    venue = VenueService(bus, journal, [AAPL])
    oms = OmsService(
        bus,
        [AAPL],
        ACCOUNTS,
        parse_risk_config("[defaults]\nmax_order_qty = 10_000\n"),
        parse_compliance_config("default_packs = []\n"),
        reference_prices={"AAPL.SIM": 10_000},
    )
    monitor = await started(bus, liquidation_enabled=True)
    try:
        await venue.start()
        await oms.start()
        for side, price in ((Side.SELL, 10_000), (Side.BUY, 9_900)):
            reply = await bus.request(
                RPC_OMS_SUBMIT,
                OrderRequest(
                    account="mm", symbol="AAPL.SIM", side=side, qty=200, price=price, client_order_id=str(side)
                ),
            )
            assert isinstance(reply, OrderReply) and reply.order.status is OrderStatus.ACCEPTED, reply
        reply = await bus.request(
            RPC_OMS_SUBMIT,
            OrderRequest(
                account="alice", symbol="AAPL.SIM", side=Side.BUY, qty=130, type=OrderType.MARKET, client_order_id="big"
            ),
        )
        assert isinstance(reply, OrderReply) and reply.order.filled_qty == 130, reply
        (liq,) = await alerts.wait_kind(AlertKind.LIQUIDATION, 1)
        await monitor.idle()
        assert liq.figures["filled_qty"] == "30", liq.message
        assert liq.client_order_id.startswith("liq-alice-AAPL.SIM-")
        states = await alerts.wait_kind(AlertKind.POSITION_STATE, 2)
        assert [a.figures["state"] for a in states] == ["over_limit", "critical"]
        assert monitor.replica.ledger.position("alice", "AAPL.SIM").qty == 100
    finally:
        await monitor.stop()
        await oms.stop()
        await venue.stop()
        await journal.close()
        await bus.close()
