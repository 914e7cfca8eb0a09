"""/ws against a real uvicorn server in the test's loop: level2 snapshot + updates rebuild the REST book,
the trades stream matches the trades made, private channels stay private, heartbeats, and a client that
never reads is dropped while orders keep being acknowledged quickly."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from litestar import Litestar
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.api.conftest import PASSWORD, USERS, Stack, make_config, start_stack
from tradesim.api.feeds import Hub
from tradesim.api.server import EmbeddedServer

SYM = "AAPL.SIM"


@dataclass
class Live:
    http: httpx.AsyncClient
    ws_url: str
    hub: Hub
    tokens: dict[str, str]
    addr: tuple[str, int]
    app: Litestar

    def auth(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    async def order(self, user: str, side: str, price: str, qty: int, **extra: Any) -> dict[str, Any]:
        r = await self.http.post("/api/v1/orders", headers=self.auth(user), json={
            "symbol": SYM, "side": side, "type": "limit", "tif": "GTC", "price": price, "qty": qty, **extra})
        assert r.status_code in (201, 202), r.text
        body: dict[str, Any] = r.json()
        return body


@contextlib.asynccontextmanager
async def serve(stack: Stack, **kw: Any) -> AsyncIterator[Live]:
    app = stack.app(**kw)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = EmbeddedServer(uvicorn.Config(app, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.01)
        assert server.started
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            tokens = {}
            for name in USERS:
                r = await client.post("/api/v1/auth/token", json={"username": name, "password": PASSWORD})
                tokens[name] = r.json()["access_token"]
            yield Live(http=client, ws_url=f"ws://127.0.0.1:{port}/ws", hub=app.state["hub"], tokens=tokens,
                       addr=("127.0.0.1", port), app=app)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)
        sock.close()


@pytest.fixture
async def live(stack: Stack) -> AsyncIterator[Live]:
    async with serve(stack, ws_heartbeat=60.0) as lv:
        yield lv


async def send(ws: ClientConnection, **msg: Any) -> None:
    await ws.send(json.dumps(msg))


async def recv(ws: ClientConnection, timeout: float = 3.0, *, skip: tuple[str, ...] = ("heartbeat",)) -> dict[str, Any]:
    while True:
        msg: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if msg["type"] not in skip:
            return msg


async def subscribe(ws: ClientConnection, **msg: Any) -> dict[str, Any]:
    """Subscribe and return the snapshot (or the ack, for channels without one)."""
    await send(ws, op="subscribe", **msg)
    ack = await recv(ws)
    assert ack["type"] == "subscribed", ack
    if msg["channel"] == "orders":
        return ack
    snap = await recv(ws)
    assert snap["type"] in ("snapshot", "positions"), snap
    return snap


async def login(ws: ClientConnection, live: Live, user: str) -> None:
    await send(ws, op="auth", token=live.tokens[user])
    msg = await recv(ws)
    assert msg["type"] == "authenticated" and msg["username"] == user, msg


class LocalBook:
    """Applies level2 frames as a client would, checking the prev_seq chain."""

    def __init__(self, snap: dict[str, Any]) -> None:
        self.seq = snap["seq"]
        self.sides = {side: {p: (q, n) for p, q, n in snap[side]} for side in ("bids", "asks")}

    def apply(self, msg: dict[str, Any]) -> None:
        assert msg["type"] == "update" and msg["prev_seq"] == self.seq, (msg, self.seq)
        assert msg["seq"] > self.seq
        self.seq = msg["seq"]
        for side in ("bids", "asks"):
            for p, q, n in msg[side]:
                if q == 0:
                    del self.sides[side][p]
                else:
                    self.sides[side][p] = (q, n)

    def levels(self, side: str) -> list[list[Any]]:
        items = sorted(self.sides[side].items(), key=lambda kv: Decimal(kv[0]), reverse=side == "bids")
        return [[p, q, n] for p, (q, n) in items]


async def until(ws: ClientConnection, done: Callable[[], bool], apply: Callable[[dict[str, Any]], None],
                timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        apply(await recv(ws, max(0.01, deadline - time.monotonic())))


async def test_level2_snapshot_and_updates_reproduce_the_book(live: Live) -> None:
    rng = random.Random(7)
    async with connect(live.ws_url) as early:
        book1 = LocalBook(await subscribe(early, channel="level2", symbol=SYM))
        assert book1.levels("bids") == [] and book1.levels("asks") == []
        open_orders: list[tuple[str, str]] = []
        late: ClientConnection | None = None
        book2: LocalBook | None = None
        for i in range(120):
            if i == 60:  # a second client joins mid-burst: its snapshot is where the feed is
                late = await connect(live.ws_url)
                book2 = LocalBook(await subscribe(late, channel="level2", symbol=SYM))
            user = rng.choice(["alice", "bob"])
            if open_orders and rng.random() < 0.2:
                owner, oid = open_orders.pop(rng.randrange(len(open_orders)))
                await live.http.delete(f"/api/v1/orders/{oid}", headers=live.auth(owner))
                continue
            side = rng.choice(["buy", "sell"])
            price = f"{Decimal('190.00') + Decimal(rng.randint(-8, 8)) / 100:.2f}"
            body = await live.order(user, side, price, rng.randint(1, 20))
            if body["status"] in ("accepted", "partially_filled"):
                open_orders.append((user, body["order_id"]))
        rest = (await live.http.get(f"/api/v1/book/{SYM}", headers=live.auth("vic"))).json()
        assert rest["bids"] or rest["asks"]
        for ws, book in ((early, book1), (late, book2)):
            assert ws is not None and book is not None

            def same(b: LocalBook = book) -> bool:
                return b.levels("bids") == rest["bids"] and b.levels("asks") == rest["asks"]

            await until(ws, same, book.apply)
            assert book.seq <= rest["seq"]
        assert late is not None
        await late.close()


async def test_trades_stream_matches_the_trades_made(live: Live) -> None:
    async with connect(live.ws_url) as ws:
        snap = await subscribe(ws, channel="trades", symbol=SYM)
        assert snap == {"type": "snapshot", "channel": "trades", "symbol": SYM, "seq": 0, "trades": []}
        made = []
        for i in range(5):
            await live.order("bob", "sell", f"190.0{i}", 10)
        for qty in (15, 20, 5):
            made += (await live.order("alice", "buy", "190.05", qty))["trades"]
        assert len(made) >= 5
        prev = 0
        for t in made:
            msg = await recv(ws)
            assert msg["type"] == "trade" and msg["prev_seq"] == prev, msg
            assert (msg["trade_id"], msg["price"], msg["qty"], msg["aggressor"], msg["seq"]) == (
                t["trade_id"], t["price"], t["qty"], "buy", t["seq"])
            prev = msg["seq"]
        # a later subscriber's snapshot is the tape, oldest first
        async with connect(live.ws_url) as ws2:
            snap = await subscribe(ws2, channel="trades", symbol=SYM)
            assert [t["trade_id"] for t in snap["trades"]] == [t["trade_id"] for t in made]
            assert snap["seq"] == prev


async def test_private_orders_show_only_the_tokens_account(live: Live) -> None:
    async with connect(live.ws_url) as a, connect(live.ws_url) as b, connect(live.ws_url) as admin:
        await login(a, live, "alice")
        await login(b, live, "bob")
        await login(admin, live, "root")
        await subscribe(a, channel="orders")
        await subscribe(b, channel="orders")
        assert (await subscribe(admin, channel="orders", account="alice"))["account"] == "alice"
        await send(a, op="subscribe", channel="orders", account="bob", id=1)
        err = await recv(a)
        assert (err["type"], err["error"], err["id"]) == ("error", "forbidden", 1)

        maker = await live.order("alice", "sell", "190.00", 10, client_order_id="a-1")
        await live.order("bob", "buy", "190.00", 4, client_order_id="b-1")
        for ws in (a, admin):
            acc = await recv(ws)
            assert (acc["type"], acc["event"], acc["account"], acc["order_id"], acc["client_order_id"], acc["price"],
                    acc["qty"]) == ("order", "accepted", "alice", maker["order_id"], "a-1", "190.00", 10)
            fill = await recv(ws)
            assert (fill["type"], fill["account"], fill["client_order_id"], fill["side"], fill["liquidity"],
                    fill["qty"], fill["cum_qty"], fill["leaves_qty"], fill["price"]) == (
                "fill", "alice", "a-1", "sell", "maker", 4, 4, 6, "190.00")
        acc = await recv(b)
        assert (acc["event"], acc["account"], acc["client_order_id"]) == ("accepted", "bob", "b-1")
        fill = await recv(b)
        assert (fill["type"], fill["account"], fill["side"], fill["liquidity"], fill["qty"]) == (
            "fill", "bob", "buy", "taker", 4)
        await live.http.delete(f"/api/v1/orders/{maker['order_id']}", headers=live.auth("alice"))
        cancel = await recv(a)
        assert (cancel["event"], cancel["canceled_qty"], cancel["reason"]) == ("canceled", 6, "user")
        # nothing of alice's reached bob
        await send(b, op="ping", id="p")
        assert (await recv(b))["type"] == "pong"


async def test_positions_pushed_after_fills(live: Live) -> None:
    async with connect(live.ws_url) as ws:
        await login(ws, live, "alice")
        snap = await subscribe(ws, channel="positions")
        assert (snap["type"], snap["snapshot"], snap["account"]) == ("positions", True, "alice")
        await live.order("bob", "sell", "190.00", 10)
        taker = await live.order("alice", "buy", "190.00", 10)
        msg = await recv(ws)
        assert msg["type"] == "positions" and msg["seq"] >= taker["trades"][0]["seq"], msg
        (pos,) = [p for p in msg["positions"] if p["symbol"] == SYM]
        assert (pos["qty"], Decimal(pos["avg_price"])) == (10, Decimal("190"))


async def test_refusals_are_error_frames_and_the_connection_stays(live: Live) -> None:
    async with connect(live.ws_url) as ws:
        cases: list[tuple[dict[str, Any] | str, str]] = [
            ({"op": "subscribe", "channel": "orders"}, "unauthorized"),
            ({"op": "subscribe", "channel": "positions"}, "unauthorized"),
            ({"op": "auth", "token": "not-a-jwt"}, "invalid_token"),
            ({"op": "auth"}, "missing_token"),
            ({"op": "subscribe", "channel": "level2", "symbol": "NOPE.SIM"}, "unknown_symbol"),
            ({"op": "subscribe", "channel": "level2"}, "missing_symbol"),
            ({"op": "subscribe", "channel": "candles", "symbol": SYM}, "unknown_channel"),
            ({"op": "unsubscribe", "channel": "trades", "symbol": SYM}, "not_subscribed"),
            ({"op": "dance"}, "unknown_op"),
            ({"op": "ping", "extra": 1}, "bad_request"),
            ("{not json", "malformed_json"),
            ("[1, 2]", "bad_request"),
        ]
        for msg, code in cases:
            await ws.send(msg if isinstance(msg, str) else json.dumps(msg))
            err = await recv(ws)
            assert (err["type"], err["error"]) == ("error", code), (msg, err)
            assert err["message"]
        await send(ws, op="ping", id=5)
        pong = await recv(ws)
        assert (pong["type"], pong["id"]) == ("pong", 5)
        await subscribe(ws, channel="trades", symbol=SYM)
        await send(ws, op="subscribe", channel="trades", symbol=SYM)
        assert (await recv(ws))["error"] == "already_subscribed"
        await send(ws, op="unsubscribe", channel="trades", symbol=SYM)
        assert (await recv(ws))["type"] == "unsubscribed"
        await live.order("bob", "sell", "190.00", 1)
        await live.order("alice", "buy", "190.00", 1)
        await send(ws, op="ping")
        assert (await recv(ws))["type"] == "pong"  # no trade frame after the unsubscribe


async def test_heartbeats(stack: Stack) -> None:
    async with serve(stack, ws_heartbeat=0.1) as live, connect(live.ws_url) as ws:
        beats = [await recv(ws, 2.0, skip=()) for _ in range(3)]
        assert [b["type"] for b in beats] == ["heartbeat"] * 3
        assert beats[0]["ts"] < beats[1]["ts"] < beats[2]["ts"]


async def test_a_client_that_never_reads_is_dropped_and_orders_stay_fast(tmp_path: Path) -> None:
    # the flood of pings must fill the queue, not trip the message rate limit (tests/api/test_ws_limits.py)
    config = make_config(tmp_path, "ws_rate_limit = 1e9\nws_rate_burst = 1_000_000\n")
    async for stack in start_stack(tmp_path, config):
        await _never_reads(stack)


async def _never_reads(stack: Stack) -> None:
    async with serve(stack, ws_queue_size=64, ws_heartbeat=60.0) as live:
        fast = await connect(live.ws_url)
        await subscribe(fast, channel="trades", symbol=SYM)
        made: list[dict[str, Any]] = []

        async def pairs(n: int) -> list[float]:
            out = []
            for i in range(n):
                t0 = time.perf_counter()
                await live.order("bob", "sell", f"190.{i % 10:02d}", 5)
                made.extend((await live.order("alice", "buy", "190.09", 5))["trades"])
                out.append(time.perf_counter() - t0)
            return out

        baseline = sorted(await pairs(20))
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a client that reads nothing fills up soon
        raw.setblocking(False)
        await asyncio.get_running_loop().sock_connect(raw, live.addr)
        slow = await connect(live.ws_url, sock=raw, max_queue=1)  # the library stops reading the socket too
        for channel in ("level2", "trades"):
            await send(slow, op="subscribe", channel=channel, symbol=SYM)
        pings = 0

        async def flood() -> None:  # pongs it never reads pile up, as market data would, only sooner
            nonlocal pings
            with contextlib.suppress(ConnectionClosed):
                while not live.hub.stats.slow_dropped and pings < 50_000:
                    await send(slow, op="ping", id=f"{pings:060d}")
                    pings += 1
                    if pings % 20 == 0:
                        await asyncio.sleep(0)

        flooding = asyncio.create_task(flood())
        during = sorted(await pairs(60))
        await asyncio.wait_for(flooding, 30)
        assert live.hub.stats.slow_dropped == 1, pings
        # a venue stalled behind the slow client would show seconds (or never answer)
        assert during[-1] < max(5.0, 10 * baseline[-1]), (baseline, during)  # generous: CI machines are shared
        # the fast client got every trade, in order
        got = []
        while len(got) < len(made):
            msg = await recv(fast)
            if msg["type"] == "trade":
                got.append(msg["trade_id"])
        assert got == [t["trade_id"] for t in made]
        # the slow client's connection is closed: reading what it has ends in ConnectionClosed
        with pytest.raises(ConnectionClosed):
            for _ in range(100_000):
                await asyncio.wait_for(slow.recv(), 5)
        assert live.hub.stats.clients == 1
        await fast.close()
