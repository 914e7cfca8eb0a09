"""The API's error answers (`{"error", "message", ...}` with a 4xx/5xx status) as typed exceptions.

A caller catches what it can act on — `Rejected` (the order exists, refused), `RateLimited` (wait
`retry_after`), `Unauthorized` (log in again) — and lets the rest propagate as `ApiError`.
"""

from __future__ import annotations

from typing import Any

import msgspec

from tradesim.client.models import Order


class ClientError(Exception):
    """Anything the client raises on its own behalf (transport failures, unexpected answers)."""


class TransportError(ClientError):
    """The server could not be reached, or the connection broke before an answer (after any retries)."""


class ApiError(ClientError):
    """An error answer of the API: HTTP `status`, stable snake_case `error` code, human `message`."""

    def __init__(self, status: int, error: str, message: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {error}: {message}")
        self.status = status
        self.error = error
        self.message = message
        self.body: dict[str, Any] = body or {}


class BadRequest(ApiError):
    """400: the request was malformed (bad price, off tick, unknown field); nothing was changed."""


class Unauthorized(ApiError):
    """401: missing, invalid or expired token, or wrong credentials."""


class Forbidden(ApiError):
    """403: the role may not do this (a viewer placing an order), or not on that account."""


class NotFound(ApiError):
    """404: unknown order, symbol, account or algo — or another account's, which a trader may not see."""


class Conflict(ApiError):
    """409: conflicts with the order's state (duplicate client_order_id, already closed, pending)."""


class Rejected(ApiError):
    """422: a well-formed order refused by compliance, risk or the engine; it exists as `order` (REJECTED)."""

    def __init__(self, status: int, error: str, message: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(status, error, message, body)
        raw = self.body.get("order")
        self.order: Order | None = None
        if isinstance(raw, dict):
            try:
                self.order = msgspec.convert(raw, Order)
            except msgspec.ValidationError:
                self.order = None
        order_id = self.body.get("order_id")
        self.order_id: str | None = order_id if isinstance(order_id, str) else (
            self.order.order_id if self.order else None)


class RateLimited(ApiError):
    """429: over the rate limit; `retry_after` is the server's Retry-After in seconds."""

    def __init__(self, status: int, error: str, message: str, body: dict[str, Any] | None = None,
                 retry_after: float = 1.0) -> None:
        super().__init__(status, error, message, body)
        self.retry_after = retry_after


class ServerError(ApiError):
    """5xx: a service failed or did not answer in time (502 service_error, 503 service_unavailable)."""


_BY_STATUS: dict[int, type[ApiError]] = {400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound,
                                         409: Conflict, 422: Rejected}


def error_for(status: int, body: bytes, headers: dict[str, str] | None = None) -> ApiError:
    """The typed exception for an error answer (a body that is not the API's JSON still gives one)."""
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError:
        data = None
    if not isinstance(data, dict):
        data = {}
    error = str(data.get("error") or f"http_{status}")
    message = str(data.get("message") or body[:200].decode(errors="replace") or f"HTTP {status}")
    if status == 429:
        raw = (headers or {}).get("retry-after", "")
        try:
            wait = float(raw)
        except ValueError:
            wait = 1.0
        return RateLimited(status, error, message, data, retry_after=wait)
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else ApiError)
    return cls(status, error, message, data)
