"""API benchmark: sustained `POST /api/v1/orders` against a real `tradesim run` in a separate process, and
WebSocket fan-out of the trades channel to many clients.

Prints ONE JSON line; progress goes to stderr. The server is `python -m tradesim run` (System + API under
uvicorn, journal fsync on) with a bench config: one instrument, `--accounts` margin accounts (one user each), no agents,
rate limits out of the way. This process drives it over `--connections` raw keep-alive HTTP/1.1 connections:

- `open_loop`: a fixed offered rate (`--rate`, default 2,000 orders/s). Orders are sent on schedule whether
  or not earlier ones were answered, and latency counts from the scheduled send time, so a stall shows up
  in the percentiles instead of slowing the offered load (no coordinated omission).
- `saturation`: `--connections` closed-loop workers, each sending its next order once the last is answered.
- `ws_fanout`: `--ws-clients` WebSocket clients subscribed to `trades` while crossing orders make trades at
  `--ws-rate` trades/s; messages/s delivered and publish→receive latency (the trade's venue `ts` against
  this host's clock: same machine, same clock). Skipped (null) if the server has no `/ws`.

Orders rotate over the accounts, even ones buying and odd ones selling one lot at the same price, so the
book stays small and about half of them trade. Targets: >= 5,000 orders/s at saturation, p99 < 5 ms at 2,000 orders/s.
`driver_cpu` is this process's CPU use over the phase: near 1.0 means the load generator, not the
server, was the limit (the machine has few cores, shared with the server). `server_cpu` is the server's
(cores) and `server_cpu_us_per_order` its CPU time per order answered: the cost figure to compare
between changes, as it hardly depends on what else runs on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import msgspec

SYMBOL = "BENCH.SIM"
PRICE = "100.00"
PASSWORD = "bench password 123"
CONFIG = f"""
[api]
jwt_secret = "bench-secret-0123456789-abcdefghijklmnopq"
rate_limit = 1000000.0
rate_burst = 1000000
login_rate_limit = 1000.0
login_burst = 1000

[[instruments]]
symbol = "{SYMBOL}"
tick_size = "0.01"
currency = "USD"
price_band = "0.10"
reference_price = "{PRICE}"
"""
ACCOUNT = """
[[accounts]]
id = "{name}"
cash = "1000000000000"
kind = "margin"
currency = "USD"
"""
TAIL = """
[risk.defaults]
max_order_qty = 1000

[agents]
symbols = []

[marketdata]
interval = 1.0
"""


def account_names(count: int) -> list[str]:
    """Even accounts buy, odd ones sell: order n goes out from account n % count."""
    return [f"t{i:03d}" for i in range(count)]


def bench_config(accounts: int) -> str:
    return CONFIG + "".join(ACCOUNT.format(name=name) for name in account_names(accounts)) + TAIL


def progress(message: str) -> None:
    print(f"bench/api: {message}", file=sys.stderr, flush=True)


def percentiles(latencies_ns: list[int]) -> dict[str, float]:
    """p50/p90/p99/p99.9/max in milliseconds."""
    if not latencies_ns:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "p99.9": 0.0, "max": 0.0}
    s = sorted(latencies_ns)

    def at(q: float) -> float:
        return round(s[min(len(s) - 1, int(q * len(s)))] / 1e6, 3)

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "p99.9": at(0.999), "max": round(s[-1] / 1e6, 3)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) used so far by process `pid` (Linux /proc); 0.0 if unknown."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_figures(pid: int | None, cpu0: float, elapsed: float, orders: int) -> dict[str, float]:
    """The server's CPU use over a phase: cores used and CPU µs per order answered. Unlike orders/s, the
    µs per order hardly moves with what else runs on the machine."""
    cpu = process_cpu(pid) - cpu0
    return {"server_cpu": round(cpu / elapsed, 2), "server_cpu_us_per_order": round(cpu / max(orders, 1) * 1e6, 1)}


class _Connection:
    """One keep-alive HTTP/1.1 connection speaking just enough of the protocol for the order POSTs.

    httpx's pool cost the driver ~5 ms of CPU per request (its pool scans every connection, polling each
    socket, on every request and release), so the driver, not the server, was the limit: with 64
    connections it used a full core at ~200 requests/s. A fixed set of raw connections costs tens of µs."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, data: bytes) -> int:
        """Sends one complete request (head and body) and reads the whole answer; its status code."""
        if self.writer is None or self.reader is None or self.reader.at_eof():
            # (re)connect: the server closes a keep-alive connection idle for a few seconds (uvicorn's
            # timeout_keep_alive), as the bottom of the idle stack is at a low offered rate; a client does not
            # send on a connection it knows is closed, so neither does this one.
            self.close()
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        reader = self.reader
        self.writer.write(data)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        at = lower.find(b"\r\ncontent-length:")
        if at >= 0:
            end = lower.index(b"\r\n", at + 2)
            await reader.readexactly(int(lower[at + 17:end]))
        elif b"\r\ntransfer-encoding: chunked" in lower:
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
                await reader.readexactly(size + 2)
                if size == 0:
                    break
        if b"\r\nconnection: close" in lower:
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class Driver:
    """The load generator: `connections` raw keep-alive connections, and the accounts' tokens (httpx, only
    for the few set-up calls)."""

    def __init__(self, url: str, connections: int, accounts: int, server_pid: int | None = None) -> None:
        self.url = url
        self.server_pid = server_pid
        self.accounts = accounts
        self.http = httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(30.0))
        hostport = url.split("://", 1)[1]
        host, _, port = hostport.partition(":")
        self.host_header = hostport
        # at most one request per connection; queued senders wait here (the open loop's backlog)
        self.idle: asyncio.LifoQueue[_Connection] = asyncio.LifoQueue()
        for _ in range(connections):
            self.idle.put_nowait(_Connection(host, int(port)))
        self.heads: list[bytes] = []
        self.seq = 0

    async def login(self) -> None:
        for username in account_names(self.accounts):
            r = await self.http.post("/api/v1/auth/token", json={"username": username, "password": PASSWORD})
            r.raise_for_status()
            self.heads.append(
                f"POST /api/v1/orders HTTP/1.1\r\nHost: {self.host_header}\r\n"
                f"Authorization: Bearer {r.json()['access_token']}\r\n"
                "Content-Type: application/json\r\nContent-Length: ".encode())

    def body(self, n: int, tag: str) -> bytes:
        """Order n as a whole request: from account n % accounts, a buy from even accounts and a sell from odd
        ones, one lot at the same price (many accounts, as many clients would be: the OMS keeps one
        account's orders in sequence)."""
        account = n % self.accounts
        side = "buy" if account % 2 == 0 else "sell"
        self.seq += 1
        body = msgspec.json.encode({"symbol": SYMBOL, "side": side, "type": "limit", "tif": "GTC", "price": PRICE,
                                    "qty": 1, "client_order_id": f"{tag}-{self.seq}"})
        return self.heads[account] + b"%d\r\n\r\n" % len(body) + body

    async def post(self, n: int, tag: str) -> int:
        data = self.body(n, tag)
        conn = await self.idle.get()
        try:
            async with asyncio.timeout(30.0):
                return await conn.request(data)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError,
                TimeoutError) as exc:
            conn.close()
            return -len(type(exc).__name__)  # counted as a transport error below
        finally:
            self.idle.put_nowait(conn)

    async def open_loop(self, rate: float, seconds: float, tag: str) -> dict[str, Any]:
        """`rate` orders/s on schedule for `seconds`; latency from each order's scheduled time."""
        total = max(1, int(rate * seconds))
        latencies: list[int] = []
        statuses: Counter[int] = Counter()
        tasks: set[asyncio.Task[None]] = set()

        async def one(n: int, due_ns: int) -> None:
            status = await self.post(n, tag)
            latencies.append(time.perf_counter_ns() - due_ns)
            statuses[status] += 1

        cpu0, start, server0 = time.process_time(), time.perf_counter_ns(), process_cpu(self.server_pid)
        interval_ns = 1e9 / rate
        late_max = 0
        for n in range(total):
            due = start + int(n * interval_ns)
            wait = due - time.perf_counter_ns()
            if wait > 0:
                await asyncio.sleep(wait / 1e9)
            else:
                late_max = max(late_max, -wait)
            task = asyncio.create_task(one(n, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
        elapsed = (time.perf_counter_ns() - start) / 1e9
        cpu = time.process_time() - cpu0
        return {"offered_rate": rate, "orders": total, "seconds": round(elapsed, 3),
                "orders_per_sec": round(total / elapsed, 1), "latency_ms": percentiles(latencies),
                "statuses": _statuses(statuses), "driver_cpu": round(cpu / elapsed, 2),
                **server_figures(self.server_pid, server0, elapsed, total),
                "max_send_lag_ms": round(late_max / 1e6, 3)}

    async def saturate(self, workers: int, seconds: float, tag: str) -> dict[str, Any]:
        """`workers` closed-loop senders for `seconds`."""
        latencies: list[int] = []
        statuses: Counter[int] = Counter()
        deadline = time.perf_counter() + seconds

        async def worker(w: int) -> None:
            n = w
            while time.perf_counter() < deadline:
                t0 = time.perf_counter_ns()
                status = await self.post(n, tag)
                latencies.append(time.perf_counter_ns() - t0)
                statuses[status] += 1
                n += workers

        cpu0, start, server0 = time.process_time(), time.perf_counter(), process_cpu(self.server_pid)
        await asyncio.gather(*(worker(w) for w in range(workers)))
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu0
        done = len(latencies)
        return {"connections": workers, "orders": done, "seconds": round(elapsed, 3),
                "orders_per_sec": round(done / elapsed, 1), "latency_ms": percentiles(latencies),
                "statuses": _statuses(statuses), "driver_cpu": round(cpu / elapsed, 2),
                **server_figures(self.server_pid, server0, elapsed, done)}


def _statuses(counter: Counter[int]) -> dict[str, int]:
    return {("transport_error" if code < 0 else str(code)): count for code, count in sorted(counter.items())}


class _Frame(msgspec.Struct):
    type: str
    ts: int = 0


async def ws_fanout(driver: Driver, clients: int, rate: float, seconds: float) -> dict[str, Any] | None:
    """`clients` WebSockets on the trades channel while crossing pairs make `rate` trades/s."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus, WebSocketException

    ws_url = driver.url.replace("http://", "ws://", 1) + "/ws"
    decoder = msgspec.json.Decoder(_Frame)
    sockets: list[Any] = []
    try:
        for _ in range(clients):
            ws = await connect(ws_url, max_queue=None, ping_interval=None)
            sockets.append(ws)
            await ws.send(json.dumps({"op": "subscribe", "channel": "trades", "symbol": SYMBOL}))
        for ws in sockets:  # the ack and the snapshot
            seen: set[str] = set()
            while not {"subscribed", "snapshot"} <= seen:
                frame = decoder.decode(await asyncio.wait_for(ws.recv(), 10))
                if frame.type == "error":
                    raise RuntimeError(f"subscribe refused: {frame}")
                seen.add(frame.type)
    except (InvalidStatus, WebSocketException, OSError, TimeoutError) as exc:
        progress(f"no WebSocket fan-out: {type(exc).__name__}: {exc}")
        for ws in sockets:
            await ws.close()
        return None

    received = [0] * clients
    latencies: list[int] = []
    other: Counter[str] = Counter()
    stop = asyncio.Event()

    async def reader(i: int, ws: Any) -> None:
        with contextlib.suppress(WebSocketException):
            async for raw in ws:
                now = time.time_ns()
                frame = decoder.decode(raw)
                if frame.type == "trade":
                    received[i] += 1
                    latencies.append(now - frame.ts)
                else:
                    other[frame.type] += 1

    readers = [asyncio.create_task(reader(i, ws)) for i, ws in enumerate(sockets)]
    cpu0, start = time.process_time(), time.perf_counter()
    load = await driver.open_loop(rate * 2, seconds, "ws")  # a buy and a sell make one trade
    # let the tail of the stream arrive
    expected = load["statuses"].get("201", 0) // 2
    settle = time.perf_counter() + 5.0
    while time.perf_counter() < settle and min(received) < expected:
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    stop.set()
    for ws in sockets:
        await ws.close()
    await asyncio.gather(*readers, return_exceptions=True)
    total = sum(received)
    return {"clients": clients, "trades_per_sec_offered": rate, "trades": expected, "messages": total,
            "messages_expected": expected * clients, "messages_per_sec": round(total / elapsed, 1),
            "seconds": round(elapsed, 3), "delivery_ms": percentiles(latencies),
            "min_client_messages": min(received), "other_frames": dict(other),
            "driver_cpu": round(cpu / elapsed, 2)}


async def drive(url: str, args: argparse.Namespace, server_pid: int | None = None) -> dict[str, Any]:
    driver = Driver(url, args.connections, args.accounts, server_pid)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                r = await driver.http.get("/readyz")
                if r.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not become ready in 60 s")
            await asyncio.sleep(0.1)
        await driver.login()
        progress(f"warm-up {args.warmup} s")
        await driver.saturate(min(8, args.connections), args.warmup, "warm")
        progress(f"open loop: {args.rate:g} orders/s for {args.seconds} s")
        open_loop = await driver.open_loop(args.rate, args.seconds, "open")
        progress(f"  {open_loop['orders_per_sec']} orders/s, p99 {open_loop['latency_ms']['p99']} ms")
        progress(f"saturation: {args.connections} connections for {args.seconds} s")
        saturation = await driver.saturate(args.connections, args.seconds, "sat")
        progress(f"  {saturation['orders_per_sec']} orders/s, p99 {saturation['latency_ms']['p99']} ms")
        ws = None
        if args.ws_clients > 0:
            progress(f"ws fan-out: {args.ws_clients} clients, {args.ws_rate:g} trades/s for {args.ws_seconds} s")
            ws = await ws_fanout(driver, args.ws_clients, args.ws_rate, args.ws_seconds)
            if ws is not None:
                progress(f"  {ws['messages_per_sec']} messages/s, delivery p99 {ws['delivery_ms']['p99']} ms")
        return {"open_loop": open_loop, "saturation": saturation, "ws_fanout": ws}
    finally:
        await driver.http.aclose()
        while not driver.idle.empty():
            driver.idle.get_nowait().close()


async def add_users(data_dir: Path, accounts: int) -> None:
    from tradesim.store import users as store

    store.SCRYPT_N = 2**10  # type: ignore[misc]  # the hash records its cost; logins still check it
    users = await store.open_users(data_dir)
    try:
        for name in account_names(accounts):
            await users.add(name, "trader", PASSWORD, name)
    finally:
        await users.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=2000.0, help="offered orders/s of the open-loop phase")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the open-loop and saturation phases")
    parser.add_argument("--connections", type=int, default=64, help="HTTP connections (saturation workers)")
    parser.add_argument("--accounts", type=int, default=64, help="trading accounts (users), an even number")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of closed-loop warm-up")
    parser.add_argument("--ws-clients", type=int, default=100, help="WebSocket clients (0: skip the fan-out)")
    parser.add_argument("--ws-rate", type=float, default=200.0, help="trades/s during the fan-out")
    parser.add_argument("--ws-seconds", type=float, default=5.0)
    parser.add_argument("--profile", help="run the server under cProfile, writing its stats to this file")
    args = parser.parse_args(argv)
    if args.accounts < 2 or args.accounts % 2:
        parser.error("--accounts must be an even number >= 2 (buyers and sellers)")

    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        config = Path(tmp) / "bench.toml"
        config.write_text(bench_config(args.accounts))
        asyncio.run(add_users(data, args.accounts))
        port = free_port()
        log = (Path(tmp) / "server.log").open("w+")
        profile = ["-m", "cProfile", "-o", str(Path(args.profile).resolve())] if args.profile else []
        cmd = [sys.executable, *profile, "-m", "tradesim", "run", "--config", str(config), "--data-dir", str(data),
               "--port", str(port)]
        progress(f"starting the server: {' '.join(cmd[1:])}")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            figures = asyncio.run(drive(f"http://127.0.0.1:{port}", args, server.pid))
        except BaseException:
            log.seek(0)
            progress("server log:\n" + log.read()[-4000:])
            raise
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            log.close()
    report = {"bench": "api", "symbol": SYMBOL, "cpus": os.cpu_count(), "accounts": args.accounts, **figures,
              "targets": {"saturation_orders_per_sec": 5000, "open_loop_p99_ms_at_2000": 5.0}}
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
