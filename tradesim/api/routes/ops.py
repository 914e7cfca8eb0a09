"""/healthz (the process answers) and /readyz (every service answers on the bus), without auth."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from litestar import Request, Response, get

from tradesim.api.context import Context
from tradesim.api.errors import ApiError
from tradesim.services.accounts.messages import AccountsListReply, ListAccounts
from tradesim.services.oms.messages import ListOrdersRequest, OrdersReply
from tradesim.services.risk.monitor_messages import GetRisk, RiskReply
from tradesim.services.venue.messages import InstrumentsReply, InstrumentsRequest

READY_TIMEOUT = 1.0


@get(["/healthz", "/api/v1/healthz"])
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get(["/readyz", "/api/v1/readyz"])
async def readyz(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    """200 when the venue, OMS, accounts and risk monitor all answer within 1 s; else 503 naming who did not."""
    ctx: Context = request.app.state["ctx"]
    probes: dict[str, tuple[str, str, msgspec.Struct, type[msgspec.Struct]]] = {
        "venue": ("venue", "instruments", InstrumentsRequest(), InstrumentsReply),
        "oms": ("oms", "list_orders", ListOrdersRequest(limit=1), OrdersReply),
        "accounts": ("accounts", "list", ListAccounts(), AccountsListReply),
        "risk": ("risk", "get", GetRisk(account=""), RiskReply),
    }

    async def probe(service: str, method: str, msg: msgspec.Struct, expect: type[msgspec.Struct]) -> str:
        try:
            await ctx.services.call(service, method, msg, expect, timeout=READY_TIMEOUT)
        except ApiError as exc:
            # A refusal (an empty account is `malformed`) still proves the service is up.
            return "ok" if exc.status < 500 else exc.message
        return "ok"

    results = await asyncio.gather(*(probe(*p) for p in probes.values()))
    services = dict(zip(probes, results, strict=True))
    down = sorted(name for name, state in services.items() if state != "ok")
    if down:
        return Response({"error": "not_ready", "message": f"not answering: {', '.join(down)}",
                         "services": services}, status_code=503)
    return Response({"status": "ready", "services": services}, status_code=200)


ROUTES = [healthz, readyz]
