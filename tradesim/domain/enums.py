"""The closed vocabularies of trading: sides, order types, time in force, statuses and reasons.

Values are the lowercase (or FIX-style upper) strings used on the wire and in files, so an enum
encodes to the same text everywhere.
"""

from __future__ import annotations

from enum import StrEnum


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"

    @property
    def opposite(self) -> Side:
        return Side.SELL if self is Side.BUY else Side.BUY


class OrderType(StrEnum):
    LIMIT = "limit"
    MARKET = "market"
    STOP = "stop"
    STOP_LIMIT = "stop_limit"


class TimeInForce(StrEnum):
    GTC = "GTC"
    DAY = "DAY"
    IOC = "IOC"
    FOK = "FOK"
    GTD = "GTD"


class STP(StrEnum):
    """Self-trade prevention: what happens when an incoming order meets a resting one of its account."""

    CANCEL_NEWEST = "cancel_newest"
    CANCEL_OLDEST = "cancel_oldest"
    CANCEL_BOTH = "cancel_both"
    NONE = "none"


class OrderStatus(StrEnum):
    NEW = "new"
    ACCEPTED = "accepted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELED = "canceled"
    REJECTED = "rejected"
    EXPIRED = "expired"
    TRIGGERED = "triggered"
    # Added by the OMS around the venue's lifecycle.
    PENDING_NEW = "pending_new"
    PENDING_CANCEL = "pending_cancel"
    PENDING_MODIFY = "pending_modify"
    HELD = "held"


class CancelReason(StrEnum):
    USER = "user"
    IOC = "ioc"
    FOK = "fok"
    STP = "stp"
    NO_LIQUIDITY = "no_liquidity"


class RejectReason(StrEnum):
    UNKNOWN_SYMBOL = "unknown_symbol"
    OFF_TICK = "off_tick"
    BAD_PRICE = "bad_price"
    BAD_QTY = "bad_qty"
    DUPLICATE_CLIENT_ORDER_ID = "duplicate_client_order_id"
    UNKNOWN_ORDER = "unknown_order"
    POST_ONLY = "post_only"
    MISSING_STOP_PRICE = "missing_stop_price"
    EXPIRED = "expired"
    MALFORMED = "malformed"
