"""Bad input and auth failures: a specific 4xx JSON error every time, never a 500, and nothing changes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import PASSWORD, SECRET, Stack, http, make_config, start_stack
from tradesim.api.auth import issue_token
from tradesim.store.users import Role, User

BOOK = "/api/v1/book/AAPL.SIM"
GOOD = {"symbol": "AAPL.SIM", "side": "buy", "type": "limit", "tif": "GTC", "price": "190.00", "qty": 10}


def with_(**changes: Any) -> dict[str, Any]:
    return {**GOOD, **changes}


BAD_ORDERS: list[tuple[str, bytes | dict[str, Any], int, str]] = [
    ("not json", b"{not json", 400, "malformed_json"),
    ("empty body", b"", 400, "malformed_json"),
    ("array body", b"[1, 2]", 400, "invalid_type"),
    ("unknown field", with_(colour="red"), 400, "unknown_field"),
    ("missing qty", {k: v for k, v in GOOD.items() if k != "qty"}, 400, "missing_field"),
    ("bad side", with_(side="sideways"), 400, "invalid_enum"),
    ("bad type", with_(type="limitless"), 400, "invalid_enum"),
    ("bad tif", with_(tif="forever"), 400, "invalid_enum"),
    ("qty as string", with_(qty="10"), 400, "invalid_type"),
    ("fractional qty", with_(qty=1.5), 400, "invalid_type"),
    ("negative qty", with_(qty=-5), 400, "bad_qty"),
    ("zero qty", with_(qty=0), 400, "bad_qty"),
    ("off-tick price", with_(price="190.001"), 400, "off_tick"),
    ("price not a number", with_(price="abc"), 400, "bad_price"),
    ("negative price", with_(price="-1"), 400, "bad_price"),
    ("infinite price", with_(price="Infinity"), 400, "bad_price"),
    ("unknown symbol", with_(symbol="NOPE.SIM"), 404, "unknown_symbol"),
    ("limit without price", with_(price=None), 400, "bad_price"),
    ("qty beyond 64 bits", with_(qty=2**64), 400, "invalid_type"),
    ("expire_ts beyond 64 bits", with_(tif="GTD", expire_ts=2**70), 400, "invalid_type"),
]


@pytest.mark.parametrize(("name", "body", "status", "error"), BAD_ORDERS, ids=[b[0] for b in BAD_ORDERS])
async def test_bad_orders_get_a_specific_error_and_change_nothing(
        client: httpx.AsyncClient, stack: Stack, name: str, body: bytes | dict[str, Any], status: int,
        error: str) -> None:
    alice = stack.auth("alice")
    await client.post("/api/v1/orders", headers=alice, json=with_(price="189.00", client_order_id="resting"))
    before = (await client.get(BOOK, headers=alice)).json()
    content = body if isinstance(body, bytes) else httpx.Request("POST", "/", json=body).content
    r = await client.post("/api/v1/orders", headers={**alice, "Content-Type": "application/json"}, content=content)
    assert (r.status_code, r.json()["error"]) == (status, error), r.text
    assert r.json()["message"]
    assert (await client.get(BOOK, headers=alice)).json() == before
    assert (await client.get("/api/v1/orders", headers=alice)).json()["total"] == 1


async def test_case_insensitive_enums_are_accepted(client: httpx.AsyncClient, stack: Stack) -> None:
    r = await client.post("/api/v1/orders", headers=stack.auth("alice"),
                          json=with_(side="BUY", type="Limit", tif="gtc"))
    assert r.status_code == 201, r.text


BAD_READS = [
    ("GET", "/api/v1/book/AAPL.SIM?depth=0", 400, "bad_depth"),
    ("GET", "/api/v1/book/AAPL.SIM?depth=1000", 400, "bad_depth"),
    ("GET", "/api/v1/book/AAPL.SIM?depth=abc", 400, "invalid_parameter"),
    ("GET", "/api/v1/book/NOPE.SIM", 404, "unknown_symbol"),
    ("GET", "/api/v1/orders/999999", 404, "unknown_order"),
    ("GET", "/api/v1/orders/not-an-id", 404, "unknown_order"),
    ("GET", "/api/v1/orders/c-!!!", 404, "unknown_order"),
    ("GET", "/api/v1/orders?status=bogus", 400, "invalid_enum"),
    ("GET", "/api/v1/orders?limit=0", 400, "bad_page"),
    ("GET", "/api/v1/orders?limit=x", 400, "invalid_parameter"),
    ("GET", "/api/v1/orders?symbol=NOPE.SIM", 404, "unknown_symbol"),
    ("DELETE", "/api/v1/orders/424242", 404, "unknown_order"),
    ("PUT", "/api/v1/orders", 405, "method_not_allowed"),
    ("GET", "/api/v1/nothing-here", 404, "not_found"),
]


@pytest.mark.parametrize(("method", "url", "status", "error"), BAD_READS, ids=[f"{m} {u}" for m, u, _, _ in BAD_READS])
async def test_bad_requests(client: httpx.AsyncClient, stack: Stack, method: str, url: str, status: int,
                            error: str) -> None:
    r = await client.request(method, url, headers=stack.auth("alice"))
    assert (r.status_code, r.json()["error"]) == (status, error), r.text


async def test_bad_patches(client: httpx.AsyncClient, stack: Stack) -> None:
    alice = stack.auth("alice")
    oid = (await client.post("/api/v1/orders", headers=alice, json=GOOD)).json()["order_id"]
    for body, status, error in [({"price": "190.005"}, 400, "off_tick"), ({"qty": -1}, 400, "bad_qty"),
                                ({}, 400, "bad_request"), ({"size": 3}, 400, "unknown_field")]:
        r = await client.patch(f"/api/v1/orders/{oid}", headers=alice, json=body)
        assert (r.status_code, r.json()["error"]) == (status, error), (body, r.text)
    got = (await client.get(f"/api/v1/orders/{oid}", headers=alice)).json()
    assert (got["price"], got["qty"]) == ("190.00", 10)


async def test_auth_failures_are_401_json(client: httpx.AsyncClient, stack: Stack) -> None:
    expired = issue_token(SECRET, User(username="alice", role=Role.TRADER, account="alice"), 60,
                          now=time.time() - 3600)
    forged = issue_token("another-secret-another-secret-xx", User(username="alice", role=Role.ADMIN,
                                                                 account="alice"), 60)
    cases = [({}, "missing_token"), ({"Authorization": "Bearer nonsense"}, "invalid_token"),
             ({"Authorization": f"Bearer {forged}"}, "invalid_token"),
             ({"Authorization": f"Bearer {expired}"}, "token_expired"),
             ({"Authorization": f"Basic {stack.tokens['alice']}"}, "invalid_token")]
    for headers, error in cases:
        r = await client.get("/api/v1/orders", headers=headers)
        assert (r.status_code, r.json()["error"]) == (401, error), (headers, r.text)
        assert r.headers["www-authenticate"].startswith("Bearer")
    for body in ({"username": "alice", "password": "wrong password"}, {"username": "nobody", "password": PASSWORD},
                 {"api_key": "tsk_0000_nope"}):
        r = await client.post("/api/v1/auth/token", json=body)
        assert (r.status_code, r.json()["error"]) == (401, "invalid_credentials"), r.text
    r = await client.post("/api/v1/auth/token", json={"username": "alice"})
    assert (r.status_code, r.json()["error"]) == (400, "missing_field")


async def test_token_shape_and_api_key_login(client: httpx.AsyncClient, stack: Stack) -> None:
    r = await client.post("/api/v1/auth/token", json={"username": "bob", "password": PASSWORD})
    assert r.status_code == 200
    assert set(r.json()) == {"access_token", "token_type", "expires_in"}
    assert (r.json()["token_type"], r.json()["expires_in"]) == ("bearer", 3600)
    key = await stack.users.add_api_key("bob")
    r = await client.post("/api/v1/auth/token", json={"api_key": key})
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    me = await client.get("/api/v1/accounts/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200 and me.json()["account"]["account"] == "bob"


async def test_rate_limit_is_429_with_retry_after(tmp_path: Path) -> None:
    config = make_config(tmp_path, "")
    import msgspec

    config = msgspec.structs.replace(config, api=msgspec.structs.replace(config.api, rate_limit=0.5, rate_burst=3))
    now = [1000.0]
    async for stack in start_stack(tmp_path, config):
        async with http(stack.app(monotonic=lambda: now[0])) as client:
            r = await client.post("/api/v1/auth/token", json={"username": "alice", "password": PASSWORD})
            alice = {"Authorization": f"Bearer {r.json()['access_token']}"}
            r = await client.post("/api/v1/auth/token", json={"username": "bob", "password": PASSWORD})
            bob = {"Authorization": f"Bearer {r.json()['access_token']}"}
            codes = [(await client.get("/api/v1/orders", headers=alice)).status_code for _ in range(4)]
            assert codes == [200, 200, 200, 429]
            r = await client.get("/api/v1/orders", headers=alice)
            assert (r.status_code, r.json()["error"], r.headers["retry-after"]) == (429, "rate_limited", "2")
            assert (await client.get("/api/v1/orders", headers=bob)).status_code == 200  # per user
            now[0] += 2.0
            assert (await client.get("/api/v1/orders", headers=alice)).status_code == 200


async def test_health_ready_and_schema(client: httpx.AsyncClient, stack: Stack) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    r = await client.get("/readyz")
    assert r.status_code == 200 and r.json()["services"] == {"venue": "ok", "oms": "ok", "accounts": "ok",
                                                               "risk": "ok"}
    schema = (await client.get("/schema/openapi.json")).json()
    for path in ("/api/v1/orders", "/api/v1/orders/{order_id}", "/api/v1/book/{symbol}", "/api/v1/auth/token",
                 "/api/v1/accounts/me", "/api/v1/positions", "/api/v1/risk", "/api/v1/instruments"):
        assert path in schema["paths"], path


async def test_readyz_and_calls_are_503_when_services_are_down(tmp_path: Path) -> None:
    from tradesim.bus import open_bus
    from tradesim.store.users import MemoryUserStore

    bus = await open_bus("memory://api-empty-" + tmp_path.name)
    users = MemoryUserStore()
    await users.add("alice", "trader", PASSWORD)
    from tradesim.api import create_app

    app = create_app(bus, make_config(tmp_path), users, secret=SECRET, rpc_timeout=0.5)
    try:
        async with http(app) as client:
            r = await client.get("/readyz")
            assert r.status_code == 503 and r.json()["error"] == "not_ready"
            assert set(r.json()["services"]) == {"venue", "oms", "accounts", "risk"}
            token = (await client.post("/api/v1/auth/token", json={"username": "alice", "password": PASSWORD})).json()
            headers = {"Authorization": f"Bearer {token['access_token']}"}
            r = await client.post("/api/v1/orders", headers=headers, json=GOOD)
            assert (r.status_code, r.json()["error"]) == (503, "service_unavailable"), r.text
    finally:
        await bus.close()
