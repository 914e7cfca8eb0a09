"""`create_app`: the Litestar application over a bus and a configuration (REST under /api/v1, OpenAPI at /schema).

The app holds no trading state: every request is an RPC to the services, so any number of API processes
can run against one bus. `tradesim run` serves it with uvicorn in the services' event loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from litestar import Litestar, Router
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from tradesim.api.auth import Authenticator, jwt_secret
from tradesim.api.context import Context
from tradesim.api.errors import EXCEPTION_HANDLERS, document_errors
from tradesim.api.feeds import Hub
from tradesim.api.metrics import Metrics
from tradesim.api.ratelimit import RateLimiter
from tradesim.api.routes import accounts, algos, auth, market, ops, orders, webhook
from tradesim.api.routes import system as system_routes
from tradesim.api.rpc import Services
from tradesim.api.ui import ROUTES as UI_ROUTES
from tradesim.api.ui import template_config
from tradesim.api.ws import DEFAULT_HEARTBEAT, DEFAULT_QUEUE, WsSettings
from tradesim.api.ws import ROUTES as WS_ROUTES
from tradesim.bus import Bus
from tradesim.services.config import SystemConfig
from tradesim.store.users import UserStore

API_PREFIX = "/api/v1"
DEFAULT_RPC_TIMEOUT = 5.0


def create_app(bus: Bus, config: SystemConfig, users: UserStore, *, secret: str | None = None,
               rpc_timeout: float = DEFAULT_RPC_TIMEOUT, clock: Callable[[], float] = time.time,
               monotonic: Callable[[], float] = time.monotonic, debug: bool = False,
               metrics: Metrics | None = None,
               ws_queue_size: int = DEFAULT_QUEUE, ws_heartbeat: float = DEFAULT_HEARTBEAT) -> Litestar:
    """The API app. `secret` overrides `jwt_secret(config)` (the `[api]` key or `<data_dir>/jwt.secret`);
    `clock` (epoch seconds) stamps and checks tokens and `monotonic` drives the rate limits (tests fake both).
    The bus and the user store belong to the caller. `ws_queue_size` frames waiting make a WebSocket client
    slow (dropped); `ws_heartbeat` is the seconds between WebSocket heartbeats."""
    api = config.api
    authenticator = Authenticator(secret if secret is not None else jwt_secret(config), api.token_ttl,
                                  RateLimiter(api.rate_limit, api.rate_burst, clock=monotonic), clock=clock,
                                  key_exists=users.key_exists, key_recheck=api.key_recheck, monotonic=monotonic)
    ctx = Context(Services(bus, rpc_timeout), config, users, authenticator,
                  RateLimiter(api.login_rate_limit, api.login_burst, clock=monotonic))
    hub = Hub(bus, ctx.services, ctx.instruments)
    metrics = metrics or Metrics(monotonic=monotonic)  # /metrics, /api/v1/system/metrics
    metrics.bind(bus)
    v1_routes = [*auth.ROUTES, *orders.ROUTES, *market.ROUTES, *accounts.ROUTES, *algos.ROUTES,
                 *system_routes.V1_ROUTES]
    other_routes = [*ops.ROUTES, *system_routes.ROUTES, *webhook.ROUTES]
    document_errors([*v1_routes, *other_routes])  # the {"error", "message"} shape, in the OpenAPI schema
    v1 = Router(path=API_PREFIX, route_handlers=v1_routes)
    return Litestar(
        route_handlers=[v1, *other_routes, *UI_ROUTES, *WS_ROUTES],
        middleware=[metrics.middleware],
        logging_config=None,  # `tradesim run` configures logging (tradesim.logging); Litestar must not replace it
        on_startup=[hub.start],
        on_shutdown=[hub.stop],
        template_config=template_config(),
        exception_handlers=EXCEPTION_HANDLERS,
        state={"ctx": ctx, "auth": authenticator, "hub": hub, "metrics": metrics,
               "webhook": webhook.Webhook(bus, config, metrics, clock=clock),
               "ws": WsSettings(queue_size=ws_queue_size, heartbeat=ws_heartbeat)},  # type: ignore[arg-type]
        openapi_config=OpenAPIConfig(
            title="tradesim", version="1", description="A simulated exchange and the trading stack around it.",
            path="/schema",
            components=Components(security_schemes={"bearer": SecurityScheme(
                type="http", scheme="bearer", bearer_format="JWT")}),
            security=[{"bearer": []}],
        ),
        debug=debug,
    )
