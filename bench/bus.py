"""Bus benchmark: publish→deliver latency, throughput and RPC round trip, per backend.

Prints ONE JSON line; progress goes to stderr. For each backend (memory, and NATS against a private
nats-server this script starts, or --nats-url) it measures, over separate connections:
  * publish→deliver latency, one message in flight (p50/p99 µs);
  * throughput: messages published back to back until the subscriber has them all (msgs/s);
  * RPC round trip, one request in flight (p50/p99 µs).
Targets: memory p99 < 100 µs; NATS loopback p99 < 1 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import msgspec

from tradesim.bus import Bus, Delivery, open_bus, register
from tradesim.bus.natsserver import LocalNatsServer

TARGET_P99_US = {"memory": 100.0, "nats": 1000.0}


class Stamp(msgspec.Struct, frozen=True, tag="bench.stamp", tag_field="kind"):
    """A message carrying its send time (perf_counter_ns) so the receiver can compute latency."""

    n: int
    t: int


register(Stamp)


def progress(message: str) -> None:
    print(f"bench/bus: {message}", file=sys.stderr, flush=True)


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return round(s[min(len(s) - 1, int(q * len(s)))], 1)


async def latency(pub: Bus, sub: Bus, count: int) -> list[float]:
    got = asyncio.Event()
    samples: list[float] = []

    async def on_msg(d: Delivery) -> None:
        assert isinstance(d.data, Stamp)
        samples.append((time.perf_counter_ns() - d.data.t) / 1000)
        got.set()

    s = await sub.subscribe("bench.lat", on_msg)
    warm = max(10, count // 10)
    for i in range(count + warm):
        got.clear()
        await pub.publish("bench.lat", Stamp(n=i, t=time.perf_counter_ns()))
        await asyncio.wait_for(got.wait(), 5.0)
    await s.unsubscribe()
    return samples[warm:]


async def throughput(pub: Bus, sub: Bus, count: int) -> float:
    done = asyncio.Event()
    n = 0

    async def on_msg(d: Delivery) -> None:
        nonlocal n
        n += 1
        if n == count:
            done.set()

    s = await sub.subscribe("bench.tp", on_msg)
    t0 = time.perf_counter()
    for i in range(count):
        await pub.publish("bench.tp", Stamp(n=i, t=0))
    await asyncio.wait_for(done.wait(), 60.0)
    elapsed = time.perf_counter() - t0
    await s.unsubscribe()
    return round(count / elapsed)


async def rpc(client: Bus, server: Bus, count: int) -> list[float]:
    async def echo(req: msgspec.Struct) -> msgspec.Struct:
        return req

    s = await server.serve("rpc.bench.echo", echo)
    samples: list[float] = []
    warm = max(10, count // 10)
    for i in range(count + warm):
        t0 = time.perf_counter_ns()
        await client.request("rpc.bench.echo", Stamp(n=i, t=t0), timeout=5.0)
        samples.append((time.perf_counter_ns() - t0) / 1000)
    await s.unsubscribe()
    return samples[warm:]


async def run_backend(name: str, url: str, count: int) -> dict[str, Any]:
    progress(f"{name}: {url}")
    a, b = await open_bus(url), await open_bus(url)
    gc.collect()
    gc.freeze()  # long-lived setup objects out of the collector's way, as a service would do after start-up
    try:
        lat = await latency(a, b, count)
        progress(f"{name}: latency p50 {pct(lat, 0.5)} µs p99 {pct(lat, 0.99)} µs")
        tp = await throughput(a, b, count * 10)
        progress(f"{name}: throughput {tp} msgs/s")
        rt = await rpc(a, b, count)
        progress(f"{name}: rpc p50 {pct(rt, 0.5)} µs p99 {pct(rt, 0.99)} µs")
    finally:
        await a.close()
        await b.close()
    p99 = pct(lat, 0.99)
    return {
        "url": url,
        "pubsub_p50_us": pct(lat, 0.5),
        "pubsub_p99_us": p99,
        "msgs_per_s": tp,
        "rpc_p50_us": pct(rt, 0.5),
        "rpc_p99_us": pct(rt, 0.99),
        "target_p99_us": TARGET_P99_US[name],
        "meets_target": p99 < TARGET_P99_US[name],
    }


@contextlib.contextmanager
def nats_url(given: str | None) -> Iterator[str]:
    if given:
        yield given
        return
    with LocalNatsServer() as server:
        progress(f"started private nats-server at {server.url}")
        yield server.url


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=5000, help="latency/RPC samples (throughput uses 10x)")
    ap.add_argument("--backends", default="memory,nats", help="comma list of memory, nats")
    ap.add_argument("--nats-url", default=None, help="use this server instead of starting one")
    args = ap.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(backends) - set(TARGET_P99_US)
    if unknown:
        ap.error(f"unknown backend(s): {', '.join(sorted(unknown))}")
    result: dict[str, Any] = {"bench": "bus", "count": args.count}
    # tail latency depends on CPU contention: record what the host was doing
    result["host"] = {"cpus": os.cpu_count(), "load1": round(os.getloadavg()[0], 2)}
    for name in backends:
        if name == "memory":
            result["memory"] = asyncio.run(run_backend("memory", "memory://bench", args.count))
        else:
            with nats_url(args.nats_url) as url:
                result["nats"] = asyncio.run(run_backend("nats", url, args.count))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
