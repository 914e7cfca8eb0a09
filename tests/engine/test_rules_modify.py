"""Modify (cancel/replace): qty is the new total, priority kept or lost, crossing modifies, rejections."""

from __future__ import annotations

import pytest

from tests.engine.test_rules import BUY, SELL, X, cancel, make_engine, new, summary
from tradesim.domain import ModifyOrder, OrderModified, OrderStatus, OrderType, RejectReason
from tradesim.engine import MatchingEngine


def modify(cid: str, price: int | None = None, qty: int | None = None, *, account: str = "a",
           symbol: str = X, ts: int = 0) -> ModifyOrder:
    return ModifyOrder(account=account, client_order_id=cid, symbol=symbol, price=price, qty=qty, ts=ts)


@pytest.fixture
def engine() -> MatchingEngine:
    return make_engine()


def _queue_of_three(engine: MatchingEngine) -> None:
    for i in (1, 2, 3):
        engine.submit(new(f"s{i}", SELL, 100, 10, account=f"m{i}"))


def _who_fills_first(engine: MatchingEngine) -> int:
    events = engine.submit(new("probe", BUY, 100, 1, account="t"))
    return summary(events)[1][1]  # maker id of the first trade


def test_qty_down_keeps_priority(engine: MatchingEngine) -> None:
    _queue_of_three(engine)
    events = engine.modify(modify("s1", qty=4, account="m1", ts=5))
    assert events == [
        OrderModified(seq=4, ts=5, order_id=1, account="m1", client_order_id="s1", symbol=X, price=100,
                      qty=4, leaves_qty=4)
    ]
    assert engine.book(X).depth(5) == ([], [(100, 24, 3)])
    assert _who_fills_first(engine) == 1


def test_qty_up_loses_priority(engine: MatchingEngine) -> None:
    _queue_of_three(engine)
    assert summary(engine.modify(modify("s1", qty=15, account="m1"))) == [("modified", 1, 100, 15, 15)]
    assert _who_fills_first(engine) == 2


def test_same_price_same_qty_keeps_priority(engine: MatchingEngine) -> None:
    _queue_of_three(engine)
    engine.modify(modify("s1", price=100, qty=10, account="m1"))
    assert _who_fills_first(engine) == 1


def test_price_change_loses_priority_even_when_back_to_same_price(engine: MatchingEngine) -> None:
    _queue_of_three(engine)
    engine.modify(modify("s1", price=101, account="m1"))
    assert engine.book(X).depth(5) == ([], [(100, 20, 2), (101, 10, 1)])
    engine.modify(modify("s1", price=100, account="m1"))
    assert engine.book(X).depth(5) == ([], [(100, 30, 3)])
    assert _who_fills_first(engine) == 2


def test_qty_is_new_total_so_leaves_is_qty_minus_filled(engine: MatchingEngine) -> None:
    engine.submit(new("s", SELL, 100, 10, account="m"))
    engine.submit(new("b", BUY, 100, 4, account="t"))
    events = engine.modify(modify("s", qty=7, account="m"))
    assert summary(events) == [("modified", 1, 100, 7, 3)]
    order = engine.order(1)
    assert order is not None and (order.qty, order.filled_qty, order.leaves_qty) == (7, 4, 3)
    assert order.status is OrderStatus.PARTIALLY_FILLED
    assert engine.book(X).depth(5) == ([], [(100, 3, 1)])


def test_qty_not_above_filled_rejected_and_order_unchanged(engine: MatchingEngine) -> None:
    engine.submit(new("s", SELL, 100, 10, account="m"))
    engine.submit(new("b", BUY, 100, 4, account="t"))
    for qty in (4, 3):
        events = engine.modify(modify("s", qty=qty, account="m"))
        assert summary(events) == [("rejected", "bad_qty")]
        assert events[0].order_id == 1  # type: ignore[union-attr]
    order = engine.order(1)
    assert order is not None and (order.qty, order.leaves_qty) == (10, 6)
    assert engine.book(X).depth(5) == ([], [(100, 6, 1)])


def test_crossing_modify_trades_at_resting_prices_then_rests(engine: MatchingEngine) -> None:
    engine.submit(new("s1", SELL, 101, 3, account="m"))  # 1
    engine.submit(new("s2", SELL, 102, 3, account="m"))  # 2
    engine.submit(new("b", BUY, 99, 10, account="t"))  # 3
    events = engine.modify(modify("b", price=103, account="t"))
    assert summary(events) == [
        ("modified", 3, 103, 10, 10),
        ("trade", 1, 3, 101, 3),
        ("trade", 2, 3, 102, 3),
    ]
    assert engine.book(X).depth(5) == ([(103, 4, 1)], [])
    assert engine.book(X).last_price == 102


def test_crossing_modify_uses_order_stp(engine: MatchingEngine) -> None:
    engine.submit(new("own", SELL, 101, 3, account="t"))  # 1
    engine.submit(new("b", BUY, 99, 10, account="t"))  # 2
    events = engine.modify(modify("b", price=101, account="t"))
    assert summary(events) == [("modified", 2, 101, 10, 10), ("canceled", 2, "stp", 10)]
    assert engine.book(X).depth(5) == ([], [(101, 3, 1)])


def test_modify_unknown_or_finished_rejected(engine: MatchingEngine) -> None:
    assert summary(engine.modify(modify("nope", qty=5))) == [("rejected", "unknown_order")]
    engine.submit(new("b", BUY, 100, 5))
    engine.cancel(cancel("b"))
    assert summary(engine.modify(modify("b", qty=3))) == [("rejected", "unknown_order")]
    engine.submit(new("s", SELL, 100, 5, account="m"))
    engine.submit(new("t", BUY, 100, 5, account="t"))  # fills s
    assert summary(engine.modify(modify("s", qty=8, account="m"))) == [("rejected", "unknown_order")]
    # An open order named under another symbol is unknown there.
    engine.submit(new("live", BUY, 90, 5))
    assert summary(engine.modify(modify("live", qty=8, symbol="Y.SIM"))) == [("rejected", "unknown_order")]


def test_post_only_modify_to_crossing_price_rejected(engine: MatchingEngine) -> None:
    engine.submit(new("s", SELL, 101, 5, account="m"))
    engine.submit(new("b", BUY, 100, 5, post_only=True))
    events = engine.modify(modify("b", price=101))
    assert summary(events) == [("rejected", "post_only")]
    assert engine.book(X).depth(5) == ([(100, 5, 1)], [(101, 5, 1)])
    assert summary(engine.modify(modify("b", price=99))) == [("modified", 2, 99, 5, 5)]


def test_modify_bad_price_malformed_and_lot(engine: MatchingEngine) -> None:
    engine.submit(new("b", BUY, 100, 5))
    assert summary(engine.modify(modify("b", price=0))) == [("rejected", "bad_price")]
    assert summary(engine.modify(modify("b"))) == [("rejected", "malformed")]
    engine.submit(new("y", BUY, 100, 20, symbol="Y.SIM"))
    assert summary(engine.modify(modify("y", qty=25, symbol="Y.SIM"))) == [("rejected", "bad_qty")]
    assert engine.book(X).depth(5) == ([(100, 5, 1)], [])


def test_iceberg_modify_keeps_display(engine: MatchingEngine) -> None:
    engine.submit(new("ice", SELL, 100, 50, account="m", display_qty=10))
    engine.submit(new("b", BUY, 100, 4, account="t"))  # visible 6 left
    assert engine.book(X).depth(5) == ([], [(100, 6, 1)])
    engine.modify(modify("ice", qty=30, account="m"))  # leaves 26, down: keeps place, slice = 10
    assert engine.book(X).depth(5) == ([], [(100, 10, 1)])
    engine.modify(modify("ice", qty=10, account="m"))  # leaves 6 < display
    assert engine.book(X).depth(5) == ([], [(100, 6, 1)])
    order = engine.order(1)
    assert order is not None and (order.display_qty, order.leaves_qty, order.hidden_qty) == (10, 6, 0)


def test_modify_untriggered_stop_limit(engine: MatchingEngine) -> None:
    engine.submit(new("stop", BUY, 105, 5, type=OrderType.STOP_LIMIT, stop_price=104))
    assert summary(engine.modify(modify("stop", price=106, qty=8))) == [("modified", 1, 106, 8, 8)]
    assert engine.book(X).depth(5) == ([], [])
    order = engine.order(1)
    assert order is not None and (order.price, order.qty, order.stop_price) == (106, 8, 104)


def test_price_on_untriggered_stop_market_is_malformed(engine: MatchingEngine) -> None:
    engine.submit(new("stop", BUY, None, 5, type=OrderType.STOP, stop_price=104))
    assert summary(engine.modify(modify("stop", price=106))) == [("rejected", "malformed")]
    assert summary(engine.modify(modify("stop", qty=7))) == [("modified", 1, None, 7, 7)]


def test_rejected_modify_is_numbered(engine: MatchingEngine) -> None:
    engine.submit(new("b", BUY, 100, 5))
    events = engine.modify(modify("b", qty=0, ts=3))
    assert [(e.seq, e.ts) for e in events] == [(2, 3)]
    assert events[0].reason is RejectReason.BAD_QTY  # type: ignore[union-attr]
