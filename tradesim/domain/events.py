"""Events: what the venue says happened. Every event carries the venue's event sequence and `ts`.

Prices are integer ticks and quantities integer units, as in commands.
"""

from __future__ import annotations

import msgspec

from tradesim.domain.enums import CancelReason, OrderType, RejectReason, Side, TimeInForce


class OrderAccepted(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag="accepted", tag_field="kind"):
    seq: int
    ts: int
    order_id: int
    account: str
    client_order_id: str
    symbol: str
    side: Side
    type: OrderType
    tif: TimeInForce
    price: int | None
    qty: int
    stop_price: int | None = None
    display_qty: int | None = None


class OrderRejected(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag="rejected", tag_field="kind"):
    seq: int
    ts: int
    account: str
    client_order_id: str
    symbol: str
    reason: RejectReason
    message: str
    order_id: int | None = None


class Trade(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag="trade", tag_field="kind"):
    seq: int
    ts: int
    trade_id: int
    symbol: str
    price: int
    qty: int
    aggressor: Side
    maker_order_id: int
    maker_account: str
    maker_client_order_id: str
    maker_cum_qty: int
    maker_leaves_qty: int
    taker_order_id: int
    taker_account: str
    taker_client_order_id: str
    taker_cum_qty: int
    taker_leaves_qty: int


class OrderCanceled(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag="canceled", tag_field="kind"):
    seq: int
    ts: int
    order_id: int
    account: str
    client_order_id: str
    symbol: str
    reason: CancelReason
    canceled_qty: int


class OrderModified(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag="modified", tag_field="kind"):
    """`qty` is the new total quantity, `leaves_qty` what remains open after the change."""

    seq: int
    ts: int
    order_id: int
    account: str
    client_order_id: str
    symbol: str
    price: int | None
    qty: int
    leaves_qty: int


class OrderTriggered(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag="triggered", tag_field="kind"):
    seq: int
    ts: int
    order_id: int
    account: str
    client_order_id: str
    symbol: str


class OrderExpired(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag="expired", tag_field="kind"):
    seq: int
    ts: int
    order_id: int
    account: str
    client_order_id: str
    symbol: str
    canceled_qty: int


Event = (
    OrderAccepted | OrderRejected | Trade | OrderCanceled | OrderModified | OrderTriggered | OrderExpired
)
