"""The OMS core without a bus: exactly-once in-order event application, the sequencer, persistence."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.services.oms_support import ACCOUNTS, COMPLIANCE, INSTRUMENTS, REFERENCE, RISK, Harness
from tradesim.domain import Event, OrderStatus, OrderType, Side, TimeInForce
from tradesim.engine import MatchingEngine
from tradesim.services.oms import MemoryOrderStore, OrderManager, SqliteOrderStore
from tradesim.services.oms.messages import (
    CancelRequest,
    GetOrderRequest,
    HoldDecision,
    ModifyRequest,
    OmsError,
    OrderReply,
    OrderRequest,
)
from tradesim.services.oms.sequencer import EventSequencer
from tradesim.services.oms.store import save

S = OrderStatus
TS = 1_700_000_000_000_000_000


def manager() -> OrderManager:
    return OrderManager(INSTRUMENTS, ACCOUNTS, RISK, COMPLIANCE, reference_prices=REFERENCE)


def req(account: str, cid: str, side: Side, qty: int, price: int | None, tif: TimeInForce = TimeInForce.GTC,
        type: OrderType = OrderType.LIMIT) -> OrderRequest:
    return OrderRequest(account=account, symbol="AAPL.SIM", side=side, qty=qty, price=price, client_order_id=cid,
                        tif=tif, type=type)


NEW = [
    req("bob", "s1", Side.SELL, 30, 10000),
    req("bob", "s2", Side.SELL, 40, 10010),
    req("alice", "b1", Side.BUY, 50, 10010),  # takes s1 and part of s2
    req("alice", "b2", Side.BUY, 20, 9990),
    req("dave", "i1", Side.BUY, 5, 9000, tif=TimeInForce.IOC),  # canceled at once
    req("alice", "m1", Side.SELL, 10, None, type=OrderType.MARKET),  # hits b2 (own: stp) or nothing
]


def phase(m: OrderManager, engine: MatchingEngine, ts: int, changes: bool) -> list[Event]:
    """Run requests through the core and the engine; returns the events (not yet given to the core)."""
    events: list[Event] = []
    if not changes:
        for i, r in enumerate(NEW):
            outcome = m.submit(r, ts + i)
            assert outcome.route is not None, outcome.record.view()
            events += engine.apply(outcome.route)
    else:
        for outcome in (m.modify(ModifyRequest(account="alice", client_order_id="b2", price=9995, qty=15), ts),
                        m.cancel(CancelRequest(account="bob", client_order_id="s2"), ts + 1)):
            assert outcome.route is not None
            events += engine.apply(outcome.route)
        events += engine.apply(m.submit(req("bob", "s3", Side.SELL, 5, 9995), ts + 3).route)  # type: ignore[arg-type]
    return events


def encoded(m: OrderManager) -> bytes:
    return msgspec.msgpack.encode(m.snapshot())


@st.composite
def shuffled_with_duplicates(draw: st.DrawFn, events: list[Event]) -> list[list[Event]]:
    """The same events as batches (replies and subject deliveries), any order, some more than once."""
    copies = events + draw(st.lists(st.sampled_from(events), max_size=len(events))) if events else []
    order = draw(st.permutations(copies))
    cuts = sorted(draw(st.lists(st.integers(0, len(order)), max_size=4)))
    batches, start = [], 0
    for cut in [*cuts, len(order)]:
        batches.append(list(order[start:cut]))
        start = cut
    return batches


def build() -> tuple[OrderManager, list[Event], list[Event], bytes, bytes]:
    """Reference run: phase-1 events applied in order, then phase-2 requests and events."""
    engine = MatchingEngine(INSTRUMENTS)
    ref = manager()
    e1 = phase(ref, engine, TS, changes=False)
    before1 = encoded(ref)
    ref.on_events(e1)
    e2 = phase(ref, engine, TS + 100, changes=True)
    ref.on_events(e2)
    return ref, e1, e2, before1, encoded(ref)


REF, E1, E2, BEFORE1, FINAL = build()


def test_reference_run_means_something() -> None:
    b1 = REF.record(("alice", "b1"))
    s2 = REF.record(("bob", "s2"))
    assert b1 is not None and (b1.status, b1.filled_qty, b1.fill_value) == (S.FILLED, 50, 30 * 10000 + 20 * 10010)
    assert s2 is not None and s2.status is S.CANCELED and s2.filled_qty == 20
    assert REF.record(("dave", "i1")).status is S.CANCELED  # type: ignore[union-attr]
    b2 = REF.record(("alice", "b2"))
    assert b2 is not None and (b2.status, b2.price, b2.qty, b2.filled_qty) == (S.PARTIALLY_FILLED, 9995, 15, 5)
    assert REF.ledger.position("alice", "AAPL.SIM").qty == 55
    assert REF.applied_seq == len(E1) + len(E2)


@given(st.data())
def test_any_interleaving_and_duplication_gives_the_same_state(data: st.DataObject) -> None:
    m = manager()
    engine = MatchingEngine(INSTRUMENTS)
    assert phase(m, engine, TS, changes=False) == E1 and encoded(m) == BEFORE1
    for batch in data.draw(shuffled_with_duplicates(E1)):
        m.on_events(batch)
    assert phase(m, engine, TS + 100, changes=True) == E2
    for batch in data.draw(shuffled_with_duplicates(E2)):
        m.on_events(batch)
    assert m.applied_seq == REF.applied_seq
    assert encoded(m) == FINAL


def test_a_gap_holds_later_events_back() -> None:
    seq = EventSequencer()
    assert seq.offer(E1[1:3]) == [] and seq.gap == (1, 2) and seq.waiting == 2
    assert seq.offer([E1[0], E1[0]]) == E1[:3] and seq.gap is None
    assert seq.offer(E1[:3]) == []  # already applied
    assert seq.skip_to(5) == [] and seq.applied == 5


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_store_round_trip(kind: str, tmp_path: Path) -> None:
    store = MemoryOrderStore() if kind == "memory" else SqliteOrderStore(tmp_path / "oms.db")
    assert store.load() is None
    records = REF.records()
    save(store, records, REF.snapshot().accounts, REF.state())
    save(store, records[:1])  # an upsert of a known record
    loaded = store.load()
    assert loaded is not None
    again = manager()
    again.restore(loaded)
    assert encoded(again) == FINAL
    store.close()


async def test_restart_with_sqlite_keeps_refused_and_held_orders(tmp_path: Path) -> None:
    path = tmp_path / "oms.db"
    async with Harness(store=SqliteOrderStore(path)) as h:
        await h.call("submit", OrderRequest(account="alice", symbol="BANK.SIM", side=Side.BUY, qty=1, price=5000,
                                            client_order_id="refused"))
        await h.call("submit", req("bob", "vol-s", Side.SELL, 100, 10000))
        await h.call("submit", req("bob", "rest", Side.SELL, 60, 10010))
        await h.call("submit", req("alice", "vol-b", Side.BUY, 100, 10000))
        held = await h.call("submit", req("alice", "held", Side.BUY, 80, 10010))
        assert isinstance(held, OrderReply) and held.order.status is S.HELD
        seq = h.oms.manager.applied_seq
        await h.oms.stop()
        assert h.oms.store is not None
        h.oms.store.close()
        h.oms = h.new_oms()
        h.oms.store = SqliteOrderStore(path)
        await h.oms.start()
        assert h.oms.manager.applied_seq == seq
        refused = await h.call("get_order", GetOrderRequest(account="alice", client_order_id="refused"))
        assert isinstance(refused, OrderReply)
        assert (refused.order.status, refused.order.reason) == (S.REJECTED, "restricted_list")
        assert h.oms.manager.ledger.position("alice", "AAPL.SIM").qty == 100  # the replica came back too
        approved = await h.call("approve", HoldDecision(hold_id="H1", user="risk"))
        assert isinstance(approved, OrderReply), approved
        assert (approved.order.status, approved.order.filled_qty) == (S.PARTIALLY_FILLED, 60)
        twice = await h.call("approve", HoldDecision(hold_id="H1", user="risk"))
        assert isinstance(twice, OmsError) and twice.error == "hold_already_decided"
