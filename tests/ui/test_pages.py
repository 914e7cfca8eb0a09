"""The web UI over plain HTTP: pages render, static files come with the right types, fragments need a token
and show the caller's own book levels, orders and positions, and `/api/...` errors stay JSON."""

from __future__ import annotations

import re

import httpx

from tests.api.conftest import Stack

ORDER = {"symbol": "AAPL.SIM", "side": "buy", "type": "limit", "tif": "GTC", "price": "189.50", "qty": 7}


async def test_trading_screen_renders_with_symbols_and_assets(client: httpx.AsyncClient) -> None:
    r = await client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert '<option value="AAPL.SIM"' in page and '<option value="MSFT.SIM"' in page
    for asset in ("/static/app.css", "/static/app.js", "/static/vendor/htmx-2.0.11.min.js",
                  "/static/vendor/lightweight-charts-4.2.3.standalone.production.js"):
        assert asset in page
    assert 'hx-get="/ui/book/' in page and 'hx-get="/ui/orders' in page and 'id="order-form"' in page


async def test_symbol_query_picks_the_symbol_and_an_unknown_one_falls_back(client: httpx.AsyncClient) -> None:
    page = (await client.get("/", params={"symbol": "MSFT.SIM"})).text
    assert 'data-symbol="MSFT.SIM"' in page and '<option value="MSFT.SIM" selected>' in page
    page = (await client.get("/", params={"symbol": "<script>"})).text
    assert "<script>\"" not in page and re.search(r'data-symbol="[A-Z0-9]+\.[A-Z]+"', page)


async def test_login_page(client: httpx.AsyncClient) -> None:
    r = await client.get("/login")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert 'id="login-form"' in r.text and 'type="password"' in r.text and "/static/login.js" in r.text


async def test_static_files_have_their_content_types(client: httpx.AsyncClient) -> None:
    expected = {
        "/static/app.js": "javascript",
        "/static/login.js": "javascript",
        "/static/app.css": "text/css",
        "/static/vendor/htmx-2.0.11.min.js": "javascript",
        "/static/vendor/lightweight-charts-4.2.3.standalone.production.js": "javascript",
        "/static/vendor/htmx-2.0.11.LICENSE.txt": "text/plain",
        "/static/vendor/lightweight-charts-4.2.3.LICENSE.txt": "text/plain",
    }
    for path, kind in expected.items():
        r = await client.get(path)
        assert r.status_code == 200, path
        assert kind in r.headers["content-type"], (path, r.headers["content-type"])
    assert "htmx" in (await client.get("/static/vendor/htmx-2.0.11.min.js")).text
    assert "Apache License" in (await client.get("/static/vendor/lightweight-charts-4.2.3.LICENSE.txt")).text


async def test_missing_static_file_and_unknown_api_route_stay_json(client: httpx.AsyncClient) -> None:
    for path in ("/static/nope.js", "/api/v1/nope", "/ui/nope"):
        r = await client.get(path)
        assert r.status_code == 404, path
        assert r.headers["content-type"].startswith("application/json") and r.json()["error"] == "not_found"


async def test_fragments_need_a_bearer_token(client: httpx.AsyncClient) -> None:
    for path in ("/ui/book/AAPL.SIM", "/ui/orders", "/ui/positions"):
        r = await client.get(path)
        assert r.status_code == 401 and r.json()["error"] == "missing_token", path
        r = await client.get(path, headers={"Authorization": "Bearer forged"})
        assert r.status_code == 401 and r.json()["error"] == "invalid_token", path


async def test_book_fragment_shows_levels_ticker_and_own_qty(client: httpx.AsyncClient, stack: Stack) -> None:
    assert (await client.post("/api/v1/orders", headers=stack.auth("alice"), json=ORDER)).status_code == 201
    sell = {**ORDER, "side": "sell", "price": "190.25", "qty": 3}
    assert (await client.post("/api/v1/orders", headers=stack.auth("bob"), json=sell)).status_code == 201
    r = await client.get("/ui/book/AAPL.SIM", headers=stack.auth("alice"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    bid = re.search(r'<div class="rung bid" data-side="buy" data-price="189.50">(.*?)</div>', html, re.S)
    assert bid is not None and '<span class="mine">7</span>' in bid.group(1)
    ask = re.search(r'<div class="rung ask" data-side="sell" data-price="190.25">(.*?)</div>', html, re.S)
    assert ask is not None and '<span class="mine"></span>' in ask.group(1)  # bob's, not alice's
    assert "spread 0.75" in html
    assert '<b id="t-bid" class="buy" hx-swap-oob="true">189.50</b>' in html


async def test_book_fragment_refuses_unknown_symbol_and_bad_depth(client: httpx.AsyncClient, stack: Stack) -> None:
    r = await client.get("/ui/book/NOPE.SIM", headers=stack.auth("alice"))
    assert r.status_code == 404 and r.json()["error"] == "unknown_symbol"
    r = await client.get("/ui/book/AAPL.SIM", params={"depth": 0}, headers=stack.auth("alice"))
    assert r.status_code == 400 and r.json()["error"] == "bad_depth"


async def test_orders_fragment_shows_own_orders_with_cancel(client: httpx.AsyncClient, stack: Stack) -> None:
    r = await client.post("/api/v1/orders", headers=stack.auth("alice"), json=ORDER)
    oid = r.json()["order_id"]
    await client.post("/api/v1/orders", headers=stack.auth("bob"), json={**ORDER, "price": "189.00"})
    html = (await client.get("/ui/orders", params={"symbol": "AAPL.SIM"}, headers=stack.auth("alice"))).text
    assert html.count('class="order-row"') == 1 and f'id="order-{oid}"' in html
    assert f'data-cancel="{oid}"' in html
    viewer = (await client.get("/ui/orders", headers=stack.auth("vic"))).text  # vic reads alice's account
    assert f'id="order-{oid}"' in viewer and "data-cancel" not in viewer

    assert (await client.delete(f"/api/v1/orders/{oid}", headers=stack.auth("alice"))).status_code == 200
    html = (await client.get("/ui/orders", headers=stack.auth("alice"))).text
    assert "order-row" not in html and "no open orders" in html
    html = (await client.get("/ui/orders", params={"show": "all"}, headers=stack.auth("alice"))).text
    assert f'id="order-{oid}"' in html and "canceled" in html and "data-cancel" not in html


async def test_orders_fragment_bad_parameters(client: httpx.AsyncClient, stack: Stack) -> None:
    r = await client.get("/ui/orders", params={"show": "some"}, headers=stack.auth("alice"))
    assert r.status_code == 400 and r.json()["error"] == "invalid_parameter"
    r = await client.get("/ui/orders", params={"symbol": "NOPE"}, headers=stack.auth("alice"))
    assert r.status_code == 404 and r.json()["error"] == "unknown_symbol"


async def test_positions_fragment_after_a_trade(client: httpx.AsyncClient, stack: Stack) -> None:
    await client.post("/api/v1/orders", headers=stack.auth("bob"), json={**ORDER, "side": "sell", "price": "190.00"})
    r = await client.post("/api/v1/orders", headers=stack.auth("alice"), json={**ORDER, "price": "190.00"})
    assert r.json()["status"] == "filled"
    for _ in range(50):  # the position tracker applies the trade from the bus
        html = (await client.get("/ui/positions", headers=stack.auth("alice"))).text
        if 'data-symbol="AAPL.SIM"' in html:
            break
    row = re.search(r'<tr class="position-row" data-symbol="AAPL.SIM">(.*?)</tr>', html, re.S)
    assert row is not None and ">7</td>" in row.group(1)
    assert 'id="account-strip"' in html and "equity" in html
