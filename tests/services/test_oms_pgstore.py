"""The OMS store shared by a cluster (PostgreSQL): round trip, parents in the orders' transaction, and the
fence — a former leader's late write is refused, not written over the new leader's rows."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.pg import pg_url  # noqa: F401  (fixture)
from tradesim.domain import OrderStatus, OrderType, Side, TimeInForce
from tradesim.services.oms.manager import AccountCounts, OmsState
from tradesim.services.oms.messages import AlgoParams
from tradesim.services.oms.parents import ParentRecord
from tradesim.services.oms.pgstore import PostgresOrderStore, open_oms_stores
from tradesim.services.oms.records import OrderRecord
from tradesim.services.oms.store import Batch, StaleLeaderError, encode_batch


def record(cid: str, n: int, status: OrderStatus = OrderStatus.ACCEPTED, qty: int = 10) -> OrderRecord:
    return OrderRecord(n=n, account="alice", client_order_id=cid, symbol="AAPL.SIM", side=Side.BUY,
                       type=OrderType.LIMIT, tif=TimeInForce.GTC, price=10000, stop_price=None, qty=qty,
                       leaves_qty=qty, status=status)


def parent(n: int) -> ParentRecord:
    return ParentRecord(n=n, parent_id=f"algo-{n}", client_id=f"c{n}", account="alice", symbol="AAPL.SIM",
                        side=Side.BUY, qty=100, algo="twap", params=AlgoParams(duration_ms=1000))


async def test_round_trip_with_parents_and_checkpoint(pg_url: str) -> None:  # noqa: F811
    store, parents = await open_oms_stores(pg_url, holder="a")
    try:
        assert await store.load() is None
        await store.fence(5)
        batch = encode_batch([record("c1", 1), record("c2", 2)], [AccountCounts(account="alice", orders=2)],
                             OmsState(seq=7, next_n=3, stream_seq=11), [parent(1)])
        await store.write(batch, 5)
        await store.write(encode_batch([record("c1", 1, OrderStatus.FILLED)]), 5)
        snap = await store.load()
        assert snap is not None
        assert [(r.client_order_id, r.status) for r in snap.orders] == [("c1", OrderStatus.FILLED),
                                                                        ("c2", OrderStatus.ACCEPTED)]
        assert (snap.state.seq, snap.state.next_n, snap.state.stream_seq) == (7, 3, 11)
        assert snap.accounts[0].orders == 2
        assert [p.parent_id for p in await parents.load()] == ["algo-1"]
        assert await store.recorded_token() == 5
    finally:
        await store.close()


async def test_a_former_leaders_late_write_is_refused(pg_url: str) -> None:  # noqa: F811
    old = await PostgresOrderStore.open(pg_url, holder="old")
    new = await PostgresOrderStore.open(pg_url, holder="new")
    try:
        await old.fence(3)
        await old.write(encode_batch([record("c1", 1)]), 3)
        await new.fence(9)  # the new leader takes over the store
        await new.write(encode_batch([record("c1", 1, OrderStatus.CANCELED)]), 9)
        with pytest.raises(StaleLeaderError, match="recorded token is 9"):
            await old.write(encode_batch([record("c1", 1, OrderStatus.FILLED), record("c9", 9)]), 3)
        snap = await new.load()
        assert snap is not None
        assert [(r.client_order_id, r.status) for r in snap.orders] == [("c1", OrderStatus.CANCELED)]
        with pytest.raises(StaleLeaderError, match="older than the recorded 9"):
            await old.fence(4)  # an old token cannot fence again either
        with pytest.raises(StaleLeaderError, match="call fence"):
            await new.write(encode_batch([record("c2", 2)]), 8)  # not the token it fenced with
    finally:
        await old.close()
        await new.close()


async def test_a_wiped_nats_store_restarts_tokens_without_locking_the_store_forever(pg_url: str) -> None:  # noqa: F811
    """Tokens are KV revisions: a fresh NATS store starts them at 1 again. The election bucket's incarnation
    recorded with the token lets the new incarnation's leader fence the store, and fences out the old one
    even when its token happens to be equal."""
    old = await PostgresOrderStore.open(pg_url, holder="old")
    new = await PostgresOrderStore.open(pg_url, holder="new")
    try:
        await old.fence(5, "inc-a")
        await old.write(encode_batch([record("c1", 1)]), 5)
        with pytest.raises(StaleLeaderError, match="older than the recorded 5"):
            await new.fence(2, "inc-a")  # same incarnation: an older token is refused
        await new.fence(5, "inc-b")  # NATS was wiped: tokens restarted, the new incarnation takes over
        with pytest.raises(StaleLeaderError, match="refused"):
            await old.write(encode_batch([record("c1", 1, OrderStatus.FILLED)]), 5)  # equal token, old incarnation
        await new.write(encode_batch([record("c2", 2)]), 5)
        snap = await new.load()
        assert snap is not None
        assert sorted((r.client_order_id, r.status) for r in snap.orders) == [
            ("c1", OrderStatus.ACCEPTED), ("c2", OrderStatus.ACCEPTED)]
    finally:
        await old.close()
        await new.close()


async def test_a_write_in_progress_finishes_before_the_fence_or_is_refused(pg_url: str) -> None:  # noqa: F811
    """The new leader's fence waits for the old leader's open transaction (row lock): what committed first
    is in the new leader's load, nothing commits after it."""
    old = await PostgresOrderStore.open(pg_url, holder="old")
    new = await PostgresOrderStore.open(pg_url, holder="new")
    try:
        await old.fence(3)
        big = encode_batch([record(f"c{i}", i) for i in range(1, 2001)])
        write = asyncio.create_task(old.write(big, 3))
        fence = asyncio.create_task(new.fence(4))
        results = await asyncio.gather(write, fence, return_exceptions=True)
        assert results[1] is None
        snap = await new.load()
        stored = len(snap.orders) if snap is not None else 0
        if results[0] is None:
            assert stored == 2000  # committed before the fence: the new leader sees all of it
        else:
            assert isinstance(results[0], StaleLeaderError) and stored == 0
        with pytest.raises(StaleLeaderError):
            await old.write(encode_batch([record("late", 5000)]), 3)
    finally:
        await old.close()
        await new.close()


async def test_bad_tokens_and_empty_batches(pg_url: str) -> None:  # noqa: F811
    store = await PostgresOrderStore.open(pg_url)
    try:
        with pytest.raises(ValueError, match="positive int"):
            await store.fence(0)
        with pytest.raises(StaleLeaderError, match="call fence"):
            await store.write(Batch(), 1)
        await store.fence(1)
        await store.write(Batch(), 1)  # nothing to write: no error
        assert await store.load() is None
    finally:
        await store.close()
