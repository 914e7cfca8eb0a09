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

from tradesim.domain import OrderStatus, OrderType, Side, TimeInForce
from tradesim.services.algos import AlgoWorker, Settings
from tradesim.services.config import load_config
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
    config = load_config(env={}).with_settings(data_dir=str(tmp_path), bus=f"memory://{uuid.uuid4().hex}")
    s = System(config)
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
async def workers(system: System) -> AsyncIterator[list[AlgoWorker]]:
    made: list[AlgoWorker] = []
    yield made
    for w in made:
        await w.stop()


async def worker(system: System, made: list[AlgoWorker], name: str, **kw: object) -> AlgoWorker:
    w = AlgoWorker(system.bus, name, settings=FAST, **kw)  # type: ignore[arg-type]
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
