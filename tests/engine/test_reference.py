"""Sanity tests for the reference order book itself, one small hand-checked scenario per spec rule.

The property tests trust the reference as an oracle, so the reference gets its own checks here,
written straight from docs/matching.md.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tests.engine.reference import ReferenceEngine
from tradesim.domain import (
    STP,
    CancelOrder,
    CancelReason,
    Event,
    ExpireOrders,
    Instrument,
    ModifyOrder,
    NewOrder,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderModified,
    OrderRejected,
    OrderTriggered,
    OrderType,
    RejectReason,
    Side,
    TimeInForce,
    Trade,
)

SYM = "AAPL.SIM"
LOT = "LOT.SIM"


def engine() -> ReferenceEngine:
    return ReferenceEngine([Instrument(symbol=SYM, tick_size=Decimal("0.01")),
                            Instrument(symbol=LOT, tick_size=Decimal("0.01"), lot_size=10)])


def new(acct: str, cid: str, side: str, price: int | None, qty: int, **kw: Any) -> NewOrder:
    kw.setdefault("type", OrderType.LIMIT if price is not None else OrderType.MARKET)
    kw.setdefault("symbol", SYM)
    return NewOrder(account=acct, client_order_id=cid, side=Side(side), price=price, qty=qty, **kw)


def kinds(events: list[Event]) -> list[str]:
    return [type(e).__name__ for e in events]


def trades(events: list[Event]) -> list[tuple[int, int, int, int]]:
    """(maker id, taker id, price, qty) of each trade."""
    return [(e.maker_order_id, e.taker_order_id, e.price, e.qty) for e in events if isinstance(e, Trade)]


def cancels(events: list[Event]) -> list[tuple[int, CancelReason, int]]:
    return [(e.order_id, e.reason, e.canceled_qty) for e in events if isinstance(e, OrderCanceled)]


def test_spec_example_and_numbering() -> None:
    e = engine()
    ev1 = e.submit(new("alice", "a1", "sell", 15025, 100, ts=1))
    ev2 = e.submit(new("bob", "b1", "buy", 15030, 60, tif=TimeInForce.IOC, ts=2))
    assert kinds(ev2) == ["OrderAccepted", "Trade"]
    t = ev2[1]
    assert isinstance(t, Trade)
    assert (t.trade_id, t.price, t.qty, t.maker_order_id, t.taker_order_id) == (1, 15025, 60, 1, 2)
    assert (t.maker_cum_qty, t.maker_leaves_qty, t.taker_cum_qty, t.taker_leaves_qty) == (60, 40, 60, 0)
    assert t.aggressor is Side.BUY and t.ts == 2
    assert [x.seq for x in ev1 + ev2] == [1, 2, 3]
    assert e.depth(SYM) == ([], [(15025, 40, 1)])
    assert e.last_price(SYM) == 15025


@pytest.mark.parametrize(
    ("cmd", "reason"),
    [
        (new("a", "x", "buy", 100, 5, symbol="NOPE.SIM"), RejectReason.UNKNOWN_SYMBOL),
        (new("a", "x", "buy", 100, 0), RejectReason.BAD_QTY),
        (new("a", "x", "buy", 100, 15, symbol=LOT), RejectReason.BAD_QTY),
        (new("a", "x", "buy", 0, 5), RejectReason.BAD_PRICE),
        (new("a", "x", "buy", None, 5, type=OrderType.STOP_LIMIT, stop_price=5), RejectReason.BAD_PRICE),
        (new("a", "x", "buy", None, 5, type=OrderType.STOP), RejectReason.MISSING_STOP_PRICE),
        (new("a", "x", "buy", 100, 5, display_qty=6), RejectReason.BAD_QTY),
        (new("a", "x", "buy", 100, 5, display_qty=2, tif=TimeInForce.IOC), RejectReason.BAD_QTY),
        (new("a", "x", "buy", None, 5, display_qty=2), RejectReason.BAD_QTY),
        (new("a", "x", "buy", 100, 20, display_qty=5, symbol=LOT), RejectReason.BAD_QTY),
        (new("a", "x", "buy", None, 5, post_only=True), RejectReason.MALFORMED),
        (new("a", "x", "buy", 100, 5, post_only=True, tif=TimeInForce.FOK), RejectReason.MALFORMED),
        (new("a", "x", "buy", 100, 5, tif=TimeInForce.GTD), RejectReason.MALFORMED),
        (new("a", "x", "buy", 100, 5, tif=TimeInForce.GTD, expire_ts=10, ts=10), RejectReason.EXPIRED),
        (new("a", "dup", "buy", 100, 5), RejectReason.DUPLICATE_CLIENT_ORDER_ID),
        (new("a", "x", "buy", 101, 5, post_only=True), RejectReason.POST_ONLY),
    ],
)
def test_validation_reasons(cmd: NewOrder, reason: RejectReason) -> None:
    e = engine()
    e.submit(new("a", "dup", "sell", 101, 5))  # order 1: makes "dup" used and a best ask of 101
    before = e.depth(SYM)
    out = e.submit(cmd)
    assert len(out) == 1 and isinstance(out[0], OrderRejected)
    assert out[0].reason is reason and out[0].order_id is None
    assert e.depth(SYM) == before and len(e.orders) == 1
    # A rejected order reserves neither an order id nor its client order id.
    ok = e.submit(new("a", "x", "buy", 90, 5))
    assert isinstance(ok[0], OrderAccepted) and ok[0].order_id == 2


def test_first_failing_rule_wins() -> None:
    out = engine().submit(new("a", "x", "buy", 0, 0, symbol="NOPE.SIM"))
    assert isinstance(out[0], OrderRejected) and out[0].reason is RejectReason.UNKNOWN_SYMBOL
    out = engine().submit(new("a", "x", "buy", 0, 0))
    assert isinstance(out[0], OrderRejected) and out[0].reason is RejectReason.BAD_QTY


def test_price_time_priority_and_maker_price() -> None:
    e = engine()
    e.submit(new("a", "1", "sell", 102, 10))
    e.submit(new("b", "2", "sell", 101, 10))
    e.submit(new("c", "3", "sell", 101, 10))
    out = e.submit(new("d", "4", "buy", 103, 25))
    assert trades(out) == [(2, 4, 101, 10), (3, 4, 101, 10), (1, 4, 102, 5)]
    assert e.depth(SYM) == ([], [(102, 5, 1)])


def test_limit_rests_ioc_and_market_remainders() -> None:
    e = engine()
    e.submit(new("a", "1", "sell", 101, 10))
    out = e.submit(new("b", "2", "buy", 101, 15, tif=TimeInForce.IOC))
    assert cancels(out) == [(2, CancelReason.IOC, 5)]
    e.submit(new("a", "3", "sell", 101, 10))
    out = e.submit(new("b", "4", "buy", None, 15, tif=TimeInForce.GTC))
    assert kinds(out) == ["OrderAccepted", "Trade", "OrderCanceled"]
    assert cancels(out) == [(4, CancelReason.NO_LIQUIDITY, 5)]
    out = e.submit(new("b", "5", "sell", None, 7))
    assert cancels(out) == [(5, CancelReason.NO_LIQUIDITY, 7)]
    out = e.submit(new("b", "6", "buy", 100, 7, tif=TimeInForce.DAY))
    assert kinds(out) == ["OrderAccepted"] and e.depth(SYM) == ([(100, 7, 1)], [])


def test_fok_all_or_nothing_counts_hidden_iceberg() -> None:
    e = engine()
    e.submit(new("a", "1", "sell", 101, 10, display_qty=2))
    e.submit(new("a", "2", "sell", 102, 5))
    out = e.submit(new("b", "3", "buy", 101, 11, tif=TimeInForce.FOK))
    assert kinds(out) == ["OrderAccepted", "OrderCanceled"] and cancels(out) == [(3, CancelReason.FOK, 11)]
    out = e.submit(new("b", "4", "buy", 102, 15, tif=TimeInForce.FOK))
    assert sum(q for *_, q in trades(out)) == 15 and not cancels(out)


def test_fok_blocked_by_own_order_unless_stp_none() -> None:
    e = engine()
    e.submit(new("a", "1", "sell", 101, 5))
    e.submit(new("b", "2", "sell", 101, 5))
    out = e.submit(new("b", "3", "buy", 101, 10, tif=TimeInForce.FOK, stp=STP.CANCEL_OLDEST))
    assert cancels(out) == [(3, CancelReason.FOK, 10)] and not trades(out)
    # Own order after qty is reached does not matter.
    out = e.submit(new("b", "4", "buy", 101, 5, tif=TimeInForce.FOK))
    assert trades(out) == [(1, 4, 101, 5)]
    out = e.submit(new("b", "5", "buy", 101, 5, tif=TimeInForce.FOK, stp=STP.NONE))
    assert trades(out) == [(2, 5, 101, 5)]


def test_iceberg_refill_goes_to_back_and_is_met_again() -> None:
    e = engine()
    e.submit(new("a", "1", "sell", 101, 10, display_qty=4))
    e.submit(new("b", "2", "sell", 101, 3))
    assert e.depth(SYM) == ([], [(101, 7, 2)])
    out = e.submit(new("c", "3", "buy", 101, 9))
    # slice of 4, then order 2, then the refilled slice of 4 (now behind order 2).
    assert trades(out) == [(1, 3, 101, 4), (2, 3, 101, 3), (1, 3, 101, 2)]
    assert e.depth(SYM) == ([], [(101, 2, 1)])
    t = [x for x in out if isinstance(x, Trade)][-1]
    assert (t.maker_cum_qty, t.maker_leaves_qty) == (6, 4)


def test_modify_priority_rules() -> None:
    e = engine()
    e.submit(new("a", "1", "buy", 100, 10))
    e.submit(new("b", "2", "buy", 100, 10))
    out = e.modify(ModifyOrder(account="a", client_order_id="1", symbol=SYM, qty=8))
    assert isinstance(out[0], OrderModified) and (out[0].qty, out[0].leaves_qty) == (8, 8)
    assert e.queue(SYM, Side.BUY, 100) == [1, 2]  # lowered leaves keeps priority
    e.modify(ModifyOrder(account="a", client_order_id="1", symbol=SYM, qty=9))
    assert e.queue(SYM, Side.BUY, 100) == [2, 1]  # raised leaves loses it
    e.modify(ModifyOrder(account="b", client_order_id="2", symbol=SYM, price=99))
    e.modify(ModifyOrder(account="b", client_order_id="2", symbol=SYM, price=100))
    assert e.queue(SYM, Side.BUY, 100) == [1, 2]  # price change: back of the new level


def test_modify_qty_is_total_and_rejections_change_nothing() -> None:
    e = engine()
    e.submit(new("a", "1", "buy", 100, 10, post_only=True))
    e.submit(new("b", "2", "sell", 100, 4, symbol=SYM))  # fills 4 of order 1
    assert e.depth(SYM) == ([(100, 6, 1)], [])

    def mod(**kw: Any) -> RejectReason | None:
        out = e.modify(ModifyOrder(account="a", client_order_id="1", symbol=SYM, **kw))
        return out[0].reason if isinstance(out[0], OrderRejected) else None

    assert mod(qty=4) is RejectReason.BAD_QTY
    assert mod(price=0) is RejectReason.BAD_PRICE
    assert mod() is RejectReason.MALFORMED
    e.submit(new("c", "3", "sell", 102, 1))
    assert mod(price=102) is RejectReason.POST_ONLY
    for cid, sym in (("9", SYM), ("1", LOT)):
        out = e.modify(ModifyOrder(account="a", client_order_id=cid, symbol=sym, qty=5))
        assert isinstance(out[0], OrderRejected) and out[0].reason is RejectReason.UNKNOWN_ORDER
    assert e.depth(SYM) == ([(100, 6, 1)], [(102, 1, 1)])
    out = e.modify(ModifyOrder(account="a", client_order_id="1", symbol=SYM, qty=7))
    assert isinstance(out[0], OrderModified) and (out[0].qty, out[0].leaves_qty) == (7, 3)


def test_crossing_modify_trades_at_resting_prices_then_rests() -> None:
    e = engine()
    e.submit(new("a", "1", "sell", 101, 3))
    e.submit(new("a", "2", "sell", 102, 3))
    e.submit(new("b", "3", "buy", 100, 10))
    out = e.modify(ModifyOrder(account="b", client_order_id="3", symbol=SYM, price=102))
    assert kinds(out) == ["OrderModified", "Trade", "Trade"]
    assert trades(out) == [(1, 3, 101, 3), (2, 3, 102, 3)]
    assert e.depth(SYM) == ([(102, 4, 1)], [])


def test_iceberg_modify_keeps_display() -> None:
    e = engine()
    e.submit(new("a", "1", "buy", 100, 20, display_qty=5))
    e.modify(ModifyOrder(account="a", client_order_id="1", symbol=SYM, qty=3))
    assert e.depth(SYM) == ([(100, 3, 1)], [])
    e.modify(ModifyOrder(account="a", client_order_id="1", symbol=SYM, qty=30))
    assert e.depth(SYM) == ([(100, 5, 1)], [])


@pytest.mark.parametrize(
    ("stp", "expected_cancels", "expected_trades"),
    [
        (STP.CANCEL_NEWEST, [(3, CancelReason.STP, 7)], [(1, 3, 101, 3)]),
        (STP.CANCEL_OLDEST, [(2, CancelReason.STP, 4)], [(1, 3, 101, 3), (4, 3, 102, 5)]),
        (STP.CANCEL_BOTH, [(2, CancelReason.STP, 4), (3, CancelReason.STP, 7)], [(1, 3, 101, 3)]),
        (STP.NONE, [], [(1, 3, 101, 3), (2, 3, 101, 4), (4, 3, 102, 3)]),
    ],
)
def test_self_trade_prevention(stp: STP, expected_cancels: list[Any], expected_trades: list[Any]) -> None:
    e = engine()
    e.submit(new("x", "1", "sell", 101, 3))
    e.submit(new("me", "2", "sell", 101, 4))
    e.submit(new("x", "4", "sell", 102, 5))  # order id 3 goes to the taker below
    out = e.submit(new("me", "3", "buy", 102, 10, stp=stp))
    # order 3 = "x"/"4", order 4 = taker; renumber expectations accordingly
    remap = {3: 4, 4: 3}
    assert cancels(out) == [(remap.get(i, i), r, q) for i, r, q in expected_cancels]
    assert trades(out) == [(remap.get(m, m), remap.get(t, t), p, q) for m, t, p, q in expected_trades]


def test_stops_cascade_in_trigger_order() -> None:
    e = engine()
    e.submit(new("m", "1", "sell", 101, 1))
    e.submit(new("m", "2", "sell", 102, 1))
    e.submit(new("m", "3", "sell", 103, 1))
    e.submit(new("m", "3b", "sell", 104, 5))
    e.submit(new("s", "s102", "buy", None, 1, type=OrderType.STOP, stop_price=102))  # id 5
    e.submit(new("s", "s101", "buy", None, 1, type=OrderType.STOP, stop_price=101))  # id 6
    e.submit(new("s", "s103", "buy", 104, 1, type=OrderType.STOP_LIMIT, stop_price=103))  # id 7
    assert e.depth(SYM)[0] == []  # untriggered stops are invisible
    out = e.submit(new("t", "t", "buy", 101, 1))  # id 8: trades 101 -> stop 101 triggers
    assert kinds(out) == ["OrderAccepted", "Trade", "OrderTriggered", "Trade", "OrderTriggered", "Trade",
                          "OrderTriggered", "Trade"]
    assert [x.order_id for x in out if isinstance(x, OrderTriggered)] == [6, 5, 7]
    assert trades(out) == [(1, 8, 101, 1), (2, 6, 102, 1), (3, 5, 103, 1), (4, 7, 104, 1)]


def test_stop_triggers_on_acceptance_and_sell_side() -> None:
    e = engine()
    e.submit(new("m", "1", "buy", 100, 5))
    e.submit(new("t", "2", "sell", 100, 1))
    out = e.submit(new("s", "3", "sell", None, 2, type=OrderType.STOP, stop_price=100))
    assert kinds(out) == ["OrderAccepted", "OrderTriggered", "Trade"]
    # Two sell stops: higher stop price first.
    e.submit(new("s", "4", "sell", 99, 1, type=OrderType.STOP_LIMIT, stop_price=98))
    e.submit(new("s", "5", "sell", 99, 1, type=OrderType.STOP_LIMIT, stop_price=99))
    e.submit(new("m", "6", "buy", 97, 5))
    out = e.submit(new("t", "7", "sell", 97, 3))  # sweeps 100 (2 left) then 97: both stops trigger
    assert [x.order_id for x in out if isinstance(x, OrderTriggered)] == [5, 4]
    assert e.depth(SYM)[1] == [(99, 2, 2)]  # neither STOP_LIMIT could trade, both rest


def test_stop_cancel_and_modify_untriggered() -> None:
    e = engine()
    e.submit(new("s", "1", "buy", 105, 5, type=OrderType.STOP_LIMIT, stop_price=103))
    out = e.modify(ModifyOrder(account="s", client_order_id="1", symbol=SYM, price=104, qty=6))
    assert isinstance(out[0], OrderModified) and (out[0].price, out[0].qty) == (104, 6)
    out = e.cancel(CancelOrder(account="s", client_order_id="1", symbol=SYM))
    assert cancels(out) == [(1, CancelReason.USER, 6)]
    rej = e.cancel(CancelOrder(account="s", client_order_id="1", symbol=SYM))[0]
    assert isinstance(rej, OrderRejected) and rej.reason is RejectReason.UNKNOWN_ORDER


def test_gtd_and_day_expiry() -> None:
    e = engine()
    e.submit(new("a", "1", "buy", 100, 5, tif=TimeInForce.GTD, expire_ts=50, ts=1))
    e.submit(new("a", "2", "buy", 99, 5, tif=TimeInForce.GTD, expire_ts=40, ts=2))
    e.submit(new("a", "3", "buy", 98, 5, tif=TimeInForce.DAY, ts=3))
    e.submit(new("a", "4", "buy", None, 5, type=OrderType.STOP, stop_price=120, tif=TimeInForce.GTD,
                 expire_ts=40, ts=4))
    out = e.submit(new("b", "5", "sell", 100, 1, ts=60))
    assert kinds(out)[:3] == ["OrderExpired", "OrderExpired", "OrderExpired"]
    assert [x.order_id for x in out if isinstance(x, OrderExpired)] == [2, 4, 1]
    assert all(x.ts == 60 for x in out)
    assert not trades(out)  # order 1 expired before the sell was applied
    out = e.apply(ExpireOrders(ts=70, end_of_day=True))
    assert [x.order_id for x in out if isinstance(x, OrderExpired)] == [3]
    assert e.expire(80) == []


def test_cancel_reasons_and_unknown() -> None:
    e = engine()
    e.submit(new("a", "1", "buy", 100, 5))
    out = e.cancel(CancelOrder(account="b", client_order_id="1", symbol=SYM))
    assert isinstance(out[0], OrderRejected) and out[0].reason is RejectReason.UNKNOWN_ORDER
    out = e.cancel(CancelOrder(account="a", client_order_id="1", symbol=SYM))
    assert cancels(out) == [(1, CancelReason.USER, 5)]
    out = e.submit(new("a", "1", "buy", 100, 5))
    assert isinstance(out[0], OrderRejected) and out[0].reason is RejectReason.DUPLICATE_CLIENT_ORDER_ID


def test_fok_judges_own_orders_in_real_meeting_order() -> None:
    """An iceberg's refill goes behind the taker's own order, so the FOK would meet it: no fill."""
    e = engine()
    e.submit(new("b", "1", "buy", 97, 2, display_qty=1))
    e.submit(new("a", "2", "buy", 97, 1))
    out = e.submit(new("a", "3", "sell", 97, 2, tif=TimeInForce.FOK))
    assert kinds(out) == ["OrderAccepted", "OrderCanceled"] and cancels(out) == [(3, CancelReason.FOK, 2)]
