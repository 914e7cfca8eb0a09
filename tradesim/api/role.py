"""The `api` role: the whole HTTP API (REST, WebSocket, UI) as its own process over the shared bus, with
users on PostgreSQL so that every API instance knows the same users. Any number may run side by side."""

from __future__ import annotations

from litestar import Litestar

from tradesim.api.app import create_app
from tradesim.api.auth import token_secret
from tradesim.api.metrics import Metrics
from tradesim.cluster.registry import MetricValue
from tradesim.services.roles.processes import RoleProcess
from tradesim.store.users import UserStore, open_users


class ApiRole(RoleProcess):
    """Holds the app, its user store and its metrics; `app` exists once `start()` returned."""

    role = "api"
    users: UserStore | None = None
    app: Litestar | None = None
    api_metrics: Metrics | None = None

    async def start(self) -> None:
        self.users = await open_users(self.config.settings.db)
        self.api_metrics = Metrics()
        self.app = create_app(self.bus, self.config, self.users, metrics=self.api_metrics,
                              secret=await token_secret(self.config, self.users))
        self.started = True

    async def stop(self) -> None:
        if self.users is not None:
            await self.users.close()
        self.users = None

    def metrics(self) -> dict[str, MetricValue]:
        if self.api_metrics is None:
            return {}
        summary = self.api_metrics.summary()
        return {"orders": summary["orders"]["total"], "orders_per_s": summary["orders"]["throughput_per_s"],
                "order_p99_ms": summary["latency_ms"]["p99"], "http_requests": summary["http_requests"],
                "websocket_clients": summary["websocket_clients"]}
