"""The venue (TradingGateway): owns the matching engine, journals first, publishes what happened."""

from tradesim.bus import register
from tradesim.services.venue.messages import (
    VENUE_MESSAGES,
    BookReply,
    BookRequest,
    DepthUpdate,
    EndOfDayRequest,
    InstrumentsReply,
    InstrumentsRequest,
    OrderStatusReply,
    OrderStatusRequest,
    TradePrint,
    VenueReply,
)
from tradesim.services.venue.service import (
    EVENT_SUBJECTS,
    RPC_BOOK,
    RPC_CANCEL,
    RPC_END_OF_DAY,
    RPC_INSTRUMENTS,
    RPC_MODIFY,
    RPC_ORDER_STATUS,
    RPC_SUBMIT,
    BadVenueRequestError,
    UnknownSymbolError,
    VenueError,
    VenueService,
    VenueUnavailableError,
)

register(*VENUE_MESSAGES)  # importing the venue's messages makes them sendable on every default-codec bus

__all__ = [
    "EVENT_SUBJECTS",
    "RPC_BOOK",
    "RPC_CANCEL",
    "RPC_END_OF_DAY",
    "RPC_INSTRUMENTS",
    "RPC_MODIFY",
    "RPC_ORDER_STATUS",
    "RPC_SUBMIT",
    "VENUE_MESSAGES",
    "BadVenueRequestError",
    "BookReply",
    "BookRequest",
    "DepthUpdate",
    "EndOfDayRequest",
    "InstrumentsReply",
    "InstrumentsRequest",
    "OrderStatusReply",
    "OrderStatusRequest",
    "TradePrint",
    "UnknownSymbolError",
    "VenueError",
    "VenueReply",
    "VenueService",
    "VenueUnavailableError",
]
