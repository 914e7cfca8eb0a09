"""The engine's whole state as msgspec Structs, so that it can be journaled, compared and restored.

Everything that decides future events is here: instruments, every order (live and finished, for
lookups and for client order id uniqueness) with its quantities, iceberg slice and status, each
book's levels in exact queue order, the waiting stops in processing order, last prices and the
three counters. GTD expiry data is each order's `expire_ts` (inside its command); the engine's
expiry heap is rebuilt from it. Lists only, no dicts, so the encoding is canonical.
"""

from __future__ import annotations

import msgspec

from tradesim.domain import Instrument, NewOrder, OrderStatus, Side
from tradesim.engine.order import Order

SNAPSHOT_VERSION = 1


class OrderState(msgspec.Struct, frozen=True, kw_only=True):
    """One order: the accepted command plus what changed since (price and qty after modifies)."""

    command: NewOrder
    order_id: int
    price: int | None
    qty: int
    filled_qty: int
    leaves_qty: int
    visible_qty: int
    display_qty: int
    status: OrderStatus
    armed: bool


class LevelState(msgspec.Struct, frozen=True, kw_only=True):
    price: int
    order_ids: list[int]  # queue order, front first


class BookState(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    last_price: int | None
    bids: list[LevelState]  # best first
    asks: list[LevelState]  # best first
    buy_stops: list[int]  # order ids, in trigger-processing order
    sell_stops: list[int]


class EngineSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """State of a `MatchingEngine`; `seq`, `order_id` and `trade_id` are the last values handed out."""

    seq: int
    order_id: int
    trade_id: int
    instruments: list[Instrument]
    orders: list[OrderState]  # by order id
    books: list[BookState]  # in listing order
    version: int = SNAPSHOT_VERSION


def order_state(order: Order) -> OrderState:
    return OrderState(
        command=order.command,
        order_id=order.order_id,
        price=order.price,
        qty=order.qty,
        filled_qty=order.filled_qty,
        leaves_qty=order.leaves_qty,
        visible_qty=order.visible_qty,
        display_qty=order.display_qty,
        status=order.status,
        armed=order.armed,
    )


def order_from_state(state: OrderState) -> Order:
    """Rebuilds an order as it was (a restore, not a lifecycle step: no status transition)."""
    command = state.command
    order = Order(state.order_id, command, command.side is Side.BUY, state.price, state.qty)
    order.filled_qty = state.filled_qty
    order.leaves_qty = state.leaves_qty
    order.visible_qty = state.visible_qty
    order.display_qty = state.display_qty
    order.status = state.status
    order.armed = state.armed
    return order
