"""/ws ends a connection on its own terms: when its JWT expires (4401 token_expired, a fresh token before
`exp` keeps it), when the API key holding it stops being valid (4401 key_revoked), and when it keeps
sending over `[api] ws_rate_limit` (refused with rate_limited, then 4429). The app's clocks are faked, so
expiry and token refill happen when the test says, not after real waits."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgspec
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.api.conftest import PASSWORD, USERS, Stack, make_config, start_stack
from tests.api.test_ws import SYM, Live, login, recv, send, serve, subscribe
from tradesim.api.ws import WsSettings
from tradesim.services.config import ApiSettings, ConfigError, load_config
from tradesim.store.users import UserStore, open_users

T0 = 1_750_000_000.0  # the fake wall clock's start (epoch s)
TTL = 3600  # [api] token_ttl default


class FakeClock:
    """The app's wall clock (token iat/exp) and monotonic clock (rate limits), moved by the test."""

    def __init__(self) -> None:
        self.now = T0
        self.mono = 1000.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.mono


async def closed(ws: ClientConnection, timeout: float = 5.0) -> tuple[list[dict[str, Any]], int, str]:
    """The frames the server sent before closing (heartbeats left out), and its close code and reason."""
    frames = []
    with pytest.raises(ConnectionClosed) as info:
        while True:
            msg = json.loads(await asyncio.wait_for(ws.recv(), timeout))
            if msg["type"] != "heartbeat":
                frames.append(msg)
    rcvd = info.value.rcvd
    assert rcvd is not None, "closed without a close frame from the server"
    return frames, rcvd.code, rcvd.reason


async def pong(ws: ClientConnection, id: int) -> None:
    await send(ws, op="ping", id=id)
    msg = await recv(ws)
    assert (msg["type"], msg["id"]) == ("pong", id), msg


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def live(stack: Stack, clock: FakeClock) -> AsyncIterator[Live]:
    async with serve(stack, clock=clock.time, monotonic=clock.monotonic, ws_heartbeat=60.0) as lv:
        lv.app.state["ws"] = WsSettings(heartbeat=60.0, expiry_check=0.02, key_check=0.02)
        yield lv


# ---- token expiry -----------------------------------------------------------------------------------------
async def test_a_jwt_socket_is_closed_when_the_token_expires(live: Live, clock: FakeClock) -> None:
    async with connect(live.ws_url) as ws, connect(live.ws_url) as public:
        await send(ws, op="auth", token=live.tokens["alice"], id="a")
        auth = await recv(ws)
        assert auth == {"type": "authenticated", "username": "alice", "role": "trader", "account": "alice",
                        "exp": int(T0) + TTL, "id": "a"}
        await subscribe(ws, channel="orders")
        await subscribe(ws, channel="trades", symbol=SYM)
        await subscribe(public, channel="trades", symbol=SYM)
        clock.now = T0 + TTL - 1
        await pong(ws, 1)  # a second before exp: still open
        clock.now = T0 + TTL  # exp passes while the socket is idle: the watcher closes it
        frames, code, reason = await closed(ws)
        assert [(f["type"], f["error"]) for f in frames] == [("error", "token_expired")], frames
        assert "POST /api/v1/auth/token" in frames[0]["message"]
        assert (code, reason) == (4401, "token expired")
        await pong(public, 2)  # a public socket has no token to expire
        assert live.hub.stats.clients == 1


async def test_a_message_after_exp_closes_the_socket_at_once(live: Live, clock: FakeClock) -> None:
    live.app.state["ws"] = WsSettings(heartbeat=60.0, expiry_check=3600.0)  # the watcher would look too late
    async with connect(live.ws_url) as ws:
        await login(ws, live, "bob")
        clock.now = T0 + TTL + 5
        await send(ws, op="subscribe", channel="orders")
        frames, code, _ = await closed(ws)
        assert [f["error"] for f in frames] == ["token_expired"] and code == 4401, (frames, code)


async def test_a_fresh_token_before_exp_keeps_the_socket(live: Live, clock: FakeClock) -> None:
    async with connect(live.ws_url) as ws:
        await login(ws, live, "alice")
        await subscribe(ws, channel="orders")
        clock.now = T0 + TTL - 60
        for name in ("alice", "bob"):  # fresh tokens, for the socket and for REST after the old exp
            r = await live.http.post("/api/v1/auth/token", json={"username": name, "password": PASSWORD})
            live.tokens[name] = r.json()["access_token"]
        await send(ws, op="auth", token=live.tokens["alice"])
        again = await recv(ws)
        assert (again["type"], again["exp"]) == ("authenticated", int(clock.now) + TTL), again
        clock.now = T0 + TTL + 60  # the first token's exp has passed
        await asyncio.sleep(0.1)  # several of the watcher's looks (every 0.02 s)
        await pong(ws, 1)
        await live.order("bob", "sell", "190.00", 1)
        await live.order("alice", "buy", "190.00", 1)
        events = [(await recv(ws))["type"] for _ in range(2)]
        assert "fill" in events, events  # the private subscription survived the refresh
        # the connection stays alice's: another user's token is refused, the socket stays
        await send(ws, op="auth", token=live.tokens["bob"], id=3)  # valid
        err = await recv(ws)
        assert (err["error"], err["id"]) == ("already_authenticated", 3), err
        clock.now = T0 + 2 * TTL - 60 + 1  # the fresh token's exp
        frames, code, _ = await closed(ws)
        assert [f["error"] for f in frames if f["type"] == "error"] == ["token_expired"] and code == 4401


async def test_auth_refusals_are_error_frames(live: Live, clock: FakeClock) -> None:
    async with connect(live.ws_url) as ws:
        expired = live.tokens["alice"]
        clock.now = T0 + TTL
        cases: list[tuple[dict[str, Any], str]] = [
            ({"op": "auth", "token": expired}, "token_expired"),
            ({"op": "auth", "api_key": "tsk_nope_nope"}, "invalid_credentials"),
            ({"op": "auth", "api_key": "not a key"}, "invalid_credentials"),
            ({"op": "auth", "token": expired, "api_key": "tsk_a_b"}, "bad_request"),
            ({"op": "auth"}, "missing_token"),
        ]
        for msg, code in cases:
            await ws.send(json.dumps(msg))
            err = await recv(ws)
            assert (err["type"], err["error"]) == ("error", code), (msg, err)
        await pong(ws, 1)  # refused auth never closes the socket


# ---- API keys ---------------------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def keyed(tmp_path: Path, clock: FakeClock) -> AsyncIterator[tuple[Live, UserStore, str]]:
    """A served stack whose users are in SQLite (as `tradesim run` keeps them), alice with an API key;
    WebSocket key checks every 0.05 s."""
    users = await open_users(tmp_path / "users")
    try:
        for name, (role, account) in USERS.items():
            await users.add(name, role, PASSWORD, account)
        key = await users.add_api_key("alice")
        async for base in start_stack(tmp_path, make_config(tmp_path)):
            stack = replace(base, users=users)
            async with serve(stack, clock=clock.time, monotonic=clock.monotonic, ws_heartbeat=60.0) as live:
                live.app.state["ws"] = WsSettings(heartbeat=60.0, expiry_check=0.02, key_check=0.05)
                yield live, users, key
    finally:
        await users.close()


async def test_an_api_key_socket_stays_while_the_key_is_valid(tmp_path: Path, clock: FakeClock) -> None:
    """The key is revoked behind the API's back: its row deleted from `api_keys`."""
    async with keyed(tmp_path, clock) as (live, _users, key), connect(live.ws_url) as ws:
        await send(ws, op="auth", api_key=key)
        auth = await recv(ws)
        assert auth == {"type": "authenticated", "username": "alice", "role": "trader",
                        "account": "alice"}, auth  # no exp
        await subscribe(ws, channel="positions")
        clock.now = T0 + 30 * 86_400  # a month on: far past any token's exp
        await asyncio.sleep(0.2)  # several key re-checks (every 0.05 s) find the key valid
        await pong(ws, 1)
        with sqlite3.connect(tmp_path / "users" / "users.db") as db:
            assert db.execute("DELETE FROM api_keys").rowcount == 1
        frames, code, reason = await closed(ws)
        assert [f["error"] for f in frames] == ["key_revoked"], frames
        assert (code, reason) == (4401, "api key revoked")


async def test_a_socket_on_a_token_from_a_revoked_key_is_closed(tmp_path: Path, clock: FakeClock) -> None:
    """A token exchanged for an API key holds a socket only while the key exists (checked every
    `key_check`, the store looked up at most every `[api] key_recheck`)."""
    async with keyed(tmp_path, clock) as (live, users, key):
        exchanged = await live.http.post("/api/v1/auth/token", json={"api_key": key})
        token = exchanged.json()["access_token"]
        async with connect(live.ws_url) as ws:
            await send(ws, op="auth", token=token)
            assert (await recv(ws))["type"] == "authenticated"
            clock.mono += 10  # past key_recheck: the next key check looks the key up
            await asyncio.sleep(0.2)
            await pong(ws, 1)  # still there
            assert await users.revoke_key(key) == "alice"
            clock.mono += 10
            frames, code, reason = await closed(ws)
            assert [f["error"] for f in frames] == ["key_revoked"], frames
            assert (code, reason) == (4401, "api key revoked")
        async with connect(live.ws_url) as ws:  # and the token no longer authenticates a socket
            await send(ws, op="auth", token=token)
            err = await recv(ws)
            assert (err["type"], err["error"]) == ("error", "key_revoked"), err


# ---- message rate limit -----------------------------------------------------------------------------------
@pytest.fixture
async def limited(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Live]:
    config = make_config(tmp_path, "ws_rate_limit = 10.0\nws_rate_burst = 5\nws_rate_strikes = 3\n")
    async for stack in start_stack(tmp_path, config):
        async with serve(stack, clock=clock.time, monotonic=clock.monotonic, ws_heartbeat=60.0) as lv:
            yield lv


async def test_a_flood_is_refused_then_closed(limited: Live, clock: FakeClock) -> None:
    async with connect(limited.ws_url) as ws, connect(limited.ws_url) as other:
        for i in range(5):  # the burst
            await pong(ws, i)
        await send(ws, op="subscribe", channel="trades", symbol=SYM, id="s1")
        err = await recv(ws)  # refused, its id, channel and symbol echoed, the limit named
        assert (err["type"], err["error"], err["id"], err["channel"]) == ("error", "rate_limited", "s1", "trades")
        assert "10 messages/s (burst 5)" in err["message"], err
        await ws.send("{not json")  # every message counts, even one that is not valid
        assert (await recv(ws))["error"] == "rate_limited"
        await pong(other, 0)  # the limit is per connection
        clock.mono += 0.25  # 2.5 tokens refilled; a quarter strike forgiven (1.25 of 3 left)
        await pong(ws, 10)
        await subscribe(ws, channel="trades", symbol=SYM)
        await send(ws, op="ping", id=11)
        assert (await recv(ws))["error"] == "rate_limited"  # 0.25 strikes left
        await send(ws, op="ping", id=12)
        frames, code, reason = await closed(ws)
        assert [f["error"] for f in frames] == ["rate_limit_exceeded"], frames
        assert (code, reason) == (4429, "rate limit exceeded")
        await pong(other, 1)
        assert limited.hub.stats.clients == 1


async def test_zero_strikes_closes_at_the_first_refusal(tmp_path: Path, clock: FakeClock) -> None:
    config = make_config(tmp_path, "ws_rate_limit = 1.0\nws_rate_burst = 1\nws_rate_strikes = 0\n")
    async for stack in start_stack(tmp_path, config):
        async with serve(stack, clock=clock.time, monotonic=clock.monotonic, ws_heartbeat=60.0) as live, \
                connect(live.ws_url) as ws:
            await pong(ws, 0)
            await send(ws, op="ping", id=1)
            frames, code, _ = await closed(ws)
            assert [f["error"] for f in frames] == ["rate_limit_exceeded"] and code == 4429, frames


def test_ws_rate_settings_are_checked(tmp_path: Path) -> None:
    defaults = load_config(None, env={}).api
    assert (defaults.ws_rate_limit, defaults.ws_rate_burst, defaults.ws_rate_strikes) == (10.0, 100, 10)
    for bad in ({"ws_rate_limit": 0.0}, {"ws_rate_burst": 0}, {"ws_rate_strikes": -1}):
        with pytest.raises(ValueError, match="ws_rate"):
            ApiSettings(**bad)
        with pytest.raises(ValueError, match="ws_rate"):
            msgspec.convert(bad, ApiSettings)
    with pytest.raises(ConfigError, match="ws_rate_limit"):
        make_config(tmp_path, "ws_rate_limit = -1.0\n")
