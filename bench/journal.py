"""Journal benchmark: durable appends/s with group commit (fsync on) and the ack latency callers wait.

Prints ONE JSON line with a figure set per backend (sqlite, postgres, jetstream); progress goes to stderr.
Many writer tasks each append in a closed loop (next append once the previous one is acknowledged),
as order-entry sessions do. Targets: SQLite >= 100k/s, PostgreSQL >= 50k/s, ack p99 < 5 ms.
`--backends jetstream` journals to a JetStream stream (a private `nats-server -js` unless `--nats-url`)
and adds `standby_lag`: a warm standby (tradesim.services.venue.standby) following the stream while
orders are journaled at `--lag-rate` per second; lag = standby apply time - the order's append time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from tradesim.domain import Command, NewOrder, OrderType, Side, TimeInForce
from tradesim.store import Journal, JournalError, open_journal
from tradesim.store.journal import DEFAULT_LINGER, DEFAULT_MAX_BATCH

if TYPE_CHECKING:
    from tradesim.bus.natsserver import LocalNatsServer

DEFAULT_PG_URL = os.environ.get("TRADESIM_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def progress(message: str) -> None:
    print(f"bench/journal: {message}", file=sys.stderr, flush=True)


def workload(n: int) -> list[Command]:
    """Realistic limit orders (distinct accounts, ids, prices) to cycle through."""
    return [NewOrder(account=f"acct{i % 97}", client_order_id=f"cl-{i:08d}", symbol="AAPL.SIM",
                     side=Side.BUY if i % 2 else Side.SELL, type=OrderType.LIMIT, tif=TimeInForce.GTC,
                     price=15_000 + i % 50, qty=1 + i % 100, ts=1_700_000_000_000_000_000 + i)
            for i in range(n)]


def percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))] / 1e6


async def measure(journal: Journal, count: int, writers: int) -> dict[str, Any]:
    commands = workload(4096)
    per_writer = max(1, count // writers)
    latencies: list[list[int]] = []
    clock = time.perf_counter_ns

    async def writer(w: int) -> None:
        mine: list[int] = []
        latencies.append(mine)
        append = journal.append
        offset = w * per_writer
        for i in range(per_writer):
            command = commands[(offset + i) % 4096]
            started = clock()
            await append(command, ts=started)
            mine.append(clock() - started)

    # warm up (connections, statement caches, WAL file) outside the measurement
    await asyncio.gather(*(journal.append(c) for c in commands[:writers]))
    before = journal.stats.transactions, journal.stats.appends
    started = time.perf_counter()
    await asyncio.gather(*(writer(w) for w in range(writers)))
    elapsed = time.perf_counter() - started
    transactions = journal.stats.transactions - before[0]
    appends = journal.stats.appends - before[1]
    flat = sorted(v for per in latencies for v in per)
    return {
        "appends": appends,
        "seconds": round(elapsed, 3),
        "appends_per_s": round(appends / elapsed),
        "ack_p50_ms": round(percentile(flat, 0.50), 3),
        "ack_p99_ms": round(percentile(flat, 0.99), 3),
        "ack_max_ms": round(percentile(flat, 1.0), 3),
        "transactions": transactions,
        "avg_batch": round(appends / max(transactions, 1), 1),
    }


async def with_sqlite(run: Callable[[str], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    directory = tempfile.mkdtemp(prefix="tradesim-bench-journal-")
    try:
        return await run(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def with_postgres(server: str, run: Callable[[str], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    name = "tradesim_bench_" + secrets.token_hex(4)
    admin = await asyncpg.connect(server, timeout=5)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            return await run(urlunsplit(urlsplit(server)._replace(path="/" + name)))
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def with_nats(url: str | None, run: Callable[[str], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    server: LocalNatsServer | None = None
    if url is None:
        from tradesim.bus.natsserver import LocalNatsServer

        server = LocalNatsServer().start()
        url = server.url
    try:
        return await run(url)
    finally:
        if server is not None:
            server.stop()


async def equals_replay(journal: Journal, state_hash: str, seq: int) -> bool:
    """Whether a from-scratch replay of `journal` reaches `state_hash` at `seq`."""
    from tradesim.store.recovery import recover

    engine, last = await recover(journal)
    return last == seq and engine.state_hash() == state_hash


async def standby_lag(url: str, rate: int, seconds: float) -> dict[str, Any]:
    """Journals `rate` new orders per second for `seconds` while a warm standby follows the stream."""
    from decimal import Decimal

    from tradesim.domain import AddInstrument, Instrument
    from tradesim.services.venue.standby import VenueStandby
    from tradesim.store import JetStreamJournal, JournalRecord

    shard = "lag" + secrets.token_hex(4)
    delays: list[int] = []

    def on_apply(record: JournalRecord, _events: object) -> None:
        delays.append(time.time_ns() - record.ts)

    writer = await JetStreamJournal.open(url, shard=shard)
    follower = await JetStreamJournal.open(url, shard=shard)
    standby = VenueStandby(follower, on_apply=on_apply)
    try:
        await standby.start()
        await writer.append(AddInstrument(instrument=Instrument(symbol="AAPL.SIM", tick_size=Decimal("0.01"))))
        pending: set[asyncio.Task[Any]] = set()
        total = int(rate * seconds)
        sent = 0
        started = time.perf_counter()
        while sent < total:
            due = min(total, int((time.perf_counter() - started) * rate) + 1)
            while sent < due:
                command = NewOrder(account=f"acct{sent % 97}", client_order_id=f"lag-{sent}", symbol="AAPL.SIM",
                                   side=Side.BUY if sent % 2 else Side.SELL, type=OrderType.LIMIT,
                                   tif=TimeInForce.GTC, price=15_000 + sent % 50 - 25, qty=1 + sent % 100)
                task = asyncio.ensure_future(writer.append(command, ts=time.time_ns()))
                pending.add(task)
                task.add_done_callback(pending.discard)
                sent += 1
            await asyncio.sleep(0.001)
        elapsed = time.perf_counter() - started
        await asyncio.gather(*pending)
        engine = await standby.catch_up()
        flat = sorted(delays[1:])  # the listing came before the clock started
        return {"orders": sent, "rate_per_s": round(sent / elapsed), "applied": len(flat),
                "lag_p50_ms": round(percentile(flat, 0.50), 3), "lag_p99_ms": round(percentile(flat, 0.99), 3),
                "lag_max_ms": round(percentile(flat, 1.0), 3),
                "standby_equals_replay": await equals_replay(writer, engine.state_hash(), standby.last_seq)}
    finally:
        await standby.stop()
        await follower.close()
        await writer.close()


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"bench": "journal", "count": args.count, "writers": args.writers,
                              "max_batch": args.max_batch, "linger_ms": args.linger * 1e3,
                              # the figures depend on how busy the host is: say so in the result
                              "cpus": os.cpu_count(), "loadavg_1m_before": round(os.getloadavg()[0], 2)}

    async def run(target: str) -> dict[str, Any]:
        journal = await open_journal(target, max_batch=args.max_batch, linger=args.linger)
        try:
            figures = await measure(journal, args.count, args.writers)
            report = await journal.verify()
            figures["chain_verified"] = report.ok and report.count == journal.last_seq
            return figures
        finally:
            await journal.close()

    async def run_jetstream(url: str) -> dict[str, Any]:
        figures = await run(f"{url}?shard=bench{secrets.token_hex(4)}")
        progress(f"jetstream: standby lag at {args.lag_rate} orders/s for {args.lag_seconds}s …")
        figures["standby_lag"] = await standby_lag(url, args.lag_rate, args.lag_seconds)
        return figures

    for backend in args.backends.split(","):
        progress(f"{backend}: {args.count} appends from {args.writers} writers …")
        try:
            if backend == "sqlite":
                figures = {"durability": "synchronous=FULL (fsync per commit)", **await with_sqlite(run)}
            elif backend == "postgres":
                figures = {"durability": "synchronous_commit=on",
                           **await with_postgres(args.pg_url, run)}
            elif backend == "jetstream":
                figures = {"durability": "PubAck: stored in the file-backed stream (1 replica)",
                           **await with_nats(args.nats_url, run_jetstream)}
            else:
                raise SystemExit(f"unknown backend {backend!r}")
        except (OSError, RuntimeError, asyncpg.PostgresError, JournalError) as exc:
            figures = {"error": f"{type(exc).__name__}: {exc}"}
        progress(f"{backend}: {figures}")
        result[backend] = figures
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=200_000, help="appends per backend")
    parser.add_argument("--writers", type=int, default=200, help="concurrent writer tasks")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL, help="server to create a scratch database on")
    parser.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH)
    parser.add_argument("--linger", type=float, default=DEFAULT_LINGER, help="seconds")
    parser.add_argument("--nats-url", help="jetstream backend: server to use (default: a private nats-server -js)")
    parser.add_argument("--lag-rate", type=int, default=5_000, help="jetstream: orders/s during the standby lag run")
    parser.add_argument("--lag-seconds", type=float, default=10.0, help="jetstream: length of the standby lag run")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(bench(args))), flush=True)


if __name__ == "__main__":
    main()
