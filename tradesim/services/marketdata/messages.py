"""The market-data wire contract: ticks on `market.tick.{symbol}`, bars and ticker queries.

Prices are integer ticks; `turnover` is the sum of price * qty over trades (ticks * units), so the
VWAP is `turnover / volume` without rounding anywhere inside the system.
"""

from __future__ import annotations

import msgspec


class Tick(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag="marketdata.tick", tag_field="kind"):
    """A conflated view of one symbol, published every interval (default 100 ms) from the real book."""

    symbol: str
    ts: int
    seq: int  # the venue event seq this view reflects
    bid: int | None
    bid_qty: int
    ask: int | None
    ask_qty: int
    last: int | None
    last_qty: int
    volume: int  # today's traded quantity
    turnover: int  # today's sum of price * qty
    trades: int  # today's number of trades
    reference: int | None = None  # the reference price process (GBM or file), when there is one


class Bar(msgspec.Struct, frozen=True, kw_only=True, tag="marketdata.bar", tag_field="kind"):
    """OHLCV over [start_ts, start_ts + interval_s); published on `market.bar.{symbol}` when it closes."""

    symbol: str
    start_ts: int
    interval_s: int
    open: int
    high: int
    low: int
    close: int
    volume: int
    turnover: int
    trades: int


class BarsRequest(msgspec.Struct, frozen=True, kw_only=True, tag="marketdata.bars_request", tag_field="kind"):
    """`rpc.marketdata.bars`: closed bars, oldest first, optionally from `start_ts`; at most `limit`."""

    symbol: str
    interval_s: int = 60
    start_ts: int | None = None
    end_ts: int | None = None
    limit: int = 500


class BarsReply(msgspec.Struct, frozen=True, kw_only=True, tag="marketdata.bars", tag_field="kind"):
    symbol: str
    bars: list[Bar]


class TickerRequest(msgspec.Struct, frozen=True, kw_only=True, tag="marketdata.ticker_request",
                    tag_field="kind"):
    """`rpc.marketdata.ticker`: the latest Tick of a symbol."""

    symbol: str


class MarketDataError(msgspec.Struct, frozen=True, kw_only=True, tag="marketdata.error", tag_field="kind"):
    error: str  # unknown_symbol, bad_request
    message: str


MARKETDATA_MESSAGES: tuple[type[msgspec.Struct], ...] = (
    Tick, Bar, BarsRequest, BarsReply, TickerRequest, MarketDataError,
)
