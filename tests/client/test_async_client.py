"""AsyncClient against a real server (System + API under uvicorn on a free port): typed results with Decimal
prices, orders end to end, a crossing trade between two clients, typed errors, and safe retries."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import pytest

from tests.client.conftest import PASSWORD, Server
from tradesim.client import (
    AsyncClient,
    Book,
    Forbidden,
    Level,
    NotFound,
    Order,
    Rejected,
    TransportError,
    Unauthorized,
)
from tradesim.domain import OrderStatus, OrderType, Side, TimeInForce

SYM = "AAPL.SIM"


@pytest.fixture
async def alice(server: Server) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server.url) as c:
        await c.login("alice", PASSWORD)
        yield c


@pytest.fixture
async def bob(server: Server) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server.url, username="bob", password=PASSWORD) as c:  # logs in on first use
        yield c


async def test_login_gives_a_token_for_the_account(server: Server) -> None:
    async with AsyncClient(server.url) as c:
        token = await c.login("alice", PASSWORD)
        assert token.token_type == "bearer" and token.expires_in > 0
        assert c.token == token.access_token
        assert c.account_id == "alice"


async def test_instruments_are_typed(alice: AsyncClient) -> None:
    instruments = {i.symbol: i for i in await alice.instruments()}
    aapl = instruments[SYM]
    assert aapl.tick_size == Decimal("0.01") and isinstance(aapl.tick_size, Decimal)
    assert aapl.reference_price == Decimal("190.00")
    assert instruments["IF2501.CFFEX"].multiplier == Decimal(300)


async def test_place_get_list_modify_cancel(alice: AsyncClient) -> None:
    placed = await alice.buy(SYM, 10, Decimal("189.50"), client_order_id="a1")
    assert isinstance(placed, Order)
    assert (placed.status, placed.price, placed.leaves_qty, placed.client_order_id) == (
        OrderStatus.ACCEPTED, Decimal("189.50"), 10, "a1")
    assert placed.side is Side.BUY and placed.type is OrderType.LIMIT and placed.tif is TimeInForce.GTC
    assert placed.is_open

    fetched = await alice.order(placed.order_id)
    assert fetched.order_id == placed.order_id and fetched.price == Decimal("189.50")
    assert (await alice.order_by_client_id("a1")).order_id == placed.order_id

    await alice.sell(SYM, 5, "195.00", client_order_id="a2")
    page = await alice.orders(symbol=SYM)
    assert page.total == 2 and [o.client_order_id for o in page.orders] == ["a2", "a1"]  # newest first
    assert [o.client_order_id async for o in alice.iter_orders(page_size=1)] == ["a2", "a1"]

    modified = await alice.modify(placed, price=Decimal("189.60"), qty=7)
    assert (modified.price, modified.qty, modified.leaves_qty) == (Decimal("189.60"), 7, 7)

    canceled = await alice.cancel(placed.order_id)
    assert canceled.status is OrderStatus.CANCELED and not canceled.is_open
    assert (await alice.orders(status="canceled")).total == 1
    assert [o.client_order_id for o in (await alice.orders(open_only=True)).orders] == ["a2"]


async def test_book_is_typed_levels(alice: AsyncClient, bob: AsyncClient) -> None:
    await alice.buy(SYM, 10, "189.90")
    await alice.buy(SYM, 5, "189.90")
    await alice.buy(SYM, 3, "189.80")
    await bob.sell(SYM, 4, "190.10")
    book = await alice.book(SYM, depth=5)
    assert isinstance(book, Book) and book.symbol == SYM and book.seq > 0
    assert book.bids == [Level(Decimal("189.90"), 15, 2), Level(Decimal("189.80"), 3, 1)]
    assert book.asks == [Level(Decimal("190.10"), 4, 1)]
    assert book.best_bid is not None and book.best_bid.price == Decimal("189.90")
    assert len((await alice.book(SYM, depth=1)).bids) == 1


async def _position(client: AsyncClient, symbol: str, want: int) -> int:
    """The tracker applies trades from the bus: poll briefly until it has this one."""
    qty = 0
    for _ in range(100):
        found = (await client.positions()).get(symbol)
        qty = found.qty if found else 0
        if qty == want:
            break
        await asyncio.sleep(0.02)
    return qty


async def test_crossing_trade_between_two_clients(alice: AsyncClient, bob: AsyncClient) -> None:
    resting = await bob.sell(SYM, 10, "190.00", client_order_id="b1")
    assert resting.status is OrderStatus.ACCEPTED
    taker = await alice.buy(SYM, 4, "190.05", client_order_id="t1")
    assert taker.status is OrderStatus.FILLED and taker.avg_price == Decimal("190.00")
    [fill] = taker.trades
    assert (fill.price, fill.qty, fill.liquidity, fill.aggressor) == (Decimal("190.00"), 4, "taker", Side.BUY)

    maker = await bob.order(resting.order_id)
    assert (maker.status, maker.filled_qty, maker.leaves_qty) == (OrderStatus.PARTIALLY_FILLED, 4, 6)
    assert (await alice.book(SYM)).asks == [Level(Decimal("190.00"), 6, 1)]

    assert await _position(alice, SYM, 4) == 4
    assert await _position(bob, SYM, -4) == -4
    position = (await alice.positions(open_only=True)).get(SYM)
    assert position is not None and position.avg_price == Decimal("190.00")
    assert isinstance(position.cost_basis, Decimal)
    account = await alice.account()
    assert account.account == "alice" and account.currency == "USD"
    assert account.cash < Decimal(1_000_000) and account.seq > 0
    risk = await alice.risk()
    assert risk.account == "alice" and isinstance(risk.equity, Decimal)


async def test_refused_order_raises_rejected_with_the_order(alice: AsyncClient) -> None:
    with pytest.raises(Rejected) as caught:
        await alice.buy(SYM, 20_000, "190.00", client_order_id="big")
    exc = caught.value
    assert exc.status == 422 and exc.error == "max_order_qty" and exc.message
    assert exc.order is not None and exc.order.status is OrderStatus.REJECTED
    assert exc.order.reason == "max_order_qty" and exc.order.qty == 20_000
    assert exc.order_id == exc.order.order_id
    assert (await alice.order(exc.order_id)).status is OrderStatus.REJECTED


async def test_typed_auth_errors(server: Server, alice: AsyncClient, bob: AsyncClient) -> None:
    async with AsyncClient(server.url) as c:
        with pytest.raises(Unauthorized) as wrong:
            await c.login("alice", "not the password")
        assert wrong.value.status == 401 and wrong.value.error == "invalid_credentials"
        c.token = "not.a.jwt"
        with pytest.raises(Unauthorized) as forged:
            await c.orders()
        assert forged.value.error == "invalid_token"
        with pytest.raises(Unauthorized):
            await AsyncClient(server.url).book(SYM)  # no token at all

    async with AsyncClient(server.url, username="vic", password=PASSWORD) as viewer:
        with pytest.raises(Forbidden) as forbidden:
            await viewer.buy(SYM, 1, "190.00")
        assert forbidden.value.status == 403 and forbidden.value.error == "forbidden"
        assert (await viewer.orders()).total == 0  # reads are fine

    mine = await alice.buy(SYM, 1, "189.00")
    with pytest.raises(NotFound) as hidden:
        await bob.order(mine.order_id)  # another account's order does not exist for bob
    assert hidden.value.status == 404 and hidden.value.error == "unknown_order"
    with pytest.raises(NotFound) as symbol:
        await alice.book("NOPE.SIM")
    assert symbol.value.error == "unknown_symbol"


async def test_expired_or_bad_token_is_renewed_from_stored_credentials(server: Server) -> None:
    async with AsyncClient(server.url, username="alice", password=PASSWORD) as c:
        await c.orders()
        first = c.token
        c.token = "stale.token.value"
        assert (await c.orders()).total == 0  # 401 invalid_token → logged in again → retried
        assert c.token not in (None, "stale.token.value", "") and first is not None


class LoseFirstAnswer(httpx.AsyncBaseTransport):
    """Delivers the first POST /orders to the server, then drops its answer as a broken connection would."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.posts = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method == "POST" and request.url.path.endswith("/orders"):
            self.posts += 1
            if self.posts == 1:
                await response.aread()
                await response.aclose()
                raise httpx.ReadError("connection reset by peer", request=request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_submit_retry_after_a_lost_answer_places_one_order(server: Server) -> None:
    transport = LoseFirstAnswer(httpx.AsyncHTTPTransport())
    async with AsyncClient(server.url, transport=transport, retry_backoff=0.0) as c:
        await c.login("alice", PASSWORD)
        order = await c.buy(SYM, 3, "189.00", client_order_id="once")
        assert transport.posts == 2  # the first reached the venue, the retry found it there
        assert order.client_order_id == "once" and order.status is OrderStatus.ACCEPTED
        page = await c.orders()
        assert page.total == 1 and page.orders[0].order_id == order.order_id
        assert (await c.book(SYM)).bids == [Level(Decimal("189.00"), 3, 1)]


async def test_no_retries_means_the_transport_error_surfaces(server: Server) -> None:
    transport = LoseFirstAnswer(httpx.AsyncHTTPTransport())
    async with AsyncClient(server.url, transport=transport, retries=0) as c:
        await c.login("alice", PASSWORD)
        with pytest.raises(TransportError):
            await c.buy(SYM, 3, "189.00")


async def test_connection_refused_is_a_transport_error() -> None:
    async with AsyncClient("http://127.0.0.1:9", token="x", retries=1, retry_backoff=0.0) as c:
        with pytest.raises(TransportError):
            await c.book(SYM)


async def test_float_prices_are_refused(alice: AsyncClient) -> None:
    with pytest.raises(TypeError):
        await alice.buy(SYM, 1, 190.1)  # type: ignore[arg-type]
