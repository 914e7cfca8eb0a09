"""snapshot() / restore() / state_hash(): whole state round-trips, and a restored engine continues identically."""

from __future__ import annotations

import random

import msgspec

from tests.engine.test_rules import BUY, SELL, X, Y, make_engine, new
from tradesim.domain import (
    STP,
    CancelOrder,
    Command,
    ExpireOrders,
    ModifyOrder,
    NewOrder,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
)
from tradesim.engine import EngineSnapshot, MatchingEngine


def _busy_engine() -> MatchingEngine:
    """Icebergs mid-refill, stops of both sides, GTD and DAY orders, fills, cancels, a last price."""
    engine = make_engine()
    engine.submit(new("ice", SELL, 101, 50, account="m", display_qty=10, ts=1))  # 1
    engine.submit(new("s2", SELL, 101, 5, account="m2", ts=2))  # 2
    engine.submit(new("b1", BUY, 101, 14, account="t", ts=3))  # 3: ice refilled behind s2
    engine.submit(new("g", BUY, 99, 5, account="g", tif=TimeInForce.GTD, expire_ts=100, ts=4))  # 4
    engine.submit(new("d", BUY, 98, 5, account="g", tif=TimeInForce.DAY, ts=5))  # 5
    engine.submit(new("bst", BUY, None, 3, type=OrderType.STOP, stop_price=103, account="k", ts=6))  # 6
    engine.submit(new("sst", SELL, 97, 3, type=OrderType.STOP_LIMIT, stop_price=98, account="k", ts=7))  # 7
    engine.submit(new("gone", BUY, 90, 3, account="k", ts=8))  # 8
    engine.cancel(CancelOrder(account="k", client_order_id="gone", symbol=X, ts=9))
    engine.submit(new("y", SELL, 50, 20, account="m", symbol=Y, ts=10))
    return engine


def test_snapshot_is_msgpack_encodable_and_round_trips() -> None:
    engine = _busy_engine()
    snap = engine.snapshot()
    raw = msgspec.msgpack.encode(snap)
    decoded = msgspec.msgpack.decode(raw, type=EngineSnapshot)
    assert decoded == snap
    restored = MatchingEngine.restore(decoded)
    assert restored.state_hash() == engine.state_hash()
    assert restored.snapshot() == snap


def test_snapshot_contents() -> None:
    engine = _busy_engine()
    snap = engine.snapshot()
    assert (snap.seq, snap.order_id, snap.trade_id) == (engine.seq, 9, 2)
    assert [i.symbol for i in snap.instruments] == [X, Y]
    book = next(b for b in snap.books if b.symbol == X)
    assert book.last_price == 101
    assert [(lv.price, lv.order_ids) for lv in book.asks] == [(101, [2, 1])]  # refill behind s2
    assert [(lv.price, lv.order_ids) for lv in book.bids] == [(99, [4]), (98, [5])]
    assert (book.buy_stops, book.sell_stops) == ([6], [7])
    ice = next(o for o in snap.orders if o.order_id == 1)
    assert (ice.visible_qty, ice.leaves_qty, ice.display_qty, ice.filled_qty) == (10, 40, 10, 10)
    gone = next(o for o in snap.orders if o.order_id == 8)
    assert gone.status is OrderStatus.CANCELED  # finished orders are kept for lookups and ids
    assert len(snap.orders) == 9


def test_restored_engine_keeps_lookups_and_client_ids() -> None:
    restored = MatchingEngine.restore(_busy_engine().snapshot())
    order = restored.order_by_client("k", "gone")
    assert order is not None and order.status is OrderStatus.CANCELED
    events = restored.submit(new("gone", BUY, 90, 1, account="k", ts=20))
    assert events[0].reason.value == "duplicate_client_order_id"  # type: ignore[union-attr]
    assert restored.book(X).depth(5) == _busy_engine().book(X).depth(5)


def test_restore_then_continue_gives_identical_events() -> None:
    original = _busy_engine()
    restored = MatchingEngine.restore(msgspec.msgpack.decode(msgspec.msgpack.encode(original.snapshot()),
                                                             type=EngineSnapshot))
    follow: list[Command] = [
        new("x1", BUY, 101, 30, account="t2", ts=30),  # meets s2's rest and the iceberg refill
        new("x2", BUY, None, 1, type=OrderType.MARKET, account="t3", ts=31),
        new("x3", SELL, 96, 30, account="t4", ts=32),  # sweeps bids, triggers the sell stop
        ModifyOrder(account="m", client_order_id="ice", symbol=X, qty=45, ts=33),
        new("x4", BUY, 104, 2, account="t5", ts=34),
        ExpireOrders(ts=200, end_of_day=True),
    ]
    for command in follow:
        assert original.apply(command) == restored.apply(command)
    assert original.state_hash() == restored.state_hash()


def test_state_hash_changes_with_state_and_is_stable() -> None:
    a = _busy_engine()
    b = _busy_engine()
    assert a.state_hash() == b.state_hash()
    assert len(a.state_hash()) == 64 and a.state_hash() == a.state_hash()
    b.submit(new("more", BUY, 90, 1, account="z", ts=50))
    assert a.state_hash() != b.state_hash()


def test_state_hash_sees_queue_order() -> None:
    a = make_engine()
    b = make_engine()
    a.submit(new("p", BUY, 100, 5, account="a1"))
    a.submit(new("q", BUY, 100, 5, account="a1"))
    b.submit(new("p", BUY, 100, 5, account="a1"))
    b.submit(new("q", BUY, 100, 5, account="a1"))
    b.modify(ModifyOrder(account="a1", client_order_id="p", symbol=X, qty=6))
    b.modify(ModifyOrder(account="a1", client_order_id="p", symbol=X, qty=5))  # same qty, now behind q
    assert a.book(X).depth(5) == b.book(X).depth(5)
    assert a.state_hash() != b.state_hash()


def _random_commands(seed: int, n: int) -> list[Command]:
    rnd = random.Random(seed)
    out: list[Command] = []
    cids: list[tuple[str, str]] = []
    for i in range(n):
        account = f"a{rnd.randrange(4)}"
        roll = rnd.random()
        if roll < 0.6 or not cids:
            cid = f"c{i}"
            kind = rnd.choice([OrderType.LIMIT] * 6 + [OrderType.MARKET, OrderType.STOP, OrderType.STOP_LIMIT])
            tif = rnd.choice([TimeInForce.GTC, TimeInForce.GTC, TimeInForce.DAY, TimeInForce.IOC,
                              TimeInForce.FOK, TimeInForce.GTD])
            limited = kind in (OrderType.LIMIT, OrderType.STOP_LIMIT)
            qty = rnd.randint(1, 12)
            display = rnd.randint(1, qty) if limited and tif not in (TimeInForce.IOC, TimeInForce.FOK) and (
                rnd.random() < 0.3) else None
            out.append(NewOrder(
                account=account, client_order_id=cid, symbol=X, side=rnd.choice([Side.BUY, Side.SELL]),
                type=kind, tif=tif, price=rnd.randint(97, 103) if limited else None, qty=qty, ts=i,
                stop_price=rnd.randint(97, 103) if kind in (OrderType.STOP, OrderType.STOP_LIMIT) else None,
                display_qty=display, stp=rnd.choice(list(STP)),
                expire_ts=i + rnd.randint(1, 30) if tif is TimeInForce.GTD else None,
            ))
            cids.append((account, cid))
        elif roll < 0.8:
            acc, cid = rnd.choice(cids)
            out.append(CancelOrder(account=acc, client_order_id=cid, symbol=X, ts=i))
        elif roll < 0.97:
            acc, cid = rnd.choice(cids)
            out.append(ModifyOrder(account=acc, client_order_id=cid, symbol=X, ts=i,
                                   price=rnd.choice([None, rnd.randint(97, 103)]), qty=rnd.randint(1, 15)))
        else:
            out.append(ExpireOrders(ts=i, end_of_day=rnd.random() < 0.5))
    return out


def test_restore_at_every_point_of_a_random_run() -> None:
    for seed in range(3):
        commands = _random_commands(seed, 300)
        reference = make_engine()
        expected = [reference.apply(c) for c in commands]
        for cut in range(0, len(commands), 37):
            engine = make_engine()
            for command in commands[:cut]:
                engine.apply(command)
            raw = msgspec.msgpack.encode(engine.snapshot())
            restored = MatchingEngine.restore(msgspec.msgpack.decode(raw, type=EngineSnapshot))
            assert restored.state_hash() == engine.state_hash()
            assert [restored.apply(c) for c in commands[cut:]] == expected[cut:]
            assert restored.state_hash() == reference.state_hash()


def test_seq_continues_after_restore() -> None:
    engine = _busy_engine()
    restored = MatchingEngine.restore(engine.snapshot())
    a = engine.submit(new("n", SELL, 150, 1, account="z", ts=60))
    b = restored.submit(new("n", SELL, 150, 1, account="z", ts=60))
    assert a == b and a[0].seq == engine.seq and a[0].order_id == 10  # type: ignore[union-attr]
    assert BUY is Side.BUY and SELL is Side.SELL
