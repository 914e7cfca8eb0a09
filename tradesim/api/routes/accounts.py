"""/api/v1/accounts/me, /positions, /risk: the caller's account figures from the PositionTracker and the
RiskMonitor. Admins and compliance may name another account with `?account=`."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import get
from litestar.di import Provide
from litestar.params import FromQuery

from tradesim.api.auth import Caller, provide_principal
from tradesim.api.context import Ctx, provide_context
from tradesim.services.accounts.messages import AccountReply, GetAccount, GetPositions, PositionsReply
from tradesim.services.accounts.views import AccountView, PositionView
from tradesim.services.risk.monitor_messages import GetRisk, RiskReply

DEPENDENCIES = {"principal": Provide(provide_principal), "ctx": Provide(provide_context)}


class AccountOut(msgspec.Struct, kw_only=True):
    account: AccountView
    seq: int  # the venue sequence the figures include


class PositionsOut(msgspec.Struct, kw_only=True):
    account: str
    positions: list[PositionView]
    seq: int


@get("/accounts/me", dependencies=DEPENDENCIES)
async def account_me(principal: Caller, ctx: Ctx, account: FromQuery[str | None] = None) -> AccountOut:
    """Cash, equity, P&L, margin and positions (money as decimal strings)."""
    reply = await ctx.services.call("accounts", "get", GetAccount(account=principal.account_for(account)),
                                    AccountReply)
    return AccountOut(account=reply.account, seq=reply.seq)


@get("/positions", dependencies=DEPENDENCIES)
async def positions(principal: Caller, ctx: Ctx, account: FromQuery[str | None] = None,
                    open_only: FromQuery[bool] = False) -> PositionsOut:
    """Positions by symbol; flat ones (realized P&L only) too unless `open_only`."""
    reply = await ctx.services.call("accounts", "positions",
                                    GetPositions(account=principal.account_for(account), open_only=open_only),
                                    PositionsReply)
    return PositionsOut(account=reply.account, positions=list(reply.positions), seq=reply.seq)


@get("/risk", dependencies=DEPENDENCIES)
async def risk(principal: Caller, ctx: Ctx, account: FromQuery[str | None] = None) -> dict[str, Any]:
    """Post-trade risk: limit states, margin ratio, VaR (see docs/positions-and-risk-monitor.md)."""
    reply = await ctx.services.call("risk", "get", GetRisk(account=principal.account_for(account)), RiskReply)
    body: dict[str, Any] = msgspec.to_builtins(reply)
    body.pop("kind", None)
    return body


ROUTES = [account_me, positions, risk]
