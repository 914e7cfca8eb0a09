"""Crash and restart with the SQLite store: the OMS dies with changes not yet written (and misses venue
events while down), restarts on what was committed, is fed the venue's events from seq 1 (as the
System's replay does), goes on, and ends in exactly the state of a run that never stopped."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import uuid
from pathlib import Path

import msgspec
import pytest

from tests.services.oms_support import ACCOUNTS, COMPLIANCE, INSTRUMENTS, REFERENCE, RISK
from tradesim.bus import Bus, BusError, Delivery, open_bus, subjects
from tradesim.domain import Event, NewOrder, OrderType, Side, TimeInForce
from tradesim.services.oms import OmsService, SqliteOrderStore
from tradesim.services.oms.messages import (
    AlgoGetRequest,
    AlgoParams,
    AlgoReply,
    AlgoRequest,
    CancelRequest,
    HoldDecision,
    ModifyRequest,
    OmsError,
    OrderReply,
    OrderRequest,
)
from tradesim.services.oms.service import EVENT_TYPES
from tradesim.services.venue.service import VenueService
from tradesim.store import open_journal

T0 = 1_767_605_400_000_000_000


class Run:
    """One venue, one OMS on a SQLite store, a fixed clock moved by hand (so two runs stamp alike)."""

    def __init__(self, data: str, checkpoint_every: int) -> None:
        self.data = data
        self.checkpoint_every = checkpoint_every
        self.now = T0
        self.events: list[Event] = []

    def clock(self) -> int:
        return self.now

    def new_oms(self) -> OmsService:
        return OmsService(self.bus, INSTRUMENTS, ACCOUNTS, RISK, COMPLIANCE, clock=self.clock, stuck_after=600,
                          store=SqliteOrderStore(Path(self.data) / "oms.db"), reference_prices=REFERENCE)

    async def start(self) -> None:
        self.bus: Bus = await open_bus(f"memory://oms-restart-{uuid.uuid4().hex}")
        self.journal = await open_journal(self.data, synchronous="OFF", linger=0.0)
        self.venue = VenueService(self.bus, self.journal, INSTRUMENTS, clock=self.clock)
        await self.venue.start()
        self.oms = self.new_oms()
        self.oms.manager.checkpoint_every = self.checkpoint_every

        async def on_event(d: Delivery) -> None:
            if isinstance(d.data, EVENT_TYPES):
                self.events.append(d.data)

        await self.bus.subscribe(subjects.ORDERS_ALL, on_event)
        await self.oms.start()

    async def stop(self) -> None:
        await self.oms.stop()
        self.oms.store.close()
        await self.venue.stop()
        await self.journal.close()
        await self.bus.close()

    async def call(self, method: str, req: msgspec.Struct) -> OrderReply:
        self.now += 1_000_000
        reply = await self.bus.request(subjects.rpc("oms", method), req, timeout=5)
        assert isinstance(reply, OrderReply), reply
        return reply

    async def foreign(self, side: Side, qty: int, price: int) -> None:
        """Another participant, straight to the venue (the OMS only sees the events)."""
        self.now += 1_000_000
        order = NewOrder(account="zed", client_order_id=f"z{self.now}", symbol="AAPL.SIM", side=side,
                         type=OrderType.LIMIT, tif=TimeInForce.GTC, price=price, qty=qty, ts=self.now)
        await self.bus.request(subjects.rpc("venue", "submit"), order, timeout=5)
        await self.settle()

    async def settle(self) -> None:
        for _ in range(50):
            await asyncio.sleep(0)
        await asyncio.sleep(0.01)

    async def crash(self) -> None:
        """The OMS process dies: nothing more is served, received or written."""
        oms = self.oms
        for sub in oms._subs:
            with contextlib.suppress(BusError):
                await sub.unsubscribe()
        if oms._kick is not None:
            oms._kick.cancel()
        tasks = [t for t in (oms._watchdog, oms._flusher, oms.algos._task) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if oms._executor is not None:
            oms._executor.shutdown(wait=True)
        oms.store.close()

    async def restart(self) -> None:
        self.oms = self.new_oms()
        await self.oms.start()
        await self.oms.feed(list(self.events))  # the System replays the venue journal from seq 1


def req(account: str, cid: str, side: Side, qty: int, price: int, symbol: str = "AAPL.SIM") -> OrderRequest:
    return OrderRequest(account=account, symbol=symbol, side=side, qty=qty, price=price, client_order_id=cid)


async def scenario(run: Run, crash: bool) -> bytes:
    await run.start()
    refused = await run.call("submit", req("alice", "refused", Side.BUY, 1, 5000, symbol="BANK.SIM"))
    assert refused.order.reason == "restricted_list"
    pov = await run.bus.request(subjects.rpc("oms", "algo_order"), AlgoRequest(
        account="dave", symbol="AAPL.SIM", side=Side.BUY, qty=1000, algo="pov",
        params=AlgoParams(participation=0.1)), timeout=5)  # no worker: it only counts the market's volume
    assert isinstance(pov, AlgoReply)
    await run.call("submit", req("bob", "vol-s", Side.SELL, 100, 10000))
    await run.call("submit", req("bob", "rest", Side.SELL, 60, 10010))
    await run.call("submit", req("alice", "vol-b", Side.BUY, 100, 10000))
    held = await run.call("submit", req("alice", "held", Side.BUY, 80, 10010))
    assert held.order.hold_id == "H1"
    await run.call("submit", req("alice", "bid", Side.BUY, 50, 9990))
    await run.call("submit", req("dave", "dbid", Side.BUY, 10, 9980))
    await run.call("modify", ModifyRequest(account="alice", client_order_id="bid", price=9995))
    await run.call("submit", req("bob", "ask2", Side.SELL, 40, 10020))
    await run.call("cancel", CancelRequest(account="dave", client_order_id="dbid"))
    await run.settle()
    if crash:  # from here the OMS's writes are lost: it dies with changes only in memory
        run.oms.store.write = lambda batch: None  # type: ignore[method-assign]
    await run.foreign(Side.SELL, 20, 9995)  # fills alice's bid in part
    await run.foreign(Side.BUY, 25, 10020)  # fills bob's ask2 in part
    if crash:
        await run.crash()
    await run.foreign(Side.SELL, 30, 9995)  # while the OMS is down: fills the rest of alice's bid
    await run.foreign(Side.BUY, 30, 10010)  # and bob's rest in part
    if crash:
        await run.restart()
    approved = await run.call("approve", HoldDecision(hold_id="H1", user="risk"))
    assert approved.order.filled_qty > 0  # what zed left of bob's asks
    await run.call("cancel", CancelRequest(account="bob", client_order_id="ask2"))
    await run.call("submit", req("alice", "last", Side.BUY, 10, 10020))
    again = await run.bus.request(subjects.rpc("oms", "submit"), req("alice", "bid", Side.BUY, 50, 9990), timeout=5)
    assert isinstance(again, OrderReply) and again.order.filled_qty == 50  # idempotency key survived
    dup = await run.bus.request(subjects.rpc("oms", "submit"), req("alice", "bid", Side.BUY, 51, 9990), timeout=5)
    assert isinstance(dup, OmsError) and dup.error == "duplicate_client_order_id"
    await run.settle()
    manager = run.oms.manager
    parent = await run.bus.request(subjects.rpc("oms", "algo_get"), AlgoGetRequest(parent_id=pov.algo.parent_id),
                                   timeout=5)
    assert isinstance(parent, AlgoReply) and parent.algo.market_volume == 100 + 20 + 25 + 30 + 30 + 5
    # the parent's figures were written past the crashed orders' checkpoint: the replay counts nothing twice
    state = msgspec.msgpack.encode((manager.snapshot(), parent.algo.market_volume, parent.algo.market_turnover))
    await run.stop()
    return state


@pytest.mark.parametrize("checkpoint_every", [3, 10_000])  # checkpoints mid-stream / none before the crash
async def test_crash_and_restart_ends_as_a_run_that_never_stopped(checkpoint_every: int) -> None:
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        reference = await scenario(Run(a, checkpoint_every), crash=False)
        restarted = await scenario(Run(b, checkpoint_every), crash=True)
    assert msgspec.msgpack.decode(restarted) == msgspec.msgpack.decode(reference)
