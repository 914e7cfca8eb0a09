"""The web UI's HTTP handlers: the two pages (trading screen, login) and the HTML fragments htmx polls.

Pages need no auth: the browser keeps its access token in sessionStorage and sends it as
`Authorization: Bearer` on every htmx and fetch request, so the fragments authenticate exactly as the
REST API does (same tokens, roles, rate limits) and the API needs no cookie and no CSRF defence.
Fragments ask the services over the bus like the REST handlers; writes (orders, cancels, algos) go to
the REST API itself from the page.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from litestar import Request, get
from litestar.di import Provide
from litestar.params import FromQuery
from litestar.response import Template

from tradesim.api.auth import Caller, provide_principal
from tradesim.api.context import Context, Ctx, provide_context
from tradesim.api.convert import instrument_of, order_out
from tradesim.api.errors import ApiError
from tradesim.api.models import OrderOut
from tradesim.services.accounts.messages import AccountReply, GetAccount
from tradesim.services.oms.messages import ListOrdersRequest, OrdersReply
from tradesim.services.venue.messages import BookReply, BookRequest

DEPENDENCIES = {"principal": Provide(provide_principal), "ctx": Provide(provide_context)}
LADDER_DEPTH: Final = 12
MAX_LADDER_DEPTH: Final = 50
ORDERS_SHOWN: Final = 50
_OPEN = {"pending_new", "held", "accepted", "partially_filled", "pending_cancel", "pending_modify", "triggered"}


@dataclass(frozen=True, slots=True)
class Rung:
    """One price level of the ladder: `share` (0..100) sizes its depth bar, `mine` is the caller's open qty."""

    price: str
    qty: int
    count: int
    share: int
    mine: int


def _ctx(request: Request[Any, Any, Any]) -> Context:
    ctx: Context = request.app.state["ctx"]
    return ctx


@get("/", include_in_schema=False)
async def index(request: Request[Any, Any, Any], symbol: FromQuery[str | None] = None) -> Template:
    """The trading screen; the page's script sends a visitor without a token to /login."""
    instruments = sorted(_ctx(request).instruments.values(), key=lambda i: i.symbol)
    names = [i.symbol for i in instruments]
    chosen = symbol if symbol in names else (names[0] if names else "")
    info = {i.symbol: {"tick": str(i.tick_size), "lot": i.lot_size} for i in instruments}
    return Template(template_name="trade.html", context={"symbols": names, "symbol": chosen, "info": info})


@get("/login", include_in_schema=False)
async def login() -> Template:
    """The login form; its script exchanges the password for a token at POST /api/v1/auth/token."""
    return Template(template_name="login.html")


@get("/ui/book/{symbol:str}", dependencies=DEPENDENCIES, include_in_schema=False)
async def book_fragment(symbol: str, principal: Caller, ctx: Ctx, depth: FromQuery[int] = LADDER_DEPTH) -> Template:
    """The ladder: asks (best at the bottom), the spread and last price, bids; the caller's open qty per level."""
    if not 1 <= depth <= MAX_LADDER_DEPTH:
        raise ApiError(400, "bad_depth", f"depth must be in 1..{MAX_LADDER_DEPTH}, got {depth}")
    instrument = instrument_of(ctx.instruments, symbol)
    reply = await ctx.services.call("venue", "book", BookRequest(symbol=symbol, depth=depth), BookReply)
    mine: dict[tuple[str, int], int] = {}
    if principal.role.value in ("admin", "trader"):
        orders = await ctx.services.call("oms", "list_orders", ListOrdersRequest(
            account=principal.account, symbol=symbol, open_only=True, limit=ORDERS_SHOWN), OrdersReply)
        for o in orders.orders:
            if o.price is not None and o.leaves_qty > 0:
                key = (o.side.value, o.price)
                mine[key] = mine.get(key, 0) + o.leaves_qty
    biggest = max([q for _, q, _ in reply.bids] + [q for _, q, _ in reply.asks] + [1])

    def rungs(side: str, levels: list[tuple[int, int, int]]) -> list[Rung]:
        return [Rung(price=str(instrument.from_ticks(p)), qty=q, count=n, share=max(1, round(100 * q / biggest)),
                     mine=mine.get((side, p), 0)) for p, q, n in levels]

    bids, asks = rungs("buy", reply.bids), rungs("sell", reply.asks)
    spread = None
    if reply.bids and reply.asks:
        spread = str(instrument.from_ticks(reply.asks[0][0] - reply.bids[0][0]))
    last = None if reply.last_price is None else str(instrument.from_ticks(reply.last_price))
    return Template(template_name="fragments/book.html", context={
        "symbol": symbol, "seq": reply.seq, "asks": list(reversed(asks)), "bids": bids, "spread": spread,
        "last": last, "bid": bids[0].price if bids else None, "ask": asks[0].price if asks else None})


@get("/ui/orders", dependencies=DEPENDENCIES, include_in_schema=False)
async def orders_fragment(principal: Caller, ctx: Ctx, symbol: FromQuery[str | None] = None,
                          show: FromQuery[str] = "open") -> Template:
    """The caller's own orders, newest first: open ones (with cancel buttons) or every one (`show=all`)."""
    if symbol is not None:
        instrument_of(ctx.instruments, symbol)
    if show not in ("open", "all"):
        raise ApiError(400, "invalid_parameter", f"show must be open or all, got {show!r}")
    reply = await ctx.services.call("oms", "list_orders", ListOrdersRequest(
        account=principal.account, symbol=symbol, open_only=show == "open", limit=ORDERS_SHOWN), OrdersReply)
    orders: list[OrderOut] = [order_out(ctx.instruments[v.symbol], v) for v in reply.orders]
    return Template(template_name="fragments/orders.html", context={
        "orders": orders, "total": reply.total, "show": show, "open": _OPEN,
        "can_trade": principal.role.value in ("admin", "trader")})


@get("/ui/positions", dependencies=DEPENDENCIES, include_in_schema=False)
async def positions_fragment(principal: Caller, ctx: Ctx) -> Template:
    """The caller's account: cash, equity, P&L, buying power, and each position with its P&L."""
    reply = await ctx.services.call("accounts", "get", GetAccount(account=principal.account), AccountReply)
    return Template(template_name="fragments/positions.html", context={
        "a": reply.account, "positions": reply.account.positions, "seq": reply.seq, "zero": Decimal(0)})


ROUTES = [index, login, book_fragment, orders_fragment, positions_fragment]
