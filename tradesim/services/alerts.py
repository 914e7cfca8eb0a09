"""Alerts on `risk.alerts`: what needs a person's (or a kill switch's) attention, from any service."""

from __future__ import annotations

from enum import StrEnum

import msgspec


class AlertKind(StrEnum):
    POSITION_STATE = "position_state"  # Normal / Warning / Critical / OverLimit changes
    MARGIN_WARNING = "margin_warning"
    VAR_BREACH = "var_breach"
    KILL_SWITCH = "kill_switch"
    LIQUIDATION = "liquidation"
    ORDER_STUCK = "order_stuck"
    ORDER_RECOVERED = "order_recovered"


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class RiskAlert(msgspec.Struct, frozen=True, kw_only=True, tag="risk.alert", tag_field="kind"):
    ts: int
    alert: AlertKind
    severity: Severity
    account: str
    message: str
    symbol: str = ""
    client_order_id: str = ""
    # Figures behind the alert, e.g. {"var_95": "1234.50", "limit": "1000"}; decimals as strings.
    figures: dict[str, str] = {}
