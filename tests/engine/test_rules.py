"""Rules of docs/matching.md for incoming orders: priority, types, TIF, FOK, iceberg, STP, numbering.

The helpers at the top (`make_engine`, `new`, `summary`) are shared by the other test_rules_* files,
test_snapshot.py and test_bad_input.py.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tradesim.domain import (
    STP,
    CancelOrder,
    CancelReason,
    Event,
    Instrument,
    InvalidTransitionError,
    NewOrder,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderModified,
    OrderRejected,
    OrderStatus,
    OrderTriggered,
    OrderType,
    Side,
    TimeInForce,
    Trade,
    transition,
)
from tradesim.engine import MatchingEngine

X = "X.SIM"
Y = "Y.SIM"  # lot size 10
BUY = Side.BUY
SELL = Side.SELL


def make_engine() -> MatchingEngine:
    return MatchingEngine(
        instruments=[
            Instrument(symbol=X, tick_size=Decimal("0.01"), lot_size=1),
            Instrument(symbol=Y, tick_size=Decimal("0.5"), lot_size=10),
        ]
    )


def new(
    cid: str,
    side: Side,
    price: int | None = None,
    qty: int = 10,
    *,
    account: str = "a",
    type: OrderType = OrderType.LIMIT,
    tif: TimeInForce = TimeInForce.GTC,
    symbol: str = X,
    ts: int = 0,
    **extra: Any,
) -> NewOrder:
    return NewOrder(account=account, client_order_id=cid, symbol=symbol, side=side, type=type, tif=tif,
                    price=price, qty=qty, ts=ts, **extra)


def cancel(cid: str, *, account: str = "a", symbol: str = X, ts: int = 0) -> CancelOrder:
    return CancelOrder(account=account, client_order_id=cid, symbol=symbol, ts=ts)


def summary(events: list[Event]) -> list[tuple[Any, ...]]:
    """Events as short tuples, so a test states the exact sequence in one readable literal."""
    out: list[tuple[Any, ...]] = []
    for e in events:
        if isinstance(e, OrderAccepted):
            out.append(("accepted", e.order_id))
        elif isinstance(e, Trade):
            out.append(("trade", e.maker_order_id, e.taker_order_id, e.price, e.qty))
        elif isinstance(e, OrderCanceled):
            out.append(("canceled", e.order_id, e.reason.value, e.canceled_qty))
        elif isinstance(e, OrderRejected):
            out.append(("rejected", e.reason.value))
        elif isinstance(e, OrderModified):
            out.append(("modified", e.order_id, e.price, e.qty, e.leaves_qty))
        elif isinstance(e, OrderTriggered):
            out.append(("triggered", e.order_id))
        elif isinstance(e, OrderExpired):
            out.append(("expired", e.order_id, e.canceled_qty))
    return out


@pytest.fixture
def engine() -> MatchingEngine:
    return make_engine()


# ---------------------------------------------------------------- the spec example, exactly


def test_spec_example_events_exactly(engine: MatchingEngine) -> None:
    first = engine.submit(new("a1", SELL, 15025, 100, account="alice", ts=1))
    events = engine.submit(new("b1", BUY, 15030, 60, account="bob", tif=TimeInForce.IOC, ts=2))
    assert first == [
        OrderAccepted(seq=1, ts=1, order_id=1, account="alice", client_order_id="a1", symbol=X, side=SELL,
                      type=OrderType.LIMIT, tif=TimeInForce.GTC, price=15025, qty=100)
    ]
    assert events == [
        OrderAccepted(seq=2, ts=2, order_id=2, account="bob", client_order_id="b1", symbol=X, side=BUY,
                      type=OrderType.LIMIT, tif=TimeInForce.IOC, price=15030, qty=60),
        Trade(seq=3, ts=2, trade_id=1, symbol=X, price=15025, qty=60, aggressor=BUY,
              maker_order_id=1, maker_account="alice", maker_client_order_id="a1", maker_cum_qty=60,
              maker_leaves_qty=40, taker_order_id=2, taker_account="bob", taker_client_order_id="b1",
              taker_cum_qty=60, taker_leaves_qty=0),
    ]
    assert engine.book(X).depth(10) == ([], [(15025, 40, 1)])
    assert engine.book(X).last_price == 15025


# ---------------------------------------------------------------- price-time priority


def test_price_time_priority_and_maker_price(engine: MatchingEngine) -> None:
    engine.submit(new("s1", SELL, 101, 5, account="m1"))  # 1
    engine.submit(new("s2", SELL, 100, 5, account="m2"))  # 2: better price
    engine.submit(new("s3", SELL, 100, 5, account="m3"))  # 3: same price, later
    events = engine.submit(new("b1", BUY, 102, 12, account="t"))
    assert summary(events) == [
        ("accepted", 4),
        ("trade", 2, 4, 100, 5),
        ("trade", 3, 4, 100, 5),
        ("trade", 1, 4, 101, 2),
    ]
    assert engine.book(X).depth(5) == ([], [(101, 3, 1)])


def test_bids_best_first_and_best_prices(engine: MatchingEngine) -> None:
    for i, price in enumerate((98, 100, 99, 100)):
        engine.submit(new(f"b{i}", BUY, price, 10 + i))
    engine.submit(new("s", SELL, 103, 7))
    book = engine.book(X)
    assert book.depth(2) == ([(100, 24, 2), (99, 12, 1)], [(103, 7, 1)])
    assert book.depth(10)[0] == [(100, 24, 2), (99, 12, 1), (98, 10, 1)]
    assert (book.best_bid(), book.best_ask(), book.last_price) == (100, 103, None)


def test_sell_taker_walks_bids_down_to_limit(engine: MatchingEngine) -> None:
    engine.submit(new("b1", BUY, 100, 5, account="m"))
    engine.submit(new("b2", BUY, 99, 5, account="m"))
    engine.submit(new("b3", BUY, 98, 5, account="m"))
    events = engine.submit(new("s", SELL, 99, 20, account="t"))
    assert summary(events) == [("accepted", 4), ("trade", 1, 4, 100, 5), ("trade", 2, 4, 99, 5)]
    assert engine.book(X).depth(5) == ([(98, 5, 1)], [(99, 10, 1)])
    trade = events[1]
    assert isinstance(trade, Trade) and trade.aggressor is SELL


# ---------------------------------------------------------------- types and TIF


def test_limit_gtc_partial_fill_rests_remainder(engine: MatchingEngine) -> None:
    engine.submit(new("s", SELL, 100, 4, account="m"))
    events = engine.submit(new("b", BUY, 100, 10, account="t"))
    assert summary(events) == [("accepted", 2), ("trade", 1, 2, 100, 4)]
    order = engine.order(2)
    assert order is not None
    assert (order.status, order.filled_qty, order.leaves_qty) == (OrderStatus.PARTIALLY_FILLED, 4, 6)
    assert engine.book(X).depth(5) == ([(100, 6, 1)], [])
    maker = engine.order(1)
    assert maker is not None and maker.status is OrderStatus.FILLED and maker.leaves_qty == 0


def test_ioc_remainder_canceled(engine: MatchingEngine) -> None:
    engine.submit(new("s", SELL, 100, 4, account="m"))
    events = engine.submit(new("b", BUY, 101, 10, account="t", tif=TimeInForce.IOC))
    assert summary(events) == [("accepted", 2), ("trade", 1, 2, 100, 4), ("canceled", 2, "ioc", 6)]
    assert engine.book(X).depth(5) == ([], [])
    order = engine.order(2)
    assert order is not None and order.status is OrderStatus.CANCELED and order.filled_qty == 4


def test_ioc_without_cross_canceled_whole(engine: MatchingEngine) -> None:
    engine.submit(new("s", SELL, 105, 4, account="m"))
    events = engine.submit(new("b", BUY, 101, 10, account="t", tif=TimeInForce.IOC))
    assert summary(events) == [("accepted", 2), ("canceled", 2, "ioc", 10)]


def test_day_and_gtd_limits_rest(engine: MatchingEngine) -> None:
    engine.submit(new("d", BUY, 100, 5, tif=TimeInForce.DAY))
    engine.submit(new("g", BUY, 99, 5, tif=TimeInForce.GTD, expire_ts=50, ts=1))
    assert engine.book(X).depth(5) == ([(100, 5, 1), (99, 5, 1)], [])


def test_market_sweeps_any_price_and_cancels_remainder_no_liquidity(engine: MatchingEngine) -> None:
    engine.submit(new("s1", SELL, 100, 3, account="m"))
    engine.submit(new("s2", SELL, 500, 3, account="m"))
    events = engine.submit(new("b", BUY, None, 10, account="t", type=OrderType.MARKET))
    assert summary(events) == [
        ("accepted", 3),
        ("trade", 1, 3, 100, 3),
        ("trade", 2, 3, 500, 3),
        ("canceled", 3, "no_liquidity", 4),
    ]
    accepted = events[0]
    assert isinstance(accepted, OrderAccepted) and accepted.price is None


def test_market_into_empty_side_no_liquidity(engine: MatchingEngine) -> None:
    engine.submit(new("b0", BUY, 100, 3, account="m"))  # own side has liquidity, opposite is empty
    events = engine.submit(new("m", BUY, None, 10, type=OrderType.MARKET, account="t", tif=TimeInForce.GTC))
    assert summary(events) == [("accepted", 2), ("canceled", 2, "no_liquidity", 10)]
    assert engine.book(X).depth(5) == ([(100, 3, 1)], [])


def test_market_never_rests_whatever_tif(engine: MatchingEngine) -> None:
    engine.submit(new("s", SELL, 100, 3, account="m"))
    events = engine.submit(new("b", BUY, None, 5, type=OrderType.MARKET, tif=TimeInForce.DAY, account="t"))
    assert summary(events) == [("accepted", 2), ("trade", 1, 2, 100, 3), ("canceled", 2, "no_liquidity", 2)]
    assert engine.book(X).depth(5) == ([], [])


def test_market_ioc_remainder_is_no_liquidity(engine: MatchingEngine) -> None:
    engine.submit(new("s", SELL, 100, 3, account="m"))
    events = engine.submit(new("b", BUY, None, 5, type=OrderType.MARKET, tif=TimeInForce.IOC, account="t"))
    assert summary(events)[-1] == ("canceled", 2, "no_liquidity", 2)


# ---------------------------------------------------------------- FOK


def test_fok_against_partial_liquidity_does_not_trade(engine: MatchingEngine) -> None:
    engine.submit(new("s1", SELL, 100, 4, account="m"))
    engine.submit(new("s2", SELL, 102, 4, account="m"))  # beyond the limit: does not count
    before = engine.book(X).depth(5)
    events = engine.submit(new("b", BUY, 101, 5, account="t", tif=TimeInForce.FOK))
    assert summary(events) == [("accepted", 3), ("canceled", 3, "fok", 5)]
    assert engine.book(X).depth(5) == before
    assert engine.book(X).last_price is None


def test_fok_that_does_not_cross_is_canceled_not_rested(engine: MatchingEngine) -> None:
    engine.submit(new("s1", SELL, 105, 4, account="m"))
    events = engine.submit(new("b", BUY, 101, 5, account="t", tif=TimeInForce.FOK))
    assert summary(events) == [("accepted", 2), ("canceled", 2, "fok", 5)]
    assert engine.book(X).depth(5) == ([], [(105, 4, 1)])
    events = engine.submit(new("b2", BUY, 101, 5, account="t", tif=TimeInForce.FOK, ts=1))  # empty side
    assert summary(events) == [("accepted", 3), ("canceled", 3, "fok", 5)]


def test_plain_tifs_into_a_book_that_does_not_cross(engine: MatchingEngine) -> None:
    engine.submit(new("s1", SELL, 105, 4, account="m"))
    outcomes = {}
    for i, tif in enumerate(TimeInForce):
        extra = {"expire_ts": 100} if tif is TimeInForce.GTD else {}
        outcomes[tif.value] = summary(engine.submit(new(f"b{i}", BUY, 100, 5, account="t", tif=tif, **extra)))[1:]
    assert outcomes == {
        "GTC": [],
        "DAY": [],
        "IOC": [("canceled", 4, "ioc", 5)],
        "FOK": [("canceled", 5, "fok", 5)],
        "GTD": [],
    }
    assert engine.book(X).depth(5) == ([(100, 15, 3)], [(105, 4, 1)])


def test_fok_against_enough_liquidity_fills_completely(engine: MatchingEngine) -> None:
    engine.submit(new("s1", SELL, 100, 4, account="m"))
    engine.submit(new("s2", SELL, 101, 4, account="m"))
    events = engine.submit(new("b", BUY, 101, 6, account="t", tif=TimeInForce.FOK))
    assert summary(events) == [("accepted", 3), ("trade", 1, 3, 100, 4), ("trade", 2, 3, 101, 2)]
    order = engine.order(3)
    assert order is not None and order.status is OrderStatus.FILLED


def test_fok_counts_iceberg_hidden_quantity(engine: MatchingEngine) -> None:
    engine.submit(new("ice", SELL, 100, 20, account="m", display_qty=5))
    events = engine.submit(new("b", BUY, 100, 18, account="t", tif=TimeInForce.FOK))
    assert summary(events) == [
        ("accepted", 2),
        ("trade", 1, 2, 100, 5),
        ("trade", 1, 2, 100, 5),
        ("trade", 1, 2, 100, 5),
        ("trade", 1, 2, 100, 3),
    ]
    assert engine.book(X).depth(5) == ([], [(100, 2, 1)])


def test_market_fok_short_is_canceled_fok(engine: MatchingEngine) -> None:
    engine.submit(new("s", SELL, 100, 4, account="m"))
    events = engine.submit(new("b", BUY, None, 5, type=OrderType.MARKET, tif=TimeInForce.FOK, account="t"))
    assert summary(events) == [("accepted", 2), ("canceled", 2, "fok", 5)]


def test_fok_blocked_by_own_order_with_stp(engine: MatchingEngine) -> None:
    engine.submit(new("s1", SELL, 100, 5, account="m"))
    engine.submit(new("own", SELL, 100, 5, account="t"))
    engine.submit(new("s3", SELL, 100, 5, account="m"))
    events = engine.submit(new("b", BUY, 100, 8, account="t", tif=TimeInForce.FOK))
    assert summary(events) == [("accepted", 4), ("canceled", 4, "fok", 8)]
    assert engine.book(X).depth(5) == ([], [(100, 15, 3)])


def test_fok_not_blocked_when_qty_reached_before_own_order(engine: MatchingEngine) -> None:
    engine.submit(new("s1", SELL, 100, 5, account="m"))
    engine.submit(new("own", SELL, 100, 5, account="t"))
    events = engine.submit(new("b", BUY, 100, 5, account="t", tif=TimeInForce.FOK))
    assert summary(events) == [("accepted", 3), ("trade", 1, 3, 100, 5)]


def test_fok_with_stp_none_trades_with_own_order(engine: MatchingEngine) -> None:
    engine.submit(new("own", SELL, 100, 5, account="t"))
    events = engine.submit(new("b", BUY, 100, 5, account="t", tif=TimeInForce.FOK, stp=STP.NONE))
    assert summary(events) == [("accepted", 2), ("trade", 1, 2, 100, 5)]


def test_fok_blocked_by_own_order_behind_iceberg_slice(engine: MatchingEngine) -> None:
    # Matching would meet the iceberg's slice, then the own order: FOK must not partly fill.
    engine.submit(new("ice", SELL, 100, 50, account="m", display_qty=5))
    engine.submit(new("own", SELL, 100, 5, account="t"))
    events = engine.submit(new("b", BUY, 100, 20, account="t", tif=TimeInForce.FOK))
    assert summary(events) == [("accepted", 3), ("canceled", 3, "fok", 20)]


# ---------------------------------------------------------------- post-only


def test_post_only_rests_when_not_crossing(engine: MatchingEngine) -> None:
    engine.submit(new("s", SELL, 101, 5, account="m"))
    events = engine.submit(new("b", BUY, 100, 5, post_only=True))
    assert summary(events) == [("accepted", 2)]
    assert engine.book(X).best_bid() == 100


def test_post_only_that_would_take_is_rejected(engine: MatchingEngine) -> None:
    engine.submit(new("s", SELL, 101, 5, account="m"))
    events = engine.submit(new("b", BUY, 101, 5, post_only=True))
    assert summary(events) == [("rejected", "post_only")]
    assert engine.order_by_client("a", "b") is None


# ---------------------------------------------------------------- iceberg


def test_iceberg_depth_shows_only_visible_slice(engine: MatchingEngine) -> None:
    engine.submit(new("ice", SELL, 100, 50, display_qty=10))
    engine.submit(new("s", SELL, 100, 7))
    assert engine.book(X).depth(5) == ([], [(100, 17, 2)])
    order = engine.order(1)
    assert order is not None and (order.visible_qty, order.hidden_qty, order.leaves_qty) == (10, 40, 50)


def test_iceberg_refill_goes_to_back_of_level(engine: MatchingEngine) -> None:
    engine.submit(new("ice", SELL, 100, 30, account="m1", display_qty=10))  # 1
    engine.submit(new("s2", SELL, 100, 5, account="m2"))  # 2
    # Takes the slice of 1 exactly: 1 refills behind 2.
    events = engine.submit(new("b1", BUY, 100, 10, account="t"))  # 3
    assert summary(events) == [("accepted", 3), ("trade", 1, 3, 100, 10)]
    assert engine.book(X).depth(5) == ([], [(100, 15, 2)])
    events = engine.submit(new("b2", BUY, 100, 12, account="t"))  # 4: 2 first, then the refill
    assert summary(events) == [("accepted", 4), ("trade", 2, 4, 100, 5), ("trade", 1, 4, 100, 7)]
    trade = events[-1]
    assert isinstance(trade, Trade) and (trade.maker_cum_qty, trade.maker_leaves_qty) == (17, 13)
    assert engine.book(X).depth(5) == ([], [(100, 3, 1)])


def test_incoming_meets_refill_again_only_after_orders_now_ahead(engine: MatchingEngine) -> None:
    engine.submit(new("ice", SELL, 100, 30, account="m1", display_qty=10))  # 1
    engine.submit(new("s2", SELL, 100, 4, account="m2"))  # 2
    engine.submit(new("s3", SELL, 100, 4, account="m3"))  # 3
    events = engine.submit(new("b", BUY, 100, 25, account="t"))  # 4
    assert summary(events) == [
        ("accepted", 4),
        ("trade", 1, 4, 100, 10),
        ("trade", 2, 4, 100, 4),
        ("trade", 3, 4, 100, 4),
        ("trade", 1, 4, 100, 7),
    ]
    assert engine.book(X).depth(5) == ([], [(100, 3, 1)])
    order = engine.order(1)
    assert order is not None and (order.visible_qty, order.leaves_qty) == (3, 13)


def test_two_icebergs_refill_in_the_order_they_emptied(engine: MatchingEngine) -> None:
    engine.submit(new("i1", SELL, 100, 20, account="m1", display_qty=5))  # 1
    engine.submit(new("i2", SELL, 100, 20, account="m2", display_qty=5))  # 2
    events = engine.submit(new("b", BUY, 100, 18, account="t"))  # 3
    assert summary(events) == [
        ("accepted", 3),
        ("trade", 1, 3, 100, 5),
        ("trade", 2, 3, 100, 5),
        ("trade", 1, 3, 100, 5),
        ("trade", 2, 3, 100, 3),
    ]
    assert engine.book(X).depth(5) == ([], [(100, 7, 2)])


def test_last_iceberg_slice_is_the_rest(engine: MatchingEngine) -> None:
    engine.submit(new("ice", SELL, 100, 12, account="m", display_qty=5))
    engine.submit(new("b", BUY, 100, 10, account="t"))
    assert engine.book(X).depth(5) == ([], [(100, 2, 1)])


def test_iceberg_taker_matches_whole_quantity_then_rests_a_slice(engine: MatchingEngine) -> None:
    engine.submit(new("s", SELL, 100, 8, account="m"))
    events = engine.submit(new("ice", BUY, 100, 30, account="t", display_qty=10))
    assert summary(events) == [("accepted", 2), ("trade", 1, 2, 100, 8)]
    assert engine.book(X).depth(5) == ([(100, 10, 1)], [])


# ---------------------------------------------------------------- self-trade prevention


def _stp_book(engine: MatchingEngine) -> None:
    engine.submit(new("m1", SELL, 100, 5, account="m"))  # 1
    engine.submit(new("own", SELL, 100, 5, account="t"))  # 2
    engine.submit(new("m3", SELL, 100, 5, account="m"))  # 3


def test_stp_cancel_newest_cancels_incoming_remainder(engine: MatchingEngine) -> None:
    _stp_book(engine)
    events = engine.submit(new("b", BUY, 100, 12, account="t"))  # default stp
    assert summary(events) == [("accepted", 4), ("trade", 1, 4, 100, 5), ("canceled", 4, "stp", 7)]
    assert engine.book(X).depth(5) == ([], [(100, 10, 2)])
    order = engine.order(4)
    assert order is not None and order.status is OrderStatus.CANCELED and order.filled_qty == 5


def test_stp_cancel_oldest_cancels_resting_and_goes_on(engine: MatchingEngine) -> None:
    _stp_book(engine)
    events = engine.submit(new("b", BUY, 100, 12, account="t", stp=STP.CANCEL_OLDEST))
    assert summary(events) == [
        ("accepted", 4),
        ("trade", 1, 4, 100, 5),
        ("canceled", 2, "stp", 5),
        ("trade", 3, 4, 100, 5),
    ]
    assert engine.book(X).depth(5) == ([(100, 2, 1)], [])


def test_stp_cancel_both(engine: MatchingEngine) -> None:
    _stp_book(engine)
    events = engine.submit(new("b", BUY, 100, 12, account="t", stp=STP.CANCEL_BOTH))
    assert summary(events) == [
        ("accepted", 4),
        ("trade", 1, 4, 100, 5),
        ("canceled", 2, "stp", 5),
        ("canceled", 4, "stp", 7),
    ]
    assert engine.book(X).depth(5) == ([], [(100, 5, 1)])


def test_stp_none_trades_with_own_order(engine: MatchingEngine) -> None:
    _stp_book(engine)
    events = engine.submit(new("b", BUY, 100, 12, account="t", stp=STP.NONE))
    assert summary(events) == [
        ("accepted", 4),
        ("trade", 1, 4, 100, 5),
        ("trade", 2, 4, 100, 5),
        ("trade", 3, 4, 100, 2),
    ]


def test_stp_first_in_queue_cancels_newest_without_trade(engine: MatchingEngine) -> None:
    engine.submit(new("own", SELL, 100, 5, account="t"))
    events = engine.submit(new("b", BUY, 101, 5, account="t"))
    assert summary(events) == [("accepted", 2), ("canceled", 2, "stp", 5)]
    assert engine.book(X).depth(5) == ([], [(100, 5, 1)])


# ---------------------------------------------------------------- numbering, ids, status


def test_event_seq_strictly_plus_one_including_rejections(engine: MatchingEngine) -> None:
    seqs: list[int] = []
    seqs += [e.seq for e in engine.submit(new("s", SELL, 100, 5, account="m", ts=1))]
    seqs += [e.seq for e in engine.submit(new("x", BUY, 100, 0, ts=2))]  # rejected
    seqs += [e.seq for e in engine.submit(new("b", BUY, 100, 8, account="t", tif=TimeInForce.IOC, ts=3))]
    seqs += [e.seq for e in engine.cancel(cancel("nope", ts=4))]
    assert seqs == list(range(1, 7))
    assert engine.seq == 6


def test_order_ids_skip_rejections_and_trade_ids_count_up(engine: MatchingEngine) -> None:
    engine.submit(new("s1", SELL, 100, 5, account="m"))
    engine.submit(new("bad", SELL, 100, -5, account="m"))
    engine.submit(new("s2", SELL, 100, 5, account="m"))
    events = engine.submit(new("b", BUY, 100, 10, account="t"))
    assert [e.order_id for e in events if isinstance(e, OrderAccepted)] == [3]
    assert [e.trade_id for e in events if isinstance(e, Trade)] == [1, 2]


def test_events_carry_command_ts(engine: MatchingEngine) -> None:
    engine.submit(new("s", SELL, 100, 5, account="m", ts=10))
    events = engine.submit(new("b", BUY, 100, 5, account="t", ts=77))
    assert {e.ts for e in events} == {77}


def test_duplicate_client_order_id_rejected_while_open(engine: MatchingEngine) -> None:
    engine.submit(new("c1", BUY, 100, 5))
    events = engine.submit(new("c1", BUY, 99, 5))
    assert summary(events) == [("rejected", "duplicate_client_order_id")]
    assert engine.book(X).depth(5) == ([(100, 5, 1)], [])


def test_duplicate_client_order_id_rejected_after_first_finished(engine: MatchingEngine) -> None:
    engine.submit(new("c1", BUY, 100, 5))
    engine.cancel(cancel("c1"))
    events = engine.submit(new("c1", BUY, 100, 5))
    assert summary(events) == [("rejected", "duplicate_client_order_id")]
    # Another account may use the same client order id.
    assert summary(engine.submit(new("c1", BUY, 100, 5, account="other"))) == [("accepted", 2)]


def test_rejected_order_does_not_reserve_its_client_order_id(engine: MatchingEngine) -> None:
    engine.submit(new("c1", BUY, 100, 0))
    assert summary(engine.submit(new("c1", BUY, 100, 5))) == [("accepted", 1)]


def test_lookups_return_finished_orders(engine: MatchingEngine) -> None:
    engine.submit(new("s", SELL, 100, 5, account="m"))
    engine.submit(new("b", BUY, 100, 5, account="t"))
    by_id = engine.order(2)
    by_client = engine.order_by_client("t", "b")
    assert by_id is by_client and by_id is not None
    assert (by_id.status, by_id.filled_qty, by_id.leaves_qty, by_id.is_open) == (OrderStatus.FILLED, 5, 0, False)
    assert engine.order(99) is None and engine.order_by_client("t", "zz") is None
    assert engine.instruments[X].lot_size == 1


def test_status_path_of_an_order(engine: MatchingEngine) -> None:
    engine.submit(new("b", BUY, 100, 10, account="t"))
    order = engine.order(1)
    assert order is not None and order.status is OrderStatus.ACCEPTED
    engine.submit(new("s1", SELL, 100, 4, account="m"))
    assert order.status is OrderStatus.PARTIALLY_FILLED
    engine.submit(new("s2", SELL, 100, 6, account="m"))
    assert order.status is OrderStatus.FILLED


def test_invalid_transition_raises() -> None:
    with pytest.raises(InvalidTransitionError):
        transition(OrderStatus.FILLED, OrderStatus.CANCELED)


def test_symbols_have_separate_books(engine: MatchingEngine) -> None:
    engine.submit(new("s", SELL, 100, 10, account="m", symbol=Y))
    events = engine.submit(new("b", BUY, 100, 10, account="t"))
    assert summary(events) == [("accepted", 2)]
    assert engine.book(Y).depth(5) == ([], [(100, 10, 1)])
    assert engine.book(X).depth(5) == ([(100, 10, 1)], [])


def test_depth_limits_levels_and_empty_book(engine: MatchingEngine) -> None:
    assert engine.book(X).depth(5) == ([], [])
    assert engine.book(X).best_bid() is None and engine.book(X).best_ask() is None
    for i in range(5):
        engine.submit(new(f"s{i}", SELL, 100 + i, 1))
    assert engine.book(X).depth(2) == ([], [(100, 1, 1), (101, 1, 1)])
    assert engine.book(X).depth(0) == ([], [])


def test_apply_dispatches_every_command(engine: MatchingEngine) -> None:
    from tradesim.domain import AddInstrument, ExpireOrders, ModifyOrder

    inst = Instrument(symbol="Z.SIM", tick_size=Decimal("1"))
    assert engine.apply(AddInstrument(instrument=inst)) == []
    assert "Z.SIM" in engine.instruments
    assert summary(engine.apply(new("z", BUY, 5, 1, symbol="Z.SIM"))) == [("accepted", 1)]
    modify = ModifyOrder(account="a", client_order_id="z", symbol="Z.SIM", qty=2)
    assert summary(engine.apply(modify)) == [("modified", 1, 5, 2, 2)]
    assert summary(engine.apply(cancel("z", symbol="Z.SIM"))) == [("canceled", 1, "user", 2)]
    assert engine.apply(ExpireOrders(ts=5, end_of_day=True)) == []


def test_add_instrument_again_keeps_first_listing(engine: MatchingEngine) -> None:
    engine.submit(new("b", BUY, 100, 5))
    other = Instrument(symbol=X, tick_size=Decimal("1"), lot_size=7)
    assert engine.add_instrument(other) == []
    assert engine.instruments[X].lot_size == 1
    assert engine.book(X).depth(5) == ([(100, 5, 1)], [])


def test_cancel_user(engine: MatchingEngine) -> None:
    engine.submit(new("b", BUY, 100, 5))
    engine.submit(new("s", SELL, 100, 2, account="m"))
    events = engine.cancel(cancel("b", ts=9))
    assert events == [
        OrderCanceled(seq=4, ts=9, order_id=1, account="a", client_order_id="b", symbol=X,
                      reason=CancelReason.USER, canceled_qty=3)
    ]
    assert engine.book(X).depth(5) == ([], [])
