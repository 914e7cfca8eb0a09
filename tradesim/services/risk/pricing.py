"""The price a pre-trade check assumes for an order, and money from ticks and units.

A limit price is the worst the order can do. A market order has none, so it is priced where it could
plausibly fill at worst: the reference price moved by the band against the trader (buy up, sell down),
or, without a band, the last trade price (then the reference price).
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from tradesim.domain import Instrument, NewOrder, OrderType, Side
from tradesim.services.risk.state import MarketState


def check_price(order: NewOrder, market: MarketState, band: Decimal | None) -> int | None:
    """Ticks to value the order at; None when a market order has no reference or last price."""
    if order.type is OrderType.STOP and order.stop_price is not None:
        return order.stop_price
    if order.price is not None and order.type is not OrderType.MARKET:
        return order.price
    ref = market.reference_price(order.symbol)
    last = market.last_price(order.symbol)
    if band is not None and ref is not None:
        if order.side is Side.BUY:
            return int((ref * (1 + band)).to_integral_value(rounding=ROUND_CEILING))
        return int((ref * (1 - band)).to_integral_value(rounding=ROUND_FLOOR))
    return last if last is not None else ref


def notional(instrument: Instrument, price: int, qty: int) -> Decimal:
    """Money value of `qty` units at `price` ticks (price * qty * contract multiplier)."""
    return instrument.from_ticks(price) * qty * instrument.multiplier


def plain(value: Decimal) -> str:
    """Decimal("20.0") → "20" (for messages; no exponent notation, no trailing zeros)."""
    return f"{value.normalize():f}"


def pct(fraction: Decimal) -> str:
    """0.1 → "10"."""
    return plain(fraction * 100)
