"""GET /metrics (Prometheus text, no auth, for scrapers) and GET /api/v1/system/metrics (percentiles, any role)."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get
from litestar.di import Provide

from tradesim.api.auth import Caller, provide_principal
from tradesim.api.metrics import Metrics

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


ROUTES = [prometheus]
V1_ROUTES = [system_metrics]
