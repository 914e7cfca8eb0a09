"""GET /metrics (Prometheus text, no auth, for scrapers), GET /api/v1/system/metrics (percentiles, any role)
and GET /api/v1/system/services (the service registry: every instance of a distributed deployment)."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, get
from litestar.di import Provide

from tradesim.api.auth import Caller, provide_principal
from tradesim.api.context import Context
from tradesim.api.errors import ApiError
from tradesim.api.metrics import Metrics
from tradesim.bus import BusError
from tradesim.cluster.registry import (
    DEFAULT_DEAD_AFTER,
    DEFAULT_STALE_AFTER,
    Health,
    MetricValue,
    State,
    list_instances,
)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@get("/metrics", security=[{}], include_in_schema=True, media_type=CONTENT_TYPE)
async def prometheus(request: Request[Any, Any, Any]) -> Response[str]:
    """Counters, gauges and histograms in the Prometheus text exposition format 0.0.4."""
    metrics: Metrics = request.app.state["metrics"]
    return Response(metrics.exposition(), media_type=CONTENT_TYPE)


@get("/system/metrics", dependencies={"principal": Provide(provide_principal)})
async def system_metrics(request: Request[Any, Any, Any], principal: Caller) -> dict[str, Any]:
    """Order throughput and API order latency percentiles (p50/p95/p99/p99.9, ms) of this API process."""
    metrics: Metrics = request.app.state["metrics"]
    return metrics.summary()


class ServiceInstance(msgspec.Struct, frozen=True, kw_only=True):
    """One registered instance, as `tradesim cluster status --json` shows it, flattened."""

    service: str
    instance_id: str
    role: str
    state: State  # ACTIVE serves; STANDBY waits to take over (single-active services)
    health: Health  # LIVE, STALE (heartbeat late) or DEAD (heartbeat much too late: crashed or cut off)
    heartbeat_age_s: float
    version: str
    started: float  # epoch seconds
    host: str
    pid: int
    port: int | None
    metrics: dict[str, MetricValue]


class ServicesReply(msgspec.Struct, frozen=True, kw_only=True):
    instances: list[ServiceInstance]
    stale_after_s: float
    dead_after_s: float


@get("/system/services", dependencies={"principal": Provide(provide_principal)})
async def system_services(request: Request[Any, Any, Any], principal: Caller,
                          service: str | None = None) -> ServicesReply:
    """Every instance in the service registry (optionally of one `service`): its role, ACTIVE/STANDBY state,
    heartbeat health, where it runs, and its live metrics (orders/s, lag, positions, ...). Any role may read it.
    503 if the registry cannot be read."""
    ctx: Context = request.app.state["ctx"]
    try:
        rows = await list_instances(ctx.services.bus, service=service)
    except (BusError, TimeoutError) as exc:
        raise ApiError(503, "service_unavailable", f"cannot read the service registry: {exc}") from None
    return ServicesReply(
        instances=[ServiceInstance(service=r.info.service, instance_id=r.info.instance_id, role=r.info.role,
                                   state=r.info.state, health=r.health, heartbeat_age_s=round(r.age, 3),
                                   version=r.info.version, started=r.info.started, host=r.info.host,
                                   pid=r.info.pid, port=r.info.port, metrics=r.info.metrics)
                   for r in rows],
        stale_after_s=DEFAULT_STALE_AFTER, dead_after_s=DEFAULT_DEAD_AFTER)


ROUTES = [prometheus]
V1_ROUTES = [system_metrics, system_services]
