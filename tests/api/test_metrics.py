"""GET /metrics (Prometheus text that parses, counters that move) and GET /api/v1/system/metrics (percentiles)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.api.conftest import Stack
from tradesim.api.metrics import Histogram, Metrics, instrument_system, percentile


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def order(side: str, price: str, qty: int) -> dict[str, Any]:
    return {"symbol": "AAPL.SIM", "side": side, "type": "limit", "tif": "GTC", "price": price, "qty": qty}


async def test_prometheus_text_parses_and_counters_move(client: httpx.AsyncClient, stack: Stack) -> None:
    r = await client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    before = r.text
    names = families(before)
    for name in ("tradesim_api_orders", "tradesim_api_order_latency_seconds", "tradesim_trades",
                 "tradesim_orders", "tradesim_bus_deliveries", "tradesim_match_latency_seconds",
                 "tradesim_journal_commit_latency_seconds", "tradesim_websocket_clients",
                 "tradesim_rate_limited_requests", "tradesim_webhook_signals"):
        assert name in names, name
    assert names["tradesim_api_order_latency_seconds"].type == "histogram"

    assert (await client.post("/api/v1/orders", headers=stack.auth("bob"), json=order("sell", "190.00", 5))
            ).status_code == 201
    assert (await client.post("/api/v1/orders", headers=stack.auth("alice"), json=order("buy", "190.00", 5))
            ).status_code == 201
    assert (await client.post("/api/v1/orders", headers=stack.auth("alice"), json=order("buy", "190.00", 5000))
            ).status_code == 422
    deadline = time.monotonic() + 5
    while value((await client.get("/metrics")).text, "tradesim_trades_total", symbol="AAPL.SIM") < 1:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    after = (await client.get("/metrics")).text
    assert value(after, "tradesim_api_orders_total", result="accepted") == 2
    assert value(after, "tradesim_api_orders_total", result="rejected") == 1
    assert value(after, "tradesim_api_order_latency_seconds_count") == 3
    assert value(after, "tradesim_api_order_latency_seconds_bucket", le="+Inf") == 3
    assert value(after, "tradesim_trades_total", symbol="AAPL.SIM") == 1
    assert value(after, "tradesim_traded_qty_total", symbol="AAPL.SIM") == 5
    assert value(after, "tradesim_orders_total", event="accepted") >= 2
    assert value(after, "tradesim_bus_deliveries_total", subject="trades.executed") == 1
    assert value(after, "tradesim_bus_delivery_latency_seconds_count") == 1
    assert value(after, "tradesim_http_requests_total", code="201") == 2


async def test_rate_limited_requests_are_counted(stack: Stack) -> None:
    import msgspec

    config = msgspec.structs.replace(stack.config, api=msgspec.structs.replace(
        stack.config.api, login_rate_limit=0.001, login_burst=1))
    from tradesim.api import create_app
    from tradesim.api.metrics import Metrics as M

    metrics = M()
    app = create_app(stack.bus, config, stack.users, secret="s" * 40, metrics=metrics)
    from tests.api.conftest import http

    async with http(app) as c:
        codes = [(await c.post("/api/v1/auth/token", json={"username": "x", "password": "y"})).status_code
                 for _ in range(3)]
    assert codes.count(429) == 2
    assert metrics.rate_limited.get() == 2


async def test_system_metrics_has_percentiles(client: httpx.AsyncClient, stack: Stack) -> None:
    assert (await client.get("/api/v1/system/metrics")).status_code == 401
    for i in range(20):
        r = await client.post("/api/v1/orders", headers=stack.auth("alice"), json=order("buy", f"18{i % 10}.00", 1))
        assert r.status_code == 201, r.text
    r = await client.get("/api/v1/system/metrics", headers=stack.auth("vic"))
    assert r.status_code == 200, r.text
    body = r.json()
    lat = body["latency_ms"]
    assert lat["samples"] == 20
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["p99.9"] <= lat["max"]
    assert body["orders"]["total"] == 20 and body["orders"]["by_result"] == {"accepted": 20}
    assert body["orders"]["throughput_per_s"] > 0


def test_percentiles_and_histogram_are_exact() -> None:
    values = [float(v) for v in range(1, 1001)]
    assert [percentile(values, q) for q in (50, 95, 99, 99.9, 100)] == [500.0, 950.0, 990.0, 999.0, 1000.0]
    assert percentile([], 50) == 0.0
    h = Histogram("x_seconds", "x", (0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 3.0):
        h.observe(v)
    assert h.expose() == ['x_seconds_bucket{le="0.1"} 2', 'x_seconds_bucket{le="1"} 3', 'x_seconds_bucket{le="+Inf"} 4',
                          "x_seconds_sum 3.65", "x_seconds_count 4"]


async def test_instrumented_venue_reports_match_and_commit_latency(client: httpx.AsyncClient, stack: Stack) -> None:
    metrics: Metrics = stack.app().state["metrics"]
    instrument_system(SimpleNamespace(venue=stack.venue, journal=stack.venue.journal), metrics)  # type: ignore[arg-type]
    r = await client.post("/api/v1/orders", headers=stack.auth("alice"), json=order("buy", "189.00", 1))
    assert r.status_code == 201
    assert metrics.match_latency.count == 1 and metrics.journal_commit.count == 1
    assert metrics.journal_appends.read is not None and metrics.journal_appends.read() >= 1
    assert stack.venue.engine.book("AAPL.SIM").depth(1)[0][0][0] == 18900  # the engine still works
