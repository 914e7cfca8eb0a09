"""The webhook's signal body: its schema, and its conversion into a `Signal` in the system's units.

Unknown fields are tolerated and reported (senders add fields before we know them); anything the
decision depends on is strict.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Annotated, Any, Literal

import msgspec

from tradesim.domain import Instrument, Side


class SignalError(Exception):
    """A body that is not a valid signal: `code` is the 400's error code."""

    def __init__(self, code: str, message: str, unknown_fields: list[str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.unknown_fields = unknown_fields or []


CorrelationId = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$")]


class SignalIn(msgspec.Struct, frozen=True, kw_only=True):
    """`POST /webhook/signal` body."""

    correlation_id: CorrelationId
    source: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    symbol: str
    side: Literal["buy", "sell"]
    strength: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
    price: Decimal | None = None
    qty: Annotated[int, msgspec.Meta(gt=0)] | None = None
    ts: datetime | None = None


FIELDS = frozenset(f.encode_name for f in msgspec.structs.fields(SignalIn))
_MISSING = re.compile(r"missing required field `(\w+)`")


def parse(body: bytes) -> tuple[SignalIn, list[str]]:
    """The body as a SignalIn and its unknown field names (sorted), or SignalError."""
    try:
        raw: Any = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise SignalError("malformed_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise SignalError("invalid_signal", f"the body must be a JSON object, not {type(raw).__name__}")
    unknown = sorted(str(k) for k in raw if k not in FIELDS)
    if isinstance(raw.get("side"), str):
        raw["side"] = raw["side"].lower()
    try:
        signal = msgspec.convert({k: v for k, v in raw.items() if k in FIELDS}, SignalIn)
    except msgspec.ValidationError as exc:
        message = str(exc)
        code = "missing_field" if _MISSING.search(message) else "invalid_signal"
        raise SignalError(code, message, unknown) from None
    if signal.price is not None and not signal.price.is_finite():
        raise SignalError("invalid_signal", "price must be a finite number", unknown)
    return signal, unknown


def to_ticks(instrument: Instrument, price: Decimal) -> int:
    """A sender's reference price to the nearest tick (it is advice, not an order price)."""
    try:
        ticks = int((price / instrument.tick_size).to_integral_value(rounding=ROUND_HALF_EVEN))
    except (InvalidOperation, OverflowError):
        raise SignalError("invalid_signal", f"price {price} is out of range") from None
    if ticks <= 0:
        raise SignalError("invalid_signal", f"price {price} must be positive")
    return ticks


def side_of(text: str) -> Side:
    return Side.BUY if text == "buy" else Side.SELL
