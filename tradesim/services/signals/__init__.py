"""Signals: HMAC-authenticated webhook signals → a deterministic decision agent → OMS orders.

The webhook (`tradesim.api.routes.webhook`) verifies and normalizes a signal and publishes it on
`signals.normalized`; `DecisionAgent` turns it into an order intent (`decisions.order_intent`), executes
it through `rpc.oms.submit` once per correlation id and records each step on `audit.event`.
See docs/signals.md.
"""

from tradesim.services.signals.config import SignalsConfig, SymbolRules
from tradesim.services.signals.decision import Decision, decide
from tradesim.services.signals.messages import (
    SIGNALS_MESSAGES,
    AuditEvent,
    OrderIntent,
    RiskParams,
    Signal,
)
from tradesim.services.signals.service import DecisionAgent

__all__ = [
    "SIGNALS_MESSAGES",
    "AuditEvent",
    "Decision",
    "DecisionAgent",
    "OrderIntent",
    "RiskParams",
    "Signal",
    "SignalsConfig",
    "SymbolRules",
    "decide",
]
