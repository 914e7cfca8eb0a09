"""The `/ws` WebSocket endpoint: one connection's requests (auth, subscribe, unsubscribe, ping), its
bounded outgoing queue and writer, heartbeats, and dropping it when it cannot keep up.

Frames reach a connection only through `Connection.offer`, which never waits: when the queue holds
`queue_size` frames the connection is marked slow, leaves every feed at once, and its handler sends a
`slow_consumer` error if the socket still takes it (within a second) and closes. The hub and the bus never
wait for a client. Protocol: docs/api.md (WebSocket) and `tradesim.api.wsmodels`.

A connection ends on its own terms too, always with a last error frame and an application close code:
its JWT's `exp` passes (4401 `token_expired`; an API key holds it while the key is valid, 4401
`key_revoked` otherwise), or it keeps sending faster than `[api] ws_rate_limit` (each message over the
limit is refused with `rate_limited`; more than `ws_rate_strikes` of them close it, 4429). The codes
mirror HTTP 401/429 in the 4000-4999 range RFC 6455 leaves to applications.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any, Final

import jwt
import msgspec
from litestar import WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect

from tradesim.api.auth import Principal
from tradesim.api.context import Context
from tradesim.api.errors import ApiError
from tradesim.api.feeds import CHANNELS, PUBLIC, Hub
from tradesim.api.ratelimit import TokenBucket
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
EXPIRY_CHECK: Final = 5.0  # seconds between looks at the clock while a token has longer to live
KEY_CHECK: Final = 60.0  # seconds between re-checks that an API key holding a socket is still valid
STRIKE_FORGIVEN: Final = 1.0  # refused messages forgiven per second
CLOSE_EXPIRED: Final = 4401  # the token expired or the API key is no longer valid (HTTP 401)
CLOSE_RATE: Final = 4429  # kept sending over the message rate limit (HTTP 429)
CLOSE_SLOW: Final = 1008  # policy violation: let its queue fill


class WsSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Per-process WebSocket knobs (`create_app`); the message rate limits are `[api]` settings."""

    queue_size: int = DEFAULT_QUEUE
    heartbeat: float = DEFAULT_HEARTBEAT
    # A token's end is computed from the app's clock, which can jump (tests, NTP): looking again this often
    # bounds how late an expiry is noticed; every client message also looks first.
    expiry_check: float = EXPIRY_CHECK
    key_check: float = KEY_CHECK


class Connection:
    """One client: its subscriptions, principal, limits and outgoing queue (a Sink of the hub)."""

    def __init__(self, hub: Hub, queue_size: int, limit: TokenBucket, strikes: TokenBucket | None) -> None:
        self.hub = hub
        self.queue: deque[str] = deque()
        self.queue_size = queue_size
        self.wake = asyncio.Event()
        self.done = asyncio.Event()
        # why it ends: "slow_consumer", "disconnected", "send_failed", "token_expired", "key_revoked",
        # "rate_limit_exceeded"; with the last frame to send (if any) and the close code and reason
        self.reason = ""
        self.notice = ""
        self.close_code = 1000
        self.close_reason = ""
        self.principal: Principal | None = None
        self.expires: float | None = None  # the JWT's exp (epoch s); None: no auth yet, or an API key
        self.api_key: str | None = None  # the key the socket authenticated with, re-checked every key_check
        self.auth_changed = asyncio.Event()  # wakes the watcher when `expires`/`api_key` change
        self.limit = limit  # client messages
        self.strikes = strikes  # refused messages before closing; None = the first refusal closes
        self.subscriptions: dict[tuple[str, str], None] = {}

    def offer(self, frame: str) -> None:
        if self.done.is_set():
            return
        if len(self.queue) >= self.queue_size:
            self.hub.stats.slow_dropped += 1
            self.end("slow_consumer", _error("slow_consumer", f"more than {self.queue_size} frames waiting: "
                                                              "reconnect and resubscribe"),
                     CLOSE_SLOW, "slow consumer")
            return
        self.queue.append(frame)
        self.hub.stats.frames += 1
        self.wake.set()

    def end(self, reason: str, notice: str = "", code: int = 1000, close_reason: str = "") -> None:
        """Stop at once: leave every feed (no frame is queued after this) and wake the handler, which sends
        `notice` (if the socket still takes it) and closes with `code`."""
        if self.done.is_set():
            return
        self.reason = reason
        self.notice = notice
        self.close_code = code
        self.close_reason = close_reason
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


def _expired(conn: Connection, ctx: Context) -> bool:
    """End the connection if its token's `exp` has passed (by the app's clock); True if it has."""
    if conn.expires is None or ctx.auth.clock() < conn.expires:
        return False
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(conn.expires))
    conn.end("token_expired", _error("token_expired", f"the access token expired at {at}: get a new one from "
                                                      "POST /api/v1/auth/token, reconnect and resubscribe (or send "
                                                      "auth with the new token before exp)"),
             CLOSE_EXPIRED, "token expired")
    return True


def _over_limit(conn: Connection, raw: str | bytes) -> bool:
    """Spend a token of the connection's bucket; True if the message is refused (an error frame, or the
    close once the strikes are used up)."""
    wait = conn.limit.take()
    if wait <= 0:
        return False
    limit = f"{conn.limit.rate:g} messages/s (burst {conn.limit.burst})"
    if conn.strikes is None or conn.strikes.take() > 0:
        tolerated = conn.strikes.burst if conn.strikes is not None else 0
        conn.end("rate_limit_exceeded", _error("rate_limit_exceeded", f"kept sending over {limit} after "
                                                                      f"{tolerated} refusals: closing"),
                 CLOSE_RATE, "rate limit exceeded")
        return True
    req: WsRequest | None = None
    with contextlib.suppress(msgspec.MsgspecError):  # only to echo its id, channel and symbol
        if len(raw) <= MAX_REQUEST:
            req = msgspec.json.decode(raw, type=WsRequest)
            if isinstance(req.id, str) and len(req.id) > MAX_ID:
                req.id = None
    conn.offer(_error("rate_limited", f"over {limit} on this connection: message ignored; retry in {wait:.2f} s",
                      req))
    return True


async def _auth(conn: Connection, ctx: Context, req: WsRequest) -> None:
    """Authenticate (or refresh: the same user with a new token or key) the connection."""
    if req.token and req.api_key:
        raise ApiError(400, "bad_request", "send either token or api_key, not both")
    expires: float | None = None
    if req.token:
        principal = ctx.auth.verify(req.token)
        await ctx.auth.check_key(principal)
        expires = float(jwt.decode(req.token, options={"verify_signature": False})["exp"])  # verified above
    elif req.api_key:
        found = await ctx.users.authenticate_key(req.api_key)
        if found is None:
            raise ApiError(401, "invalid_credentials", "unknown or revoked API key")
        user, key_id = found
        principal = Principal(username=user.username, role=user.role, account=user.account, key_id=key_id)
    else:
        raise ApiError(401, "missing_token", "send {\"op\":\"auth\",\"token\":\"<jwt>\"} or "
                                             "{\"op\":\"auth\",\"api_key\":\"<key>\"}")
    old = conn.principal
    if old is not None and (old.username, old.account) != (principal.username, principal.account):
        raise ApiError(409, "already_authenticated", f"this connection is {old.username}'s: open another one "
                                                     f"for {principal.username}")
    if conn.done.is_set():  # ended while the key was looked up
        return
    conn.principal = principal
    conn.expires = expires
    conn.api_key = req.api_key if expires is None else None
    conn.auth_changed.set()
    conn.offer(encode(Authenticated(username=principal.username, role=principal.role.value,
                                    account=principal.account, exp=None if expires is None else int(expires),
                                    id=req.id)))


async def _handle(conn: Connection, ctx: Context, raw: str | bytes) -> None:
    """One client message; every refusal is an error frame, the connection stays open (unless its token
    has expired or it floods: then it ends)."""
    if _expired(conn, ctx) or _over_limit(conn, raw):
        return
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
            await _auth(conn, ctx, req)
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


async def _watch_auth(conn: Connection, ctx: Context, settings: WsSettings) -> None:
    """Close the connection when its token expires, or when the API key holding it (directly, or through
    the token exchanged for it) is no longer valid."""
    loop = asyncio.get_running_loop()
    next_key_check = loop.time() + settings.key_check

    def keyed() -> bool:
        return conn.api_key is not None or bool(conn.principal is not None and conn.principal.key_id)

    while not conn.done.is_set():
        if _expired(conn, ctx):
            return
        if keyed() and loop.time() >= next_key_check:
            next_key_check = loop.time() + settings.key_check
            if conn.api_key is not None:
                await _check_key(conn, ctx, conn.api_key)
            else:
                await _check_token_key(conn, ctx)
            continue
        waits = []
        if conn.expires is not None:
            waits.append(min(settings.expiry_check, max(0.0, conn.expires - ctx.auth.clock())))
        if keyed():
            waits.append(max(0.0, next_key_check - loop.time()))
        conn.auth_changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(conn.auth_changed.wait(), min(waits) if waits else None)
        if conn.auth_changed.is_set() and keyed():
            next_key_check = loop.time() + settings.key_check  # just authenticated: the key is good now


def _end_revoked(conn: Connection) -> None:
    conn.end("key_revoked", _error("key_revoked", "the API key this connection authenticated with is no "
                                                  "longer valid"), CLOSE_EXPIRED, "api key revoked")


async def _check_token_key(conn: Connection, ctx: Context) -> None:
    p = conn.principal
    if p is None:
        return
    try:
        await ctx.auth.check_key(p)
    except ApiError:
        if conn.principal is p:  # not re-authenticated meanwhile
            _end_revoked(conn)


async def _check_key(conn: Connection, ctx: Context, key: str) -> None:
    try:
        found = await ctx.users.authenticate_key(key)
    except Exception as exc:  # the store is unreachable: the key was valid; keep the socket and look again
        log.warning("ws: could not re-check an API key: %s: %s", type(exc).__name__, exc)
        return
    p = conn.principal
    if conn.api_key != key or p is None:  # re-authenticated meanwhile
        return
    if found is None or (found[0].username, found[0].account) != (p.username, p.account):
        _end_revoked(conn)
    elif found[0].role is not p.role:  # a role change applies at the next check
        conn.principal = msgspec.structs.replace(p, role=found[0].role)


@websocket("/ws")
async def ws_endpoint(socket: WebSocket[Any, Any, Any]) -> None:
    """Market data (trades, level2, ticker) and, after auth, the account's orders and positions."""
    ctx: Context = socket.app.state["ctx"]
    hub: Hub = socket.app.state["hub"]
    settings: WsSettings = socket.app.state["ws"]
    api = ctx.config.api
    monotonic = ctx.auth.limiter.clock  # the app's (tests fake it)
    await socket.accept()
    conn = Connection(hub, settings.queue_size, TokenBucket(api.ws_rate_limit, api.ws_rate_burst, clock=monotonic),
                      TokenBucket(STRIKE_FORGIVEN, api.ws_rate_strikes, clock=monotonic)
                      if api.ws_rate_strikes else None)
    hub.stats.clients += 1
    tasks = [asyncio.create_task(_read_loop(socket, conn, ctx), name="ws-read"),
             asyncio.create_task(conn.write_loop(socket), name="ws-write"),
             asyncio.create_task(_heartbeat(conn, settings.heartbeat), name="ws-heartbeat"),
             asyncio.create_task(_watch_auth(conn, ctx, settings), name="ws-auth")]
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
    elif conn.reason == "rate_limit_exceeded":
        log.warning("ws: closed a client sending over %g messages/s", api.ws_rate_limit)
    if conn.notice:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(socket.send_text(conn.notice), NOTICE_TIMEOUT)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(socket.close(code=conn.close_code, reason=conn.close_reason or None), NOTICE_TIMEOUT)


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
