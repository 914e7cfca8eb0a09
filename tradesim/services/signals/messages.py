"""The signals pipeline's bus messages: normalized signals, order intents and audit records."""

from __future__ import annotations

from typing import Any

import msgspec

from tradesim.domain import OrderType, Side, TimeInForce


class Signal(msgspec.Struct, frozen=True, kw_only=True, tag="signals.signal", tag_field="kind"):
    """`signals.normalized`: a verified webhook signal in the system's units (price in ticks)."""

    correlation_id: str
    source: str
    symbol: str
    side: Side
    strength: float  # 0..1, the sender's confidence
    price: int | None = None  # the sender's reference price, rounded to the tick
    qty: int | None = None  # the sender's size, if it names one
    ts: int = 0  # the signal's own time (ns), else when it was received
    received_ts: int = 0
    key_id: str = ""  # which configured secret signed it ("0" = `secret`, "1".. = `extra_secrets`)
    unknown_fields: list[str] = []


class RiskParams(msgspec.Struct, frozen=True, kw_only=True):
    """Why the intent has its size and price: enough to recompute the decision from the record."""

    strength: float
    base_qty: int
    max_position: int
    position_before: int
    limit_offset_ticks: int
    reference_price: int
    reference: str  # where the reference price came from: signal, book, last, config
    stop_loss_bps: int


class OrderIntent(msgspec.Struct, frozen=True, kw_only=True, tag="signals.order_intent", tag_field="kind"):
    """`decisions.order_intent`: the order the agent decided on, before the OMS sees it."""

    correlation_id: str
    agent_id: str
    account: str
    symbol: str
    side: Side
    qty: int
    type: OrderType
    tif: TimeInForce
    price: int
    client_order_id: str
    risk: RiskParams
    ts: int


class AuditEvent(msgspec.Struct, frozen=True, kw_only=True, tag="signals.audit", tag_field="kind"):
    """`audit.event`: one step of a signal's life (received, skipped, intent, order), by correlation id."""

    event_id: str
    correlation_id: str
    event_type: str  # signal_received, signal_skipped, order_intent, order_result, order_failed
    service: str
    ts: int
    data: dict[str, Any] = {}


SIGNALS_MESSAGES: tuple[type[msgspec.Struct], ...] = (Signal, OrderIntent, AuditEvent)
