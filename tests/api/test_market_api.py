"""GET /trades (the API's tape), /ticker and /bars (the market-data service) through the real services."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.api.conftest import Stack
from tradesim.services.marketdata.service import MarketDataService


def order(side: str, price: str, qty: int) -> dict[str, Any]:
    return {"symbol": "AAPL.SIM", "side": side, "type": "limit", "tif": "GTC", "price": price, "qty": qty}


@pytest.fixture
async def marketdata(stack: Stack) -> AsyncIterator[MarketDataService]:
    service = MarketDataService(stack.bus, stack.config.instruments, interval=0.05)
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


async def test_trades_tape_newest_first(client: httpx.AsyncClient, stack: Stack) -> None:
    alice, bob = stack.auth("alice"), stack.auth("bob")
    assert (await client.get("/api/v1/trades/AAPL.SIM", headers=alice)).json() == {"symbol": "AAPL.SIM",
                                                                                   "trades": []}
    for price, qty in (("190.00", 5), ("190.01", 7), ("190.02", 3)):
        assert (await client.post("/api/v1/orders", headers=bob, json=order("sell", price, qty))).status_code == 201
    r = await client.post("/api/v1/orders", headers=alice, json=order("buy", "190.02", 15))
    assert r.status_code == 201, r.text
    made = r.json()["trades"]
    assert [(t["price"], t["qty"]) for t in made] == [("190.00", 5), ("190.01", 7), ("190.02", 3)]
    r = await client.get("/api/v1/trades/AAPL.SIM", headers=stack.auth("vic"))
    assert r.status_code == 200, r.text
    tape = r.json()["trades"]
    assert [(t["trade_id"], t["price"], t["qty"], t["aggressor"]) for t in tape] == [
        (t["trade_id"], t["price"], t["qty"], "buy") for t in reversed(made)]
    assert set(tape[0]) == {"trade_id", "symbol", "price", "qty", "aggressor", "seq", "ts"}  # no accounts
    r = await client.get("/api/v1/trades/AAPL.SIM", headers=alice, params={"limit": 2})
    assert [t["trade_id"] for t in r.json()["trades"]] == [made[2]["trade_id"], made[1]["trade_id"]]


@pytest.mark.parametrize(("path", "params", "status", "error"), [
    ("/api/v1/trades/NOPE.SIM", {}, 404, "unknown_symbol"),
    ("/api/v1/trades/AAPL.SIM", {"limit": 0}, 400, "bad_limit"),
    ("/api/v1/trades/AAPL.SIM", {"limit": 1001}, 400, "bad_limit"),
    ("/api/v1/trades/AAPL.SIM", {"limit": "x"}, 400, "invalid_parameter"),
    ("/api/v1/bars/AAPL.SIM", {"limit": 0}, 400, "bad_limit"),
    ("/api/v1/bars/AAPL.SIM", {"interval": 0}, 400, "bad_interval"),
    ("/api/v1/bars/AAPL.SIM", {"start": 10, "end": 5}, 400, "bad_range"),
    ("/api/v1/bars/NOPE.SIM", {}, 404, "unknown_symbol"),
    ("/api/v1/ticker/NOPE.SIM", {}, 404, "unknown_symbol"),
])
async def test_bad_input(client: httpx.AsyncClient, stack: Stack, path: str, params: dict[str, Any], status: int,
                         error: str) -> None:
    r = await client.get(path, headers=stack.auth("alice"), params=params)
    assert (r.status_code, r.json()["error"]) == (status, error), r.text


async def test_market_endpoints_need_a_token(client: httpx.AsyncClient) -> None:
    for path in ("/api/v1/trades/AAPL.SIM", "/api/v1/ticker/AAPL.SIM", "/api/v1/bars/AAPL.SIM"):
        r = await client.get(path)
        assert (r.status_code, r.json()["error"]) == (401, "missing_token"), path


async def test_ticker_and_bars_without_marketdata_are_503(client: httpx.AsyncClient, stack: Stack) -> None:
    for path in ("/api/v1/ticker/AAPL.SIM", "/api/v1/bars/AAPL.SIM"):
        r = await client.get(path, headers=stack.auth("alice"))
        assert (r.status_code, r.json()["error"]) == (503, "service_unavailable"), r.text


async def test_ticker_after_trades(client: httpx.AsyncClient, stack: Stack, marketdata: MarketDataService) -> None:
    alice, bob = stack.auth("alice"), stack.auth("bob")
    await client.post("/api/v1/orders", headers=bob, json=order("sell", "190.10", 10))
    await client.post("/api/v1/orders", headers=bob, json=order("sell", "190.20", 10))
    await client.post("/api/v1/orders", headers=alice, json=order("buy", "190.20", 12))  # 10 @ .10, 2 @ .20
    await client.post("/api/v1/orders", headers=alice, json=order("buy", "189.90", 4))
    for _ in range(100):
        r = await client.get("/api/v1/ticker/AAPL.SIM", headers=alice)
        assert r.status_code == 200, r.text
        if r.json()["volume"] == 12:
            break
    t = r.json()
    assert {k: t[k] for k in ("symbol", "bid", "bid_qty", "ask", "ask_qty", "last", "last_qty", "volume",
                              "turnover", "trades", "vwap")} == {
        "symbol": "AAPL.SIM", "bid": "189.90", "bid_qty": 4, "ask": "190.20", "ask_qty": 8, "last": "190.20",
        "last_qty": 2, "volume": 12, "turnover": "2281.40", "trades": 2, "vwap": "190.116667"}


async def test_bars(client: httpx.AsyncClient, stack: Stack, marketdata: MarketDataService) -> None:
    r = await client.get("/api/v1/bars/AAPL.SIM", headers=stack.auth("alice"), params={"interval": 120})
    assert r.status_code == 200, r.text
    assert r.json() == {"symbol": "AAPL.SIM", "interval": 120, "bars": []}
    r = await client.get("/api/v1/bars/AAPL.SIM", headers=stack.auth("alice"), params={"interval": 90})
    assert (r.status_code, r.json()["error"]) == (400, "bad_request"), r.text
