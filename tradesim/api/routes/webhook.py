"""POST /webhook/signal: an HMAC-signed trading signal, verified, normalized and published on `signals.normalized`.

Order of checks (each a distinct code): headers, timestamp window and signature → 401; nonce replay
→ 401; body schema → 400; a correlation id already answered → 200 with the first answer (nothing is
published again); else 202 once the signal is on the bus. No JWT: the HMAC key is the credential.
"""

from __future__ import annotations

import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from litestar import Request, Response, post
from litestar.openapi import ResponseSpec

from tradesim.api.errors import ApiError
from tradesim.api.metrics import Metrics
from tradesim.api.models import SignalOut
from tradesim.api.openapi import request_body
from tradesim.bus import Bus, BusError, register, subjects
from tradesim.domain import Instrument
from tradesim.logging import get_logger
from tradesim.services.config import SystemConfig
from tradesim.services.signals.messages import SIGNALS_MESSAGES, Signal
from tradesim.services.signals.schema import SignalError, SignalIn, parse, side_of, to_ticks
from tradesim.services.signals.verify import NonceCacheFullError, WebhookAuthError, WebhookVerifier

log = get_logger("tradesim.webhook")

SECRET_FILE = "webhook.secret"


def webhook_secrets(config: SystemConfig) -> list[str]:
    """`[signals] secret` (else `<data_dir>/webhook.secret`, created 0600 on first use) and `extra_secrets`."""
    sig = config.signals
    primary = sig.secret
    if not primary:
        path = Path(config.settings.data_dir) / SECRET_FILE
        try:
            primary = path.read_text().strip()
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                primary = path.read_text().strip()
            else:
                primary = secrets.token_hex(32)
                with os.fdopen(fd, "w") as f:
                    f.write(primary + "\n")
    return [primary, *(s for s in sig.extra_secrets if s)]


class Webhook:
    """The webhook's state in one API process: verifier (nonces) and the answers by correlation id."""

    def __init__(self, bus: Bus, config: SystemConfig, metrics: Metrics, *,
                 clock: Callable[[], float] = time.time) -> None:
        sig = config.signals
        self.bus = bus
        self.metrics = metrics
        self.verifier = WebhookVerifier(webhook_secrets(config), window=sig.window, max_nonces=sig.max_nonces,
                                        clock=clock)
        self.instruments: dict[str, Instrument] = {i.symbol: i for i in config.instruments}
        self.max_body = sig.max_body
        self.max_answers = sig.max_correlation_ids
        self.answers: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.clock = clock
        register(*SIGNALS_MESSAGES)

    def refuse(self, status: int, code: str, message: str, **extra: Any) -> ApiError:
        self.metrics.webhook.inc(code)
        log.info("signal refused", error=code, message=message)
        return ApiError(status, code, message, **extra)

    async def receive(self, request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
        body = await request.body()
        if len(body) > self.max_body:
            raise self.refuse(413, "body_too_large", f"signal body over {self.max_body} bytes")
        h = request.headers
        try:
            key_id = self.verifier.verify(h.get("x-timestamp"), h.get("x-nonce"), h.get("x-signature"), body)
        except WebhookAuthError as exc:
            raise self.refuse(401, exc.code, exc.message) from None
        except NonceCacheFullError as exc:
            raise self.refuse(429, "too_many_signals", f"too many signals in the window: {exc}",
                              headers={"Retry-After": "1"}) from None
        try:
            given, unknown = parse(body)
        except SignalError as exc:
            self.metrics.unknown_fields.inc(amount=len(exc.unknown_fields))
            raise self.refuse(400, exc.code, exc.message, unknown_fields=exc.unknown_fields or None) from None
        if unknown:
            self.metrics.unknown_fields.inc(amount=len(unknown))
        cid = given.correlation_id
        with structlog.contextvars.bound_contextvars(correlation_id=cid):
            first = self.answers.get(cid)
            if first is not None:
                self.metrics.webhook.inc("duplicate")
                log.info("duplicate signal", source=given.source)
                return Response({**first, "duplicate": True}, status_code=200)
            instrument = self.instruments.get(given.symbol)
            if instrument is None:
                raise self.refuse(400, "unknown_symbol", f"{given.symbol!r} is not a listed instrument",
                                  unknown_fields=unknown or None)
            try:
                price = None if given.price is None else to_ticks(instrument, given.price)
            except SignalError as exc:
                raise self.refuse(400, exc.code, exc.message) from None
            received = int(self.clock() * 1e9)
            signal = Signal(correlation_id=cid, source=given.source, symbol=given.symbol, side=side_of(given.side),
                            strength=given.strength, price=price, qty=given.qty,
                            ts=int(given.ts.timestamp() * 1e9) if given.ts is not None else received,
                            received_ts=received, key_id=key_id, unknown_fields=unknown)
            answer: dict[str, Any] = {"status": "accepted", "correlation_id": cid, "symbol": signal.symbol,
                                      "side": signal.side.value, "strength": signal.strength,
                                      "unknown_fields": unknown, "duplicate": False}
            self.answers[cid] = answer  # before the await: a concurrent duplicate sees it
            while len(self.answers) > self.max_answers:
                self.answers.popitem(last=False)
            try:
                await self.bus.publish(subjects.SIGNALS_NORMALIZED, signal)
            except BusError as exc:
                del self.answers[cid]  # not published: a retry may go
                raise self.refuse(503, "service_unavailable", f"could not publish the signal: {exc}") from None
            self.metrics.webhook.inc("accepted")
            log.info("signal accepted", source=signal.source, symbol=signal.symbol, side=signal.side.value,
                     strength=signal.strength, unknown_fields=unknown)
            return Response(answer, status_code=202)


@post("/webhook/signal", status_code=202, security=[{}], operation_class=request_body(
    SignalIn, description="A trading signal; unknown fields are tolerated and reported."), responses={
    202: ResponseSpec(SignalOut, description="the signal is on the bus", generate_examples=False),
    200: ResponseSpec(SignalOut, description="a correlation id already answered: the first answer, duplicate true",
                      generate_examples=False)})
async def receive_signal(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    """A trading signal signed with HMAC-SHA256(secret, "X-Timestamp.X-Nonce.body") in X-Signature (hex).
    Body: correlation_id, source, symbol, side (buy|sell), strength (0..1), price?, qty?, ts?."""
    hook: Webhook = request.app.state["webhook"]
    return await hook.receive(request)


ROUTES = [receive_signal]
