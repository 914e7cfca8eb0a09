"""`MatchingEngine(id_base=)`: a venue shard's engine numbers order and trade ids from its block, keeps
doing so through a snapshot, and id_base 0 is the engine as it always was."""

from __future__ import annotations

import pytest

from tests.engine.test_rules import BUY, SELL, X, make_engine, new
from tradesim.domain import OrderAccepted, Trade
from tradesim.engine import MatchingEngine
from tradesim.services.venue.shards import ID_BLOCK, ShardMap

BASE = 3 * ID_BLOCK


def _with_base(base: int) -> MatchingEngine:
    return MatchingEngine(make_engine().instruments.values(), id_base=base)


def _trade(engine: MatchingEngine) -> tuple[list[int], list[int]]:
    events = [*engine.submit(new("s", SELL, 100, 5, account="m")), *engine.submit(new("b", BUY, 100, 5, account="t"))]
    return ([e.order_id for e in events if isinstance(e, OrderAccepted)],
            [e.trade_id for e in events if isinstance(e, Trade)])


def test_ids_start_after_the_base_and_seq_does_not() -> None:
    engine = _with_base(BASE)
    order_ids, trade_ids = _trade(engine)
    assert order_ids == [BASE + 1, BASE + 2]
    assert trade_ids == [BASE + 1]
    assert engine.seq == 3  # events are numbered per engine from 1: the shard's own sequence


def test_base_zero_is_the_plain_engine() -> None:
    plain, based = make_engine(), _with_base(0)
    assert _trade(plain) == _trade(based) == ([1, 2], [1])
    assert plain.state_hash() == based.state_hash()


def test_snapshot_carries_the_base() -> None:
    engine = _with_base(BASE)
    fresh = MatchingEngine.restore(engine.snapshot())  # nothing handed out yet: the counters are the base
    assert _trade(fresh) == ([BASE + 1, BASE + 2], [BASE + 1])
    restored = MatchingEngine.restore(fresh.snapshot())
    events = restored.submit(new("x", SELL, 101, 1))
    assert [e.order_id for e in events if isinstance(e, OrderAccepted)] == [BASE + 3]
    assert restored.state_hash() == MatchingEngine.restore(restored.snapshot()).state_hash()


def test_lookup_by_client_order_id_sees_based_ids() -> None:
    engine = _with_base(BASE)
    engine.submit(new("k", BUY, 90, 1))
    order = engine.order_by_client("a", "k")
    assert order is not None and order.order_id == BASE + 1
    assert engine.book(X).best_bid() == 90


@pytest.mark.parametrize("bad", [-1, True, 1.5, "1"])
def test_bad_base_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="id_base"):
        MatchingEngine(id_base=bad)  # type: ignore[arg-type]


def test_shard_map_gives_each_shard_its_block() -> None:
    symbols = ["A", "B", "C"]
    assert [s.id_base for s in ShardMap.single(symbols).shards] == [0]
    split = ShardMap.split(symbols, 3)
    assert [s.id_base for s in split.shards] == [0, ID_BLOCK, 2 * ID_BLOCK]
    assert split.shard_of("B") == "s2"
    assert split.shard_of("NOPE") == "s1"  # refused by the first shard, in its sequence
    assert split.names == ["s1", "s2", "s3"]
