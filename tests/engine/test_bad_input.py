"""Bad input: every refusal is an OrderRejected with its specific reason, and changes nothing else.

"Nothing else" is checked on the snapshot with the event counter set aside (a rejection is an event,
so `seq` moves on by exactly one): books in queue order, orders, stops, counters and last prices.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest

from tests.engine.test_rules import BUY, SELL, X, Y, make_engine, new
from tradesim.domain import (
    CancelOrder,
    Instrument,
    ModifyOrder,
    NewOrder,
    OffTickError,
    OrderRejected,
    OrderType,
    RejectReason,
    TimeInForce,
)
from tradesim.engine import EngineSnapshot, MatchingEngine

STOP = OrderType.STOP
STOP_LIMIT = OrderType.STOP_LIMIT


def _engine_with_orders() -> MatchingEngine:
    engine = make_engine()
    engine.submit(new("s1", SELL, 101, 10, account="m", ts=1))
    engine.submit(new("ice", SELL, 102, 30, account="m", display_qty=10, ts=2))
    engine.submit(new("b1", BUY, 99, 10, account="a", ts=3))
    engine.submit(new("x", BUY, 101, 4, account="t", ts=4))  # a trade: last price 101
    engine.submit(new("stop", SELL, None, 5, type=STOP, stop_price=95, account="a", ts=5))
    engine.submit(new("done", BUY, 90, 5, account="a", ts=6))
    engine.cancel(CancelOrder(account="a", client_order_id="done", symbol=X, ts=7))
    engine.submit(new("y1", BUY, 40, 20, account="a", symbol=Y, ts=8))
    return engine


def _without_seq(snapshot: EngineSnapshot) -> EngineSnapshot:
    return msgspec.structs.replace(snapshot, seq=0)


def _assert_rejected_alone(
    engine: MatchingEngine, events: list[object], reason: RejectReason, before: EngineSnapshot, seq_before: int
) -> None:
    assert len(events) == 1
    event = events[0]
    assert isinstance(event, OrderRejected)
    assert event.reason is reason
    assert event.message  # says why
    assert event.seq == seq_before + 1 == engine.seq
    assert _without_seq(engine.snapshot()) == _without_seq(before)


NEW_ORDER_CASES: list[tuple[str, NewOrder, RejectReason]] = [
    ("unknown symbol", new("n1", BUY, 100, 5, symbol="NOPE.SIM", ts=10), RejectReason.UNKNOWN_SYMBOL),
    ("zero qty", new("n1", BUY, 100, 0, ts=10), RejectReason.BAD_QTY),
    ("negative qty", new("n1", BUY, 100, -10, ts=10), RejectReason.BAD_QTY),
    ("qty not a lot multiple", new("n1", BUY, 40, 15, symbol=Y, ts=10), RejectReason.BAD_QTY),
    ("limit without price", new("n1", BUY, None, 5, ts=10), RejectReason.BAD_PRICE),
    ("limit price zero", new("n1", BUY, 0, 5, ts=10), RejectReason.BAD_PRICE),
    ("stop-limit negative price", new("n1", BUY, -1, 5, type=STOP_LIMIT, stop_price=99, ts=10),
     RejectReason.BAD_PRICE),
    ("stop without stop price", new("n1", BUY, None, 5, type=STOP, ts=10), RejectReason.MISSING_STOP_PRICE),
    ("stop-limit without stop price", new("n1", BUY, 100, 5, type=STOP_LIMIT, ts=10),
     RejectReason.MISSING_STOP_PRICE),
    ("stop price zero", new("n1", SELL, None, 5, type=STOP, stop_price=0, ts=10), RejectReason.MISSING_STOP_PRICE),
    ("display above qty", new("n1", BUY, 100, 5, display_qty=6, ts=10), RejectReason.BAD_QTY),
    ("display zero", new("n1", BUY, 100, 5, display_qty=0, ts=10), RejectReason.BAD_QTY),
    ("display off lot", new("n1", BUY, 40, 20, symbol=Y, display_qty=5, ts=10), RejectReason.BAD_QTY),
    ("display on IOC", new("n1", BUY, 100, 5, tif=TimeInForce.IOC, display_qty=2, ts=10), RejectReason.BAD_QTY),
    ("display on market", new("n1", BUY, None, 5, type=OrderType.MARKET, display_qty=2, ts=10),
     RejectReason.BAD_QTY),
    ("post-only market", new("n1", BUY, None, 5, type=OrderType.MARKET, post_only=True, ts=10),
     RejectReason.MALFORMED),
    ("post-only FOK", new("n1", BUY, 90, 5, tif=TimeInForce.FOK, post_only=True, ts=10), RejectReason.MALFORMED),
    ("GTD without expire_ts", new("n1", BUY, 90, 5, tif=TimeInForce.GTD, ts=10), RejectReason.MALFORMED),
    ("GTD in the past", new("n1", BUY, 90, 5, tif=TimeInForce.GTD, expire_ts=9, ts=10), RejectReason.EXPIRED),
    ("GTD expiring now", new("n1", BUY, 90, 5, tif=TimeInForce.GTD, expire_ts=10, ts=10), RejectReason.EXPIRED),
    ("duplicate client id, open", new("b1", BUY, 90, 5, account="a", ts=10),
     RejectReason.DUPLICATE_CLIENT_ORDER_ID),
    ("duplicate client id, finished", new("done", BUY, 90, 5, account="a", ts=10),
     RejectReason.DUPLICATE_CLIENT_ORDER_ID),
    ("post-only that would cross", new("n1", BUY, 101, 5, post_only=True, ts=10), RejectReason.POST_ONLY),
    ("first failing rule wins", new("b1", BUY, 0, 0, symbol=X, ts=10), RejectReason.BAD_QTY),
]


@pytest.mark.parametrize(("case", "command", "reason"), NEW_ORDER_CASES, ids=[c[0] for c in NEW_ORDER_CASES])
def test_bad_new_order_rejected_and_nothing_changes(case: str, command: NewOrder, reason: RejectReason) -> None:
    engine = _engine_with_orders()
    before = engine.snapshot()
    depth_before = engine.book(X).depth(10)
    events = engine.submit(command)
    _assert_rejected_alone(engine, list(events), reason, before, before.seq)
    assert engine.book(X).depth(10) == depth_before
    rejected = events[0]
    assert isinstance(rejected, OrderRejected)
    assert (rejected.account, rejected.client_order_id, rejected.symbol, rejected.ts, rejected.order_id) == (
        command.account, command.client_order_id, command.symbol, 10, None)


CANCEL_MODIFY_CASES: list[tuple[str, CancelOrder | ModifyOrder, RejectReason]] = [
    ("cancel unknown", CancelOrder(account="a", client_order_id="zz", symbol=X, ts=10), RejectReason.UNKNOWN_ORDER),
    ("cancel finished", CancelOrder(account="a", client_order_id="done", symbol=X, ts=10),
     RejectReason.UNKNOWN_ORDER),
    ("cancel filled", CancelOrder(account="t", client_order_id="x", symbol=X, ts=10), RejectReason.UNKNOWN_ORDER),
    ("cancel other account", CancelOrder(account="m", client_order_id="b1", symbol=X, ts=10),
     RejectReason.UNKNOWN_ORDER),
    ("cancel wrong symbol", CancelOrder(account="a", client_order_id="b1", symbol=Y, ts=10),
     RejectReason.UNKNOWN_ORDER),
    ("cancel unlisted symbol", CancelOrder(account="a", client_order_id="b1", symbol="NOPE.SIM", ts=10),
     RejectReason.UNKNOWN_ORDER),
    ("modify unknown", ModifyOrder(account="a", client_order_id="zz", symbol=X, qty=5, ts=10),
     RejectReason.UNKNOWN_ORDER),
    ("modify finished", ModifyOrder(account="a", client_order_id="done", symbol=X, qty=5, ts=10),
     RejectReason.UNKNOWN_ORDER),
    ("modify nothing", ModifyOrder(account="a", client_order_id="b1", symbol=X, ts=10), RejectReason.MALFORMED),
    ("modify qty zero", ModifyOrder(account="a", client_order_id="b1", symbol=X, qty=0, ts=10),
     RejectReason.BAD_QTY),
    ("modify qty not above filled", ModifyOrder(account="m", client_order_id="s1", symbol=X, qty=4, ts=10),
     RejectReason.BAD_QTY),
    ("modify qty off lot", ModifyOrder(account="a", client_order_id="y1", symbol=Y, qty=25, ts=10),
     RejectReason.BAD_QTY),
    ("modify price zero", ModifyOrder(account="a", client_order_id="b1", symbol=X, price=0, ts=10),
     RejectReason.BAD_PRICE),
    ("modify stop-market price", ModifyOrder(account="a", client_order_id="stop", symbol=X, price=96, ts=10),
     RejectReason.MALFORMED),
]


@pytest.mark.parametrize(("case", "command", "reason"), CANCEL_MODIFY_CASES,
                         ids=[c[0] for c in CANCEL_MODIFY_CASES])
def test_bad_cancel_or_modify_rejected_and_nothing_changes(
    case: str, command: CancelOrder | ModifyOrder, reason: RejectReason
) -> None:
    engine = _engine_with_orders()
    before = engine.snapshot()
    events = engine.apply(command)
    _assert_rejected_alone(engine, list(events), reason, before, before.seq)


def test_post_only_modify_to_crossing_rejected_and_nothing_changes() -> None:
    engine = _engine_with_orders()
    engine.submit(new("po", BUY, 95, 5, account="p", post_only=True, ts=9))
    before = engine.snapshot()
    events = engine.modify(ModifyOrder(account="p", client_order_id="po", symbol=X, price=101, ts=10))
    _assert_rejected_alone(engine, list(events), RejectReason.POST_ONLY, before, before.seq)
    assert isinstance(events[0], OrderRejected) and events[0].order_id == 8


def test_off_tick_is_refused_by_the_instrument() -> None:
    inst = Instrument(symbol="T.SIM", tick_size=Decimal("0.05"))
    assert inst.to_ticks(Decimal("100.05")) == 2001
    with pytest.raises(OffTickError):
        inst.to_ticks(Decimal("100.03"))
    with pytest.raises(OffTickError):
        inst.to_ticks("abc")


def test_edge_rejection_is_numbered_and_changes_nothing_else() -> None:
    engine = _engine_with_orders()
    before = engine.snapshot()
    event = engine.reject(account="a", client_order_id="q", symbol=X, reason=RejectReason.OFF_TICK,
                          message="price 1.005 is not a multiple of tick 0.01", ts=11)
    assert (event.seq, event.ts, event.reason) == (before.seq + 1, 11, RejectReason.OFF_TICK)
    assert _without_seq(engine.snapshot()) == _without_seq(before)
    assert engine.seq == before.seq + 1


def test_unknown_symbol_book_lookup_raises_key_error() -> None:
    with pytest.raises(KeyError):
        make_engine().book("NOPE.SIM")
