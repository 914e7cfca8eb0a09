"""Commands: what participants ask the venue to do. The journal stores exactly these.

`price` and `stop_price` are integer ticks, `qty` integer units. `ts` is nanoseconds set by the
venue (live) or by the data (replay); the engine never reads a clock.
"""

from __future__ import annotations

import msgspec

from tradesim.domain.enums import STP, OrderType, Side, TimeInForce
from tradesim.domain.instrument import Instrument


class NewOrder(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag="new", tag_field="kind"):
    account: str
    client_order_id: str
    symbol: str
    side: Side
    type: OrderType
    tif: TimeInForce = TimeInForce.GTC
    price: int | None = None
    qty: int
    ts: int = 0
    stop_price: int | None = None
    display_qty: int | None = None
    post_only: bool = False
    stp: STP = STP.CANCEL_NEWEST
    expire_ts: int | None = None


class CancelOrder(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag="cancel", tag_field="kind"):
    account: str
    client_order_id: str
    symbol: str
    ts: int = 0


class ModifyOrder(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag="modify", tag_field="kind"):
    """Cancel/replace. `qty` is the new total quantity (FIX OrderQty); None keeps price or qty."""

    account: str
    client_order_id: str
    symbol: str
    price: int | None = None
    qty: int | None = None
    ts: int = 0


class ExpireOrders(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag="expire", tag_field="kind"):
    """Expire GTD orders with `expire_ts <= ts`; with `end_of_day`, DAY orders expire as well."""

    ts: int
    end_of_day: bool = False


class AddInstrument(msgspec.Struct, frozen=True, kw_only=True, tag="instrument", tag_field="kind"):
    """List an instrument on the venue (journaled so that a replay rebuilds the same venue)."""

    instrument: Instrument
    ts: int = 0


Command = NewOrder | CancelOrder | ModifyOrder | ExpireOrders | AddInstrument
