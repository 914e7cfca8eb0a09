"""Every failure the API answers as JSON `{"error": code, "message": text, ...}` with the right status.

`ApiError` is what handlers raise; the handlers registered here also turn Litestar's own exceptions
(validation, 404 route, 405) and any bug into that shape, so no client ever sees an HTML page or a
traceback, and bad input never becomes a 500.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import ResponseSpec

from tradesim.api.models import ErrorOut

log = logging.getLogger("tradesim.api")


class ApiError(Exception):
    """A refused request: HTTP `status`, stable snake_case `error`, human `message`, optional extra fields."""

    def __init__(self, status: int, error: str, message: str, *, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.headers = headers or {}
        self.extra = extra


def error_response(status: int, error: str, message: str, headers: dict[str, str] | None = None,
                   **extra: Any) -> Response[dict[str, Any]]:
    body: dict[str, Any] = {"error": error, "message": message}
    body.update({k: v for k, v in extra.items() if v is not None})
    return Response(body, status_code=status, headers=headers or {}, media_type="application/json")


def _api_error(_: Request[Any, Any, Any], exc: ApiError) -> Response[dict[str, Any]]:
    return error_response(exc.status, exc.error, exc.message, exc.headers, **exc.extra)


_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 413: "body_too_large", 415: "unsupported_media_type",
               429: "rate_limited", 503: "service_unavailable"}


def _validation(_: Request[Any, Any, Any], exc: ValidationException) -> Response[dict[str, Any]]:
    """Litestar's own parameter checks (a query parameter of the wrong type, a missing one)."""
    details = exc.extra if isinstance(exc.extra, list) else []
    parts = [f"{d.get('key', '?')}: {d.get('message', '')}" for d in details if isinstance(d, dict)]
    message = "; ".join(parts) or str(exc.detail)
    return error_response(400, "invalid_parameter", message)


def _http(_: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    headers = {k: v for k, v in (exc.headers or {}).items()}
    return error_response(exc.status_code, code, str(exc.detail), headers)


def _bug(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    log.exception("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal", f"internal error ({type(exc).__name__}); see the server log")


_DOCUMENTED = {400: "malformed request or parameter; nothing changed", 401: "missing, invalid or expired token",
               403: "the role may not do this", 404: "unknown order, symbol, account or route",
               405: "method not allowed", 409: "conflicts with the order's state",
               422: "order refused by compliance, risk or the engine (it exists as rejected)",
               429: "rate limited (see Retry-After)", 500: "a bug (logged)", 502: "a service failed answering",
               503: "a service is not running or did not answer in time"}
ERROR_RESPONSES: dict[int, ResponseSpec] = {
    status: ResponseSpec(data_container=ErrorOut, description=text, generate_examples=False)
    for status, text in _DOCUMENTED.items()}


def document_errors(handlers: list[Any]) -> None:
    """Declare the error responses above in the OpenAPI schema of every HTTP handler in `handlers` (instead of
    Litestar's default 400 `{status_code, detail}` shape, which these handlers never send). A handler's own
    `responses` win."""
    for handler in handlers:
        if isinstance(handler, HTTPRouteHandler):
            handler.responses = {**ERROR_RESPONSES, **(handler.responses or {})}


EXCEPTION_HANDLERS: dict[Any, Any] = {
    ApiError: _api_error,
    ValidationException: _validation,
    HTTPException: _http,
    Exception: _bug,
}
