"""The `/ws` WebSocket endpoint: one connection's requests (auth, subscribe, unsubscribe, ping), its
bounded outgoing queue and writer, heartbeats, and dropping it when it cannot keep up.

Frames reach a connection only through `Connection.offer`, which never waits: when the queue holds
`queue_size` frames the connection is marked slow, leaves every feed at once, and its handler sends a
`slow_consumer` error if the socket still takes it (within a second) and closes. The hub and the bus never
wait for a client. Protocol: docs/api.md (WebSocket) and `tradesim.api.wsmodels`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any, Final

import msgspec
from litestar import WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect

from tradesim.api.auth import Principal, verify_token
from tradesim.api.context import Context
from tradesim.api.errors import ApiError
from tradesim.api.feeds import CHANNELS, PUBLIC, Hub
from tradesim.api.wsmodels import (
    Authenticated,
    ErrorMsg,
    Heartbeat,
    Pong,
    Subscribed,
    Unsubscribed,
    WsRequest,
    encode,
)

log = logging.getLogger("tradesim.api.ws")

DEFAULT_QUEUE: Final = 1000  # frames a client may have waiting before it is dropped as slow
DEFAULT_HEARTBEAT: Final = 15.0  # seconds between heartbeats
MAX_SUBSCRIPTIONS: Final = 100
MAX_REQUEST: Final = 16_384  # bytes of one client message
MAX_ID: Final = 64  # characters of a request id
NOTICE_TIMEOUT: Final = 1.0  # how long a dropped client's notice and close may take


class WsSettings(msgspec.Struct, frozen=True, kw_only=True):
    queue_size: int = DEFAULT_QUEUE
    heartbeat: float = DEFAULT_HEARTBEAT


class Connection:
    """One client: its subscriptions, principal and outgoing queue (a Sink of the hub)."""

    def __init__(self, hub: Hub, queue_size: int) -> None:
        self.hub = hub
        self.queue: deque[str] = deque()
        self.queue_size = queue_size
        self.wake = asyncio.Event()
        self.done = asyncio.Event()
        self.reason = ""  # why it ends: "slow_consumer", "disconnected", "send_failed"
        self.principal: Principal | None = None
        self.subscriptions: dict[tuple[str, str], None] = {}

    def offer(self, frame: str) -> None:
        if self.done.is_set():
            return
        if len(self.queue) >= self.queue_size:
            self.hub.stats.slow_dropped += 1
            self.end("slow_consumer")
            return
        self.queue.append(frame)
        self.hub.stats.frames += 1
        self.wake.set()

    def end(self, reason: str) -> None:
        """Stop at once: leave every feed (no frame is queued after this) and wake the handler."""
        if self.done.is_set():
            return
        self.reason = reason
        self.queue.clear()
        self.hub.drop(self, self.subscriptions)
        self.subscriptions.clear()
        self.done.set()

    async def write_loop(self, socket: WebSocket[Any, Any, Any]) -> None:
        while not self.done.is_set():
            await self.wake.wait()
            self.wake.clear()
            while self.queue and not self.done.is_set():
                await socket.send_text(self.queue.popleft())


def _error(error: str, message: str, req: WsRequest | None = None) -> str:
    return encode(ErrorMsg(error=error, message=message, channel=req.channel if req else None,
                           symbol=req.symbol if req else None, id=req.id if req else None))


async def _handle(conn: Connection, ctx: Context, raw: str | bytes) -> None:
    """One client message; every refusal is an error frame, the connection stays open."""
    if len(raw) > MAX_REQUEST:
        conn.offer(_error("bad_request", f"message larger than {MAX_REQUEST} bytes"))
        return
    try:
        req = msgspec.json.decode(raw, type=WsRequest)
    except msgspec.ValidationError as exc:
        conn.offer(_error("bad_request", f"bad message: {exc}"))
        return
    except msgspec.DecodeError as exc:
        conn.offer(_error("malformed_json", f"not a JSON message: {exc}"))
        return
    if isinstance(req.id, str) and len(req.id) > MAX_ID:
        req.id = None
        conn.offer(_error("bad_request", f"id longer than {MAX_ID} characters"))
        return
    try:
        if req.op == "ping":
            conn.offer(encode(Pong(ts=time.time_ns(), id=req.id)))
        elif req.op == "auth":
            if not req.token:
                raise ApiError(401, "missing_token", "send {\"op\":\"auth\",\"token\":\"<jwt>\"}")
            auth = ctx.auth
            conn.principal = verify_token(auth.secret, req.token, now=auth.clock())
            p = conn.principal
            conn.offer(encode(Authenticated(username=p.username, role=p.role.value, account=p.account, id=req.id)))
        elif req.op in ("subscribe", "unsubscribe"):
            await _subscription(conn, ctx, req)
        else:
            raise ApiError(400, "unknown_op", f"unknown op {req.op!r} (known: subscribe, unsubscribe, auth, ping)")
    except ApiError as exc:
        conn.offer(_error(exc.error, exc.message, req))


async def _subscription(conn: Connection, ctx: Context, req: WsRequest) -> None:
    channel = req.channel or ""
    if channel not in CHANNELS:
        raise ApiError(400, "unknown_channel", f"unknown channel {channel!r} (known: {', '.join(CHANNELS)})")
    symbol = account = None
    if channel in PUBLIC:
        if not req.symbol:
            raise ApiError(400, "missing_symbol", f"channel {channel} needs a symbol")
        key = symbol = req.symbol
    else:
        if conn.principal is None:
            raise ApiError(401, "unauthorized", f"channel {channel} is private: send "
                                                "{\"op\":\"auth\",\"token\":\"<jwt>\"} first")
        key = account = conn.principal.account_for(req.account)
    if req.op == "unsubscribe":
        conn.subscriptions.pop((channel, key), None)
        if not conn.hub.unsubscribe(conn, channel, key):
            raise ApiError(404, "not_subscribed", f"not subscribed to {channel} {key}")
        conn.offer(encode(Unsubscribed(channel=channel, symbol=symbol, account=account, id=req.id)))
        return
    if (channel, key) in conn.subscriptions:
        raise ApiError(409, "already_subscribed", f"already subscribed to {channel} {key}")
    if len(conn.subscriptions) >= MAX_SUBSCRIPTIONS:
        raise ApiError(400, "too_many_subscriptions", f"at most {MAX_SUBSCRIPTIONS} subscriptions per connection")
    ack = encode(Subscribed(channel=channel, symbol=symbol, account=account, id=req.id))
    await conn.hub.subscribe(conn, channel, key, ack)
    if conn.done.is_set():  # dropped while the feed started: leave again
        conn.hub.unsubscribe(conn, channel, key)
    else:
        conn.subscriptions[(channel, key)] = None


async def _read_loop(socket: WebSocket[Any, Any, Any], conn: Connection, ctx: Context) -> None:
    while not conn.done.is_set():
        event = await socket.receive()
        if event["type"] == "websocket.disconnect":
            conn.end("disconnected")
            return
        raw = event.get("text")
        if raw is None:
            raw = event.get("bytes") or b""
        await _handle(conn, ctx, raw if isinstance(raw, str | bytes) else b"")


async def _heartbeat(conn: Connection, period: float) -> None:
    while not conn.done.is_set():
        await asyncio.sleep(period)
        conn.offer(encode(Heartbeat(ts=time.time_ns())))


@websocket("/ws")
async def ws_endpoint(socket: WebSocket[Any, Any, Any]) -> None:
    """Market data (trades, level2, ticker) and, after auth, the account's orders and positions."""
    ctx: Context = socket.app.state["ctx"]
    hub: Hub = socket.app.state["hub"]
    settings: WsSettings = socket.app.state["ws"]
    await socket.accept()
    conn = Connection(hub, settings.queue_size)
    hub.stats.clients += 1
    tasks = [asyncio.create_task(_read_loop(socket, conn, ctx), name="ws-read"),
             asyncio.create_task(conn.write_loop(socket), name="ws-write"),
             asyncio.create_task(_heartbeat(conn, settings.heartbeat), name="ws-heartbeat")]
    for task in tasks:
        task.add_done_callback(lambda t: _task_done(conn, t))
    try:
        await conn.done.wait()
    finally:
        conn.end(conn.reason or "closed")
        hub.stats.clients -= 1
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if conn.reason == "disconnected":
        return
    if conn.reason == "slow_consumer":
        log.warning("ws: dropped a slow consumer (%d frames queued)", settings.queue_size)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(socket.send_text(_error(
                "slow_consumer", f"more than {settings.queue_size} frames waiting: reconnect and resubscribe")),
                NOTICE_TIMEOUT)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(socket.close(code=1008 if conn.reason == "slow_consumer" else 1000), NOTICE_TIMEOUT)


def _task_done(conn: Connection, task: asyncio.Task[None]) -> None:
    """A reader, writer or heartbeat that ends ends the connection (a send failed, the client left)."""
    if task.cancelled():
        return
    exc = task.exception()
    if isinstance(exc, WebSocketDisconnect):
        conn.end("disconnected")
    elif exc is not None:
        if not conn.done.is_set():
            log.info("ws: connection ended: %s: %s", type(exc).__name__, exc)
        conn.end("disconnected" if "disconnect" in type(exc).__name__.lower() else "send_failed")
    else:
        conn.end(conn.reason or "closed")


ROUTES = [ws_endpoint]
