"""The market maker's pipeline stages and the noise trader's draws, each on known inputs (no bus)."""

from __future__ import annotations

import math
import random
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from tradesim.domain import Instrument, OrderStatus, OrderType, Side, Trade
from tradesim.services.agents.executor import OrderExecutor
from tradesim.services.agents.fills import FillTracker
from tradesim.services.agents.noise import NoiseTraderAgent, NoiseTraderParams, geometric
from tradesim.services.agents.processors import (
    AdverseSelectionProcessor,
    FairPriceProcessor,
    ImbalanceProcessor,
    MarketDataPipeline,
    MarketSnapshot,
    MarketView,
    VolatilityProcessor,
)
from tradesim.services.agents.quotes import (
    QuoteLevel,
    QuoteParams,
    Quotes,
    generate_quotes,
    keep_passive,
    optimal_spread,
    reservation_price,
)
from tradesim.services.agents.reconcile import Cancel, LiveOrder, Modify, Place, reconcile, within
from tradesim.services.agents.risk_adjuster import PositionState, RiskParams, adjust, position_state
from tradesim.services.agents.service import AgentsConfig, SymbolAgents, agent_accounts, agent_seed
from tradesim.services.oms.messages import (
    CancelRequest,
    ModifyRequest,
    OmsError,
    OrderReply,
    OrderRequest,
    OrderView,
)

S = 1_000_000_000
AAPL = Instrument(symbol="AAPL.SIM", tick_size=Decimal("0.01"))


class FakeGateway:
    """Accepts every order and answers like the OMS would for resting orders that never fill."""

    def __init__(self, account: str = "mm") -> None:
        self.account = account
        self.sent: list[OrderRequest | CancelRequest | ModifyRequest] = []
        self.orders: dict[str, OrderView] = {}
        self._next = 0

    async def submit(self, request: OrderRequest) -> OrderReply | OmsError:
        self.sent.append(request)
        self._next += 1
        view = OrderView(order_id=self._next, client_order_id=request.client_order_id, account=self.account,
                         symbol=request.symbol, side=request.side, type=request.type, tif=request.tif,
                         price=request.price, stop_price=None, qty=request.qty, filled_qty=0,
                         leaves_qty=request.qty, fill_value=0,
                         status=OrderStatus.CANCELED if request.type is OrderType.MARKET else OrderStatus.ACCEPTED)
        self.orders[request.client_order_id] = view
        return OrderReply(order=view)

    async def cancel(self, client_order_id: str) -> OrderReply | OmsError:
        self.sent.append(CancelRequest(account=self.account, client_order_id=client_order_id))
        view = self.orders.pop(client_order_id, None)
        if view is None:
            return OmsError(error="unknown_order", message=client_order_id)
        return OrderReply(order=msgspec.structs.replace(view, status=OrderStatus.CANCELED, leaves_qty=0))

    async def modify(self, client_order_id: str, *, price: int | None, qty: int | None) -> OrderReply | OmsError:
        self.sent.append(ModifyRequest(account=self.account, client_order_id=client_order_id, price=price, qty=qty))
        view = self.orders.get(client_order_id)
        if view is None:
            return OmsError(error="unknown_order", message=client_order_id)
        new_qty = qty if qty is not None else view.qty
        view = msgspec.structs.replace(view, price=price if price is not None else view.price, qty=new_qty,
                                       leaves_qty=new_qty - view.filled_qty)
        self.orders[client_order_id] = view
        return OrderReply(order=view)

    def resting(self, side: Side) -> list[tuple[int, int]]:
        return sorted(((v.price or 0, v.leaves_qty) for v in self.orders.values() if v.side is side),
                      reverse=side is Side.BUY)



def view(fair: float = 10_000.0, sigma: float = 0.0005, **kw: Any) -> MarketView:
    return MarketView(fair=fair, sigma=sigma, **kw)


# ---- quote generator ----------------------------------------------------------------------------
def test_formulas_match_avellaneda_stoikov() -> None:
    assert reservation_price(100.0, 2.0, 0.1, 3.0, 0.5) == pytest.approx(100 - 2 * 0.1 * 9 * 0.5)
    assert optimal_spread(0.1, 3.0, 0.5, 1.5) == pytest.approx(0.1 * 9 * 0.5 + 20 * math.log(1 + 0.1 / 1.5))


def test_long_inventory_shifts_quotes_down_and_short_up() -> None:
    p = QuoteParams(levels=2)
    flat = generate_quotes(view(), 0, 1.0, p)
    long = generate_quotes(view(), 500, 1.0, p)
    short = generate_quotes(view(), -500, 1.0, p)
    assert long.reservation < flat.reservation < short.reservation
    assert long.bids[0].price < flat.bids[0].price < short.bids[0].price
    assert long.asks[0].price < flat.asks[0].price < short.asks[0].price
    # the skew is q*gamma*sigma^2*tau ticks: 5 · 0.01 · (0.0005·10000)² · 1 = 1.25
    assert flat.reservation - long.reservation == pytest.approx(1.25)


def test_spread_widens_with_volatility_and_horizon() -> None:
    p = QuoteParams(levels=1)
    calm = generate_quotes(view(sigma=0.0002), 0, 1.0, p)
    wild = generate_quotes(view(sigma=0.002), 0, 1.0, p)
    assert wild.spread > calm.spread
    assert wild.asks[0].price - wild.bids[0].price > calm.asks[0].price - calm.bids[0].price
    assert generate_quotes(view(sigma=0.002), 0, 0.1, p).spread < wild.spread


def test_levels_are_on_ticks_spaced_sized_and_rounded_outwards() -> None:
    p = QuoteParams(levels=3, level_spacing_ticks=2, base_size=100, size_growth=1.5, gamma=0.5, k=10.0)
    q = generate_quotes(view(fair=10_000.5, sigma=0.0), 0, 1.0, p, lot_size=10)
    assert all(isinstance(lv.price, int) for lv in q.bids + q.asks)
    half = q.spread / 2
    assert q.bids[0].price == math.floor(10_000.5 - half) and q.asks[0].price == math.ceil(10_000.5 + half)
    assert [b.price for b in q.bids] == [q.bids[0].price - 2 * i for i in range(3)]
    assert [a.price for a in q.asks] == [q.asks[0].price + 2 * i for i in range(3)]
    assert [b.qty for b in q.bids] == [100, 150, 220]  # 225 rounded down to lots of 10


def test_quotes_never_cross_whatever_the_inputs() -> None:
    rng = random.Random(7)
    for _ in range(2_000):
        p = QuoteParams(gamma=rng.uniform(1e-4, 5), k=rng.uniform(1e-3, 10), levels=rng.randint(1, 4),
                        min_half_spread_ticks=rng.uniform(0.5, 3))
        q = generate_quotes(view(fair=rng.uniform(1, 50_000), sigma=rng.uniform(0, 0.01),
                                 imbalance=rng.uniform(-1, 1), adverse=rng.uniform(-5, 5)),
                            rng.randint(-5_000, 5_000), rng.uniform(0, 5), p)
        if q.bids:
            assert max(b.price for b in q.bids) < min(a.price for a in q.asks)


def test_no_fair_price_no_quotes() -> None:
    assert generate_quotes(MarketView(), 0, 1.0, QuoteParams()) == Quotes()


def test_adverse_selection_widens_and_imbalance_tilts() -> None:
    p = QuoteParams(levels=1, imbalance_weight=1.0)
    base = generate_quotes(view(), 0, 1.0, p)
    assert generate_quotes(view(adverse=3.0), 0, 1.0, p).spread == pytest.approx(base.spread + 6)
    tilted = generate_quotes(view(imbalance=1.0, best_bid=9_990, best_ask=10_010), 0, 1.0, p)
    assert tilted.reservation == pytest.approx(base.reservation + 10)


def test_keep_passive_pulls_crossing_levels_inside_the_market() -> None:
    q = Quotes(bids=[QuoteLevel(side=Side.BUY, price=105, qty=1)], asks=[QuoteLevel(side=Side.SELL, price=99, qty=1)])
    out = keep_passive(q, best_bid=100, best_ask=103)
    assert [b.price for b in out.bids] == [102] and [a.price for a in out.asks] == [101]


# ---- risk adjuster ------------------------------------------------------------------------------
RISK = RiskParams(position_limit=1_000, warning_fraction=0.5, critical_fraction=0.8, warning_widen_ticks=2,
                  warning_size_factor=0.5, flatten=True)
LADDER = Quotes(bids=[QuoteLevel(side=Side.BUY, price=100 - i, qty=100) for i in range(2)],
                asks=[QuoteLevel(side=Side.SELL, price=102 + i, qty=100) for i in range(2)])


@pytest.mark.parametrize(("inventory", "state"), [
    (0, PositionState.NORMAL), (499, PositionState.NORMAL), (-500, PositionState.WARNING),
    (799, PositionState.WARNING), (800, PositionState.CRITICAL), (-999, PositionState.CRITICAL),
    (1_000, PositionState.OVERLIMIT), (-5_000, PositionState.OVERLIMIT)])
def test_position_state_thresholds(inventory: int, state: PositionState) -> None:
    assert position_state(inventory, RISK) is state


def test_normal_passes_quotes_through() -> None:
    assert adjust(LADDER, 100, RISK) is LADDER


def test_warning_widens_and_shrinks_the_side_that_adds() -> None:
    long = adjust(LADDER, 600, RISK)
    assert [(b.price, b.qty) for b in long.bids] == [(98, 50), (97, 50)]
    assert [(a.price, a.qty) for a in long.asks] == [(104, 100), (105, 100)]
    short = adjust(LADDER, -600, RISK)
    assert [b.qty for b in short.bids] == [100, 100] and [a.qty for a in short.asks] == [50, 50]


def test_critical_quotes_only_the_reducing_side() -> None:
    long = adjust(LADDER, 900, RISK)
    assert long.bids == [] and long.asks == LADDER.asks
    short = adjust(LADDER, -900, RISK)
    assert short.asks == [] and short.bids == LADDER.bids


def test_overlimit_pulls_everything_and_flattens_to_the_warning_line() -> None:
    out = adjust(LADDER, 1_200, RISK)
    assert out.bids == [] and out.asks == [] and out.taker_qty == -700
    assert adjust(LADDER, -1_000, RISK).taker_qty == 500
    no_flatten = adjust(LADDER, 1_200, RiskParams(position_limit=1_000))
    assert no_flatten.bids == [] and no_flatten.asks == [] and no_flatten.taker_qty == 0


def test_quoted_size_shrinks_monotonically_as_the_state_worsens() -> None:
    sizes = [sum(lv.qty for lv in adjust(LADDER, inv, RISK).bids) for inv in (0, 600, 900, 1_200)]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > sizes[1] > sizes[2] == 0


# ---- reconcile / executor -----------------------------------------------------------------------
def bid(price: int, qty: int = 100) -> QuoteLevel:
    return QuoteLevel(side=Side.BUY, price=price, qty=qty)


def ask(price: int, qty: int = 100) -> QuoteLevel:
    return QuoteLevel(side=Side.SELL, price=price, qty=qty)


def live(cid: str, side: Side, price: int, qty: int = 100, filled: int = 0) -> LiveOrder:
    return LiveOrder(client_order_id=cid, side=side, price=price, qty=qty, filled=filled)


def test_within_threshold() -> None:
    assert within(10_001, 10_000, 1.0) and not within(10_002, 10_000, 1.0)


def test_reconcile_leaves_orders_within_threshold_alone() -> None:
    orders = [live("b", Side.BUY, 10_000), live("a", Side.SELL, 10_010)]
    assert reconcile([bid(10_001)], [ask(10_009)], orders, threshold_bps=2.0) == []


def test_reconcile_moves_orders_beyond_threshold_and_fills_gaps() -> None:
    orders = [live("b1", Side.BUY, 10_000), live("b2", Side.BUY, 9_990), live("a1", Side.SELL, 10_010)]
    plan = reconcile([bid(10_020)], [ask(10_030), ask(10_040)], orders, threshold_bps=2.0)
    assert plan == [
        Cancel(client_order_id="b2"),
        Modify(client_order_id="a1", price=10_030, qty=100, improves=False),  # moves away first
        Modify(client_order_id="b1", price=10_020, qty=100, improves=True),
        Place(side=Side.SELL, price=10_040, qty=100),
    ]


def test_reconcile_cuts_size_in_place_and_tops_up_partial_fills() -> None:
    orders = [live("b", Side.BUY, 10_000, qty=300), live("a", Side.SELL, 10_010, qty=100, filled=40)]
    plan = reconcile([bid(10_000, 100)], [ask(10_010, 100)], orders, threshold_bps=0.0)
    assert plan == [Modify(client_order_id="b", price=10_000, qty=100, improves=False),
                    Modify(client_order_id="a", price=10_010, qty=140, improves=True)]


def test_reconcile_skips_pending_orders() -> None:
    pending = live("b", Side.BUY, 9_000)
    pending.pending = True
    assert reconcile([], [], [pending], threshold_bps=1.0) == []


def clock_at(t: list[int]) -> Any:
    return lambda: t[0]


async def test_executor_does_not_churn_on_small_moves_and_replaces_on_large() -> None:
    gw = FakeGateway()
    now = [0]
    ex = OrderExecutor(gw, "AAPL.SIM", threshold_bps=5.0, max_orders_per_second=100,  # type: ignore[arg-type]
                       clock=clock_at(now), id_prefix="x-")
    await ex.execute(Quotes(bids=[bid(19_000)], asks=[ask(19_010)]))
    assert len(gw.sent) == 2 and all(isinstance(r, OrderRequest) for r in gw.sent)
    for drift in (1, -2, 3, 0, -4):  # 4 ticks of 19 000 = 2.1 bps < 5
        await ex.execute(Quotes(bids=[bid(19_000 + drift)], asks=[ask(19_010 + drift)]))
    assert len(gw.sent) == 2
    await ex.execute(Quotes(bids=[bid(19_020)], asks=[ask(19_030)]))  # 10.5 bps
    assert [type(r) for r in gw.sent[2:]] == [ModifyRequest, ModifyRequest]
    assert gw.resting(Side.BUY) == [(19_020, 100)] and gw.resting(Side.SELL) == [(19_030, 100)]
    await ex.execute(Quotes())
    assert [type(r) for r in gw.sent[4:]] == [CancelRequest, CancelRequest] and ex.live == {}


async def test_executor_bounds_orders_per_second() -> None:
    gw = FakeGateway()
    now = [0]
    ex = OrderExecutor(gw, "AAPL.SIM", threshold_bps=0.0, max_orders_per_second=3,  # type: ignore[arg-type]
                       clock=clock_at(now), id_prefix="x-")
    ladder = Quotes(bids=[bid(100 - i) for i in range(5)], asks=[ask(110 + i) for i in range(5)])
    assert await ex.execute(ladder) == 3
    assert await ex.execute(ladder) == 0 and ex.deferred > 0
    now[0] += S
    assert await ex.execute(ladder) == 3
    now[0] += S
    await ex.execute(ladder)
    now[0] += S
    await ex.execute(ladder)
    assert len(gw.sent) == 10 and len(ex.live) == 10


# ---- processors ---------------------------------------------------------------------------------
def test_imbalance_on_known_sizes() -> None:
    p = ImbalanceProcessor()
    assert p.process(MarketSnapshot(ts=0, bid_qty=300, ask_qty=100), MarketView()).imbalance == 0.5
    assert p.process(MarketSnapshot(ts=0), MarketView()).imbalance == 0.0


def test_fair_price_follows_the_anchor_order() -> None:
    snap = MarketSnapshot(ts=1, bid=99, ask=101, last=105, reference=90)
    assert FairPriceProcessor("reference").process(snap, MarketView()).fair == 90
    assert FairPriceProcessor("mid").process(snap, MarketView()).fair == 100
    assert FairPriceProcessor("last").process(snap, MarketView()).fair == 105
    assert FairPriceProcessor("reference").process(MarketSnapshot(ts=1, last=7), MarketView()).fair == 7


def test_ewma_volatility_on_known_returns() -> None:
    v = VolatilityProcessor(initial_sigma=0.0, halflife_s=1.0)
    v.update(0, 100.0)
    v.update(S, 101.0)  # one return over one half-life: var = 0.5 · r² / 1s
    assert v.var == pytest.approx(0.5 * math.log(1.01) ** 2)
    for i in range(2, 40):
        v.update(i * S, 101.0)
    assert v.sigma < 1e-6  # a flat price decays it


def test_adverse_selection_scores_drift_against_fills_after_horizon() -> None:
    a = AdverseSelectionProcessor(horizon_s=1.0, alpha=1.0)
    a.on_fill(0, Side.BUY, 100)
    a.update(S // 2, 90.0)
    assert a.adverse == 0.0  # not due yet
    a.update(S, 97.0)
    assert a.adverse == 3.0  # we bought at 100, it is worth 97
    a.on_fill(S, Side.SELL, 100)
    a.update(2 * S, 98.0)
    assert a.adverse == -2.0  # sold at 100, now 98: in our favour


def test_pipeline_chains_processors() -> None:
    pipe = MarketDataPipeline([FairPriceProcessor("mid"), ImbalanceProcessor(),
                               VolatilityProcessor(0.001, 10.0)])
    out = pipe.process(MarketSnapshot(ts=0, bid=99, ask=101, bid_qty=10, ask_qty=30))
    assert (out.fair, out.imbalance, out.sigma, out.best_bid, out.best_ask) == (100, -0.5, 0.001, 99, 101)


# ---- fills --------------------------------------------------------------------------------------
def trade(seq: int, aggressor: Side, maker: str, taker: str, qty: int = 10, price: int = 100) -> Trade:
    return Trade(seq=seq, ts=0, trade_id=seq, symbol="AAPL.SIM", price=price, qty=qty, aggressor=aggressor,
                 maker_order_id=1, maker_account=maker, maker_client_order_id="m", maker_cum_qty=qty,
                 maker_leaves_qty=0, taker_order_id=2, taker_account=taker, taker_client_order_id="t",
                 taker_cum_qty=qty, taker_leaves_qty=0)


def test_fill_tracker_counts_each_trade_once_on_the_right_side() -> None:
    f = FillTracker("mm", "AAPL.SIM")
    assert [x.side for x in f.on_trade(trade(1, Side.BUY, maker="mm", taker="x"))] == [Side.SELL]
    assert f.on_trade(trade(1, Side.BUY, maker="mm", taker="x")) == []
    f.on_trade(trade(2, Side.BUY, maker="x", taker="mm", qty=4, price=90))
    f.on_trade(trade(3, Side.SELL, maker="x", taker="y"))
    assert f.inventory == -6 and f.cash_ticks == 1_000 - 360 and f.fills == 2


# ---- noise trader -------------------------------------------------------------------------------
def test_geometric_mean() -> None:
    rng = random.Random(1)
    draws = [geometric(rng, 4.0) for _ in range(20_000)]
    assert min(draws) == 0 and sum(draws) / len(draws) == pytest.approx(4.0, rel=0.05)


def noise(seed: int, gw: FakeGateway, now: list[int], **kw: Any) -> NoiseTraderAgent:
    agent = NoiseTraderAgent(None, "noise", "AAPL.SIM", AAPL, NoiseTraderParams(**kw),  # type: ignore[arg-type]
                             clock=clock_at(now), seed=seed, reference=19_000)
    agent.gateway = gw  # type: ignore[assignment]
    return agent


async def test_noise_orders_sit_around_the_reference_with_seeded_arrivals() -> None:
    gw = FakeGateway("noise")
    now = [0]
    agent = noise(3, gw, now, market_prob=0.2, aggressive_prob=0.0, min_distance_ticks=1, max_open_orders=1_000)
    waits = [agent.next_wait_s() for _ in range(2_000)]
    assert sum(waits) / len(waits) == pytest.approx(1.0, rel=0.1)
    for _ in range(500):
        await agent.arrive()
    limits = [r for r in gw.sent if isinstance(r, OrderRequest) and r.price is not None]
    markets = [r for r in gw.sent if isinstance(r, OrderRequest) and r.price is None]
    assert 0.12 < len(markets) / 500 < 0.28
    assert all(r.price is not None and r.price < 19_000 for r in limits if r.side is Side.BUY)
    assert all(r.price is not None and r.price > 19_000 for r in limits if r.side is Side.SELL)
    assert all(1 <= r.qty <= 100 for r in limits)


async def test_noise_cancels_stale_orders() -> None:
    gw = FakeGateway("noise")
    now = [0]
    agent = noise(5, gw, now, market_prob=0.0, order_ttl_s=10.0)
    await agent.arrive()
    now[0] = 5 * S
    await agent.arrive()
    assert len(agent.open) == 2
    now[0] = 11 * S
    await agent.arrive()
    cancels = [r for r in gw.sent if isinstance(r, CancelRequest)]
    assert len(cancels) == 1 and len(agent.open) == 2


async def test_noise_same_seed_same_orders() -> None:
    runs = []
    for _ in range(2):
        gw, now = FakeGateway("noise"), [0]
        agent = noise(11, gw, now)
        for i in range(50):
            now[0] = i * S
            await agent.arrive()
        runs.append(gw.sent)
    assert runs[0] == runs[1]
    gw, now = FakeGateway("noise"), [0]
    other = noise(12, gw, now)
    for i in range(50):
        now[0] = i * S
        await other.arrive()
    assert gw.sent != runs[0]


# ---- service ------------------------------------------------------------------------------------
def test_agent_accounts_and_seeds() -> None:
    config = AgentsConfig(symbols=[SymbolAgents(symbol="AAPL.SIM", market_makers=1, noise_traders=2)])
    accounts = agent_accounts(config, [AAPL])
    assert accounts == {"mm-AAPL.SIM-1": (Decimal(5_000_000), "margin", "USD"),
                        "noise-AAPL.SIM-1": (Decimal(1_000_000), "margin", "USD"),
                        "noise-AAPL.SIM-2": (Decimal(1_000_000), "margin", "USD")}
    assert agent_seed(0, "AAPL.SIM", "noise", 1) == agent_seed(0, "AAPL.SIM", "noise", 1)
    assert agent_seed(0, "AAPL.SIM", "noise", 1) != agent_seed(0, "AAPL.SIM", "noise", 2)
    with pytest.raises(ValueError, match="unknown symbol"):
        agent_accounts(AgentsConfig(symbols=[SymbolAgents(symbol="NOPE.SIM")]), [AAPL])
