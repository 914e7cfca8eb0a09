"""The agents' only way to trade: requests to the OMS (`rpc.oms.submit|cancel|modify`) for one account.

Calls go through `call_oms`, so an OMS failover (no responders, not_active, a timeout) is retried with
backoff under the same client_order_id; what still fails becomes an `OmsError` with a stable code, so
the strategies handle one failure type. Every request can be kept in `sent` (for determinism checks and debugging).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import msgspec

from tradesim.bus import Bus, BusError
from tradesim.services.oms.messages import CancelRequest, ModifyRequest, OmsError, OrderReply, OrderRequest
from tradesim.services.oms.rpc import RetryPolicy, call_oms

log = logging.getLogger("tradesim.agents")

Clock = Callable[[], int]
"""Nanoseconds; injected so a simulated-time loop can drive the agents."""

OmsRequest = OrderRequest | CancelRequest | ModifyRequest


class OmsGateway:
    """Sends one account's requests and returns `OrderReply` or `OmsError`, never raises for bus trouble."""

    def __init__(self, bus: Bus, account: str, *, timeout: float = 5.0, keep_history: bool = False,
                 policy: RetryPolicy | None = None) -> None:
        self.bus = bus
        self.account = account
        self.timeout = timeout
        self.policy = policy or RetryPolicy(timeout=timeout, deadline=2 * timeout)
        self.keep_history = keep_history
        self.sent: list[OmsRequest] = []
        self.errors = 0

    async def submit(self, request: OrderRequest) -> OrderReply | OmsError:
        return await self._call("submit", request)

    async def cancel(self, client_order_id: str) -> OrderReply | OmsError:
        return await self._call("cancel",
                                CancelRequest(account=self.account, client_order_id=client_order_id))

    async def modify(self, client_order_id: str, *, price: int | None, qty: int | None) -> OrderReply | OmsError:
        return await self._call("modify", ModifyRequest(
            account=self.account, client_order_id=client_order_id, price=price, qty=qty))

    async def _call(self, method: str, request: OmsRequest) -> OrderReply | OmsError:
        if self.keep_history:
            self.sent.append(request)
        try:
            reply: msgspec.Struct = await call_oms(self.bus, method, request, policy=self.policy)
        except BusError as exc:
            reply = OmsError(error="bus_error", message=f"{type(exc).__name__}: {exc}")
        if isinstance(reply, OrderReply):
            return reply
        if not isinstance(reply, OmsError):
            reply = OmsError(error="bad_reply", message=f"unexpected {type(reply).__name__}")
        self.errors += 1
        log.debug("%s %s refused: %s %s", self.account, method, reply.error, reply.message)
        return reply
