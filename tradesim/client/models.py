"""What the client returns: the API's JSON shapes as msgspec Structs, prices and money as `Decimal`.

Decoding is tolerant of fields a newer server adds (unknown fields are ignored), strict about the
types of the fields it knows, so a changed contract fails loudly here rather than deep in a strategy.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from tradesim.domain import OrderStatus, OrderType, Side, TimeInForce


class Token(msgspec.Struct, frozen=True, kw_only=True):
    access_token: str
    token_type: str
    expires_in: int


class Fill(msgspec.Struct, frozen=True, kw_only=True):
    """A trade one order request made; `liquidity` says whether this order was the maker or the taker."""

    trade_id: str
    symbol: str
    price: Decimal
    qty: int
    aggressor: Side
    liquidity: str
    seq: int
    ts: int


class Order(msgspec.Struct, frozen=True, kw_only=True):
    """An order as the OMS sees it; `trades` lists what the request that returned it executed."""

    order_id: str
    client_order_id: str
    account: str
    symbol: str
    side: Side
    type: OrderType
    tif: TimeInForce
    price: Decimal | None
    stop_price: Decimal | None
    qty: int
    filled_qty: int
    leaves_qty: int
    avg_price: Decimal | None
    status: OrderStatus
    reason: str = ""
    message: str = ""
    hold_id: str = ""
    created_ts: int = 0
    updated_ts: int = 0
    trades: list[Fill] = []

    @property
    def is_open(self) -> bool:
        return self.status in _OPEN


_OPEN = frozenset({OrderStatus.NEW, OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED, OrderStatus.TRIGGERED,
                   OrderStatus.PENDING_NEW, OrderStatus.PENDING_CANCEL, OrderStatus.PENDING_MODIFY,
                   OrderStatus.HELD})


class OrderPage(msgspec.Struct, frozen=True, kw_only=True):
    """One page of GET /orders, newest first."""

    orders: list[Order]
    total: int
    limit: int
    offset: int


class Instrument(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    tick_size: Decimal
    lot_size: int
    multiplier: Decimal
    currency: str
    margin_rate: Decimal
    price_band: Decimal | None = None
    flags: list[str] = []
    maker_fee_bps: Decimal = Decimal(0)
    taker_fee_bps: Decimal = Decimal(0)
    reference_price: Decimal | None = None


class Level(msgspec.Struct, frozen=True, array_like=True):
    """One book level, `[price, visible qty, order count]` on the wire."""

    price: Decimal
    qty: int
    count: int


class Book(msgspec.Struct, frozen=True, kw_only=True):
    """The venue's book at `seq`, best levels first."""

    symbol: str
    seq: int
    bids: list[Level]
    asks: list[Level]
    last_price: Decimal | None = None

    @property
    def best_bid(self) -> Level | None:
        return self.bids[0] if self.bids else None

    @property
    def best_ask(self) -> Level | None:
        return self.asks[0] if self.asks else None


class Position(msgspec.Struct, frozen=True, kw_only=True):
    """One position in the account currency; `qty` is signed."""

    account: str
    symbol: str
    qty: int
    avg_price: Decimal | None
    cost_basis: Decimal
    mark_price: Decimal | None
    market_value: Decimal
    unrealized_pnl: Decimal
    realized_pnl: Decimal
    fees: Decimal
    margined: bool = False
    margin_used: Decimal = Decimal(0)


class Account(msgspec.Struct, frozen=True, kw_only=True):
    """An account's figures (docs/accounts.md); `seq` is the venue sequence they include."""

    account: str
    kind: str
    currency: str
    cash: Decimal
    net_deposits: Decimal
    equity: Decimal
    unrealized_pnl: Decimal
    realized_pnl: Decimal
    fees: Decimal
    margin_used: Decimal
    margin_available: Decimal
    cash_available: Decimal
    buying_power: Decimal
    positions: list[Position]
    seq: int = 0


class Positions(msgspec.Struct, frozen=True, kw_only=True):
    account: str
    positions: list[Position]
    seq: int

    def get(self, symbol: str) -> Position | None:
        return next((p for p in self.positions if p.symbol == symbol), None)


class PositionRisk(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    qty: int
    limit: int | None
    state: str | None
    utilization: Decimal | None


class VarFigure(msgspec.Struct, frozen=True, kw_only=True):
    confidence: Decimal
    var: Decimal


class Risk(msgspec.Struct, frozen=True, kw_only=True):
    """Post-trade risk of one account (GET /risk)."""

    account: str
    seq: int
    positions: list[PositionRisk]
    equity: Decimal
    margin_used: Decimal
    margin_ratio: Decimal | None
    margin_warning: bool
    var: list[VarFigure]
    var_observations: int
    var_limit: Decimal | None
    var_breach: bool
    liquidations_in_flight: int = 0


class TapeTrade(msgspec.Struct, frozen=True, kw_only=True):
    """A public trade (no accounts)."""

    trade_id: str
    symbol: str
    price: Decimal
    qty: int
    aggressor: Side
    seq: int
    ts: int


class Trades(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    trades: list[TapeTrade]  # newest first


class Ticker(msgspec.Struct, frozen=True, kw_only=True):
    """Best bid/ask, last trade, today's volume, turnover and VWAP."""

    symbol: str
    seq: int
    ts: int
    bid: Decimal | None
    bid_qty: int
    ask: Decimal | None
    ask_qty: int
    last: Decimal | None
    last_qty: int
    volume: int
    turnover: Decimal
    trades: int
    vwap: Decimal | None
    reference: Decimal | None = None


class Bar(msgspec.Struct, frozen=True, kw_only=True):
    start_ts: int  # ns
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: int
    turnover: Decimal
    trades: int


class Bars(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    interval: int  # seconds
    bars: list[Bar]  # oldest first


class AlgoParams(msgspec.Struct, frozen=True, kw_only=True):
    """An algo's knobs (docs/algos.md); which apply depends on the algo."""

    duration_ms: int = 0
    slices: int = 0
    start_ts: int | None = None
    participation: float = 0.0
    display_qty: int = 0
    limit_price: Decimal | None = None
    min_child_qty: int = 0
    profile: str = "u"
    grace_ms: int = 0


class Algo(msgspec.Struct, frozen=True, kw_only=True):
    """A parent order worked by an algo (TWAP, VWAP, POV, iceberg); `children` only when asked for."""

    algo_id: str
    client_id: str
    account: str
    symbol: str
    side: Side
    qty: int
    algo: str
    params: AlgoParams
    state: str
    filled_qty: int
    open_qty: int
    avg_price: Decimal | None
    child_count: int
    start_ts: int = 0
    end_ts: int = 0
    created_ts: int = 0
    updated_ts: int = 0
    finished_ts: int = 0
    reason: str = ""
    market_volume: int = 0
    tracking_error: float | None = None
    slippage_bps: float | None = None
    correlation_id: str = ""
    children: list[Order] | None = None


class AlgoPage(msgspec.Struct, frozen=True, kw_only=True):
    algos: list[Algo]
    total: int
    limit: int
    offset: int
