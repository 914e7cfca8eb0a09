"""Calling the OMS across a failover: retry `not_active`, no-responders and timeouts with jittered
exponential backoff until a deadline.

Safe because every order carries a client_order_id (`call_oms` fills one in when a new-order request has
none, before the first attempt): a retry the OMS already executed is answered from its record, and the
venue refuses a duplicate id, so nothing executes twice. Any other answer (an `OrderReply`, an `OmsError`
such as `risk_limit`, a `RemoteError`) is returned or raised at once — only "nobody could take it"
is retried. Used by the algo workers, the agents' gateway, the risk monitor's liquidation, the signals
decision agent, the API and `tradesim.client.NatsClient`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from typing import Final

import msgspec

from tradesim.bus import Bus, BusError, NoRespondersError, RequestTimeoutError, subjects
from tradesim.services.oms import errors as E
from tradesim.services.oms.messages import AlgoRequest, OmsError, OrderRequest, QuickOrder

log = logging.getLogger("tradesim.oms.rpc")

SERVICE: Final = "oms"


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """`timeout`: one attempt's wait for an answer; `deadline`: the whole call's budget (s). Between attempts
    the pause doubles from `backoff` up to `max_backoff`, each drawn uniformly from [pause/2, pause]."""

    timeout: float = 2.0
    deadline: float = 10.0
    backoff: float = 0.02
    max_backoff: float = 0.5

    def __post_init__(self) -> None:
        if not (self.timeout > 0 and self.deadline > 0 and 0 < self.backoff <= self.max_backoff):
            raise ValueError(f"retry policy needs timeout > 0, deadline > 0 and 0 < backoff <= max_backoff: {self!r}")


DEFAULT_POLICY: Final = RetryPolicy()


class OmsUnavailableError(BusError):
    """No OMS leader answered before the deadline; `last` is the final attempt's failure. Whether a timed-out
    attempt executed is unknown: ask `get_order` with the same client_order_id (a retry is safe)."""

    def __init__(self, method: str, attempts: int, last: str) -> None:
        super().__init__(f"rpc.{SERVICE}.{method}: no OMS leader answered: failed after {attempts} attempt(s): "
                         f"{last}")
        self.method = method
        self.attempts = attempts
        self.last = last


def with_client_order_id(request: msgspec.Struct) -> msgspec.Struct:
    """A new-order (or algo) request with a client id (a fresh uuid when it has none), so retries are safe."""
    if isinstance(request, OrderRequest | QuickOrder) and not request.client_order_id:
        return msgspec.structs.replace(request, client_order_id=uuid.uuid4().hex[:24])
    if isinstance(request, AlgoRequest) and not request.client_id:
        return msgspec.structs.replace(request, client_id=uuid.uuid4().hex[:24])
    return request


async def call_oms(bus: Bus, method: str, request: msgspec.Struct, *, policy: RetryPolicy = DEFAULT_POLICY,
                   service: str = SERVICE, rng: random.Random | None = None) -> msgspec.Struct:
    """Send `request` to `rpc.{service}.{method}` and return the reply, retrying until `policy.deadline`
    while no leader takes it (no responders, a timeout, or `OmsError(not_active)`).

    Raises OmsUnavailableError when the deadline passes, RemoteError when the handler failed, and other
    BusErrors (closed connection, undecodable reply) at once.
    """
    request = with_client_order_id(request)
    subject = subjects.rpc(service, method)
    loop = asyncio.get_running_loop()
    end = loop.time() + policy.deadline
    pause = policy.backoff
    draw = (rng or random).uniform
    attempts = 0
    while True:
        attempts += 1
        left = end - loop.time()
        last: str
        try:
            reply = await bus.request(subject, request, timeout=max(min(policy.timeout, left), 0.001))
        except (NoRespondersError, RequestTimeoutError, TimeoutError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if not (isinstance(reply, OmsError) and reply.error == E.NOT_ACTIVE):
                return reply
            last = f"{E.NOT_ACTIVE}: {reply.message}"
        delay = draw(pause / 2, pause)
        if loop.time() + delay >= end:
            raise OmsUnavailableError(method, attempts, last)
        log.debug("%s: %s; retry %d in %.3f s", subject, last, attempts, delay)
        await asyncio.sleep(delay)
        pause = min(pause * 2, policy.max_backoff)
