"""Orders through the API and the real services: create/get/modify/cancel, trades, refusals, roles, holds."""

from __future__ import annotations

from typing import Any

import httpx

from tests.api.conftest import Stack

BOOK = "/api/v1/book/AAPL.SIM"


def order(side: str = "buy", price: str = "190.00", qty: int = 10, **extra: Any) -> dict[str, Any]:
    return {"symbol": "AAPL.SIM", "side": side, "type": "limit", "tif": "GTC", "price": price, "qty": qty, **extra}


async def test_create_get_modify_cancel(client: httpx.AsyncClient, stack: Stack) -> None:
    alice = stack.auth("alice")
    r = await client.post("/api/v1/orders", headers=alice, json=order(price="189.95", client_order_id="a1"))
    assert r.status_code == 201, r.text
    created = r.json()
    assert {k: created[k] for k in ("client_order_id", "status", "filled_qty", "leaves_qty", "trades", "price",
                                    "qty", "side", "type", "tif", "symbol", "avg_price", "account")} == {
        "client_order_id": "a1", "status": "accepted", "filled_qty": 0, "leaves_qty": 10, "trades": [],
        "price": "189.95", "qty": 10, "side": "buy", "type": "limit", "tif": "GTC", "symbol": "AAPL.SIM",
        "avg_price": None, "account": "alice"}
    oid = created["order_id"]
    assert oid.isdigit()

    r = await client.get(f"/api/v1/orders/{oid}", headers=alice)
    assert r.status_code == 200 and r.json()["order_id"] == oid and r.json()["status"] == "accepted"

    r = await client.patch(f"/api/v1/orders/{oid}", headers=alice, json={"price": "189.90", "qty": 7})
    assert r.status_code == 200, r.text
    assert (r.json()["price"], r.json()["qty"], r.json()["leaves_qty"]) == ("189.90", 7, 7)
    book = (await client.get(BOOK, headers=alice)).json()
    assert book["bids"] == [["189.90", 7, 1]] and book["asks"] == []

    r = await client.delete(f"/api/v1/orders/{oid}", headers=alice)
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["leaves_qty"]) == ("canceled", 0)
    assert (await client.get(BOOK, headers=alice)).json()["bids"] == []

    r = await client.get("/api/v1/orders", headers=alice, params={"status": "canceled"})
    assert r.status_code == 200 and r.json()["total"] == 1 and r.json()["orders"][0]["order_id"] == oid


async def test_crossing_order_from_another_user_trades(client: httpx.AsyncClient, stack: Stack) -> None:
    r = await client.post("/api/v1/orders", headers=stack.auth("bob"), json=order("sell", "190.05", 30))
    assert r.status_code == 201, r.text
    maker_id = r.json()["order_id"]
    r = await client.post("/api/v1/orders", headers=stack.auth("alice"), json=order("buy", "190.10", 20))
    assert r.status_code == 201, r.text
    taker = r.json()
    assert (taker["status"], taker["filled_qty"], taker["leaves_qty"], taker["avg_price"]) == (
        "filled", 20, 0, "190.05")
    (trade,) = taker["trades"]
    assert (trade["price"], trade["qty"], trade["aggressor"], trade["liquidity"]) == ("190.05", 20, "buy", "taker")
    maker = (await client.get(f"/api/v1/orders/{maker_id}", headers=stack.auth("bob"))).json()
    assert (maker["status"], maker["filled_qty"], maker["leaves_qty"]) == ("partially_filled", 20, 10)
    book = (await client.get(BOOK, headers=stack.auth("alice"), params={"depth": 1})).json()
    assert book["asks"] == [["190.05", 10, 1]] and book["last_price"] == "190.05"


async def test_risk_and_compliance_refusals_are_422_and_kept_rejected(client: httpx.AsyncClient,
                                                                     stack: Stack) -> None:
    r = await client.post("/api/v1/orders", headers=stack.auth("fatima"), json=order("sell", "190.00", 5))
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"] == "sharia_short_sale" and "Sharia" in body["message"] and body["order_id"]
    got = await client.get(f"/api/v1/orders/{body['order_id']}", headers=stack.auth("fatima"))
    assert got.status_code == 200 and (got.json()["status"], got.json()["reason"]) == ("rejected", "sharia_short_sale")

    r = await client.post("/api/v1/orders", headers=stack.auth("alice"), json=order(qty=1001))
    assert r.status_code == 422 and r.json()["error"] == "max_order_qty", r.text
    got = await client.get(f"/api/v1/orders/{r.json()['order_id']}", headers=stack.auth("alice"))
    assert got.json()["status"] == "rejected"
    assert (await client.get(BOOK, headers=stack.auth("alice"))).json()["bids"] == []


async def test_duplicate_client_order_id_is_409(client: httpx.AsyncClient, stack: Stack) -> None:
    alice = stack.auth("alice")
    assert (await client.post("/api/v1/orders", headers=alice, json=order(client_order_id="x"))).status_code == 201
    r = await client.post("/api/v1/orders", headers=alice, json=order(price="189.00", client_order_id="x"))
    assert r.status_code == 409 and r.json()["error"] == "duplicate_client_order_id", r.text


async def test_trader_sees_and_touches_only_its_own_orders(client: httpx.AsyncClient, stack: Stack) -> None:
    r = await client.post("/api/v1/orders", headers=stack.auth("bob"), json=order("sell", "195.00"))
    bob_order = r.json()["order_id"]
    await client.post("/api/v1/orders", headers=stack.auth("alice"), json=order("buy", "185.00"))
    alice = stack.auth("alice")
    for method in ("GET", "DELETE"):
        r = await client.request(method, f"/api/v1/orders/{bob_order}", headers=alice)
        assert r.status_code == 404 and r.json()["error"] == "unknown_order", r.text
    r = await client.patch(f"/api/v1/orders/{bob_order}", headers=alice, json={"qty": 5})
    assert r.status_code == 404
    listed = (await client.get("/api/v1/orders", headers=alice)).json()
    assert listed["total"] == 1 and {o["account"] for o in listed["orders"]} == {"alice"}
    r = await client.get("/api/v1/orders", headers=alice, params={"account": "bob"})
    assert r.status_code == 403
    assert (await client.get(f"/api/v1/orders/{bob_order}", headers=stack.auth("bob"))).json()["status"] == "accepted"
    admin = (await client.get("/api/v1/orders", headers=stack.auth("root"))).json()
    assert admin["total"] == 2


async def test_viewer_reads_but_cannot_write(client: httpx.AsyncClient, stack: Stack) -> None:
    r = await client.post("/api/v1/orders", headers=stack.auth("vic"), json=order())
    assert r.status_code == 403 and r.json()["error"] == "forbidden", r.text
    assert (await client.get("/api/v1/orders", headers=stack.auth("vic"))).json()["total"] == 0
    assert (await client.get(BOOK, headers=stack.auth("vic"))).status_code == 200
    r = await client.post("/api/v1/orders", headers=stack.auth("cora"), json=order())
    assert r.status_code == 403


async def test_compliance_approves_a_held_order(client: httpx.AsyncClient, stack: Stack) -> None:
    await client.post("/api/v1/orders", headers=stack.auth("bob"), json=order("sell", "190.00", 160))
    r = await client.post("/api/v1/orders", headers=stack.auth("alice"), json=order("buy", "190.00", 100))
    assert r.json()["status"] == "filled", r.text  # day volume is now 100
    r = await client.post("/api/v1/orders", headers=stack.auth("alice"), json=order("buy", "190.00", 60))
    assert r.status_code == 201 and (r.json()["status"], r.json()["reason"]) == ("held", "pct_of_day_volume"), r.text
    held_id = r.json()["order_id"]
    r = await client.post(f"/api/v1/orders/{held_id}/approve", headers=stack.auth("alice"))
    assert r.status_code == 403
    r = await client.post(f"/api/v1/orders/{held_id}/approve", headers=stack.auth("cora"))
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["filled_qty"]) == ("filled", 60) and len(r.json()["trades"]) == 1
    r = await client.post(f"/api/v1/orders/{held_id}/approve", headers=stack.auth("cora"))
    assert r.status_code == 409 and r.json()["error"] == "not_held"


async def test_compliance_rejects_a_held_order(client: httpx.AsyncClient, stack: Stack) -> None:
    await client.post("/api/v1/orders", headers=stack.auth("bob"), json=order("sell", "190.00", 100))
    await client.post("/api/v1/orders", headers=stack.auth("alice"), json=order("buy", "190.00", 100))
    r = await client.post("/api/v1/orders", headers=stack.auth("alice"), json=order("buy", "189.00", 60))
    held_id = r.json()["order_id"]
    r = await client.post(f"/api/v1/orders/{held_id}/reject", headers=stack.auth("cora"), json={"reason": "too big"})
    assert r.status_code == 200 and (r.json()["status"], r.json()["reason"]) == ("rejected", "hold_rejected")


async def test_accounts_positions_risk(client: httpx.AsyncClient, stack: Stack) -> None:
    await client.post("/api/v1/orders", headers=stack.auth("bob"), json=order("sell", "190.00", 10))
    await client.post("/api/v1/orders", headers=stack.auth("alice"), json=order("buy", "190.00", 10))
    me = await client.get("/api/v1/accounts/me", headers=stack.auth("alice"))
    assert me.status_code == 200 and me.json()["account"]["account"] == "alice"
    positions = (await client.get("/api/v1/positions", headers=stack.auth("alice"))).json()
    assert [(p["symbol"], p["qty"]) for p in positions["positions"]] == [("AAPL.SIM", 10)]
    risk = await client.get("/api/v1/risk", headers=stack.auth("alice"))
    assert risk.status_code == 200 and risk.json()["account"] == "alice" and "kind" not in risk.json()
    assert (await client.get("/api/v1/accounts/me", headers=stack.auth("alice"),
                             params={"account": "bob"})).status_code == 403
    bob = await client.get("/api/v1/accounts/me", headers=stack.auth("cora"), params={"account": "bob"})
    assert bob.status_code == 200 and bob.json()["account"]["account"] == "bob"
    instruments = (await client.get("/api/v1/instruments", headers=stack.auth("vic"))).json()["instruments"]
    aapl = next(i for i in instruments if i["symbol"] == "AAPL.SIM")
    assert (aapl["tick_size"], aapl["reference_price"]) == ("0.01", "190.00")
