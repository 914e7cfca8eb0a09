"""OMS benchmark: orders/s and the latency a client sees from `rpc.oms.submit` (or cancel) to the reply.

Prints ONE JSON line; progress goes to stderr. The whole path runs: compliance, pre-trade risk, the
venue (real `VenueService` with its SQLite journal, fsync on) and the OMS's own SQLite store, all on
one memory bus. `--clients` closed-loop sessions (next request once the previous one is answered)
spread over `--accounts` accounts send a realistic mix: passive limits that rest, crossing limits
that trade, and cancels of their own resting orders. Target: >= 20,000 orders/s with p99 < 2 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

from tradesim.bus import open_bus, subjects
from tradesim.domain import Instrument, Side
from tradesim.services.compliance import parse_compliance_config
from tradesim.services.oms import OmsService
from tradesim.services.oms.messages import CancelRequest, OmsError, OrderReply, OrderRequest
from tradesim.services.oms.store import SqliteOrderStore
from tradesim.services.risk import parse_risk_config
from tradesim.services.venue.service import VenueService
from tradesim.store import open_journal

SYMBOLS = ("AAPL.SIM", "MSFT.SIM")
REFERENCE = 10_000
RISK = """
[defaults]
max_order_qty = 100_000
price_band = 0.10
"""
COMPLIANCE = 'default_packs = ["std"]\n[packs.std]\nrestricted = ["BANK.SIM"]\n'


def progress(message: str) -> None:
    print(f"bench/oms: {message}", file=sys.stderr, flush=True)


def percentile(sorted_ns: list[int], q: float) -> float:
    if not sorted_ns:
        return 0.0
    return round(sorted_ns[min(len(sorted_ns) - 1, int(q * len(sorted_ns)))] / 1e6, 3)


async def run(orders: int, clients: int, accounts: int, warmup: int, seed: int) -> dict[str, Any]:
    instruments = [Instrument(symbol=s, tick_size=Decimal("0.01")) for s in SYMBOLS]
    names = [f"acct{i}" for i in range(accounts)]
    url = f"memory://bench-oms-{uuid.uuid4().hex}"
    server = await open_bus(url)
    client = await open_bus(url)
    with tempfile.TemporaryDirectory() as data:
        journal = await open_journal(data)  # synchronous=FULL: fsync on every group commit
        venue = VenueService(server, journal, instruments)
        oms = OmsService(
            server, instruments, accounts={a: (Decimal(10) ** 12, "cash", "USD") for a in names},
            risk=parse_risk_config(RISK), compliance=parse_compliance_config(COMPLIANCE),
            store=SqliteOrderStore(Path(data) / "oms.db"), reference_prices=dict.fromkeys(SYMBOLS, REFERENCE),
            concurrency=max(16, clients), request_timeout=10.0, stuck_after=30.0,
        )
        await venue.start()
        await oms.start()
        submit, cancel = subjects.rpc("oms", "submit"), subjects.rpc("oms", "cancel")
        latencies: list[int] = []
        counts = {"submits": 0, "cancels": 0, "trades": 0, "errors": 0, "rejected": 0}
        remaining = [warmup + orders]
        measuring = [False]
        clock = time.perf_counter_ns

        async def session(c: int) -> None:
            rng = random.Random(seed * 1_000 + c)
            account = names[c % len(names)]
            resting: list[str] = []
            n = 0
            while remaining[0] > 0:
                remaining[0] -= 1
                if remaining[0] == orders:
                    measuring[0] = True
                roll = rng.random()
                req: object
                if roll < 0.15 and resting:
                    subject = cancel
                    req = CancelRequest(account=account, client_order_id=resting.pop(rng.randrange(len(resting))))
                else:
                    n += 1
                    side = Side.BUY if rng.random() < 0.5 else Side.SELL
                    sign = 1 if side is Side.BUY else -1
                    offset = rng.randint(1, 20)
                    crossing = roll > 0.75  # a quarter cross the spread and trade
                    price = REFERENCE + sign * offset if crossing else REFERENCE - sign * offset
                    subject = submit
                    cid = f"c{c}-{n}"
                    req = OrderRequest(account=account, symbol=rng.choice(SYMBOLS), side=side,
                                       qty=rng.randint(1, 10) * 10, price=price, client_order_id=cid)
                    if not crossing:
                        resting.append(cid)
                counted = measuring[0]
                t0 = clock()
                reply = await client.request(subject, req, timeout=30)  # type: ignore[arg-type]
                elapsed = clock() - t0
                if not counted:
                    continue
                latencies.append(elapsed)
                if isinstance(reply, OrderReply):
                    counts["submits" if subject == submit else "cancels"] += 1
                    counts["trades"] += len(reply.trades)
                    counts["rejected"] += reply.order.status.value == "rejected"
                elif isinstance(reply, OmsError):
                    counts["errors"] += 1

        progress(f"{clients} clients, {accounts} accounts, {warmup:,} warm-up + {orders:,} measured requests")
        start = [0.0]

        async def reporter() -> None:
            while True:
                await asyncio.sleep(2)
                if measuring[0]:
                    done = len(latencies)
                    progress(f"  {done:,} requests, {done / (time.perf_counter() - start[0]):,.0f}/s")

        tick = asyncio.create_task(reporter())
        tasks = [asyncio.create_task(session(c)) for c in range(clients)]
        while not measuring[0] and not all(t.done() for t in tasks):
            await asyncio.sleep(0.001)
        start[0] = time.perf_counter()
        cpu0 = time.process_time()
        await asyncio.gather(*tasks)
        seconds = time.perf_counter() - start[0]
        cpu = time.process_time() - cpu0
        tick.cancel()
        await oms.stop()
        await venue.stop()
        await journal.close()
        oms.store.close()
    await client.close()
    await server.close()
    latencies.sort()
    return {
        "bench": "oms", "clients": clients, "accounts": accounts, "requests": len(latencies),
        "seconds": round(seconds, 3), "orders_per_s": round(len(latencies) / seconds) if seconds else 0,
        "p50_ms": percentile(latencies, 0.50), "p99_ms": percentile(latencies, 0.99),
        "max_ms": percentile(latencies, 1.0), "cpu_us_per_request": round(cpu / max(1, len(latencies)) * 1e6),
        **counts,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--orders", type=int, default=20_000, help="measured requests (submits + cancels)")
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--accounts", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.orders, args.clients, args.accounts, args.warmup, args.seed))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
