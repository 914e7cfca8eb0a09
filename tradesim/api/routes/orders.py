"""/api/v1/orders: place, list, fetch, modify, cancel, and approve/reject held orders.

A new order answers 201 once the venue has it durably (202 if the venue has not answered yet, still
pending), 422 if compliance, risk or the engine refused it — the order then exists as REJECTED and the
body names it. Traders see and touch only their own account's orders; others' are 404.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, delete, get, patch, post
from litestar.di import Provide
from litestar.openapi import ResponseSpec
from litestar.params import FromQuery

from tradesim.api.auth import Caller, provide_principal
from tradesim.api.bodies import decode
from tradesim.api.context import Ctx, context_of, provide_context
from tradesim.api.convert import decode_order_id, instrument_of, order_out, to_ticks
from tradesim.api.errors import ApiError
from tradesim.api.models import HoldReason, OrderIn, OrderOut, OrderPatch, OrdersOut
from tradesim.api.openapi import request_body
from tradesim.domain import OrderStatus
from tradesim.services.oms.manager import MAX_LIST
from tradesim.services.oms.messages import (
    CancelRequest,
    GetOrderRequest,
    HoldDecision,
    ListOrdersRequest,
    ModifyRequest,
    OrderReply,
    OrderRequest,
    OrdersReply,
    OrderView,
)

DEPENDENCIES = {"principal": Provide(provide_principal), "ctx": Provide(provide_context)}
_STATUSES = {s.value: s for s in OrderStatus}


def _out(ctx: Ctx, reply: OrderReply) -> OrderOut:
    return order_out(ctx.instruments[reply.order.symbol], reply.order, list(reply.trades))


async def _find(ctx: Ctx, principal: Caller, order_id: str) -> OrderView:
    """The order named by `order_id` as this caller may see it (404 otherwise)."""
    ref = decode_order_id(order_id)
    scope = principal.scope()
    if isinstance(ref, int):
        request = GetOrderRequest(account=scope, order_id=ref)
    else:
        account, cid = ref
        if scope is not None and account != scope:
            raise ApiError(404, "unknown_order", f"no order {order_id!r}")
        request = GetOrderRequest(account=account, client_order_id=cid)
    reply = await ctx.services.call("oms", "get_order", request, OrderReply)
    return reply.order


@post("/orders", dependencies=DEPENDENCIES, status_code=201, operation_class=request_body(OrderIn), responses={
    201: ResponseSpec(OrderOut, description="the order, as the venue has it (possibly already filled)",
                      generate_examples=False),
    202: ResponseSpec(OrderOut, description="the order, still pending_new: the venue has not answered yet",
                      generate_examples=False)})
async def create_order(request: Request[Any, Any, Any]) -> Response[Any]:
    """Place an order. Body: symbol, side, type, tif, price?, stop_price?, qty, client_order_id?."""
    # The caller and the context straight from the request, not as dependencies: Litestar resolves two
    # dependencies of one handler concurrently in an anyio task group (~5% of an order's CPU), and even
    # one costs a signature-model validation of the handler's arguments (~4% of the API's share).
    principal = await provide_principal(request)
    ctx = context_of(request)
    principal.require_trade()
    body = decode(await request.body(), OrderIn)
    account = principal.account_for(body.account)
    instrument = instrument_of(ctx.instruments, body.symbol)
    if body.qty <= 0 or body.qty % instrument.lot_size:
        raise ApiError(400, "bad_qty", f"qty {body.qty} must be a positive multiple of the lot size "
                                       f"{instrument.lot_size} of {instrument.symbol}")
    if body.display_qty is not None and body.display_qty <= 0:
        raise ApiError(400, "bad_qty", f"display_qty {body.display_qty} must be positive")
    order = OrderRequest(
        account=account, symbol=body.symbol, side=body.side, qty=body.qty, type=body.type, tif=body.tif,
        price=to_ticks(instrument, body.price, "price"), stop_price=to_ticks(instrument, body.stop_price, "stop_price"),
        client_order_id=body.client_order_id, display_qty=body.display_qty, post_only=body.post_only, stp=body.stp,
        expire_ts=body.expire_ts,
    )
    reply = await ctx.services.call("oms", "submit", order, OrderReply)
    out = _out(ctx, reply)
    if reply.order.status is OrderStatus.REJECTED:
        return Response({"error": reply.order.reason or "rejected", "message": reply.order.message,
                         "order_id": out.order_id, "order": out}, status_code=422)
    status = 202 if reply.order.status is OrderStatus.PENDING_NEW else 201
    return Response(out, status_code=status)


@get("/orders", dependencies=DEPENDENCIES)
async def list_orders(principal: Caller, ctx: Ctx, status: FromQuery[str | None] = None,
                      symbol: FromQuery[str | None] = None, account: FromQuery[str | None] = None,
                      open_only: FromQuery[bool] = False, limit: FromQuery[int] = 100,
                      offset: FromQuery[int] = 0) -> OrdersOut:
    """Orders newest first; a trader's or viewer's own only, admins and compliance any (`account=` filters)."""
    if not 1 <= limit <= MAX_LIST or offset < 0:
        raise ApiError(400, "bad_page", f"limit must be in 1..{MAX_LIST} and offset >= 0")
    wanted = None
    if status is not None:
        wanted = _STATUSES.get(status.lower())
        if wanted is None:
            raise ApiError(400, "invalid_enum", f"unknown status {status!r} (known: {', '.join(_STATUSES)})")
    if symbol is not None:
        instrument_of(ctx.instruments, symbol)
    scope = principal.scope() if account is None else principal.account_for(account)
    reply = await ctx.services.call("oms", "list_orders", ListOrdersRequest(
        account=scope, status=wanted, symbol=symbol, open_only=open_only, limit=limit, offset=offset), OrdersReply)
    return OrdersOut(orders=[order_out(ctx.instruments[v.symbol], v) for v in reply.orders], total=reply.total,
                     limit=limit, offset=offset)


@get("/orders/{order_id:str}", dependencies=DEPENDENCIES)
async def get_order(order_id: str, principal: Caller, ctx: Ctx) -> OrderOut:
    """One order (`trades` is empty here: it lists the trades a write made)."""
    view = await _find(ctx, principal, order_id)
    return order_out(ctx.instruments[view.symbol], view)


@patch("/orders/{order_id:str}", dependencies=DEPENDENCIES, operation_class=request_body(OrderPatch))
async def modify_order(order_id: str, request: Request[Any, Any, Any], principal: Caller,
                       ctx: Ctx) -> OrderOut:
    """Change price and/or total qty (cancel/replace): body `{"price"?, "qty"?}`."""
    principal.require_trade()
    body = decode(await request.body(), OrderPatch)
    view = await _find(ctx, principal, order_id)
    instrument = ctx.instruments[view.symbol]
    if body.price is None and body.qty is None:
        raise ApiError(400, "bad_request", "send price and/or qty to change")
    if body.qty is not None and body.qty <= 0:
        raise ApiError(400, "bad_qty", f"qty {body.qty} must be positive")
    reply = await ctx.services.call("oms", "modify", ModifyRequest(
        account=view.account, client_order_id=view.client_order_id, price=to_ticks(instrument, body.price, "price"),
        qty=body.qty), OrderReply)
    return _out(ctx, reply)


@delete("/orders/{order_id:str}", dependencies=DEPENDENCIES, status_code=200)
async def cancel_order(order_id: str, principal: Caller, ctx: Ctx) -> OrderOut:
    """Cancel; answers the order's state after the venue's answer (a finished order as it is)."""
    principal.require_trade()
    view = await _find(ctx, principal, order_id)
    reply = await ctx.services.call("oms", "cancel", CancelRequest(
        account=view.account, client_order_id=view.client_order_id), OrderReply)
    return _out(ctx, reply)


async def _decide(method: str, order_id: str, request: Request[Any, Any, Any], principal: Caller,
                  ctx: Ctx) -> OrderOut:
    principal.require_decide()
    body = decode(await request.body(), HoldReason, optional=True)
    view = await _find(ctx, principal, order_id)
    if view.status is not OrderStatus.HELD or not view.hold_id:
        raise ApiError(409, "not_held", f"order {order_id} is {view.status.value}, not held")
    reply = await ctx.services.call("oms", method, HoldDecision(hold_id=view.hold_id, user=principal.username,
                                                                reason=body.reason), OrderReply)
    return _out(ctx, reply)


@post("/orders/{order_id:str}/approve", dependencies=DEPENDENCIES, status_code=200)
async def approve_order(order_id: str, request: Request[Any, Any, Any], principal: Caller,
                        ctx: Ctx) -> OrderOut:
    """Compliance/admin: release a HELD order to the venue as it is."""
    return await _decide("approve", order_id, request, principal, ctx)


@post("/orders/{order_id:str}/reject", dependencies=DEPENDENCIES, status_code=200)
async def reject_order(order_id: str, request: Request[Any, Any, Any], principal: Caller,
                       ctx: Ctx) -> OrderOut:
    """Compliance/admin: refuse a HELD order (body `{"reason"?}`); it ends REJECTED (hold_rejected)."""
    return await _decide("reject_held", order_id, request, principal, ctx)


ROUTES = [create_order, list_orders, get_order, modify_order, cancel_order, approve_order, reject_order]
