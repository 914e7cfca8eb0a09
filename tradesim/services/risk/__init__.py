"""Pre-trade risk: pure limit rules the OMS runs on every new order after compliance, before routing."""

from tradesim.services.risk.config import (
    ACCOUNT_RULES,
    SYMBOL_RULES,
    AccountRisk,
    Limits,
    RiskConfig,
    load_risk_config,
    parse_risk_config,
    risk_config_from_dict,
)
from tradesim.services.risk.counters import DailyCounters, DayCounts
from tradesim.services.risk.decision import ACCEPT, Decision, Verdict, hold, reject
from tradesim.services.risk.holds import (
    HeldOrder,
    HeldOrders,
    HoldAlreadyDecidedError,
    HoldError,
    HoldStatus,
    UnknownHoldError,
)
from tradesim.services.risk.pretrade import PreTradeRisk
from tradesim.services.risk.state import AccountState, Activity, MarketState, TradingState
from tradesim.services.risk.tables import ConfigError

__all__ = [
    "ACCEPT",
    "ACCOUNT_RULES",
    "SYMBOL_RULES",
    "AccountRisk",
    "AccountState",
    "Activity",
    "ConfigError",
    "DailyCounters",
    "DayCounts",
    "Decision",
    "HeldOrder",
    "HeldOrders",
    "HoldAlreadyDecidedError",
    "HoldError",
    "HoldStatus",
    "Limits",
    "MarketState",
    "PreTradeRisk",
    "RiskConfig",
    "TradingState",
    "UnknownHoldError",
    "Verdict",
    "hold",
    "load_risk_config",
    "parse_risk_config",
    "reject",
    "risk_config_from_dict",
]
