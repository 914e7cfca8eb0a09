"""/api/v1/instruments and /api/v1/book/{symbol}: reference data and the venue's order book, in decimals."""

from __future__ import annotations

from typing import Final

from litestar import get
from litestar.di import Provide
from litestar.params import FromQuery

from tradesim.api.auth import Caller, provide_principal
from tradesim.api.context import Ctx, provide_context
from tradesim.api.convert import instrument_of, instrument_out
from tradesim.api.errors import ApiError
from tradesim.api.models import BookOut, InstrumentsOut
from tradesim.services.venue.messages import BookReply, BookRequest, InstrumentsReply, InstrumentsRequest

DEPENDENCIES = {"principal": Provide(provide_principal), "ctx": Provide(provide_context)}
MAX_DEPTH: Final = 100


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


ROUTES = [instruments, book]
