"""What every handler needs, kept in the app's state: the services, the instruments, auth and users."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.di import NamedDependency

from tradesim.api.auth import Authenticator
from tradesim.api.ratelimit import RateLimiter
from tradesim.api.rpc import Services
from tradesim.domain import Instrument
from tradesim.services.config import SystemConfig
from tradesim.store.users import UserStore


class Context:
    def __init__(self, services: Services, config: SystemConfig, users: UserStore, auth: Authenticator,
                 login_limiter: RateLimiter) -> None:
        self.services = services
        self.config = config
        self.users = users
        self.auth = auth
        self.login_limiter = login_limiter
        self.instruments: dict[str, Instrument] = {i.symbol: i for i in config.instruments}


def context_of(request: Request[Any, Any, Any]) -> Context:
    """The app's Context, for a handler that takes it from its request rather than as a dependency."""
    ctx: Context = request.app.state["ctx"]
    return ctx


async def provide_context(request: Request[Any, Any, Any]) -> Context:
    """Litestar dependency: the app's Context."""
    return context_of(request)


Ctx = NamedDependency[Context]
"""A handler parameter `ctx: Ctx` gets the app's Context (with `provide_context`)."""
