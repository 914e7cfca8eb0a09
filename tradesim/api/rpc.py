"""Calls to the services over the bus, with their failures mapped to HTTP: no responder or no answer is
503, an OMS/accounts/risk refusal is the 4xx its code means. Handlers never see a bus exception.

Calls to the OMS go through `call_oms`, which retries while no leader takes them (a standby's
`not_active`, no responders, a timeout) within the call's budget: an OMS failover shows to an HTTP client
as latency only. Retrying is safe because every new order carries a client_order_id."""

from __future__ import annotations

from typing import Final, TypeVar

import msgspec

from tradesim.api.errors import ApiError
from tradesim.bus import Bus, BusError, NoRespondersError, RemoteError, RequestTimeoutError, subjects
from tradesim.services.accounts.messages import ACCOUNTS_MESSAGES, AccountsError
from tradesim.services.alerts import RiskAlert
from tradesim.services.marketdata.messages import MARKETDATA_MESSAGES
from tradesim.services.oms.messages import OMS_MESSAGES, OmsError
from tradesim.services.oms.rpc import OmsUnavailableError, RetryPolicy, call_oms
from tradesim.services.risk.monitor_messages import RISK_MONITOR_MESSAGES, RiskError
from tradesim.services.signals.messages import SIGNALS_MESSAGES
from tradesim.services.venue.messages import VENUE_MESSAGES

T = TypeVar("T", bound=msgspec.Struct)

# OMS / accounts / risk error codes → HTTP status; any other code (a risk rule refusing a cancel) is 422.
OMS_ATTEMPT: Final = 2.0
"""Longest wait (s) for one OMS attempt: a request to a leader that just died is retried on the next one."""

STATUS: Final = {
    "unknown_account": 404, "unknown_symbol": 404, "unknown_order": 404, "unknown_hold": 404,
    "bad_request": 400, "bad_qty": 400, "bad_price": 400, "missing_stop_price": 400, "malformed": 400,
    "duplicate_client_order_id": 409, "order_pending": 409, "order_closed": 409, "hold_already_decided": 409,
    "venue_unavailable": 503, "internal": 500,
}


class Services:
    """The bus and the timeout the API uses to reach the OMS, venue, accounts and risk monitor."""

    def __init__(self, bus: Bus, timeout: float) -> None:
        self.bus = bus
        self.timeout = timeout
        # Every message the API sends or reads: in its own process (the `api` role) no service module
        # has registered them on the codec.
        bus.codec.register(*OMS_MESSAGES, *ACCOUNTS_MESSAGES, *RISK_MONITOR_MESSAGES, *VENUE_MESSAGES,
                           *MARKETDATA_MESSAGES, *SIGNALS_MESSAGES, RiskAlert)

    async def call(self, service: str, method: str, request: msgspec.Struct, expect: type[T],
                   *, timeout: float | None = None) -> T:
        """The reply if it is an `expect`; a service error code becomes its ApiError."""
        subject = subjects.rpc(service, method)
        budget = timeout or self.timeout
        try:
            if service == "oms":
                policy = RetryPolicy(timeout=min(budget, OMS_ATTEMPT), deadline=budget)
                reply = await call_oms(self.bus, method, request, policy=policy)
            else:
                reply = await self.bus.request(subject, request, timeout=budget)
        except OmsUnavailableError as exc:
            raise ApiError(503, "service_unavailable", f"no OMS leader answered within {budget:g} s "
                                                       f"({exc.attempts} attempt(s); last: {exc.last})") from None
        except NoRespondersError:
            raise ApiError(503, "service_unavailable", f"the {service} service is not running") from None
        except RequestTimeoutError:
            raise ApiError(503, "service_unavailable",
                           f"the {service} service did not answer within {timeout or self.timeout:g} s") from None
        except RemoteError as exc:
            raise ApiError(502, "service_error", f"the {service} service failed: {exc.error_type}: "
                                                 f"{exc.message}") from None
        except BusError as exc:
            raise ApiError(503, "service_unavailable", f"the bus failed reaching {service}: {exc}") from None
        if isinstance(reply, expect):
            return reply
        if isinstance(reply, OmsError | AccountsError | RiskError):
            raise ApiError(STATUS.get(reply.error, 422), reply.error, reply.message)
        raise ApiError(502, "service_error", f"the {service} service answered {type(reply).__name__}, "
                                             f"expected {expect.__name__}")
