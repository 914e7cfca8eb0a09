"""The blocking Client from a plain test, against a server on its own thread and event loop."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest

from tests.client.conftest import PASSWORD, Server
from tradesim.client import Client, Forbidden, Level, NotFound, Rejected, Unauthorized
from tradesim.domain import OrderStatus

SYM = "AAPL.SIM"


def test_sync_client_trades_and_reads(threaded_server: Server) -> None:
    with Client(threaded_server.url) as alice, Client(threaded_server.url, username="bob", password=PASSWORD) as bob:
        alice.login("alice", PASSWORD)
        assert alice.account_id == "alice"
        assert {i.symbol for i in alice.instruments()} >= {SYM}
        resting = bob.sell(SYM, 5, Decimal("190.20"), client_order_id="s1")
        assert resting.status is OrderStatus.ACCEPTED and resting.price == Decimal("190.20")
        bid = alice.buy(SYM, 2, "190.00")
        assert alice.book(SYM).bids == [Level(Decimal("190.00"), 2, 1)]
        modified = alice.modify(bid, price="190.10")
        assert modified.price == Decimal("190.10")
        taker = alice.buy(SYM, 3, "190.20")
        assert taker.status is OrderStatus.FILLED and taker.trades[0].price == Decimal("190.20")
        assert bob.order_by_client_id("s1").leaves_qty == 2
        assert alice.cancel(bid).status is OrderStatus.CANCELED
        assert [o.status for o in alice.orders().orders] == [OrderStatus.FILLED, OrderStatus.CANCELED]
        assert alice.account().account == "alice"
        assert alice.risk().account == "alice"
        assert alice.positions().account == "alice"


def test_sync_client_raises_typed_errors(threaded_server: Server) -> None:
    with Client(threaded_server.url) as c:
        with pytest.raises(Unauthorized):
            c.login("alice", "wrong password")
        c.login("vic", PASSWORD)
        with pytest.raises(Forbidden):
            c.sell(SYM, 1, "190.00")
        with pytest.raises(NotFound):
            c.order("999999")
    with Client(threaded_server.url, username="alice", password=PASSWORD) as c, pytest.raises(Rejected) as caught:
        c.buy(SYM, 20_000, "190.00")
    assert caught.value.order is not None and caught.value.order.status is OrderStatus.REJECTED


def test_sync_client_is_usable_from_many_threads(threaded_server: Server) -> None:
    with Client(threaded_server.url, username="alice", password=PASSWORD) as c:
        errors: list[BaseException] = []

        def place(n: int) -> None:
            try:
                c.buy(SYM, 1, "180.00", client_order_id=f"t{n}")
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=place, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert c.orders().total == 8
        assert c.book(SYM).bids == [Level(Decimal("180.00"), 8, 8)]
    with pytest.raises(RuntimeError):
        c.book(SYM)  # closed
