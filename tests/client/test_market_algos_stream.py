"""The client's market data (trades, ticker, bars), algos and WebSocket streams against a real server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from tests.client.conftest import PASSWORD, Server
from tradesim.client import (
    AlgoParams,
    AsyncClient,
    Client,
    Level,
    Level2Snapshot,
    Level2Update,
    NotFound,
    OrderEvent,
    TradeMsg,
    TradesSnapshot,
    Unauthorized,
)
from tradesim.client.stream import SequenceGap, Stream, _Head
from tradesim.domain import Side

SYM = "AAPL.SIM"


@pytest.fixture
async def alice(server: Server) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server.url, username="alice", password=PASSWORD) as c:
        yield c


@pytest.fixture
async def bob(server: Server) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server.url, username="bob", password=PASSWORD) as c:
        yield c


async def _next(it: AsyncIterator[Any], timeout: float = 5.0) -> Any:
    return await asyncio.wait_for(it.__anext__(), timeout)


async def test_trades_ticker_bars(alice: AsyncClient, bob: AsyncClient) -> None:
    assert (await alice.trades(SYM)).trades == []
    await bob.sell(SYM, 3, "190.00")
    await alice.buy(SYM, 3, "190.00")
    tape = []
    for _ in range(100):  # the API's tape follows the bus
        tape = (await alice.trades(SYM, limit=5)).trades
        if tape:
            break
        await asyncio.sleep(0.02)
    [trade] = tape
    assert (trade.price, trade.qty, trade.aggressor, trade.symbol) == (Decimal("190.00"), 3, Side.BUY, SYM)
    ticker = await alice.ticker(SYM)
    assert ticker.symbol == SYM and isinstance(ticker.turnover, Decimal)
    bars = await alice.bars(SYM, 60, limit=10)
    assert bars.symbol == SYM and bars.interval == 60 and isinstance(bars.bars, list)
    with pytest.raises(NotFound):
        await alice.ticker("NOPE.SIM")


async def test_algo_lifecycle(alice: AsyncClient, bob: AsyncClient) -> None:
    params = AlgoParams(duration_ms=600_000, slices=10, limit_price=Decimal("180.00"))
    parent = await alice.algo_order(SYM, Side.BUY, 100, "twap", params, client_id="p1")
    assert parent.algo == "twap" and parent.qty == 100 and parent.state in ("running", "paused")
    assert parent.params.limit_price == Decimal("180.00")
    again = await alice.algo_order(SYM, Side.BUY, 100, "twap", params, client_id="p1")
    assert again.algo_id == parent.algo_id  # same client_id: the same parent
    assert (await alice.algo(parent.algo_id, children=True)).children is not None
    assert [a.algo_id for a in (await alice.algos()).algos] == [parent.algo_id]
    with pytest.raises(NotFound):
        await bob.algo(parent.algo_id)
    assert (await alice.pause_algo(parent.algo_id)).state == "paused"
    assert (await alice.resume_algo(parent.algo_id)).state == "running"
    assert (await alice.cancel_algo(parent.algo_id)).state == "canceled"


async def test_subscribe_trades_and_level2(alice: AsyncClient, bob: AsyncClient) -> None:
    trades = alice.subscribe("trades", SYM)
    snapshot = await _next(trades)
    assert isinstance(snapshot, TradesSnapshot) and snapshot.symbol == SYM
    async with await alice.stream() as book:
        await book.subscribe("level2", SYM)
        frames = aiter(book)
        first = await _next(frames)
        assert isinstance(first, Level2Snapshot) and first.bids == [] and first.asks == []

        await bob.sell(SYM, 5, "190.00")
        update = await _next(frames)
        assert isinstance(update, Level2Update) and update.prev_seq == first.seq
        assert update.asks == [Level(Decimal("190.00"), 5, 1)]

        await alice.buy(SYM, 2, "190.00")
        trade = await _next(trades)
        assert isinstance(trade, TradeMsg)
        assert (trade.price, trade.qty, trade.aggressor) == (Decimal("190.00"), 2, Side.BUY)
        after = await _next(frames)
        assert isinstance(after, Level2Update) and after.asks == [Level(Decimal("190.00"), 3, 1)]
    await trades.aclose()  # type: ignore[attr-defined]


async def test_private_orders_channel(server: Server, alice: AsyncClient) -> None:
    async with await alice.stream() as events:
        await events.subscribe("orders")  # acknowledged: whatever happens from here on is streamed
        order = await alice.buy(SYM, 1, "185.00", client_order_id="w1")
        event = await _next(aiter(events))
        while not isinstance(event, OrderEvent):
            event = await _next(aiter(events))
        assert event.account == "alice" and event.client_order_id == "w1" and event.event == "accepted"
        assert event.order_id == order.order_id and event.price == Decimal("185.00")

    lazy = alice.subscribe("orders")
    first = asyncio.create_task(_next(lazy))
    await asyncio.sleep(0.3)  # a subscribe() generator subscribes on its first step
    await alice.buy(SYM, 1, "185.00", client_order_id="w2")
    event = await first
    while not isinstance(event, OrderEvent):
        event = await _next(lazy)
    assert event.client_order_id == "w2" and event.side is Side.BUY
    await lazy.aclose()  # type: ignore[attr-defined]

    anonymous = AsyncClient(server.url)
    with pytest.raises(Unauthorized):
        await _next(anonymous.subscribe("orders"))
    with pytest.raises(NotFound):
        await _next(alice.subscribe("trades", "NOPE.SIM"))
    await anonymous.aclose()


def test_gap_detection() -> None:
    s = Stream("ws://unused", None)
    s._decode(_Head(type="snapshot", channel="trades", symbol=SYM, seq=5), b'{"type":"snapshot","channel":"trades",'
              b'"symbol":"AAPL.SIM","seq":5,"trades":[]}')
    frame = (b'{"type":"trade","channel":"trades","symbol":"AAPL.SIM","seq":%d,"prev_seq":%d,"trade_id":"1",'
             b'"price":"1.00","qty":1,"aggressor":"buy","ts":1}')
    ok = s._decode(_Head(type="trade", channel="trades", symbol=SYM, seq=7, prev_seq=5), frame % (7, 5))
    assert isinstance(ok, TradeMsg) and ok.price == Decimal("1.00")
    with pytest.raises(SequenceGap):
        s._decode(_Head(type="trade", channel="trades", symbol=SYM, seq=9, prev_seq=8), frame % (9, 8))


def test_sync_subscribe(threaded_server: Server) -> None:
    with Client(threaded_server.url, username="alice", password=PASSWORD) as alice, \
            Client(threaded_server.url, username="bob", password=PASSWORD) as bob:
        stream = alice.subscribe("trades", SYM)
        assert isinstance(next(stream), TradesSnapshot)
        bob.sell(SYM, 1, "190.00")
        alice.buy(SYM, 1, "190.00")
        trade = next(stream)
        assert isinstance(trade, TradeMsg) and trade.price == Decimal("190.00")
        stream.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize(("code", "kind"), [
    ("rate_limited", "RateLimited"), ("rate_limit_exceeded", "RateLimited"), ("token_expired", "Unauthorized"),
    ("key_revoked", "Unauthorized"), ("invalid_credentials", "Unauthorized"), ("already_authenticated", "Conflict"),
    ("something_new", "BadRequest"),
])
def test_websocket_error_frames_become_the_typed_errors_of_their_rest_twins(code: str, kind: str) -> None:
    from tradesim.client import errors
    from tradesim.client.stream import _Head, _ws_error

    exc = _ws_error(_Head(type="error", error=code, message="m"))
    assert type(exc) is getattr(errors, kind) and exc.error == code
