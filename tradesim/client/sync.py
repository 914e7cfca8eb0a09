"""`Client`: the blocking face of `AsyncClient`, for scripts and notebooks that have no event loop.

Each call runs on a private event loop in a daemon thread (`LoopThread`), so it works the same whether or
not the calling thread has a loop of its own (a notebook's, say) and is safe to use from many threads.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterator
from types import TracebackType
from typing import Any, TypeVar

from tradesim.client.aio import DEFAULT_URL, AsyncClient, OrderRef, PriceLike
from tradesim.client.loop import LoopThread
from tradesim.client.models import (
    Account,
    Algo,
    AlgoPage,
    AlgoParams,
    Bars,
    Book,
    Instrument,
    Order,
    OrderPage,
    Positions,
    Risk,
    Ticker,
    Token,
    Trades,
)
from tradesim.client.stream import Message
from tradesim.domain import OrderStatus, Side

T = TypeVar("T")


class Client:
    """Same arguments and methods as `AsyncClient`, each blocking until its answer."""

    def __init__(self, base_url: str = DEFAULT_URL, **kw: Any) -> None:
        self._thread = LoopThread("tradesim-client")

        async def make() -> AsyncClient:  # httpx wants to be created where it will run
            return AsyncClient(base_url, **kw)

        self.aio: AsyncClient = self._run(make())

    @property
    def _closed(self) -> bool:
        return self._thread.closed

    def _run(self, coro: Awaitable[T]) -> T:
        return self._thread.run(coro)

    def close(self) -> None:
        if self._closed:
            return
        self._run(self.aio.aclose())
        self._thread.stop()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def token(self) -> str | None:
        return self.aio.token

    @property
    def account_id(self) -> str | None:
        return self.aio.account_id

    def login(self, username: str, password: str) -> Token:
        return self._run(self.aio.login(username, password))

    def login_api_key(self, api_key: str) -> Token:
        return self._run(self.aio.login_api_key(api_key))

    def submit_order(self, symbol: str, side: Side | str, qty: int, **kw: Any) -> Order:
        return self._run(self.aio.submit_order(symbol, side, qty, **kw))

    def buy(self, symbol: str, qty: int, price: PriceLike | None = None, **kw: Any) -> Order:
        return self._run(self.aio.buy(symbol, qty, price, **kw))

    def sell(self, symbol: str, qty: int, price: PriceLike | None = None, **kw: Any) -> Order:
        return self._run(self.aio.sell(symbol, qty, price, **kw))

    def cancel(self, order: OrderRef) -> Order:
        return self._run(self.aio.cancel(order))

    def modify(self, order: OrderRef, *, price: PriceLike | None = None, qty: int | None = None) -> Order:
        return self._run(self.aio.modify(order, price=price, qty=qty))

    def order(self, order: OrderRef) -> Order:
        return self._run(self.aio.order(order))

    def order_by_client_id(self, client_order_id: str, *, account: str | None = None) -> Order:
        return self._run(self.aio.order_by_client_id(client_order_id, account=account))

    def orders(self, *, status: OrderStatus | str | None = None, symbol: str | None = None,
               account: str | None = None, open_only: bool = False, limit: int = 100, offset: int = 0) -> OrderPage:
        return self._run(self.aio.orders(status=status, symbol=symbol, account=account, open_only=open_only,
                                         limit=limit, offset=offset))

    def instruments(self) -> list[Instrument]:
        return self._run(self.aio.instruments())

    def book(self, symbol: str, depth: int = 10) -> Book:
        return self._run(self.aio.book(symbol, depth))

    def trades(self, symbol: str, limit: int = 100) -> Trades:
        return self._run(self.aio.trades(symbol, limit))

    def ticker(self, symbol: str) -> Ticker:
        return self._run(self.aio.ticker(symbol))

    def bars(self, symbol: str, interval: int = 60, *, start: int | None = None, end: int | None = None,
             limit: int = 500) -> Bars:
        return self._run(self.aio.bars(symbol, interval, start=start, end=end, limit=limit))

    def algo_order(self, symbol: str, side: Side | str, qty: int, algo: str, params: AlgoParams | None = None, *,
                   client_id: str | None = None, account: str | None = None) -> Algo:
        return self._run(self.aio.algo_order(symbol, side, qty, algo, params, client_id=client_id, account=account))

    def algo(self, algo_id: str, *, children: bool = False) -> Algo:
        return self._run(self.aio.algo(algo_id, children=children))

    def algos(self, *, state: str | None = None, account: str | None = None, limit: int = 100,
              offset: int = 0) -> AlgoPage:
        return self._run(self.aio.algos(state=state, account=account, limit=limit, offset=offset))

    def cancel_algo(self, algo_id: str) -> Algo:
        return self._run(self.aio.cancel_algo(algo_id))

    def pause_algo(self, algo_id: str) -> Algo:
        return self._run(self.aio.pause_algo(algo_id))

    def resume_algo(self, algo_id: str) -> Algo:
        return self._run(self.aio.resume_algo(algo_id))

    def subscribe(self, channel: str, symbol: str | None = None, *, account: str | None = None,
                  check_gaps: bool = True) -> Iterator[Message]:
        """A blocking iterator of one channel's frames; close it (or leave the loop) to close the socket."""
        return self._iterate(self.aio.subscribe(channel, symbol, account=account, check_gaps=check_gaps))

    def account(self, account: str | None = None) -> Account:
        return self._run(self.aio.account(account))

    def positions(self, *, account: str | None = None, open_only: bool = False) -> Positions:
        return self._run(self.aio.positions(account=account, open_only=open_only))

    def risk(self, account: str | None = None) -> Risk:
        return self._run(self.aio.risk(account))

    def _iterate(self, agen: Any) -> Iterator[Any]:
        """Drive an async iterator on the client's loop, one item per blocking step."""
        try:
            while True:
                try:
                    yield self._run(agen.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            if not self._closed:
                self._run(agen.aclose())
