"""The OMS's wire contract: the requests clients send to `rpc.oms.*` and what comes back.

Prices are integer ticks and quantities integer units, as everywhere inside the system; the API and
SDKs convert decimals at their edge. Validation failures that stop an order before it exists (unknown
account or symbol, bad fields) answer `OmsError`; an order refused later by compliance, risk or the
venue exists, is kept as REJECTED with its reason, and answers `OrderReply`.
"""

from __future__ import annotations

import msgspec

from tradesim.domain import STP, OrderStatus, OrderType, Side, TimeInForce, Trade


class OrderRequest(msgspec.Struct, frozen=True, kw_only=True, tag="oms.order_request", tag_field="kind"):
    """`rpc.oms.submit`. An empty `client_order_id` gets one assigned (then a retry is not idempotent)."""

    account: str
    symbol: str
    side: Side
    qty: int
    type: OrderType = OrderType.LIMIT
    tif: TimeInForce = TimeInForce.GTC
    price: int | None = None
    stop_price: int | None = None
    client_order_id: str = ""
    display_qty: int | None = None
    post_only: bool = False
    stp: STP = STP.CANCEL_NEWEST
    expire_ts: int | None = None
    # Follows the order into events, logs and the audit trail (signals, algos).
    correlation_id: str = ""
    # Set on child orders of an algo parent.
    parent_id: str = ""


class QuickOrder(msgspec.Struct, frozen=True, kw_only=True, tag="oms.quick_order", tag_field="kind"):
    """`rpc.oms.buy` / `rpc.oms.sell` as in seed 01: a limit order with a price, a market order without."""

    account: str
    symbol: str
    qty: int
    price: int | None = None
    tif: TimeInForce = TimeInForce.GTC
    client_order_id: str = ""
    correlation_id: str = ""


class CancelRequest(msgspec.Struct, frozen=True, kw_only=True, tag="oms.cancel_request", tag_field="kind"):
    """`rpc.oms.cancel`: names the order by `order_id` (venue id) or `client_order_id`."""

    account: str
    order_id: int | None = None
    client_order_id: str = ""


class ModifyRequest(msgspec.Struct, frozen=True, kw_only=True, tag="oms.modify_request", tag_field="kind"):
    """`rpc.oms.modify`: `qty` is the new total quantity; None keeps the current value."""

    account: str
    order_id: int | None = None
    client_order_id: str = ""
    price: int | None = None
    qty: int | None = None


class GetOrderRequest(msgspec.Struct, frozen=True, kw_only=True, tag="oms.get_order", tag_field="kind"):
    """`rpc.oms.get_order`. `account=None` is an operator's view of any account."""

    account: str | None = None
    order_id: int | None = None
    client_order_id: str = ""


class ListOrdersRequest(msgspec.Struct, frozen=True, kw_only=True, tag="oms.list_orders", tag_field="kind"):
    """`rpc.oms.list_orders`, newest first."""

    account: str | None = None
    status: OrderStatus | None = None
    symbol: str | None = None
    open_only: bool = False
    limit: int = 100
    offset: int = 0


class HoldDecision(msgspec.Struct, frozen=True, kw_only=True, tag="oms.hold_decision", tag_field="kind"):
    """`rpc.oms.approve` / `rpc.oms.reject_held`: a compliance user's decision on a HELD order."""

    hold_id: str
    user: str
    reason: str = ""


class OrderView(msgspec.Struct, frozen=True, kw_only=True, tag="oms.order", tag_field="kind"):
    """An order as the OMS knows it; the API's order shape is this with decimals."""

    order_id: int | None  # the venue's id; None until the venue accepted it
    client_order_id: str
    account: str
    symbol: str
    side: Side
    type: OrderType
    tif: TimeInForce
    price: int | None
    stop_price: int | None
    qty: int
    filled_qty: int
    leaves_qty: int
    # sum of price * qty over the fills (ticks * units): average fill price = fill_value / filled_qty.
    fill_value: int
    status: OrderStatus
    reason: str = ""  # reject/cancel reason code
    message: str = ""
    hold_id: str = ""
    created_ts: int = 0
    updated_ts: int = 0
    correlation_id: str = ""
    parent_id: str = ""


class OrderReply(msgspec.Struct, frozen=True, kw_only=True, tag="oms.order_reply", tag_field="kind"):
    """The order after the request, and the trades that request made."""

    order: OrderView
    trades: list[Trade] = []


class OrdersReply(msgspec.Struct, frozen=True, kw_only=True, tag="oms.orders", tag_field="kind"):
    orders: list[OrderView]
    total: int


class OmsError(msgspec.Struct, frozen=True, kw_only=True, tag="oms.error", tag_field="kind"):
    """A request the OMS refused before any order existed: `error` is a stable snake_case code."""

    error: str
    message: str


OMS_MESSAGES: tuple[type[msgspec.Struct], ...] = (
    OrderRequest, QuickOrder, CancelRequest, ModifyRequest, GetOrderRequest, ListOrdersRequest,
    HoldDecision, OrderView, OrderReply, OrdersReply, OmsError,
)
