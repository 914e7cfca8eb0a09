"""One order's mutable state inside the engine: quantities, queue slice, status.

An `Order` keeps the accepted `NewOrder` as its immutable part and holds only what changes (price
after a modify, quantities, status) plus the fields the matching loop reads on every match, as
plain slots: the hot path must not pay for properties or for copying fields it never reads.
"""

from __future__ import annotations

from typing import Final

from tradesim.domain import STP, NewOrder, OrderStatus, OrderType, Side, TimeInForce, transition

_NEW: Final = OrderStatus.NEW

# transition() is a pure function of (current, target). The steps nearly every order takes are
# validated through it once, here, so that the hot path does not pay its Python-level enum hashing
# on every order and fill; every other step calls transition() itself (and raises if invalid).
NEW_TO_ACCEPTED: Final = transition(_NEW, OrderStatus.ACCEPTED)
ACCEPTED_TO_FILLED: Final = transition(OrderStatus.ACCEPTED, OrderStatus.FILLED)
ACCEPTED_TO_PARTIAL: Final = transition(OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED)
PARTIAL_TO_FILLED: Final = transition(OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED)
ACCEPTED_TO_CANCELED: Final = transition(OrderStatus.ACCEPTED, OrderStatus.CANCELED)


class Order:
    """A live or finished order. `leaves_qty == 0` exactly when the order is finished.

    `visible_qty` is the part that can match now: the whole leaves for a plain order, the current
    display slice for an iceberg (`display_qty > 0`). `armed` is True while a stop waits off-book.
    """

    __slots__ = (
        "account",
        "armed",
        "client_order_id",
        "command",
        "display_qty",
        "filled_qty",
        "is_buy",
        "leaves_qty",
        "order_id",
        "price",
        "qty",
        "status",
        "visible_qty",
    )

    def __init__(self, order_id: int, command: NewOrder, is_buy: bool, price: int | None, qty: int) -> None:
        self.order_id: int = order_id
        self.command: NewOrder = command
        self.account: str = command.account
        self.client_order_id: str = command.client_order_id
        self.is_buy: bool = is_buy
        # Limit price in ticks; None for MARKET and STOP (they have no limit).
        self.price: int | None = price
        # Total quantity (FIX OrderQty); a modify changes it.
        self.qty: int = qty
        self.filled_qty: int = 0
        self.leaves_qty: int = qty
        self.visible_qty: int = qty
        self.display_qty: int = 0
        # Moves on only through tradesim.domain.transition(), in the engine.
        self.status: OrderStatus = _NEW
        self.armed: bool = False

    # Static fields come from the accepted command; none of them is read in the matching loop.
    @property
    def symbol(self) -> str:
        return self.command.symbol

    @property
    def side(self) -> Side:
        return self.command.side

    @property
    def type(self) -> OrderType:
        return self.command.type

    @property
    def tif(self) -> TimeInForce:
        return self.command.tif

    @property
    def stop_price(self) -> int | None:
        return self.command.stop_price

    @property
    def post_only(self) -> bool:
        return self.command.post_only

    @property
    def stp(self) -> STP:
        return self.command.stp

    @property
    def expire_ts(self) -> int | None:
        """Expiry time of a GTD order; None for every other time in force."""
        return self.command.expire_ts if self.command.tif is TimeInForce.GTD else None

    @property
    def hidden_qty(self) -> int:
        """Iceberg quantity not yet shown (0 for a plain order)."""
        return self.leaves_qty - self.visible_qty

    @property
    def is_open(self) -> bool:
        return self.leaves_qty > 0

    def __repr__(self) -> str:
        return (
            f"Order(id={self.order_id}, {self.account}/{self.client_order_id}, {self.command.side.value} "
            f"{self.command.type.value} {self.price} qty={self.qty} filled={self.filled_qty} "
            f"leaves={self.leaves_qty} visible={self.visible_qty} {self.status.value})"
        )
