"""The RiskMonitor's wire contract: `rpc.risk.get` (what GET /risk shows) and its errors."""

from __future__ import annotations

from decimal import Decimal

import msgspec

from tradesim.services.risk.monitor_config import LimitState


class GetRisk(msgspec.Struct, frozen=True, kw_only=True, tag="risk.get", tag_field="kind"):
    """`rpc.risk.get`: one account's post-trade risk."""

    account: str


class PositionRisk(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    qty: int
    limit: int | None  # None: no limit configured
    state: LimitState | None  # None when unlimited
    utilization: Decimal | None  # |qty| / limit, rounded half-even to 1e-6


class VarFigure(msgspec.Struct, frozen=True, kw_only=True):
    confidence: Decimal
    var: Decimal  # money, rounded half-even to 0.01


class RiskReply(msgspec.Struct, frozen=True, kw_only=True, tag="risk.account", tag_field="kind"):
    account: str
    seq: int  # highest venue seq processed when answering
    positions: list[PositionRisk]  # open positions, by symbol
    equity: Decimal
    margin_used: Decimal
    margin_ratio: Decimal | None  # margin used / equity, 1e-6; None when equity <= 0 with margin in use
    margin_warning: bool
    var: list[VarFigure]  # empty when there is not enough price history
    var_observations: int
    var_limit: Decimal | None
    var_breach: bool
    liquidations_in_flight: int


class RiskError(msgspec.Struct, frozen=True, kw_only=True, tag="risk.error", tag_field="kind"):
    """A refused query: `error` is `unknown_account` or `malformed`."""

    error: str
    message: str


RISK_MONITOR_MESSAGES: tuple[type[msgspec.Struct], ...] = (GetRisk, RiskReply, RiskError)
