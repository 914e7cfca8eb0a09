"""Value types shared by every layer: instruments, commands, events, enums. Imports nothing of ours."""

from tradesim.domain.commands import (
    AddInstrument,
    CancelOrder,
    Command,
    ExpireOrders,
    ModifyOrder,
    NewOrder,
)
from tradesim.domain.enums import (
    STP,
    CancelReason,
    OrderStatus,
    OrderType,
    RejectReason,
    Side,
    TimeInForce,
)
from tradesim.domain.events import (
    Event,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderModified,
    OrderRejected,
    OrderTriggered,
    Trade,
)
from tradesim.domain.instrument import BadQuantityError, Instrument, OffTickError
from tradesim.domain.order_status import TERMINAL, InvalidTransitionError, transition

__all__ = [
    "STP",
    "TERMINAL",
    "AddInstrument",
    "BadQuantityError",
    "CancelOrder",
    "CancelReason",
    "Command",
    "Event",
    "ExpireOrders",
    "Instrument",
    "InvalidTransitionError",
    "ModifyOrder",
    "NewOrder",
    "OffTickError",
    "OrderAccepted",
    "OrderCanceled",
    "OrderExpired",
    "OrderModified",
    "OrderRejected",
    "OrderStatus",
    "OrderTriggered",
    "OrderType",
    "RejectReason",
    "Side",
    "TimeInForce",
    "Trade",
    "transition",
]
