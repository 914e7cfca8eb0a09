"""/api/v1/instruments, /book, /trades, /ticker and /bars: reference data and the public market, in decimals.

The venue answers /book, the market-data service /ticker and /bars; /trades is the API's own bounded tape
(the latest `TAPE_SIZE` trades per symbol seen on `trades.executed` since this API process started, see
`tradesim.api.feeds`), so it costs the services nothing and every API replica has its own.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
from litestar import Request, get
from litestar.di import Provide
from litestar.params import FromQuery

from tradesim.api.auth import Caller, provide_principal
from tradesim.api.context import Ctx, provide_context
from tradesim.api.convert import instrument_of, instrument_out
from tradesim.api.errors import ApiError
from tradesim.api.feeds import Hub, ticker_out, trade_out
from tradesim.api.models import BookOut, InstrumentsOut
from tradesim.api.wsmodels import TickerOut, TradeOut
from tradesim.services.marketdata.messages import Bar, BarsReply, BarsRequest, MarketDataError, Tick, TickerRequest
from tradesim.services.venue.messages import BookReply, BookRequest, InstrumentsReply, InstrumentsRequest

DEPENDENCIES = {"principal": Provide(provide_principal), "ctx": Provide(provide_context)}
MAX_DEPTH: Final = 100
MAX_TRADES: Final = 1000
MAX_BARS: Final = 5000
_MD_STATUS: Final = {"unknown_symbol": 404, "bad_request": 400}


class TradesOut(msgspec.Struct, kw_only=True):
    symbol: str
    trades: list[TradeOut]  # newest first


class BarOut(msgspec.Struct, kw_only=True):
    start_ts: int  # ns
    open: str
    high: str
    low: str
    close: str
    volume: int
    turnover: str
    trades: int


class BarsOut(msgspec.Struct, kw_only=True):
    symbol: str
    interval: int  # seconds
    bars: list[BarOut]  # oldest first


async def _marketdata(ctx: Ctx, method: str, request: msgspec.Struct) -> msgspec.Struct:
    """The market-data service's reply; its MarketDataError becomes the matching 4xx."""
    reply = await ctx.services.call("marketdata", method, request, msgspec.Struct)
    if isinstance(reply, MarketDataError):
        raise ApiError(_MD_STATUS.get(reply.error, 422), reply.error, reply.message)
    return reply


@get("/instruments", dependencies=DEPENDENCIES)
async def instruments(principal: Caller, ctx: Ctx) -> InstrumentsOut:
    """What the venue lists, with tick and lot sizes (prices must be multiples of the tick)."""
    reply = await ctx.services.call("venue", "instruments", InstrumentsRequest(), InstrumentsReply)
    refs = ctx.config.reference_prices
    return InstrumentsOut(instruments=[instrument_out(i, refs.get(i.symbol)) for i in reply.instruments])


@get("/book/{symbol:str}", dependencies=DEPENDENCIES)
async def book(symbol: str, principal: Caller, ctx: Ctx, depth: FromQuery[int] = 10) -> BookOut:
    """Levels `[price, visible qty, order count]`, best first, `depth` (1..100) per side."""
    if not 1 <= depth <= MAX_DEPTH:
        raise ApiError(400, "bad_depth", f"depth must be in 1..{MAX_DEPTH}, got {depth}")
    instrument = instrument_of(ctx.instruments, symbol)
    reply = await ctx.services.call("venue", "book", BookRequest(symbol=symbol, depth=depth), BookReply)

    def levels(side: list[tuple[int, int, int]]) -> list[tuple[str, int, int]]:
        return [(str(instrument.from_ticks(p)), q, n) for p, q, n in side]

    last = None if reply.last_price is None else str(instrument.from_ticks(reply.last_price))
    return BookOut(symbol=symbol, seq=reply.seq, bids=levels(reply.bids), asks=levels(reply.asks), last_price=last)


@get("/trades/{symbol:str}", dependencies=DEPENDENCIES)
async def trades(symbol: str, request: Request[Any, Any, Any], principal: Caller, ctx: Ctx,
                 limit: FromQuery[int] = 100) -> TradesOut:
    """The latest public trades (no accounts), newest first, `limit` 1..1000, from this API's tape."""
    if not 1 <= limit <= MAX_TRADES:
        raise ApiError(400, "bad_limit", f"limit must be in 1..{MAX_TRADES}, got {limit}")
    instrument = instrument_of(ctx.instruments, symbol)
    hub: Hub = request.app.state["hub"]
    await hub.start()
    return TradesOut(symbol=symbol, trades=[trade_out(instrument, t) for t in hub.tape(symbol, limit)])


@get("/ticker/{symbol:str}", dependencies=DEPENDENCIES)
async def ticker(symbol: str, principal: Caller, ctx: Ctx) -> TickerOut:
    """Best bid/ask, last trade, today's volume, turnover and VWAP (the market-data service's latest tick)."""
    instrument = instrument_of(ctx.instruments, symbol)
    reply = await _marketdata(ctx, "ticker", TickerRequest(symbol=symbol))
    if not isinstance(reply, Tick):
        raise ApiError(502, "service_error", f"the marketdata service answered {type(reply).__name__}")
    return ticker_out(instrument, reply)


@get("/bars/{symbol:str}", dependencies=DEPENDENCIES)
async def bars(symbol: str, principal: Caller, ctx: Ctx, interval: FromQuery[int] = 60,
               start: FromQuery[int | None] = None, end: FromQuery[int | None] = None,
               limit: FromQuery[int] = 500) -> BarsOut:
    """Closed OHLCV bars, oldest first: `interval` seconds (a multiple of the service's bar), `start`/`end`
    in ns since the epoch, at most `limit` (1..5000; the newest ones when no `start`)."""
    if not 1 <= limit <= MAX_BARS:
        raise ApiError(400, "bad_limit", f"limit must be in 1..{MAX_BARS}, got {limit}")
    if interval <= 0:
        raise ApiError(400, "bad_interval", f"interval must be a positive number of seconds, got {interval}")
    if (start is not None and start < 0) or (end is not None and end < 0) or (
            start is not None and end is not None and end < start):
        raise ApiError(400, "bad_range", "start and end are ns since the epoch, with start <= end")
    instrument = instrument_of(ctx.instruments, symbol)
    reply = await _marketdata(ctx, "bars", BarsRequest(symbol=symbol, interval_s=interval, start_ts=start,
                                                       end_ts=end, limit=limit))
    if not isinstance(reply, BarsReply):
        raise ApiError(502, "service_error", f"the marketdata service answered {type(reply).__name__}")

    def out(b: Bar) -> BarOut:
        px = instrument.from_ticks
        return BarOut(start_ts=b.start_ts, open=str(px(b.open)), high=str(px(b.high)), low=str(px(b.low)),
                      close=str(px(b.close)), volume=b.volume, turnover=str(b.turnover * instrument.tick_size),
                      trades=b.trades)

    return BarsOut(symbol=symbol, interval=interval, bars=[out(b) for b in reply.bars])


ROUTES = [instruments, book, trades, ticker, bars]
