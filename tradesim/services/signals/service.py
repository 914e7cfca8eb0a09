"""DecisionAgent: consumes `signals.normalized`, decides, publishes the intent and executes it through the OMS.

At most once per correlation id: the agent remembers the ids it handled (bounded), and the order's
client_order_id is derived from the correlation id, so even another agent or a restart cannot place a
second order for one signal (the OMS answers the existing order or refuses the duplicate id).
Each step is published on `audit.event` and logged with the correlation id.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import msgspec
import structlog

from tradesim.bus import Bus, BusError, Delivery, Mode, Subscription, register, subjects
from tradesim.domain import Instrument, OrderStatus
from tradesim.logging import get_logger
from tradesim.services.accounts.messages import GetPositions, PositionsReply
from tradesim.services.oms.messages import OmsError, OrderReply, OrderRequest
from tradesim.services.oms.rpc import RetryPolicy, call_oms
from tradesim.services.signals.config import SignalsConfig
from tradesim.services.signals.decision import Decision, decide, reference_price
from tradesim.services.signals.messages import SIGNALS_MESSAGES, AuditEvent, OrderIntent, Signal
from tradesim.services.venue.messages import BookReply, BookRequest

log = get_logger("tradesim.signals")

SERVICE = "signals"
GROUP = "signals-agent"
RPC_TIMEOUT = 5.0


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """What became of one signal (kept for queries and tests)."""

    correlation_id: str
    result: str  # executed, skipped, failed
    reason: str = ""
    order_id: int | None = None
    client_order_id: str = ""
    status: str = ""
    filled_qty: int = 0


class DecisionAgent:
    """One agent; several may share `signals.normalized` (COMPETE): each signal goes to one of them."""

    def __init__(self, bus: Bus, config: SignalsConfig, instruments: Iterable[Instrument], *,
                 reference_prices: dict[str, int] | None = None, clock: Callable[[], int] = time.time_ns,
                 rpc_timeout: float = RPC_TIMEOUT, remember: int = 100_000) -> None:
        self.bus = bus
        self.config = config
        self.instruments = {i.symbol: i for i in instruments}
        self.reference_prices = dict(reference_prices or {})
        self.clock = clock
        self.rpc_timeout = rpc_timeout
        self.remember = remember
        self.outcomes: OrderedDict[str, Outcome] = OrderedDict()
        self.duplicates = 0
        self._sub: Subscription | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    async def start(self) -> None:
        register(*SIGNALS_MESSAGES)
        self._sub = await self.bus.subscribe(subjects.SIGNALS_NORMALIZED, self._on_signal, mode=Mode.COMPETE,
                                             group=GROUP)
        log.info("signals agent started", account=self.config.account, agent_id=self.config.agent_id)

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None
        await self._idle.wait()

    async def _on_signal(self, delivery: Delivery) -> None:
        signal = delivery.data
        if not isinstance(signal, Signal):
            return
        if signal.correlation_id in self.outcomes:
            self.duplicates += 1
            log.info("signal already handled", correlation_id=signal.correlation_id)
            return
        self._idle.clear()
        try:
            with structlog.contextvars.bound_contextvars(correlation_id=signal.correlation_id):
                outcome = await self.handle(signal)
        finally:
            self._idle.set()
        self.outcomes[signal.correlation_id] = outcome
        while len(self.outcomes) > self.remember:
            self.outcomes.popitem(last=False)

    async def handle(self, signal: Signal) -> Outcome:
        """Decide on one signal and execute the intent; every step goes to the audit trail."""
        cid = signal.correlation_id
        await self._audit(cid, "signal_received", msgspec.to_builtins(signal))
        instrument = self.instruments.get(signal.symbol)
        if instrument is None:
            return await self._skip(cid, "unknown_symbol", f"{signal.symbol} is not listed")
        try:
            position = await self._position(signal.symbol)
            reference = await self._reference(signal)
        except BusError as exc:
            return await self._skip(cid, "service_unavailable", f"position or book unavailable: {exc}")
        decision: Decision = decide(signal, self.config, instrument, position, reference, self.clock())
        if decision.intent is None:
            return await self._skip(cid, decision.skip, decision.message)
        intent = decision.intent
        await self.bus.publish(subjects.DECISIONS_ORDER_INTENT, intent)
        await self._audit(cid, "order_intent", msgspec.to_builtins(intent))
        log.info("order intent", symbol=intent.symbol, side=intent.side.value, qty=intent.qty, price=intent.price,
                 client_order_id=intent.client_order_id)
        return await self._execute(intent)

    async def _execute(self, intent: OrderIntent) -> Outcome:
        cid = intent.correlation_id
        request = OrderRequest(account=intent.account, symbol=intent.symbol, side=intent.side, qty=intent.qty,
                               type=intent.type, tif=intent.tif, price=intent.price,
                               client_order_id=intent.client_order_id, correlation_id=cid)
        try:
            # retried across an OMS failover under the intent's client_order_id (never executed twice)
            reply = await call_oms(self.bus, "submit", request,
                                   policy=RetryPolicy(timeout=self.rpc_timeout, deadline=4 * self.rpc_timeout))
        except BusError as exc:
            # The OMS may still have it: a retry of this signal finds it under the same client_order_id.
            await self._audit(cid, "order_failed", {"error": "service_unavailable", "message": str(exc),
                                                    "client_order_id": intent.client_order_id})
            log.warning("order not confirmed", error=str(exc))
            return Outcome(correlation_id=cid, result="failed", reason="service_unavailable",
                           client_order_id=intent.client_order_id)
        if isinstance(reply, OmsError):
            await self._audit(cid, "order_failed", {"error": reply.error, "message": reply.message,
                                                    "client_order_id": intent.client_order_id})
            log.warning("order refused", error=reply.error, message=reply.message)
            return Outcome(correlation_id=cid, result="failed", reason=reply.error,
                           client_order_id=intent.client_order_id)
        if not isinstance(reply, OrderReply):
            return Outcome(correlation_id=cid, result="failed", reason="bad_reply")
        order = reply.order
        trades = [{"trade_id": t.trade_id, "price": t.price, "qty": t.qty, "seq": t.seq} for t in reply.trades]
        await self._audit(cid, "order_result", {
            "order_id": order.order_id, "client_order_id": order.client_order_id, "account": order.account,
            "symbol": order.symbol, "status": order.status.value, "reason": order.reason,
            "filled_qty": order.filled_qty, "leaves_qty": order.leaves_qty, "trades": trades})
        log.info("order result", order_id=order.order_id, status=order.status.value, filled_qty=order.filled_qty,
                 trade_ids=[t["trade_id"] for t in trades])
        rejected = order.status is OrderStatus.REJECTED
        return Outcome(correlation_id=cid, result="failed" if rejected else "executed", reason=order.reason,
                       order_id=order.order_id, client_order_id=order.client_order_id, status=order.status.value,
                       filled_qty=order.filled_qty)

    async def _skip(self, cid: str, reason: str, message: str) -> Outcome:
        await self._audit(cid, "signal_skipped", {"reason": reason, "message": message})
        log.info("signal skipped", reason=reason, message=message)
        return Outcome(correlation_id=cid, result="skipped", reason=reason)

    async def _position(self, symbol: str) -> int:
        reply = await self.bus.request(subjects.rpc("accounts", "positions"),
                                       GetPositions(account=self.config.account), timeout=self.rpc_timeout)
        if isinstance(reply, PositionsReply):
            return sum(p.qty for p in reply.positions if p.symbol == symbol)
        return 0  # an account that never traded

    async def _reference(self, signal: Signal) -> tuple[int, str] | None:
        book = await self.bus.request(subjects.rpc("venue", "book"), BookRequest(symbol=signal.symbol, depth=1),
                                      timeout=self.rpc_timeout)
        bid = ask = last = None
        if isinstance(book, BookReply):
            bid = book.bids[0][0] if book.bids else None
            ask = book.asks[0][0] if book.asks else None
            last = book.last_price
        return reference_price(signal, bid, ask, last, self.reference_prices.get(signal.symbol))

    async def _audit(self, cid: str, event_type: str, data: dict[str, Any]) -> None:
        event = AuditEvent(event_id=f"{cid}/{event_type}", correlation_id=cid, event_type=event_type, service=SERVICE,
                           ts=self.clock(), data=data)
        await self.bus.publish(subjects.AUDIT_EVENT, event)
