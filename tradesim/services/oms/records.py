"""The OMS's record of one order: everything it knows, mutable in the core, persisted as msgpack.

A record exists from the moment a well-formed request names a new (account, client_order_id), so
orders refused by compliance or risk, and held orders, are kept and queryable like any other.
`pending` names the request the venue has not answered yet ("new", "cancel", "modify"); it drives
stuck-order detection and the resend on recovery.
"""

from __future__ import annotations

import msgspec

from tradesim.domain import STP, TERMINAL, OrderStatus, OrderType, Side, TimeInForce, Trade
from tradesim.services.oms.messages import OrderView

Key = tuple[str, str]
"""(account, client_order_id): the OMS's identity of an order (the venue id comes later, if ever)."""

PENDING_NEW_OP = "new"
PENDING_CANCEL_OP = "cancel"
PENDING_MODIFY_OP = "modify"


class OrderRecord(msgspec.Struct, kw_only=True):
    """One order. Mutated only by `OrderManager`; `view()` is the immutable wire shape."""

    n: int  # OMS-local creation number: list order, and stable across restarts
    account: str
    client_order_id: str
    symbol: str
    side: Side
    type: OrderType
    tif: TimeInForce
    price: int | None
    stop_price: int | None
    qty: int
    orig_price: int | None = None  # as first requested: what an idempotent retry must repeat
    orig_qty: int = 0
    display_qty: int | None = None
    post_only: bool = False
    stp: STP = STP.CANCEL_NEWEST
    expire_ts: int | None = None
    correlation_id: str = ""
    parent_id: str = ""
    order_id: int | None = None
    status: OrderStatus = OrderStatus.PENDING_NEW
    # What the venue last said (ACCEPTED, TRIGGERED, PARTIALLY_FILLED): where a refused cancel/modify returns.
    venue_status: OrderStatus | None = None
    filled_qty: int = 0
    leaves_qty: int = 0
    fill_value: int = 0
    reason: str = ""
    message: str = ""
    hold_id: str = ""
    hold_code: str = ""
    hold_message: str = ""
    hold_state: str = ""  # "", "pending", "approved", "rejected"
    decided_by: str = ""
    created_ts: int = 0
    updated_ts: int = 0
    pending: str = ""  # "", "new", "cancel", "modify"
    pending_since: int = 0
    pending_price: int | None = None
    pending_qty: int | None = None
    stuck: bool = False
    # Ticks the order's reservation (cash/margin) is valued at; fixed when the order is checked.
    reserve_price: int | None = None
    # The venue seq of the last event applied to this record: a replay of the journal skips up to it.
    seq: int = 0
    fills: list[Trade] = []

    @property
    def key(self) -> Key:
        return (self.account, self.client_order_id)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def view(self) -> OrderView:
        return OrderView(
            order_id=self.order_id, client_order_id=self.client_order_id, account=self.account,
            symbol=self.symbol, side=self.side, type=self.type, tif=self.tif, price=self.price,
            stop_price=self.stop_price, qty=self.qty, filled_qty=self.filled_qty,
            leaves_qty=0 if self.terminal else self.leaves_qty, fill_value=self.fill_value,
            status=self.status, reason=self.reason, message=self.message, hold_id=self.hold_id,
            created_ts=self.created_ts, updated_ts=self.updated_ts, correlation_id=self.correlation_id,
            parent_id=self.parent_id,
        )
