"""The market-making agent: seed 02's pipeline wired to the bus for one (account, symbol).

    Tick / DepthUpdate ─► MarketDataPipeline (fair price, imbalance, EWMA volatility, adverse selection)
                       ─► generate_quotes (Avellaneda-Stoikov ladder)
                       ─► adjust (position state: Normal / Warning / Critical / OverLimit)
                       ─► OrderExecutor (reconcile with live orders through the OMS)

It requotes on market data, on its own fills and on a timer. Time is the injected clock and
asyncio.sleep only, so a simulated-time loop drives it; with the same seed and the same events it
sends the same requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import msgspec

from tradesim.bus import Bus, Delivery, register, subjects
from tradesim.domain import Instrument, OrderCanceled, OrderExpired, Trade
from tradesim.services.agents.executor import OrderExecutor
from tradesim.services.agents.feed import Feed, Unsubscribe
from tradesim.services.agents.fills import FillTracker
from tradesim.services.agents.gateway import Clock, OmsGateway
from tradesim.services.agents.processors import (
    NS_PER_S,
    AdverseSelectionProcessor,
    FairPriceProcessor,
    ImbalanceProcessor,
    MarketDataPipeline,
    MarketSnapshot,
    VolatilityProcessor,
)
from tradesim.services.agents.quotes import QuoteParams, Quotes, generate_quotes, keep_passive
from tradesim.services.agents.risk_adjuster import PositionState, RiskParams, adjust, position_state
from tradesim.services.marketdata.messages import MARKETDATA_MESSAGES, Tick
from tradesim.services.oms.messages import OMS_MESSAGES
from tradesim.services.venue.messages import VENUE_MESSAGES, DepthUpdate

log = logging.getLogger("tradesim.agents.mm")

register(*OMS_MESSAGES, *VENUE_MESSAGES, *MARKETDATA_MESSAGES)


class MarketMakerParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything a market maker can be tuned with; defaults suit a ~$100 stock with a 1-cent tick."""

    quotes: QuoteParams = QuoteParams()
    risk: RiskParams = RiskParams()
    anchor: str = "reference"  # fair price: "reference" | "mid" | "last" (first available in that order)
    initial_sigma: float = 0.0005  # fraction per √s until the EWMA has data
    vol_halflife_s: float = 30.0
    adverse_horizon_s: float = 1.0
    adverse_alpha: float = 0.2
    horizon_s: float = 1.0  # tau = T - t when there is no session end
    session_end_ns: int | None = None  # tau = min(horizon_s, time left) when set
    requote_interval_s: float = 0.5  # timer; 0 = requote only on events
    requote_on_market_data: bool = True
    requote_threshold_bps: float = 2.0
    max_orders_per_second: int = 50
    depth_levels: int = 5  # levels summed for the imbalance
    use_depth: bool = True  # subscribe to market.depth (conflated, so timing-dependent)
    post_only: bool = True
    cancel_on_stop: bool = True
    keep_history: bool = False  # keep every OMS request in `agent.gateway.sent`

    def __post_init__(self) -> None:
        if self.anchor not in FairPriceProcessor.ORDERS:
            raise ValueError(f"anchor must be one of {sorted(FairPriceProcessor.ORDERS)}")
        if self.requote_interval_s < 0 or self.horizon_s < 0 or self.depth_levels < 1:
            raise ValueError("requote_interval_s >= 0, horizon_s >= 0 and depth_levels >= 1 are required")


class MarketMakerAgent:
    """Quotes a ladder on both sides of one symbol for one account, skewed against its inventory."""

    def __init__(self, bus: Bus, account: str, symbol: str, instrument: Instrument,
                 params: MarketMakerParams | None = None, *, clock: Clock, seed: int = 0,
                 reference: int | None = None, feed: Feed | None = None) -> None:
        self.bus = bus
        # Subscriptions go through a shared feed when many agents run together (AgentsService).
        self.feed: Feed = feed if feed is not None else bus
        self.account = account
        self.symbol = symbol
        self.instrument = instrument
        self.params = params = params if params is not None else MarketMakerParams()
        self.clock = clock
        self.seed = seed  # the maker is deterministic without randomness; kept for the id prefix
        self.gateway = OmsGateway(bus, account, keep_history=params.keep_history)
        self.fills = FillTracker(account, symbol)
        self.adverse = AdverseSelectionProcessor(params.adverse_horizon_s, params.adverse_alpha)
        self.volatility = VolatilityProcessor(params.initial_sigma, params.vol_halflife_s)
        self.pipeline = MarketDataPipeline([FairPriceProcessor(params.anchor), ImbalanceProcessor(),
                                            self.volatility, self.adverse])
        self.executor = OrderExecutor(self.gateway, symbol, threshold_bps=params.requote_threshold_bps,
                                      max_orders_per_second=params.max_orders_per_second, clock=clock,
                                      id_prefix=f"{account}-{seed}-", on_trades=self._on_trades,
                                      post_only=params.post_only)
        self.market = MarketSnapshot(ts=0, reference=reference)
        self.last_quotes = Quotes()
        self.state = PositionState.NORMAL
        self.seen_seq = 0  # highest venue seq seen on orders.filled (any account): lets tests settle
        self._subs: list[Unsubscribe] = []
        self._timer: asyncio.Task[None] | None = None
        self._busy = False
        self._dirty = False

    @property
    def inventory(self) -> int:
        return self.fills.inventory

    @property
    def busy(self) -> bool:
        """A requote round is running (tests wait for it to settle)."""
        return self._busy

    # ---- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        self.executor.id_prefix = f"{self.account}-{self.seed}-{self.clock():x}-"
        self._subs.append(await self.feed.subscribe(subjects.market_tick(self.symbol), self._tick_handler))
        if self.params.use_depth:
            self._subs.append(await self.feed.subscribe(subjects.market_depth(self.symbol), self._depth_handler))
        self._subs.append(await self.feed.subscribe(subjects.ORDERS_FILLED, self._fill_handler))
        self._subs.append(await self.feed.subscribe(subjects.ORDERS_CANCELLED, self._gone_handler))
        if self.params.requote_interval_s > 0:
            self._timer = asyncio.create_task(self._run_timer(), name=f"mm-timer-{self.account}")

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
            self._timer = None
        for sub in self._subs:
            await sub.unsubscribe()
        self._subs.clear()
        if self.params.cancel_on_stop:
            await self.executor.cancel_all()

    async def _run_timer(self) -> None:
        while True:
            await asyncio.sleep(self.params.requote_interval_s)
            try:
                await self.requote()
            except Exception:  # a bad round must not kill the maker
                log.exception("%s: requote failed", self.account)

    # ---- inputs ---------------------------------------------------------------------------------
    async def _tick_handler(self, d: Delivery) -> None:
        if isinstance(d.data, Tick):
            await self.on_tick(d.data)

    async def _depth_handler(self, d: Delivery) -> None:
        if isinstance(d.data, DepthUpdate):
            await self.on_depth(d.data)

    async def _fill_handler(self, d: Delivery) -> None:
        if isinstance(d.data, Trade):
            await self.on_trade(d.data)

    async def _gone_handler(self, d: Delivery) -> None:
        event = d.data
        if isinstance(event, OrderCanceled | OrderExpired) and event.account == self.account:
            self.executor.on_gone(event.client_order_id)

    async def on_tick(self, tick: Tick) -> None:
        self.market = msgspec.structs.replace(
            self.market, ts=self.clock(), bid=tick.bid, ask=tick.ask, bid_qty=tick.bid_qty, ask_qty=tick.ask_qty,
            last=tick.last if tick.last is not None else self.market.last,
            reference=tick.reference if tick.reference is not None else self.market.reference)
        await self._market_changed()

    async def on_depth(self, depth: DepthUpdate) -> None:
        n = self.params.depth_levels
        self.market = msgspec.structs.replace(
            self.market, ts=self.clock(), bid=depth.bids[0][0] if depth.bids else None,
            ask=depth.asks[0][0] if depth.asks else None, bid_qty=sum(lv[1] for lv in depth.bids[:n]),
            ask_qty=sum(lv[1] for lv in depth.asks[:n]),
            last=depth.last_price if depth.last_price is not None else self.market.last)
        await self._market_changed()

    async def on_trade(self, trade: Trade) -> None:
        self.seen_seq = max(self.seen_seq, trade.seq)
        if self._on_trades([trade]):
            await self.requote()

    def _on_trades(self, trades: list[Trade]) -> bool:
        got = False
        for trade in trades:
            for fill in self.fills.on_trade(trade):
                got = True
                self.executor.on_fill(fill)
                self.adverse.on_fill(self.clock(), fill.side, fill.price)
        return got

    async def _market_changed(self) -> None:
        self.pipeline.process(self.market)
        if self.params.requote_on_market_data:
            await self.requote()

    # ---- the pipeline ---------------------------------------------------------------------------
    def time_left_s(self) -> float:
        if self.params.session_end_ns is None:
            return self.params.horizon_s
        return max(0.0, min(self.params.horizon_s, (self.params.session_end_ns - self.clock()) / NS_PER_S))

    def desired_quotes(self) -> Quotes:
        """Generator then risk adjuster, on the latest processed market and inventory (no I/O)."""
        view = self.pipeline.view
        lot = self.instrument.lot_size
        quotes = generate_quotes(view, self.inventory, self.time_left_s(), self.params.quotes, lot)
        quotes = keep_passive(quotes, view.best_bid, view.best_ask)
        self.state = position_state(self.inventory, self.params.risk)
        return adjust(quotes, self.inventory, self.params.risk, lot)

    async def requote(self) -> None:
        """One round of the pipeline. Calls that arrive during a round coalesce into one more round."""
        if self._busy:
            self._dirty = True
            return
        self._busy = True
        try:
            self._dirty = True
            while self._dirty:
                self._dirty = False
                self.last_quotes = self.desired_quotes()
                await self.executor.execute(self.last_quotes)
        finally:
            self._busy = False
