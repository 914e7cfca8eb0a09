"""Decimals ↔ integer ticks at the API's edge, and the OMS's views turned into the API's shapes.

Inside the system prices are ticks; here they become decimal strings of the instrument's tick. An
order id is the venue's id as a string, or, for an order the venue never saw (held, or refused before
routing), `c-` + base64url(account, client_order_id), so that every order the API mentions can be fetched.
"""

from __future__ import annotations

import base64
import binascii
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Final

from tradesim.api.errors import ApiError
from tradesim.api.models import InstrumentOut, OrderOut, TradeOut
from tradesim.domain import Instrument, OffTickError, Trade
from tradesim.services.oms.messages import OrderView

_SEP: Final = "\x1f"


def instrument_of(instruments: dict[str, Instrument], symbol: str) -> Instrument:
    found = instruments.get(symbol)
    if found is None:
        raise ApiError(404, "unknown_symbol", f"unknown symbol {symbol!r} (see GET /api/v1/instruments)")
    return found


def to_ticks(instrument: Instrument, value: str | int | float | None, field: str) -> int | None:
    """A decimal price → ticks; 400 `off_tick` for a price between ticks, `bad_price` for a non-number."""
    if value is None:
        return None
    text = str(value).strip()
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise ApiError(400, "bad_price", f"{field} {text!r} is not a decimal number") from None
    if not number.is_finite():
        raise ApiError(400, "bad_price", f"{field} {text!r} is not a finite number")
    if number <= 0:
        raise ApiError(400, "bad_price", f"{field} {text} must be positive")
    try:
        return instrument.to_ticks(number)
    except OffTickError:
        raise ApiError(400, "off_tick", f"{field} {text} is not a multiple of the tick "
                                        f"{instrument.tick_size} of {instrument.symbol}") from None


def price_str(instrument: Instrument, ticks: int | None) -> str | None:
    return None if ticks is None else str(instrument.from_ticks(ticks))


def decimal_str(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def encode_order_id(view: OrderView) -> str:
    if view.order_id is not None:
        return str(view.order_id)
    raw = f"{view.account}{_SEP}{view.client_order_id}".encode()
    return "c-" + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_order_id(text: str) -> int | tuple[str, str]:
    """The venue id, or (account, client_order_id); 404 `unknown_order` for anything else."""
    if text.isdigit() and len(text) < 19:
        return int(text)
    if text.startswith("c-"):
        body = text[2:]
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raw = ""
        account, sep, cid = raw.partition(_SEP)
        if sep and account and cid:
            return account, cid
    raise ApiError(404, "unknown_order", f"no order {text!r}")


def avg_price(instrument: Instrument, view: OrderView) -> str | None:
    """fill_value / filled_qty as a price: at the tick's precision when exact, else to 1e-10 (half-even)."""
    if view.filled_qty == 0:
        return None
    price = Decimal(view.fill_value) * instrument.tick_size / view.filled_qty
    exponent = instrument.tick_size.as_tuple().exponent
    on_tick = price.quantize(Decimal(1).scaleb(exponent if isinstance(exponent, int) else 0))
    if on_tick == price:
        return str(on_tick)
    return str(price.quantize(Decimal("1e-10"), rounding=ROUND_HALF_EVEN).normalize())


def trade_out(instrument: Instrument, trade: Trade, view: OrderView) -> TradeOut:
    mine_taker = trade.taker_account == view.account and trade.taker_client_order_id == view.client_order_id
    return TradeOut(trade_id=str(trade.trade_id), symbol=trade.symbol, price=str(instrument.from_ticks(trade.price)),
                    qty=trade.qty, aggressor=trade.aggressor.value, liquidity="taker" if mine_taker else "maker",
                    seq=trade.seq, ts=trade.ts)


def order_out(instrument: Instrument, view: OrderView, trades: list[Trade] | None = None) -> OrderOut:
    return OrderOut(
        order_id=encode_order_id(view), client_order_id=view.client_order_id, account=view.account,
        symbol=view.symbol, side=view.side.value, type=view.type.value, tif=view.tif.value,
        price=price_str(instrument, view.price), stop_price=price_str(instrument, view.stop_price), qty=view.qty,
        filled_qty=view.filled_qty, leaves_qty=view.leaves_qty, avg_price=avg_price(instrument, view),
        status=view.status.value, reason=view.reason, message=view.message, hold_id=view.hold_id,
        created_ts=view.created_ts, updated_ts=view.updated_ts,
        trades=[trade_out(instrument, t, view) for t in trades or []],
    )


def instrument_out(instrument: Instrument, reference: int | None) -> InstrumentOut:
    return InstrumentOut(
        symbol=instrument.symbol, tick_size=str(instrument.tick_size), lot_size=instrument.lot_size,
        multiplier=str(instrument.multiplier), currency=instrument.currency, margin_rate=str(instrument.margin_rate),
        price_band=decimal_str(instrument.price_band), flags=sorted(instrument.flags),
        maker_fee_bps=str(instrument.maker_fee_bps), taker_fee_bps=str(instrument.taker_fee_bps),
        reference_price=price_str(instrument, reference),
    )
