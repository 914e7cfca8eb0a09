"""The API's request and response bodies (msgspec Structs; prices are decimal strings, quantities ints)."""

from __future__ import annotations

from typing import Annotated

import msgspec

from tradesim.domain import STP, OrderType, Side, TimeInForce

Price = str | int | float
# Integers that travel on the bus as msgpack int64: a larger one is bad input (400), not a bus failure.
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


class OrderIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """POST /orders. `account` is for admins acting for another account; a trader's is its own."""

    symbol: str
    side: Side
    qty: Int64
    type: OrderType = OrderType.LIMIT
    tif: TimeInForce = TimeInForce.GTC
    price: Price | None = None
    stop_price: Price | None = None
    client_order_id: str = ""
    display_qty: Int64 | None = None
    post_only: bool = False
    stp: STP = STP.CANCEL_NEWEST
    expire_ts: Int64 | None = None
    account: str | None = None


class OrderPatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """PATCH /orders/{id}: the new price and/or new total qty."""

    price: Price | None = None
    qty: Int64 | None = None


class HoldReason(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """POST /orders/{id}/approve|reject body (optional)."""

    reason: str = ""


class TokenIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """POST /auth/token: a username and password, or an API key."""

    username: str | None = None
    password: str | None = None
    api_key: str | None = None


class TokenOut(msgspec.Struct, kw_only=True):
    access_token: str
    token_type: str
    expires_in: int


class SignalOut(msgspec.Struct, kw_only=True):
    """POST /webhook/signal's answer (202 accepted, or 200 with `duplicate` for a correlation id already answered)."""

    status: str
    correlation_id: str
    symbol: str
    side: str
    strength: float
    unknown_fields: list[str]
    duplicate: bool


class ErrorOut(msgspec.Struct, kw_only=True):
    """Every error (tradesim.api.errors): a stable snake_case `error` and a human `message`; a refused order
    (422) also names the order it created, and a 503 from /readyz lists each service's state."""

    error: str
    message: str
    order_id: str | None = None
    order: OrderOut | None = None
    services: dict[str, str] | None = None


class TradeOut(msgspec.Struct, kw_only=True):
    trade_id: str
    symbol: str
    price: str
    qty: int
    aggressor: str
    liquidity: str  # "maker" or "taker": this order's side of the trade
    seq: int
    ts: int


class OrderOut(msgspec.Struct, kw_only=True):
    order_id: str
    client_order_id: str
    account: str
    symbol: str
    side: str
    type: str
    tif: str
    price: str | None
    stop_price: str | None
    qty: int
    filled_qty: int
    leaves_qty: int
    avg_price: str | None
    status: str
    reason: str
    message: str
    hold_id: str
    created_ts: int
    updated_ts: int
    trades: list[TradeOut]


class OrdersOut(msgspec.Struct, kw_only=True):
    orders: list[OrderOut]
    total: int
    limit: int
    offset: int


class InstrumentOut(msgspec.Struct, kw_only=True):
    symbol: str
    tick_size: str
    lot_size: int
    multiplier: str
    currency: str
    margin_rate: str
    price_band: str | None
    flags: list[str]
    maker_fee_bps: str
    taker_fee_bps: str
    reference_price: str | None


class InstrumentsOut(msgspec.Struct, kw_only=True):
    instruments: list[InstrumentOut]


class BookOut(msgspec.Struct, kw_only=True):
    symbol: str
    seq: int
    bids: list[tuple[str, int, int]]
    asks: list[tuple[str, int, int]]
    last_price: str | None = None
