"""Algo parents end to end on the embedded `System` (memory bus, SQLite under tmp_path): TWAP, VWAP, POV and
Iceberg through real workers, pause/resume/cancel, a worker killed mid-parent, the over-fill guard, and
bad input. Liquidity comes from orders resting on the venue from another account (mm1)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import msgspec
import pytest

from tests.support.config import quiet_config
from tradesim.domain import OrderStatus, OrderType, Side, TimeInForce
from tradesim.services.algos import AlgoWorker, Settings, pov_target, u_profile, vwap_schedule
from tradesim.services.oms.messages import (
    AlgoControl,
    AlgoGetRequest,
    AlgoListRequest,
    AlgoParams,
    AlgoReply,
    AlgoRequest,
    AlgosReply,
    AlgoState,
    AlgoView,
    OmsError,
    OrderReply,
    OrderRequest,
)
from tradesim.services.system import System
from tradesim.services.venue.messages import BookReply, BookRequest

SYMBOL = "AAPL.SIM"
PRICE = 19_000  # 190.00
FAST = Settings(ack_wait=0.5, lease=0.4, poll=0.02, request_timeout=2.0)


@pytest.fixture
async def system(tmp_path: Path) -> AsyncIterator[System]:
    config = quiet_config(tmp_path)
    s = System(config, algo_workers=0)
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
async def workers(system: System) -> AsyncIterator[list[AlgoWorker]]:
    made: list[AlgoWorker] = []
    yield made
    for w in made:
        await w.stop()


async def worker(system: System, made: list[AlgoWorker], name: str, settings: Settings = FAST) -> AlgoWorker:
    w = AlgoWorker(system.bus, name, settings=settings)
    await w.start()
    made.append(w)
    return w


async def call(system: System, method: str, req: msgspec.Struct) -> msgspec.Struct:
    return await system.bus.request(f"rpc.oms.{method}", req, timeout=5)


async def rest(system: System, side: Side, qty: int, price: int = PRICE, cid: str | None = None,
               account: str = "mm1") -> OrderReply:
    reply = await call(system, "submit", OrderRequest(account=account, symbol=SYMBOL, side=side, qty=qty, price=price,
                                                      client_order_id=cid or uuid.uuid4().hex[:12]))
    assert isinstance(reply, OrderReply), reply
    return reply


async def algo(system: System, algo: str, qty: int, side: Side = Side.BUY, account: str = "alice",
               **params: object) -> AlgoView:
    reply = await call(system, "algo_order", AlgoRequest(account=account, symbol=SYMBOL, side=side, qty=qty, algo=algo,
                                                         params=AlgoParams(**params)))  # type: ignore[arg-type]
    assert isinstance(reply, AlgoReply), reply
    return reply.algo


async def get(system: System, parent_id: str, children: bool = False) -> AlgoReply:
    reply = await call(system, "algo_get", AlgoGetRequest(parent_id=parent_id, children=children))
    assert isinstance(reply, AlgoReply), reply
    return reply


async def until(system: System, parent_id: str, done: Callable[[AlgoView], bool], timeout: float = 10.0) -> AlgoView:
    deadline = time.monotonic() + timeout
    while True:
        view = (await get(system, parent_id)).algo
        if done(view):
            return view
        assert time.monotonic() < deadline, f"timed out: {view}"
        await asyncio.sleep(0.02)


def finished(view: AlgoView) -> bool:
    return view.state not in (AlgoState.RUNNING, AlgoState.PAUSED)


def assert_exact(reply: AlgoReply) -> None:
    """Filled exactly qty, children distinct and named {parent}-{n}, their fills summing to the parent's."""
    view, kids = reply.algo, reply.children
    assert view.state is AlgoState.COMPLETED, view
    assert view.filled_qty == view.qty
    ids = [c.client_order_id for c in kids]
    assert len(ids) == len(set(ids)) == view.child_count
    assert all(c.parent_id == view.parent_id and c.client_order_id.startswith(view.parent_id + "-") for c in kids)
    assert sum(c.filled_qty for c in kids) == view.qty


async def test_twap_executes_the_full_quantity_within_the_window(system: System, workers: list[AlgoWorker]) -> None:
    await rest(system, Side.SELL, 1_000)
    await worker(system, workers, "w1")
    t0 = time.time_ns()
    view = await algo(system, "twap", 100, duration_ms=1_000, slices=5)
    assert view.state is AlgoState.RUNNING and view.end_ts - view.start_ts == 1_000_000_000
    done = await until(system, view.parent_id, finished)
    reply = await get(system, view.parent_id, children=True)
    assert_exact(reply)
    assert [c.qty for c in reply.children] == [20] * 5
    fills = [c.updated_ts for c in reply.children]
    assert max(fills) <= done.end_ts + 100_000_000  # within the window (the last slice at 0.8 s)
    assert done.finished_ts - t0 < 2_000_000_000
    assert done.tracking_error is not None and done.tracking_error < 0.2
    assert done.slippage_bps == 0.0  # every fill at the one resting price: the market VWAP


async def test_vwap_follows_the_u_profile_and_completes(system: System, workers: list[AlgoWorker]) -> None:
    await rest(system, Side.SELL, 1_000)
    await worker(system, workers, "w1")
    view = await algo(system, "vwap", 100, duration_ms=1_000, slices=5)
    await until(system, view.parent_id, finished)
    reply = await get(system, view.parent_id, children=True)
    assert_exact(reply)
    expected = [s.qty for s in vwap_schedule(100, u_profile(5), 0, 10**9)]
    assert [c.qty for c in reply.children] == expected
    assert expected[0] > expected[2] < expected[-1]  # U: heavier at both ends
    assert reply.algo.slippage_bps == 0.0


async def test_pov_keeps_its_share_of_market_volume(system: System, workers: list[AlgoWorker]) -> None:
    await rest(system, Side.SELL, 5_000)
    await worker(system, workers, "w1")
    # A long window: the check is the share the worker reaches, not a race against the clock.
    view = await algo(system, "pov", 2_000, participation=0.25, duration_ms=60_000)
    for _ in range(16):  # bob trades 40 at a time against mm1: the market the POV follows
        await rest(system, Side.BUY, 40, account="bob")
        await asyncio.sleep(0.05)

    def caught_up(v: AlgoView) -> bool:
        return v.market_volume - v.filled_qty == 16 * 40 and v.open_qty == 0 and \
            abs(v.filled_qty / v.market_volume - 0.25) <= 0.02

    live = await until(system, view.parent_id, caught_up, timeout=30)
    assert live.state is AlgoState.RUNNING
    assert live.filled_qty <= pov_target(0.25, live.market_volume, live.filled_qty)  # never overshoots
    canceled = await call(system, "algo_cancel", AlgoControl(parent_id=view.parent_id))
    assert isinstance(canceled, AlgoReply)
    done = await until(system, view.parent_id, finished)
    assert done.state is AlgoState.CANCELED and done.filled_qty == live.filled_qty
    assert done.slippage_bps is not None


async def test_iceberg_shows_at_most_display_qty(system: System, workers: list[AlgoWorker]) -> None:
    await worker(system, workers, "w1")
    view = await algo(system, "iceberg", 100, display_qty=20, limit_price=PRICE)
    sold = 0
    while sold < 100:
        await until(system, view.parent_id, lambda v: v.open_qty > 0 or finished(v))
        book = await system.bus.request("rpc.venue.book", BookRequest(symbol=SYMBOL, depth=5), timeout=5)
        assert isinstance(book, BookReply)
        [(price, visible, count)] = book.bids  # one visible child, at most the display qty
        assert (price, count) == (PRICE, 1) and 0 < visible <= 20, book.bids
        await rest(system, Side.SELL, 15)
        sold += 15
        current = (await get(system, view.parent_id)).algo
        assert current.open_qty <= 20
    done = await until(system, view.parent_id, finished)
    reply = await get(system, view.parent_id, children=True)
    assert_exact(reply)
    assert all(c.qty <= 20 and c.type is OrderType.LIMIT and c.tif is TimeInForce.GTC for c in reply.children)
    assert done.filled_qty == 100


async def test_pause_resume_and_cancel(system: System, workers: list[AlgoWorker]) -> None:
    await rest(system, Side.SELL, 1_000)
    await worker(system, workers, "w1")
    view = await algo(system, "twap", 100, duration_ms=1_000, slices=10)
    await until(system, view.parent_id, lambda v: v.filled_qty >= 10)
    paused = await call(system, "algo_pause", AlgoControl(parent_id=view.parent_id))
    assert isinstance(paused, AlgoReply) and paused.algo.state is AlgoState.PAUSED
    await asyncio.sleep(0.1)  # a child in flight at the pause may still land
    held = (await get(system, view.parent_id)).algo
    await asyncio.sleep(0.4)
    still = (await get(system, view.parent_id)).algo
    assert still.state is AlgoState.PAUSED and still.filled_qty == held.filled_qty < 100
    assert still.child_count == held.child_count
    resumed = await call(system, "algo_resume", AlgoControl(parent_id=view.parent_id))
    assert isinstance(resumed, AlgoReply) and resumed.algo.state is AlgoState.RUNNING
    await until(system, view.parent_id, finished)
    assert_exact(await get(system, view.parent_id, children=True))  # caught up after the pause

    # cancel: the parent ends CANCELED and its open (resting) child is canceled with it
    ice = await algo(system, "iceberg", 50, display_qty=10, limit_price=PRICE - 100)
    await until(system, ice.parent_id, lambda v: v.open_qty == 10)
    canceled = await call(system, "algo_cancel", AlgoControl(parent_id=ice.parent_id, account="alice"))
    assert isinstance(canceled, AlgoReply) and canceled.algo.state is AlgoState.CANCELED
    assert canceled.algo.open_qty == 0 and canceled.algo.reason == "user"
    kids = (await get(system, ice.parent_id, children=True)).children
    assert [c.status for c in kids] == [OrderStatus.CANCELED]
    again = await call(system, "algo_cancel", AlgoControl(parent_id=ice.parent_id))
    assert isinstance(again, AlgoReply) and again.algo.state is AlgoState.CANCELED  # idempotent
    closed = await call(system, "algo_pause", AlgoControl(parent_id=ice.parent_id))
    assert isinstance(closed, OmsError) and closed.error == "algo_closed"
    await asyncio.sleep(0.1)
    assert ice.parent_id in workers[0].completed  # the worker saw it end and acked it
    assert (await get(system, ice.parent_id)).algo.child_count == 1


async def test_a_killed_worker_s_parents_complete_exactly_on_the_other(system: System,
                                                                    workers: list[AlgoWorker]) -> None:
    await rest(system, Side.SELL, 2_000)
    w1 = await worker(system, workers, "w1")
    w2 = await worker(system, workers, "w2")
    parents = [(await algo(system, "twap", 60, duration_ms=1_200, slices=6)).parent_id for _ in range(4)]
    victim = await until(system, parents[0], lambda v: 0 < v.filled_qty < v.qty and v.owner != "")
    dead, alive = (w1, w2) if victim.owner == "w1" else (w2, w1)
    await dead.kill()  # its drive tasks are cancelled: no ack, the lease just runs out
    for pid in parents:
        await until(system, pid, finished, timeout=15)
        assert_exact(await get(system, pid, children=True))
    for _ in range(200):  # a worker sees a parent finished at its next claim, up to a poll after the OMS did
        if parents[0] in alive.completed:
            break
        await asyncio.sleep(0.025)
    assert parents[0] in alive.completed and parents[0] not in dead.completed
    listed = await call(system, "algo_list", AlgoListRequest(account="alice", state=AlgoState.COMPLETED))
    assert isinstance(listed, AlgosReply) and listed.total == 4


async def test_the_oms_refuses_a_child_that_would_over_fill_its_parent(system: System) -> None:
    view = await algo(system, "iceberg", 50, display_qty=10, limit_price=PRICE - 100)  # no worker: children by hand
    pid = view.parent_id

    def child(n: int, qty: int, side: Side = Side.BUY, parent: str = pid) -> OrderRequest:
        return OrderRequest(account="alice", symbol=SYMBOL, side=side, qty=qty, price=PRICE - 100,
                            client_order_id=f"{pid}-{n}", parent_id=parent)

    async def error(req: OrderRequest) -> str:
        reply = await call(system, "submit", req)
        assert isinstance(reply, OmsError), reply
        return reply.error

    assert await error(child(1, 60)) == "parent_overfill"
    first = await call(system, "submit", child(1, 30))
    assert isinstance(first, OrderReply) and first.order.status is OrderStatus.ACCEPTED
    assert first.order.parent_id == pid
    assert await error(child(2, 30)) == "parent_overfill"  # 30 open + 30 > 50
    assert await call(system, "submit", child(1, 30)) == first  # a retry of a known child is idempotent
    assert await error(child(2, 5, side=Side.SELL)) == "parent_mismatch"
    assert await error(child(2, 5, parent="algo-999")) == "unknown_parent"
    second = await call(system, "submit", child(2, 20))
    assert isinstance(second, OrderReply)
    now = (await get(system, pid)).algo
    assert (now.open_qty, now.child_count, now.next_child) == (50, 2, 3)
    await call(system, "algo_pause", AlgoControl(parent_id=pid))
    assert await error(child(3, 1)) == "parent_not_running"


@pytest.mark.parametrize(("algo_name", "qty", "params", "code"), [
    ("sniper", 10, {}, "unknown_algo"),
    ("twap", 0, {"duration_ms": 1000}, "bad_qty"),
    ("twap", -5, {"duration_ms": 1000}, "bad_qty"),
    ("twap", 10, {}, "bad_params"),
    ("twap", 10, {"duration_ms": 1000, "slices": 20}, "bad_params"),
    ("vwap", 10, {"duration_ms": 1000, "profile": "w"}, "bad_params"),
    ("pov", 10, {"participation": 1.5}, "bad_params"),
    ("pov", 10, {"participation": 0.0}, "bad_params"),
    ("iceberg", 10, {"display_qty": 5}, "bad_params"),
    ("iceberg", 10, {"display_qty": 50, "limit_price": PRICE}, "bad_params"),
    ("twap", 10, {"duration_ms": 1000, "limit_price": -1}, "bad_params"),
])
async def test_bad_algo_requests_are_refused_with_a_code(system: System, algo_name: str, qty: int,
                                                         params: dict[str, object], code: str) -> None:
    reply = await call(system, "algo_order", AlgoRequest(account="alice", symbol=SYMBOL, side=Side.BUY, qty=qty,
                                                         algo=algo_name, params=AlgoParams(**params)))  # type: ignore[arg-type]
    assert isinstance(reply, OmsError) and reply.error == code, reply
    listed = await call(system, "algo_list", AlgoListRequest())
    assert isinstance(listed, AlgosReply) and listed.total == 0  # nothing recorded


async def test_unknown_names_and_idempotent_client_ids(system: System) -> None:
    for req, code in [
        (AlgoRequest(account="mallory", symbol=SYMBOL, side=Side.BUY, qty=1, algo="pov",
                     params=AlgoParams(participation=0.1)), "unknown_account"),
        (AlgoRequest(account="alice", symbol="NOPE.SIM", side=Side.BUY, qty=1, algo="pov",
                     params=AlgoParams(participation=0.1)), "unknown_symbol"),
    ]:
        reply = await call(system, "algo_order", req)
        assert isinstance(reply, OmsError) and reply.error == code
    missing = await call(system, "algo_get", AlgoGetRequest(parent_id="algo-42"))
    assert isinstance(missing, OmsError) and missing.error == "unknown_parent"
    req = AlgoRequest(account="alice", symbol=SYMBOL, side=Side.BUY, qty=10, algo="pov",
                      params=AlgoParams(participation=0.1), client_id="my-pov")
    first = await call(system, "algo_order", req)
    assert isinstance(first, AlgoReply)
    again = await call(system, "algo_order", req)
    assert isinstance(again, AlgoReply) and again.algo.parent_id == first.algo.parent_id
    other = await call(system, "algo_order", msgspec.structs.replace(req, qty=20))
    assert isinstance(other, OmsError) and other.error == "duplicate_client_order_id"


async def test_parents_survive_an_oms_restart(tmp_path: Path) -> None:
    config = quiet_config(tmp_path)
    s = System(config, algo_workers=0)
    await s.start()
    view = await algo(s, "iceberg", 50, display_qty=10, limit_price=PRICE - 100)
    child = OrderRequest(account="alice", symbol=SYMBOL, side=Side.BUY, qty=10, price=PRICE - 100,
                         client_order_id=f"{view.parent_id}-1", parent_id=view.parent_id)
    assert isinstance(await call(s, "submit", child), OrderReply)
    await s.stop()
    s = System(config, algo_workers=0)
    await s.start()
    try:
        after = await get(s, view.parent_id, children=True)
        assert after.algo.state is AlgoState.RUNNING and after.algo.open_qty == 10
        assert [c.client_order_id for c in after.children] == [f"{view.parent_id}-1"]
        again = await call(s, "submit", msgspec.structs.replace(child, client_order_id=f"{view.parent_id}-2",
                                                                qty=45))
        assert isinstance(again, OmsError) and again.error == "parent_overfill"
        fresh = await algo(s, "pov", 10, participation=0.1)
        assert fresh.parent_id != view.parent_id
    finally:
        await s.stop()


async def test_a_window_without_liquidity_expires_and_refused_children_fail(system: System,
                                                                            workers: list[AlgoWorker]) -> None:
    await rest(system, Side.SELL, 100, price=PRICE + 500)  # offered above the parent's limit
    await worker(system, workers, "w1", settings=msgspec.structs.replace(FAST, max_rejects=1))
    view = await algo(system, "twap", 40, duration_ms=400, slices=2, limit_price=PRICE, grace_ms=100)
    done = await until(system, view.parent_id, finished)
    assert done.state is AlgoState.EXPIRED and done.filled_qty == 0 and done.open_qty == 0
    assert "40 of 40 left" in done.reason
    kids = (await get(system, view.parent_id, children=True)).children
    assert kids and all(c.status is OrderStatus.CANCELED and c.tif is TimeInForce.IOC for c in kids)

    big = await algo(system, "twap", 20_000, duration_ms=400, slices=1)  # a child above max_order_qty
    failed = await until(system, big.parent_id, finished)
    assert failed.state is AlgoState.FAILED and "max_order_qty" in failed.reason
