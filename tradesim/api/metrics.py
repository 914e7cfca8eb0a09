"""The API process's metrics: Prometheus exposition for /metrics and order-latency percentiles.

Collected cheaply where they happen: an ASGI middleware times every HTTP request (order latency,
results, 429s, open WebSockets); one bus subscription counts the venue's order events and trades and
how late they arrive; in embedded mode `instrument_system` also times the engine and the journal.
The exposition is written here (text format 0.0.4) to keep the hot path free of locks and deps.
"""

from __future__ import annotations

import bisect
import math
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from tradesim.bus import Bus, Delivery, Subscription, subjects
from tradesim.domain import (
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderModified,
    OrderRejected,
    OrderTriggered,
    Trade,
)

if TYPE_CHECKING:
    from tradesim.services.system import System


LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
FAST_BUCKETS = (1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3)
ORDERS_PATH = "/api/v1/orders"
SAMPLES = 100_000  # order latencies kept for percentiles
THROUGHPUT_WINDOW = 60.0  # seconds
_EVENT_NAMES: dict[type[msgspec.Struct], str] = {
    OrderAccepted: "accepted", OrderRejected: "rejected", OrderCanceled: "canceled", OrderExpired: "expired",
    OrderModified: "modified", OrderTriggered: "triggered", Trade: "fill",
}


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    if not names:
        return ""
    inner = ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True))
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if isinstance(value, float) and not value.is_integer() else str(int(value))


class Counter:
    """A monotonically increasing count per label values."""

    kind = "counter"

    def __init__(self, name: str, help: str, labels: tuple[str, ...] = ()) -> None:
        self.name, self.help, self.label_names = name, help, labels
        self.values: dict[tuple[str, ...], float] = {} if labels else {(): 0.0}

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def get(self, *labels: str) -> float:
        return self.values.get(labels, 0.0)

    def expose(self) -> list[str]:
        return [f"{self.name}_total{_labels(self.label_names, k)} {_num(v)}" for k, v in sorted(self.values.items())]


class Gauge:
    """A value read when scraped (from a callback) or set."""

    kind = "gauge"

    def __init__(self, name: str, help: str, read: Callable[[], float] | None = None) -> None:
        self.name, self.help, self.read = name, help, read
        self.value = 0.0

    def expose(self) -> list[str]:
        return [f"{self.name} {_num(self.read() if self.read is not None else self.value)}"]


class Histogram:
    """Cumulative buckets, sum and count, as Prometheus histograms."""

    kind = "histogram"

    def __init__(self, name: str, help: str, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.name, self.help, self.bounds = name, help, buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def expose(self) -> list[str]:
        lines, running = [], 0
        for bound, n in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += n
            lines.append(f'{self.name}_bucket{{le="{_num(bound)}"}} {running}')
        lines.append(f"{self.name}_sum {self.sum!r}")
        lines.append(f"{self.name}_count {self.count}")
        return lines


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted values (q in 0..100); 0.0 for none."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(round(q * len(ordered) / 100.0, 9)))
    return ordered[min(rank, len(ordered)) - 1]


class Metrics:
    """Every metric of one API process. `monotonic` is injectable for tests."""

    def __init__(self, *, monotonic: Callable[[], float] = time.monotonic,
                 wall_ns: Callable[[], int] = time.time_ns) -> None:
        self._monotonic = monotonic
        self._wall_ns = wall_ns
        self.started = monotonic()
        self.http = Counter("tradesim_http_requests", "HTTP requests answered, by status code", ("code",))
        self.orders_api = Counter("tradesim_api_orders", "POST /api/v1/orders by result", ("result",))
        self.order_latency = Histogram("tradesim_api_order_latency_seconds",
                                       "POST /api/v1/orders latency, request in to response out")
        self.rate_limited = Counter("tradesim_rate_limited_requests", "requests refused with 429")
        self.ws_clients = Gauge("tradesim_websocket_clients", "open WebSocket connections")
        self.webhook = Counter("tradesim_webhook_signals", "POST /webhook/signal by result", ("result",))
        self.unknown_fields = Counter("tradesim_webhook_unknown_fields", "unknown fields seen in signal bodies")
        self.orders = Counter("tradesim_orders", "venue order events seen on the bus", ("event",))
        self.trades = Counter("tradesim_trades", "trades executed (public tape)", ("symbol",))
        self.traded_qty = Counter("tradesim_traded_qty", "units traded (public tape)", ("symbol",))
        self.deliveries = Counter("tradesim_bus_deliveries", "bus messages delivered to this process's metrics "
                                                             "subscription, by subject", ("subject",))
        self.delivery_latency = Histogram("tradesim_bus_delivery_latency_seconds",
                                          "venue command time to trade print delivered here")
        self.match_latency = Histogram("tradesim_match_latency_seconds",
                                       "engine time per command (embedded mode)", FAST_BUCKETS)
        self.journal_commit = Histogram("tradesim_journal_commit_latency_seconds",
                                        "journal append to durable, group commit included (embedded mode)")
        self.journal_appends = Gauge("tradesim_journal_appends", "commands journaled (embedded mode)")
        self.journal_transactions = Gauge("tradesim_journal_transactions", "group commits (embedded mode)")
        self.uptime = Gauge("tradesim_uptime_seconds", "seconds since the API started",
                            lambda: self._monotonic() - self.started)
        self.families: list[Counter | Gauge | Histogram] = [
            self.http, self.orders_api, self.order_latency, self.rate_limited, self.ws_clients, self.webhook,
            self.unknown_fields, self.orders, self.trades, self.traded_qty, self.deliveries, self.delivery_latency,
            self.match_latency, self.journal_commit, self.journal_appends, self.journal_transactions, self.uptime]
        self.samples: deque[tuple[float, float]] = deque(maxlen=SAMPLES)  # (done at, latency s) of orders
        self._bus: Bus | None = None
        self._sub: Subscription | None = None
        self._tape: Subscription | None = None
        self._starting = False

    def bind(self, bus: Bus) -> None:
        """The bus to watch; the subscription starts with the first request (tests run no lifespan)."""
        self._bus = bus

    # ---- HTTP ----------------------------------------------------------------------------------
    def observe_http(self, method: str, path: str, status: int, seconds: float) -> None:
        self.http.inc(str(status))
        if status == 429:
            self.rate_limited.inc()
        if method == "POST" and path.rstrip("/") == ORDERS_PATH:
            self.order_latency.observe(seconds)
            self.orders_api.inc(_order_result(status))
            self.samples.append((self._monotonic(), seconds))

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """Litestar middleware factory: times requests and counts open WebSockets."""
        async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
            kind = scope["type"]
            if kind == ScopeType.WEBSOCKET:
                self.ws_clients.value += 1
                try:
                    await app(scope, receive, send)
                finally:
                    self.ws_clients.value -= 1
                return
            if kind != ScopeType.HTTP:
                await app(scope, receive, send)
                return
            if self._sub is None and self._bus is not None:
                await self.watch(self._bus)
            start = time.perf_counter()
            status = 500

            async def timed_send(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = int(message.get("status", 500))
                await send(message)

            try:
                await app(scope, receive, timed_send)
            finally:
                self.observe_http(str(scope.get("method", "")), scope["path"], status, time.perf_counter() - start)
        return asgi

    # ---- the bus -------------------------------------------------------------------------------
    async def watch(self, bus: Bus) -> None:
        """Subscribes (once) to the venue's order events and the trade tape."""
        if self._sub is not None or self._starting:
            return
        self._starting = True
        try:
            self._sub = await bus.subscribe(subjects.ORDERS_ALL, self._on_event)
            self._tape = await bus.subscribe(subjects.TRADES_EXECUTED, self._on_event)
        finally:
            self._starting = False

    async def _on_event(self, d: Delivery) -> None:
        self.deliveries.inc(d.subject)
        data = d.data
        name = _EVENT_NAMES.get(type(data))
        if name is not None:
            self.orders.inc(name)
            return
        symbol = getattr(data, "symbol", None)
        qty = getattr(data, "qty", None)
        ts = getattr(data, "ts", None)
        if d.subject == subjects.TRADES_EXECUTED and isinstance(symbol, str) and isinstance(qty, int):
            self.trades.inc(symbol)
            self.traded_qty.inc(symbol, amount=qty)
            if isinstance(ts, int) and ts > 0:
                self.delivery_latency.observe(max(0.0, (self._wall_ns() - ts) / 1e9))

    # ---- outputs -------------------------------------------------------------------------------
    def exposition(self) -> str:
        """The Prometheus text format."""
        out: list[str] = []
        for family in self.families:
            name = family.name + ("_total" if family.kind == "counter" else "")
            out.append(f"# HELP {name} {family.help}")
            out.append(f"# TYPE {name} {family.kind}")
            out.extend(family.expose())
        return "\n".join(out) + "\n"

    def summary(self) -> dict[str, Any]:
        """`/api/v1/system/metrics`: order throughput and latency percentiles (ms) of API order requests."""
        now = self._monotonic()
        uptime = max(now - self.started, 1e-9)
        samples = list(self.samples)
        recent = [s for s in samples if now - s[0] <= THROUGHPUT_WINDOW]
        ordered = sorted(lat for _, lat in samples)
        window = min(THROUGHPUT_WINDOW, uptime)
        total = int(self.order_latency.count)
        return {
            "uptime_s": round(uptime, 3),
            "orders": {"total": total, "by_result": {k[0]: int(v) for k, v in sorted(self.orders_api.values.items())},
                       "throughput_per_s": round(len(recent) / window, 3),
                       "window_s": round(window, 3), "mean_per_s": round(total / uptime, 3)},
            "latency_ms": {"samples": len(ordered),
                           "p50": _ms(percentile(ordered, 50)), "p95": _ms(percentile(ordered, 95)),
                           "p99": _ms(percentile(ordered, 99)), "p99.9": _ms(percentile(ordered, 99.9)),
                           "max": _ms(ordered[-1] if ordered else 0.0),
                           "mean": _ms(sum(ordered) / len(ordered) if ordered else 0.0)},
            "http_requests": int(sum(self.http.values.values())),
            "rate_limited": int(self.rate_limited.get()),
            "websocket_clients": int(self.ws_clients.value),
            "trades": int(sum(self.trades.values.values())),
            "venue_orders": {k[0]: int(v) for k, v in sorted(self.orders.values.items())},
            "signals": {k[0]: int(v) for k, v in sorted(self.webhook.values.items())},
        }


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 4)


def _order_result(status: int) -> str:
    if status == 201:
        return "accepted"
    if status == 202:
        return "pending"
    if status == 422:
        return "rejected"
    if status == 429:
        return "rate_limited"
    return "invalid" if status < 500 else "error"


class _VenueTimings:
    """The venue's timing hook, feeding the match and journal-commit histograms."""

    def __init__(self, metrics: Metrics) -> None:
        self.engine = metrics.match_latency.observe
        self.journal = metrics.journal_commit.observe


def instrument_system(system: System, metrics: Metrics) -> None:
    """Connects the embedded venue's timing hook and the journal's counters to /metrics."""
    venue, journal = system.venue, system.journal
    if venue is not None:
        venue.timings = _VenueTimings(metrics)
    metrics.journal_appends.read = lambda: journal.stats.appends
    metrics.journal_transactions.read = lambda: journal.stats.transactions
