"""The OMS core and the position trackers over two venue shards: each shard numbers its events from 1
and its ids from its block; the OMS sequences per shard (any interleaving, duplicates), checkpoints every
shard's seq (an old checkpoint is the first shard's), and the trackers book both shards' trades."""

from __future__ import annotations

import asyncio
import re
from decimal import Decimal

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.services.oms_support import ACCOUNTS, RISK
from tradesim.domain import Event, Instrument, OrderAccepted, OrderStatus, Side, Trade
from tradesim.engine import MatchingEngine
from tradesim.services.accounts.replica import LedgerReplica
from tradesim.services.accounts.service import SeqWaiters
from tradesim.services.compliance import parse_compliance_config
from tradesim.services.oms import OmsState, OrderManager, ShardSequencer
from tradesim.services.oms.messages import GetOrderRequest, OrderRequest
from tradesim.services.venue.shards import ID_BLOCK, ShardMap, ShardMapError

S = OrderStatus
TS = 1_700_000_000_000_000_000
A, M = "AAPL.SIM", "MSFT.SIM"
INSTRUMENTS = [Instrument(symbol=A, tick_size=Decimal("0.01")), Instrument(symbol=M, tick_size=Decimal("0.01"))]
SHARDS = ShardMap([("a", [A]), ("m", [M])], [A, M])
COMPLIANCE = parse_compliance_config('default_packs = ["open"]\n[packs.open]\nrestricted = []\n')
REFERENCE = {A: 10000, M: 10000}


def manager() -> OrderManager:
    return OrderManager(INSTRUMENTS, ACCOUNTS, RISK, COMPLIANCE, reference_prices=REFERENCE,
                        shards=(SHARDS.names, SHARDS.shard_of))


def engines() -> dict[str, MatchingEngine]:
    return {s.name: MatchingEngine(INSTRUMENTS, id_base=s.id_base) for s in SHARDS.shards}


def req(account: str, cid: str, symbol: str, side: Side, qty: int, price: int) -> OrderRequest:
    return OrderRequest(account=account, symbol=symbol, side=side, qty=qty, price=price, client_order_id=cid)


ORDERS = [
    req("bob", "sa", A, Side.SELL, 30, 10000), req("bob", "sm", M, Side.SELL, 30, 10000),
    req("alice", "ba", A, Side.BUY, 20, 10000), req("alice", "bm", M, Side.BUY, 30, 10000),
    req("alice", "wa", A, Side.BUY, 5, 9900), req("alice", "wm", M, Side.BUY, 5, 9900),
]


def run(m: OrderManager, venues: dict[str, MatchingEngine]) -> list[Event]:
    """The requests through the core and each symbol's shard engine; the events, not yet applied."""
    events: list[Event] = []
    for i, r in enumerate(ORDERS):
        outcome = m.submit(r, TS + i)
        assert outcome.route is not None, outcome.record.view()
        events += venues[SHARDS.shard_of(r.symbol)].apply(outcome.route)
    return events


def _reference() -> tuple[OrderManager, list[Event], bytes]:
    m = manager()
    events = run(m, engines())
    m.on_events(events)
    return m, events, msgspec.msgpack.encode(m.snapshot())


REF, EVENTS, FINAL = _reference()


def test_both_shards_number_from_one_but_ids_are_unique() -> None:
    seqs = {(SHARDS.shard_of(e.symbol), e.seq) for e in EVENTS}
    assert len(seqs) == len(EVENTS) and ("a", 1) in seqs and ("m", 1) in seqs  # the same seqs on both
    order_ids = [e.order_id for e in EVENTS if isinstance(e, OrderAccepted)]
    assert len(order_ids) == len(set(order_ids)) == len(ORDERS)
    assert all(i > ID_BLOCK for e in EVENTS if isinstance(e, OrderAccepted) and e.symbol == M for i in [e.order_id])
    assert REF.sequencer.applied_seqs == {"a": 4, "m": 4} and REF.applied_seq == len(EVENTS)
    for cid, status, filled in [("sa", S.PARTIALLY_FILLED, 20), ("sm", S.FILLED, 30), ("ba", S.FILLED, 20),
                                ("bm", S.FILLED, 30), ("wa", S.ACCEPTED, 0), ("wm", S.ACCEPTED, 0)]:
        account = "bob" if cid.startswith("s") else "alice"
        record = REF.record((account, cid))
        assert record is not None and (record.status, record.filled_qty) == (status, filled), cid
        assert record.order_id is not None
        assert REF.get(GetOrderRequest(order_id=record.order_id)).client_order_id == cid  # ids name one order
    assert REF.ledger.position("alice", A).qty == 20 and REF.ledger.position("alice", M).qty == 30


@st.composite
def interleaved(draw: st.DrawFn) -> list[list[Event]]:
    copies = EVENTS + draw(st.lists(st.sampled_from(EVENTS), max_size=len(EVENTS)))
    order = draw(st.permutations(copies))
    cuts = sorted(draw(st.lists(st.integers(0, len(order)), max_size=4)))
    batches, start = [], 0
    for cut in [*cuts, len(order)]:
        batches.append(list(order[start:cut]))
        start = cut
    return batches


@given(interleaved())
def test_any_interleaving_of_the_shards_gives_the_same_state(batches: list[list[Event]]) -> None:
    m = manager()
    run(m, engines())
    for batch in batches:
        m.on_events(batch)
    assert m.sequencer.applied_seqs == REF.sequencer.applied_seqs
    assert msgspec.msgpack.encode(m.snapshot()) == FINAL


def test_a_gap_in_one_shard_does_not_hold_the_other_back() -> None:
    seq = ShardSequencer(SHARDS.names, SHARDS.shard_of)
    a = [e for e in EVENTS if e.symbol == A]
    m = [e for e in EVENTS if e.symbol == M]
    assert seq.offer(a[1:]) == [] and seq.gap == {"a": (1, 2)}
    assert seq.offer(m) == m and seq.applied("m") == len(m) and seq.applied("a") == 0
    assert seq.offer([a[0]]) == a and seq.gap == {} and seq.waiting == 0
    assert seq.offer(EVENTS) == []  # all applied already


def test_the_stream_resume_position_stops_before_a_waiting_event() -> None:
    """Stream positions 1.. carry a2, m1, a1, m2: a2 waits for a1 (read at 3), so until then only
    position 1's predecessor is safe; m1 at 2 is applied but a2 before it is not."""
    seq = ShardSequencer(SHARDS.names, SHARDS.shard_of)
    a = [e for e in EVENTS if e.symbol == A]
    m = [e for e in EVENTS if e.symbol == M]
    assert seq.offer_at(a[1], 1) == [] and seq.stream_safe(1) == 0
    assert seq.offer_at(m[0], 2) == [m[0]] and seq.stream_safe(2) == 0
    assert seq.offer_at(a[0], 3) == a[:2] and seq.stream_safe(3) == 3
    assert seq.offer_at(m[0], 4) == [] and seq.stream_safe(4) == 4  # a duplicate holds nothing back
    assert seq.offer([m[2]]) == [] and seq.stream_safe(5) == 5  # an early reply event is not in the stream


def test_bad_shard_input_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one shard"):
        ShardSequencer([], SHARDS.shard_of)
    with pytest.raises(ValueError, match="unknown venue shards"):
        ShardSequencer(SHARDS.names, SHARDS.shard_of, {"zz": 3})
    with pytest.raises(ValueError, match="shard 'main' is not one of"):
        ShardSequencer(SHARDS.names, lambda symbol: "main").offer(EVENTS[:1])


@pytest.mark.parametrize(("shards", "message"), [
    ([("a", [A, A]), ("m", [M])], f"shard 'a' lists {A} twice"),
    ([("a", A), ("m", [M])], "symbols must be a list of symbols"),
    ([("a", [A]), ("m", [M, A])], f"{A} is on two shards: 'a' and 'm'"),
    ([("a", [A])], f"{M} on no shard"),
    ([("a", [A]), ("a", [M])], "shard 'a' is listed twice"),
    ([("A-1", [A, M])], "invalid shard name"),
    ([("a", []), ("m", [A, M])], "shard 'a' holds no symbol"),
])
def test_a_bad_shard_map_names_what_is_wrong(shards: list[tuple[str, list[str] | str]], message: str) -> None:
    with pytest.raises(ShardMapError, match=re.escape(message)):
        ShardMap(shards, [A, M])


def test_checkpoint_holds_every_shard_and_an_old_one_is_the_first_shards() -> None:
    state = REF.state()
    assert (state.seq, state.seqs) == (4, {"a": 4, "m": 4})
    restored = manager()
    restored.restore(msgspec.msgpack.decode(msgspec.msgpack.encode(REF.snapshot()), type=type(REF.snapshot())))
    assert restored.sequencer.applied_seqs == {"a": 4, "m": 4}
    assert msgspec.msgpack.encode(restored.snapshot()) == FINAL
    old = msgspec.structs.replace(REF.snapshot(), state=OmsState(**{
        f: getattr(state, f) for f in state.__struct_fields__ if f != "seqs"}))
    legacy = manager()
    legacy.restore(old)
    assert legacy.sequencer.applied_seqs == {"a": 4, "m": 0}
    other = OrderManager(INSTRUMENTS, ACCOUNTS, RISK, COMPLIANCE, reference_prices=REFERENCE)  # one venue
    with pytest.raises(ValueError, match=r"venue shards \['a', 'm'\]"):
        other.restore(REF.snapshot())


def test_one_venue_checkpoint_is_as_before() -> None:
    one = OrderManager(INSTRUMENTS, ACCOUNTS, RISK, COMPLIANCE, reference_prices=REFERENCE)
    assert one.shard_names == ["main"] and one.state().seq == 0


def test_trackers_book_both_shards_trades_with_equal_seqs() -> None:
    trades = [e for e in EVENTS if isinstance(e, Trade)]
    assert {t.seq for t in trades if t.symbol == A} & {t.seq for t in trades if t.symbol == M}  # same seqs
    forward, backward = (LedgerReplica(INSTRUMENTS, ACCOUNTS) for _ in range(2))
    for t in trades:
        forward.apply_trade(t)
        forward.mark(t.symbol, t.seq, t.price, t.ts)
    for t in [*reversed(trades), *trades]:  # out of order and twice
        backward.apply_trade(t)
        backward.mark(t.symbol, t.seq, t.price, t.ts)
    assert forward.applied == backward.applied == backward.duplicates == len(trades)
    assert forward.state_hash() == backward.state_hash()
    assert forward.ledger.account("alice").positions
    assert forward.ledger.position("alice", M).qty == 30
    by_shard = forward.shard_seqs(SHARDS.shard_of)
    assert by_shard == {"a": max(t.seq for t in trades if t.symbol == A),
                        "m": max(t.seq for t in trades if t.symbol == M)}
    assert forward.symbol_seq(M) == by_shard["m"] and forward.symbol_seq("NONE") == 0


async def test_a_wait_naming_a_symbol_compares_with_its_shard() -> None:
    replica = LedgerReplica(INSTRUMENTS, ACCOUNTS)
    waiters = SeqWaiters()
    replica.mark(A, 9, 10000)  # shard a is far ahead of shard m
    with pytest.raises(TimeoutError):
        await waiters.wait(replica.symbol_seq(M), 3, 0.05, M)
    await waiters.wait(replica.last_seq, 3, 0.05)  # one venue: the highest seq says it
    task = asyncio.create_task(waiters.wait(replica.symbol_seq(M), 3, 5.0, M))
    await asyncio.sleep(0)
    waiters.notify(replica.last_seq, replica.symbol_seq)
    assert not task.done()
    replica.mark(M, 3, 10000)
    waiters.notify(replica.last_seq, replica.symbol_seq)
    await asyncio.wait_for(task, 5.0)
