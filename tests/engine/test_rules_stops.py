"""Stops: trigger on the last trade price, processing order, cascades, cancel, and GTD/DAY expiry."""

from __future__ import annotations

import pytest

from tests.engine.test_rules import BUY, SELL, X, cancel, make_engine, new, summary
from tradesim.domain import ExpireOrders, OrderExpired, OrderStatus, OrderType, TimeInForce
from tradesim.engine import MatchingEngine

STOP = OrderType.STOP
STOP_LIMIT = OrderType.STOP_LIMIT


@pytest.fixture
def engine() -> MatchingEngine:
    return make_engine()


def _trade_at(engine: MatchingEngine, price: int, cid: str) -> None:
    """Prints one trade at `price` between two outside accounts."""
    engine.submit(new(cid + "s", SELL, price, 1, account="px1"))
    engine.submit(new(cid + "b", BUY, price, 1, account="px2"))


def test_stop_waits_off_book_until_last_reaches_stop(engine: MatchingEngine) -> None:
    engine.submit(new("s", SELL, 105, 10, account="m"))  # 1
    events = engine.submit(new("stop", BUY, None, 5, type=STOP, stop_price=102))  # 2
    assert summary(events) == [("accepted", 2)]
    assert engine.book(X).depth(5) == ([], [(105, 10, 1)])
    order = engine.order(2)
    assert order is not None and order.status is OrderStatus.ACCEPTED
    _trade_at(engine, 101, "t1")  # last 101 < 102: nothing
    assert order.status is OrderStatus.ACCEPTED
    engine.submit(new("t2s", SELL, 102, 1, account="px1"))  # 5
    events = engine.submit(new("t2b", BUY, 102, 1, account="px2"))  # 6 -> last 102 triggers
    assert summary(events) == [
        ("accepted", 6),
        ("trade", 5, 6, 102, 1),
        ("triggered", 2),
        ("trade", 1, 2, 105, 5),
    ]
    assert order.status is OrderStatus.FILLED


def test_sell_stop_triggers_when_last_at_or_below(engine: MatchingEngine) -> None:
    engine.submit(new("b", BUY, 95, 10, account="m"))  # 1
    engine.submit(new("stop", SELL, None, 4, type=STOP, stop_price=99))  # 2
    engine.submit(new("x", BUY, 99, 1, account="px1"))  # 3
    events = engine.submit(new("y", SELL, 99, 1, account="px2"))  # 4
    assert summary(events) == [("accepted", 4), ("trade", 3, 4, 99, 1), ("triggered", 2), ("trade", 1, 2, 95, 4)]


def test_stop_limit_enters_as_limit_and_rests(engine: MatchingEngine) -> None:
    _trade_at(engine, 100, "t0")  # ids 1, 2; last 100
    engine.submit(new("s", SELL, 103, 2, account="m"))  # 3
    events = engine.submit(new("stop", BUY, 102, 5, type=STOP_LIMIT, stop_price=100))  # 4: holds at once
    assert summary(events) == [("accepted", 4), ("triggered", 4)]
    order = engine.order(4)
    assert order is not None and order.status is OrderStatus.TRIGGERED
    assert engine.book(X).depth(5) == ([(102, 5, 1)], [(103, 2, 1)])


def test_stop_triggers_on_acceptance_when_condition_holds(engine: MatchingEngine) -> None:
    engine.submit(new("s", SELL, 110, 10, account="m"))  # 1
    _trade_at(engine, 100, "t0")  # 2, 3
    events = engine.submit(new("stop", BUY, None, 3, type=STOP, stop_price=99))  # 4
    assert summary(events) == [("accepted", 4), ("triggered", 4), ("trade", 1, 4, 110, 3)]


def test_no_trigger_without_last_price(engine: MatchingEngine) -> None:
    events = engine.submit(new("stop", SELL, None, 3, type=STOP, stop_price=99))
    assert summary(events) == [("accepted", 1)]


def test_several_triggered_stops_processed_by_stop_price_then_acceptance(engine: MatchingEngine) -> None:
    engine.submit(new("s", SELL, 110, 100, account="m"))  # 1
    engine.submit(new("st1", BUY, None, 1, type=STOP, stop_price=103, account="k1"))  # 2
    engine.submit(new("st2", BUY, None, 1, type=STOP, stop_price=101, account="k2"))  # 3
    engine.submit(new("st3", BUY, None, 1, type=STOP, stop_price=101, account="k3"))  # 4
    engine.submit(new("st4", BUY, None, 1, type=STOP, stop_price=106, account="k4"))  # 5: not reached
    engine.submit(new("x", SELL, 105, 1, account="px1"))  # 6
    events = engine.submit(new("y", BUY, 105, 1, account="px2"))  # 7: last 105
    assert summary(events) == [
        ("accepted", 7),
        ("trade", 6, 7, 105, 1),
        ("triggered", 3),
        ("trade", 1, 3, 110, 1),
        ("triggered", 4),
        ("trade", 1, 4, 110, 1),
        ("triggered", 2),
        ("trade", 1, 2, 110, 1),
        # last is 110 now: st4 (106) triggers in the cascade
        ("triggered", 5),
        ("trade", 1, 5, 110, 1),
    ]


def test_sell_stops_processed_by_descending_stop_price(engine: MatchingEngine) -> None:
    engine.submit(new("b", BUY, 90, 100, account="m"))  # 1
    engine.submit(new("st1", SELL, None, 1, type=STOP, stop_price=97, account="k1"))  # 2
    engine.submit(new("st2", SELL, None, 1, type=STOP, stop_price=99, account="k2"))  # 3
    engine.submit(new("x", BUY, 95, 1, account="px1"))  # 4
    events = engine.submit(new("y", SELL, 95, 1, account="px2"))  # 5
    assert summary(events) == [
        ("accepted", 5),
        ("trade", 4, 5, 95, 1),
        ("triggered", 3),
        ("trade", 1, 3, 90, 1),
        ("triggered", 2),
        ("trade", 1, 2, 90, 1),
    ]


def test_cascade_one_stop_triggers_the_next(engine: MatchingEngine) -> None:
    engine.submit(new("s1", SELL, 102, 1, account="m"))  # 1
    engine.submit(new("s2", SELL, 104, 5, account="m"))  # 2
    engine.submit(new("st_a", BUY, None, 1, type=STOP, stop_price=101, account="k1"))  # 3 -> trades at 102
    engine.submit(new("st_b", BUY, None, 1, type=STOP, stop_price=102, account="k2"))  # 4 -> at 104
    engine.submit(new("st_c", BUY, None, 1, type=STOP, stop_price=104, account="k3"))  # 5 -> at 104
    engine.submit(new("x", SELL, 101, 1, account="px1"))  # 6
    events = engine.submit(new("y", BUY, 101, 1, account="px2"))  # 7
    assert summary(events) == [
        ("accepted", 7),
        ("trade", 6, 7, 101, 1),
        ("triggered", 3),
        ("trade", 1, 3, 102, 1),
        ("triggered", 4),
        ("trade", 2, 4, 104, 1),
        ("triggered", 5),
        ("trade", 2, 5, 104, 1),
    ]
    assert engine.book(X).last_price == 104


def test_triggered_stop_stays_triggered_when_price_moves_back(engine: MatchingEngine) -> None:
    # One trade at 100 triggers a buy stop and a sell stop; the buy goes first and lifts the last
    # price to 105, above the sell stop, which still runs: once triggered, a stop stays triggered.
    engine.submit(new("bs", BUY, None, 1, type=STOP, stop_price=100, account="k1"))  # 1
    engine.submit(new("ss", SELL, None, 1, type=STOP, stop_price=100, account="k2"))  # 2
    engine.submit(new("bid", BUY, 100, 1, account="px1"))  # 3
    engine.submit(new("ask", SELL, 105, 5, account="m"))  # 4
    engine.submit(new("low", BUY, 90, 5, account="m2"))  # 5
    events = engine.submit(new("hit", SELL, 100, 1, account="px2"))  # 6
    assert summary(events) == [
        ("accepted", 6),
        ("trade", 3, 6, 100, 1),
        ("triggered", 1),
        ("trade", 4, 1, 105, 1),
        ("triggered", 2),
        ("trade", 5, 2, 90, 1),
    ]
    assert engine.book(X).last_price == 90


def test_cancel_untriggered_stop(engine: MatchingEngine) -> None:
    engine.submit(new("stop", BUY, None, 3, type=STOP, stop_price=101))
    events = engine.cancel(cancel("stop"))
    assert summary(events) == [("canceled", 1, "user", 3)]
    _trade_at(engine, 105, "t")
    order = engine.order(1)
    assert order is not None and order.status is OrderStatus.CANCELED


def test_triggered_stop_keeps_its_tif(engine: MatchingEngine) -> None:
    engine.submit(new("s", SELL, 103, 2, account="m"))  # 1
    engine.submit(new("stop", BUY, 104, 5, type=STOP_LIMIT, stop_price=101, tif=TimeInForce.IOC))  # 2
    engine.submit(new("x", SELL, 101, 1, account="px1"))  # 3
    events = engine.submit(new("y", BUY, 101, 1, account="px2"))  # 4
    assert summary(events)[2:] == [("triggered", 2), ("trade", 1, 2, 103, 2), ("canceled", 2, "ioc", 3)]


# ---------------------------------------------------------------- expiry


def test_gtd_expires_before_the_next_command(engine: MatchingEngine) -> None:
    engine.submit(new("g", SELL, 100, 5, account="m", tif=TimeInForce.GTD, expire_ts=50, ts=10))  # 1
    events = engine.submit(new("b", BUY, 100, 5, account="t", ts=50))  # 2
    assert events[0] == OrderExpired(seq=2, ts=50, order_id=1, account="m", client_order_id="g", symbol=X,
                                     canceled_qty=5)
    assert summary(events) == [("expired", 1, 5), ("accepted", 2)]
    assert engine.book(X).depth(5) == ([(100, 5, 1)], [])
    order = engine.order(1)
    assert order is not None and order.status is OrderStatus.EXPIRED


def test_gtd_not_expired_before_its_time(engine: MatchingEngine) -> None:
    engine.submit(new("g", SELL, 100, 5, account="m", tif=TimeInForce.GTD, expire_ts=50, ts=10))
    events = engine.submit(new("b", BUY, 100, 5, account="t", ts=49))
    assert summary(events) == [("accepted", 2), ("trade", 1, 2, 100, 5)]


def test_gtd_expiry_order_by_expire_ts_then_id_via_expire(engine: MatchingEngine) -> None:
    engine.submit(new("g1", BUY, 90, 1, tif=TimeInForce.GTD, expire_ts=30, ts=1))  # 1
    engine.submit(new("g2", BUY, 91, 1, tif=TimeInForce.GTD, expire_ts=20, ts=1))  # 2
    engine.submit(new("g3", BUY, 92, 1, tif=TimeInForce.GTD, expire_ts=20, ts=1))  # 3
    engine.submit(new("g4", BUY, 93, 1, tif=TimeInForce.GTD, expire_ts=99, ts=1))  # 4
    engine.submit(new("g5", SELL, None, 1, type=STOP, stop_price=80, tif=TimeInForce.GTD, expire_ts=25, ts=1))
    events = engine.expire(30)
    assert summary(events) == [("expired", 2, 1), ("expired", 3, 1), ("expired", 5, 1), ("expired", 1, 1)]
    assert {e.ts for e in events} == {30}
    assert engine.book(X).depth(5) == ([(93, 1, 1)], [])
    assert engine.expire(31) == []


def test_canceled_gtd_does_not_expire_again(engine: MatchingEngine) -> None:
    engine.submit(new("g", BUY, 90, 1, tif=TimeInForce.GTD, expire_ts=30, ts=1))
    engine.cancel(cancel("g", ts=2))
    assert engine.expire(40) == []


def test_day_orders_expire_at_end_of_day_only(engine: MatchingEngine) -> None:
    engine.submit(new("d1", BUY, 90, 1, tif=TimeInForce.DAY))  # 1
    engine.submit(new("gtc", BUY, 91, 1))  # 2
    engine.submit(new("d2", SELL, None, 2, type=STOP, stop_price=80, tif=TimeInForce.DAY))  # 3
    engine.submit(new("g", BUY, 92, 1, tif=TimeInForce.GTD, expire_ts=5, ts=1))  # 4
    engine.submit(new("d3", SELL, 120, 3, tif=TimeInForce.DAY))  # 5
    assert engine.expire(4) == []
    events = engine.apply(ExpireOrders(ts=6, end_of_day=True))
    assert summary(events) == [("expired", 4, 1), ("expired", 1, 1), ("expired", 3, 2), ("expired", 5, 3)]
    assert engine.book(X).depth(5) == ([(91, 1, 1)], [])
