"""/api/v1/algos: start, list, fetch, pause, resume and cancel algo parents (TWAP, VWAP, POV, Iceberg)
through the OMS's `rpc.oms.algo_*` (docs/algos.md).

The same rules as orders: traders and viewers see only their own account's parents (another's is 404),
admins and compliance every one; only admins and traders start or control them. `limit_price` is a
decimal string at this edge, ticks inside.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

import msgspec
from litestar import Request, Response, delete, get, post
from litestar.di import Provide
from litestar.params import FromQuery, Parameter

from tradesim.api.auth import Caller, provide_principal
from tradesim.api.bodies import decode
from tradesim.api.context import Ctx, provide_context
from tradesim.api.convert import instrument_of, order_out, price_str, to_ticks
from tradesim.api.errors import ApiError
from tradesim.api.models import Int64, OrderOut, Price
from tradesim.api.openapi import request_body
from tradesim.domain import Instrument, Side
from tradesim.services.oms.messages import (
    ALGO_NAMES,
    AlgoControl,
    AlgoGetRequest,
    AlgoListRequest,
    AlgoParams,
    AlgoReply,
    AlgoRequest,
    AlgosReply,
    AlgoState,
    AlgoView,
)

DEPENDENCIES = {"principal": Provide(provide_principal), "ctx": Provide(provide_context)}
MAX_LIST: Final = 1000
_STATES: Final = {s.value: s for s in AlgoState}
# OMS algo error codes the generic mapping in rpc.py does not know.
_STATUS: Final = {"unknown_parent": 404, "unknown_algo": 400, "bad_params": 400, "algo_closed": 409}


class AlgoParamsIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The algo's knobs (docs/algos.md); `limit_price` as a decimal."""

    duration_ms: Int64 = 0
    slices: Int64 = 0
    start_ts: Int64 | None = None
    participation: float = 0.0
    display_qty: Int64 = 0
    limit_price: Price | None = None
    min_child_qty: Int64 = 0
    profile: str = "u"
    grace_ms: Int64 = 0


class AlgoIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """POST /algos. `client_id` makes a retry safe; `account` is for admins acting for another account."""

    symbol: str
    side: Side
    qty: Int64
    algo: str
    params: AlgoParamsIn = msgspec.field(default_factory=AlgoParamsIn)
    client_id: str = ""
    account: str | None = None


class AlgoParamsOut(msgspec.Struct, kw_only=True):
    duration_ms: int
    slices: int
    start_ts: int | None
    participation: float
    display_qty: int
    limit_price: str | None
    min_child_qty: int
    profile: str
    grace_ms: int


class AlgoOut(msgspec.Struct, kw_only=True):
    algo_id: str
    client_id: str
    account: str
    symbol: str
    side: str
    qty: int
    algo: str
    params: AlgoParamsOut
    state: str
    filled_qty: int
    open_qty: int
    avg_price: str | None
    child_count: int
    start_ts: int
    end_ts: int
    created_ts: int
    updated_ts: int
    finished_ts: int
    reason: str
    market_volume: int
    tracking_error: float | None
    slippage_bps: float | None
    correlation_id: str
    children: list[OrderOut] | None = None


class AlgosOut(msgspec.Struct, kw_only=True):
    algos: list[AlgoOut]
    total: int
    limit: int
    offset: int


def _algo_out(instrument: Instrument, v: AlgoView, children: list[OrderOut] | None = None) -> AlgoOut:
    p = v.params
    avg = None
    if v.filled_qty:
        avg = str((v.fill_value * instrument.tick_size / v.filled_qty).quantize(instrument.tick_size / 10_000)
                  .normalize())
    return AlgoOut(
        algo_id=v.parent_id, client_id=v.client_id, account=v.account, symbol=v.symbol, side=v.side.value, qty=v.qty,
        algo=v.algo, params=AlgoParamsOut(
            duration_ms=p.duration_ms, slices=p.slices, start_ts=p.start_ts, participation=p.participation,
            display_qty=p.display_qty, limit_price=price_str(instrument, p.limit_price), min_child_qty=p.min_child_qty,
            profile=p.profile, grace_ms=p.grace_ms),
        state=v.state.value, filled_qty=v.filled_qty, open_qty=v.open_qty, avg_price=avg, child_count=v.child_count,
        start_ts=v.start_ts, end_ts=v.end_ts, created_ts=v.created_ts, updated_ts=v.updated_ts,
        finished_ts=v.finished_ts, reason=v.reason, market_volume=v.market_volume, tracking_error=v.tracking_error,
        slippage_bps=v.slippage_bps, correlation_id=v.correlation_id, children=children)


def _reply_out(ctx: Ctx, reply: AlgoReply, children: bool = False) -> AlgoOut:
    instrument = ctx.instruments[reply.algo.symbol]
    kids = [order_out(instrument, c) for c in reply.children] if children else None
    return _algo_out(instrument, reply.algo, kids)


async def _oms(ctx: Ctx, method: str, request: msgspec.Struct, expect: type[Any]) -> Any:
    try:
        return await ctx.services.call("oms", method, request, expect)
    except ApiError as exc:
        if exc.error in _STATUS:
            raise ApiError(_STATUS[exc.error], exc.error, exc.message) from None
        raise


@post("/algos", dependencies=DEPENDENCIES, status_code=201, operation_class=request_body(AlgoIn))
async def create_algo(request: Request[Any, Any, Any], principal: Caller, ctx: Ctx) -> Response[AlgoOut]:
    """Start a parent: body `{symbol, side, qty, algo: twap|vwap|pov|iceberg, params{...}, client_id?}`."""
    principal.require_trade()
    body = decode(await request.body(), AlgoIn)
    account = principal.account_for(body.account)
    instrument = instrument_of(ctx.instruments, body.symbol)
    algo = body.algo.lower()
    if algo not in ALGO_NAMES:
        raise ApiError(400, "unknown_algo", f"unknown algo {body.algo!r} (known: {', '.join(ALGO_NAMES)})")
    if body.qty <= 0 or body.qty % instrument.lot_size:
        raise ApiError(400, "bad_qty", f"qty {body.qty} must be a positive multiple of the lot size "
                                       f"{instrument.lot_size} of {instrument.symbol}")
    p = body.params
    try:
        params = AlgoParams(duration_ms=p.duration_ms, slices=p.slices, start_ts=p.start_ts,
                            participation=p.participation, display_qty=p.display_qty,
                            limit_price=to_ticks(instrument, p.limit_price, "limit_price"),
                            min_child_qty=p.min_child_qty, profile=p.profile, grace_ms=p.grace_ms)
    except (TypeError, ValueError) as exc:
        raise ApiError(400, "bad_params", str(exc)) from None
    reply: AlgoReply = await _oms(ctx, "algo_order", AlgoRequest(
        account=account, symbol=body.symbol, side=body.side, qty=body.qty, algo=algo, params=params,
        client_id=body.client_id), AlgoReply)
    return Response(_reply_out(ctx, reply), status_code=201)


@get("/algos", dependencies=DEPENDENCIES)
async def list_algos(principal: Caller, ctx: Ctx,
                     algo_state: Annotated[str | None, Parameter(query="state")] = None,
                     account: FromQuery[str | None] = None, limit: FromQuery[int] = 100,
                     offset: FromQuery[int] = 0) -> AlgosOut:
    """Parents newest first; a trader's or viewer's own only, admins and compliance any (`account=` filters)."""
    if not 1 <= limit <= MAX_LIST or offset < 0:
        raise ApiError(400, "bad_page", f"limit must be in 1..{MAX_LIST} and offset >= 0")
    wanted = None
    if algo_state is not None:
        wanted = _STATES.get(algo_state.lower())
        if wanted is None:
            raise ApiError(400, "invalid_enum", f"unknown state {algo_state!r} (known: {', '.join(_STATES)})")
    scope = principal.scope() if account is None else principal.account_for(account)
    reply: AlgosReply = await _oms(ctx, "algo_list", AlgoListRequest(account=scope, state=wanted, limit=limit,
                                                                     offset=offset), AlgosReply)
    return AlgosOut(algos=[_algo_out(ctx.instruments[v.symbol], v) for v in reply.algos], total=reply.total,
                    limit=limit, offset=offset)


@get("/algos/{algo_id:str}", dependencies=DEPENDENCIES)
async def get_algo(algo_id: str, principal: Caller, ctx: Ctx, children: FromQuery[bool] = False) -> AlgoOut:
    """One parent; `children=true` adds its child orders (oldest first)."""
    reply: AlgoReply = await _oms(ctx, "algo_get", AlgoGetRequest(parent_id=algo_id, account=principal.scope(),
                                                                  children=children), AlgoReply)
    return _reply_out(ctx, reply, children)


async def _control(method: str, algo_id: str, principal: Caller, ctx: Ctx) -> AlgoOut:
    principal.require_trade()
    reply: AlgoReply = await _oms(ctx, method, AlgoControl(parent_id=algo_id, account=principal.scope()), AlgoReply)
    return _reply_out(ctx, reply)


@delete("/algos/{algo_id:str}", dependencies=DEPENDENCIES, status_code=200)
async def cancel_algo(algo_id: str, principal: Caller, ctx: Ctx) -> AlgoOut:
    """Cancel a parent and its open children (idempotent: a finished parent is answered as it is)."""
    return await _control("algo_cancel", algo_id, principal, ctx)


@post("/algos/{algo_id:str}/pause", dependencies=DEPENDENCIES, status_code=200)
async def pause_algo(algo_id: str, principal: Caller, ctx: Ctx) -> AlgoOut:
    """Stop sending children (an open Iceberg child keeps resting); 409 `algo_closed` once finished."""
    return await _control("algo_pause", algo_id, principal, ctx)


@post("/algos/{algo_id:str}/resume", dependencies=DEPENDENCIES, status_code=200)
async def resume_algo(algo_id: str, principal: Caller, ctx: Ctx) -> AlgoOut:
    """Carry on, catching up to the schedule; 409 `algo_closed` once finished."""
    return await _control("algo_resume", algo_id, principal, ctx)


ROUTES = [create_algo, list_algos, get_algo, cancel_algo, pause_algo, resume_algo]
