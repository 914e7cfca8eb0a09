"""Journal benchmark: durable appends/s with group commit (fsync on) and the ack latency callers wait.

Prints ONE JSON line with a figure set per backend (sqlite, postgres); progress goes to stderr.
Many writer tasks each append in a closed loop (next append once the previous one is acknowledged),
as order-entry sessions do. Targets: SQLite >= 100k/s, PostgreSQL >= 50k/s, ack p99 < 5 ms.
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
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from tradesim.domain import Command, NewOrder, OrderType, Side, TimeInForce
from tradesim.store import Journal, JournalError, open_journal
from tradesim.store.journal import DEFAULT_LINGER, DEFAULT_MAX_BATCH

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

    for backend in args.backends.split(","):
        progress(f"{backend}: {args.count} appends from {args.writers} writers …")
        try:
            if backend == "sqlite":
                figures = {"durability": "synchronous=FULL (fsync per commit)", **await with_sqlite(run)}
            elif backend == "postgres":
                figures = {"durability": "synchronous_commit=on",
                           **await with_postgres(args.pg_url, run)}
            else:
                raise SystemExit(f"unknown backend {backend!r}")
        except (OSError, asyncpg.PostgresError, JournalError) as exc:
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
    args = parser.parse_args()
    print(json.dumps(asyncio.run(bench(args))), flush=True)


if __name__ == "__main__":
    main()
