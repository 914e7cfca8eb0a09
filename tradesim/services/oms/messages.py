"""The OMS's wire contract: the requests clients send to `rpc.oms.*` and what comes back.

Prices are integer ticks and quantities integer units, as everywhere inside the system; the API and
SDKs convert decimals at their edge. Validation failures that stop an order before it exists (unknown
account or symbol, bad fields) answer `OmsError`; an order refused later by compliance, risk or the
venue exists, is kept as REJECTED with its reason, and answers `OrderReply`.
"""

from __future__ import annotations

import enum

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


# ---- algo parents (docs/algos.md) -------------------------------------------------------------------

ALGO_NAMES: tuple[str, ...] = ("twap", "vwap", "pov", "iceberg")


class AlgoState(enum.Enum):
    """A parent's life: RUNNING ⇄ PAUSED, then one terminal state. EXPIRED: the window ended (or a POV
    ran out of time) short of qty; FAILED: the worker gave up (children kept being refused)."""

    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    CANCELED = "canceled"
    EXPIRED = "expired"
    FAILED = "failed"


ALGO_TERMINAL: frozenset[AlgoState] = frozenset(
    {AlgoState.COMPLETED, AlgoState.CANCELED, AlgoState.EXPIRED, AlgoState.FAILED})


class AlgoParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Per-algo knobs; which are required depends on the algo (validated by the OMS).

    Times are ns / ms integers (the engine's convention), `participation` a fraction in (0, 1).
    """

    duration_ms: int = 0  # twap, vwap (required), pov (optional end)
    slices: int = 0  # twap, vwap: 0 = one per second of duration, at least 1
    start_ts: int | None = None  # ns; None = when the OMS accepts the parent
    participation: float = 0.0  # pov: target share of market volume
    display_qty: int = 0  # iceberg: the one visible child's size
    limit_price: int | None = None  # ticks; children are LIMIT at it (iceberg: required), else MARKET
    min_child_qty: int = 0  # pov: do not send a child smaller than this (0 = one lot)
    profile: str = "u"  # vwap: "u" (default intraday U shape) or "bars" (learned from rpc.marketdata.bars)
    grace_ms: int = 0  # after the window: keep catching up this long before EXPIRED (0 = one slice)


class AlgoRequest(msgspec.Struct, frozen=True, kw_only=True, tag="oms.algo_request", tag_field="kind"):
    """`rpc.oms.algo_order`. A known (account, client_id) with the same fields answers the existing
    parent (a retry); other fields are `duplicate_client_order_id`."""

    account: str
    symbol: str
    side: Side
    qty: int
    algo: str
    params: AlgoParams = AlgoParams()
    client_id: str = ""
    correlation_id: str = ""


class AlgoOrder(msgspec.Struct, frozen=True, kw_only=True, tag="oms.algo_order", tag_field="kind"):
    """What the OMS publishes durably on `orders.algo.{algo}` for one worker to take (at-least-once)."""

    parent_id: str
    account: str
    symbol: str
    side: Side
    qty: int
    algo: str
    params: AlgoParams
    start_ts: int
    end_ts: int  # 0: no end (iceberg, open-ended pov)


class AlgoView(msgspec.Struct, frozen=True, kw_only=True, tag="oms.algo", tag_field="kind"):
    """A parent as the OMS knows it; quantities are summed over its child orders."""

    parent_id: str
    client_id: str
    account: str
    symbol: str
    side: Side
    qty: int
    algo: str
    params: AlgoParams
    state: AlgoState
    filled_qty: int
    open_qty: int  # leaves of the children still working
    fill_value: int  # sum of price * qty over child fills (ticks * units)
    child_count: int
    next_child: int  # the n of the next child id `{parent_id}-{n}`
    start_ts: int
    end_ts: int
    created_ts: int
    updated_ts: int
    finished_ts: int = 0
    reason: str = ""
    # Every trade on the symbol since start_ts (the parent's own fills included): POV's observed volume.
    market_volume: int = 0
    market_turnover: int = 0
    owner: str = ""  # the worker holding the lease
    lease_until: int = 0  # ns, OMS clock
    lot: int = 1  # the instrument's lot size: children must be multiples of it
    tracking_error: float | None = None  # twap, when finished: mean |filled - schedule| / qty
    slippage_bps: float | None = None  # when finished: (avg fill vs market VWAP) * side, + = worse
    correlation_id: str = ""


class AlgoReply(msgspec.Struct, frozen=True, kw_only=True, tag="oms.algo_reply", tag_field="kind"):
    """The parent, and its children (oldest first) when they were asked for."""

    algo: AlgoView
    children: list[OrderView] = []


class AlgosReply(msgspec.Struct, frozen=True, kw_only=True, tag="oms.algos", tag_field="kind"):
    algos: list[AlgoView]
    total: int


class AlgoGetRequest(msgspec.Struct, frozen=True, kw_only=True, tag="oms.algo_get", tag_field="kind"):
    """`rpc.oms.algo_get`. `account=None` is an operator's view."""

    parent_id: str
    account: str | None = None
    children: bool = False


class AlgoListRequest(msgspec.Struct, frozen=True, kw_only=True, tag="oms.algo_list", tag_field="kind"):
    """`rpc.oms.algo_list`, newest first."""

    account: str | None = None
    state: AlgoState | None = None
    limit: int = 100
    offset: int = 0


class AlgoControl(msgspec.Struct, frozen=True, kw_only=True, tag="oms.algo_control", tag_field="kind"):
    """`rpc.oms.algo_pause` / `algo_resume` / `algo_cancel`."""

    parent_id: str
    account: str | None = None


class AlgoClaim(msgspec.Struct, frozen=True, kw_only=True, tag="oms.algo_claim", tag_field="kind"):
    """`rpc.oms.algo_claim`: a worker takes or renews the parent's lease; the reply names the owner."""

    parent_id: str
    worker_id: str
    lease_ms: int


class AlgoFinish(msgspec.Struct, frozen=True, kw_only=True, tag="oms.algo_finish", tag_field="kind"):
    """`rpc.oms.algo_finish`: the owning worker ends a parent short of qty (EXPIRED or FAILED)."""

    parent_id: str
    worker_id: str
    state: AlgoState
    reason: str = ""


ALGO_MESSAGES: tuple[type[msgspec.Struct], ...] = (
    AlgoRequest, AlgoOrder, AlgoView, AlgoReply, AlgosReply, AlgoGetRequest, AlgoListRequest, AlgoControl,
    AlgoClaim, AlgoFinish,
)

OMS_MESSAGES: tuple[type[msgspec.Struct], ...] = (
    OrderRequest, QuickOrder, CancelRequest, ModifyRequest, GetOrderRequest, ListOrdersRequest,
    HoldDecision, OrderView, OrderReply, OrdersReply, OmsError, *ALGO_MESSAGES,
)
