"""Tests of the venue service: journal-first acknowledgement, ordered exactly-once publishing, group
commit under concurrency, recovery after a clean stop and after SIGKILL, bad input, expiry, depth.

Most tests run over an isolated memory bus with a SQLite journal in tmp_path; one runs over a private
nats-server. Waits are on events (a collector's count reaching a target), never bare sleeps.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.support.nats_server import nats_server, nats_url  # noqa: F401  (fixtures)
from tradesim.bus import Bus, Delivery, NoRespondersError, RemoteError, open_bus, subjects
from tradesim.domain import (
    CancelOrder,
    CancelReason,
    Event,
    Instrument,
    ModifyOrder,
    NewOrder,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderModified,
    OrderRejected,
    OrderStatus,
    OrderType,
    RejectReason,
    Side,
    TimeInForce,
    Trade,
)
from tradesim.engine import MatchingEngine
from tradesim.services.venue import (
    RPC_BOOK,
    RPC_CANCEL,
    RPC_END_OF_DAY,
    RPC_INSTRUMENTS,
    RPC_MODIFY,
    RPC_ORDER_STATUS,
    RPC_SUBMIT,
    BookReply,
    BookRequest,
    DepthUpdate,
    EndOfDayRequest,
    InstrumentsReply,
    InstrumentsRequest,
    OrderStatusReply,
    OrderStatusRequest,
    TradePrint,
    VenueReply,
    VenueService,
)
from tradesim.store import Journal, open_journal

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
AAPL = Instrument(symbol="AAPL.SIM", tick_size=Decimal("0.01"))
MSFT = Instrument(symbol="MSFT.SIM", tick_size=Decimal("0.01"))
T0 = 1_700_000_000_000_000_000


class FakeClock:
    """Venue time under the test's control: each reading advances 1 µs, `advance` jumps."""

    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        self.now += 1_000
        return self.now

    def advance(self, ns: int) -> None:
        self.now += ns


class Collector:
    """Records deliveries; `wait_for(pred)` resolves as soon as the recorded list satisfies it."""

    def __init__(self) -> None:
        self.items: list[Delivery] = []
        self._changed = asyncio.Event()

    async def __call__(self, d: Delivery) -> None:
        self.items.append(d)
        self._changed.set()

    async def wait_for(self, pred: Callable[[list[Delivery]], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not pred(self.items):
                self._changed.clear()
                await self._changed.wait()

    def of(self, prefix: str) -> list[Any]:
        return [d.data for d in self.items if d.subject.startswith(prefix)]


def buy(cid: str, price: int | None = 100, qty: int = 10, account: str = "alice", **kw: Any) -> NewOrder:
    return NewOrder(account=account, client_order_id=cid, symbol=kw.pop("symbol", "AAPL.SIM"), side=Side.BUY,
                    type=kw.pop("type", OrderType.LIMIT), price=price, qty=qty, **kw)


def sell(cid: str, price: int | None = 100, qty: int = 10, account: str = "bob", **kw: Any) -> NewOrder:
    return NewOrder(account=account, client_order_id=cid, symbol=kw.pop("symbol", "AAPL.SIM"), side=Side.SELL,
                    type=kw.pop("type", OrderType.LIMIT), price=price, qty=qty, **kw)


async def call(bus: Bus, subject: str, msg: msgspec.Struct, timeout: float = 10.0) -> VenueReply:
    reply = await bus.request(subject, msg, timeout=timeout)
    assert isinstance(reply, VenueReply), reply
    return reply


@pytest.fixture
async def bus() -> AsyncIterator[Bus]:
    b = await open_bus(f"memory://venue-{uuid.uuid4().hex[:8]}", on_error=lambda s, e: None)
    yield b
    await b.close()


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    j = await open_journal(tmp_path)
    yield j
    await j.close()


Start = Callable[..., Awaitable[VenueService]]


@pytest.fixture
async def start_venue(bus: Bus, journal: Journal) -> AsyncIterator[Start]:
    """`await start_venue(**kw)` starts a venue on the test's bus and journal (stopped at teardown)."""
    venues: list[VenueService] = []

    async def _start(**kw: Any) -> VenueService:
        instruments = kw.pop("instruments", [AAPL, MSFT])
        venue = VenueService(kw.pop("bus", bus), kw.pop("journal", journal), instruments, **kw)
        await venue.start()
        venues.append(venue)
        return venue

    yield _start
    for v in venues:
        await v.stop()


async def listen(bus: Bus, *patterns: str) -> Collector:
    c = Collector()
    for p in patterns:
        await bus.subscribe(p, c)
    return c


# ---- the command RPCs ---------------------------------------------------------------------------
async def test_submit_cancel_modify_over_rpc_give_exact_events(bus: Bus, start_venue: Start) -> None:
    clock = FakeClock()
    await start_venue(clock=clock)  # lists AAPL then MSFT: journal seqs 1 and 2, ts T0+1µs, +2µs
    r1 = await call(bus, RPC_SUBMIT, buy("b1", price=100, qty=10))
    ts1 = T0 + 3_000
    assert r1 == VenueReply(events=[OrderAccepted(
        seq=1, ts=ts1, order_id=1, account="alice", client_order_id="b1", symbol="AAPL.SIM", side=Side.BUY,
        type=OrderType.LIMIT, tif=TimeInForce.GTC, price=100, qty=10)], seq=1, journal_seq=3)

    r2 = await call(bus, RPC_SUBMIT, sell("s1", price=99, qty=4))
    ts2 = T0 + 4_000
    assert r2.events == [
        OrderAccepted(seq=2, ts=ts2, order_id=2, account="bob", client_order_id="s1", symbol="AAPL.SIM",
                      side=Side.SELL, type=OrderType.LIMIT, tif=TimeInForce.GTC, price=99, qty=4),
        Trade(seq=3, ts=ts2, trade_id=1, symbol="AAPL.SIM", price=100, qty=4, aggressor=Side.SELL,
              maker_order_id=1, maker_account="alice", maker_client_order_id="b1", maker_cum_qty=4,
              maker_leaves_qty=6, taker_order_id=2, taker_account="bob", taker_client_order_id="s1",
              taker_cum_qty=4, taker_leaves_qty=0),
    ]
    assert (r2.seq, r2.journal_seq) == (3, 4)

    r3 = await call(bus, RPC_MODIFY, ModifyOrder(account="alice", client_order_id="b1", symbol="AAPL.SIM",
                                                 price=101, qty=8))
    assert r3 == VenueReply(events=[OrderModified(
        seq=4, ts=T0 + 5_000, order_id=1, account="alice", client_order_id="b1", symbol="AAPL.SIM", price=101,
        qty=8, leaves_qty=4)], seq=4, journal_seq=5)

    r4 = await call(bus, RPC_CANCEL, CancelOrder(account="alice", client_order_id="b1", symbol="AAPL.SIM"))
    assert r4 == VenueReply(events=[OrderCanceled(
        seq=5, ts=T0 + 6_000, order_id=1, account="alice", client_order_id="b1", symbol="AAPL.SIM",
        reason=CancelReason.USER, canceled_qty=4)], seq=5, journal_seq=6)

    r5 = await call(bus, RPC_CANCEL, CancelOrder(account="alice", client_order_id="b1", symbol="AAPL.SIM"))
    assert len(r5.events) == 1 and isinstance(r5.events[0], OrderRejected)
    assert r5.events[0].reason is RejectReason.UNKNOWN_ORDER

    book = await bus.request(RPC_BOOK, BookRequest(symbol="AAPL.SIM"))
    assert book == BookReply(symbol="AAPL.SIM", seq=6, bids=[], asks=[], last_price=100)
    listed = await bus.request(RPC_INSTRUMENTS, InstrumentsRequest())
    assert listed == InstrumentsReply(instruments=[AAPL, MSFT])


async def test_reply_comes_only_after_the_command_is_in_the_journal(bus: Bus, tmp_path: Path,
                                                                    start_venue: Start) -> None:
    # A lingering journal makes every commit late: a venue that answered before durability would be caught.
    slow = await open_journal(tmp_path / "slow", linger=0.05)
    try:
        venue = await start_venue(journal=slow)
        order = buy("b1")

        async def check() -> None:
            reply = await call(bus, RPC_SUBMIT, order)
            assert slow.last_seq >= reply.journal_seq  # durable when the reply arrives
            records = [r async for r in slow.read(reply.journal_seq)]
            assert records and records[0].seq == reply.journal_seq
            cmd = records[0].command
            assert isinstance(cmd, NewOrder) and cmd.client_order_id == "b1"
            assert msgspec.structs.replace(cmd, ts=0) == order  # the venue only stamped the time
            assert cmd.ts == records[0].ts == reply.events[0].ts

        await asyncio.gather(check(), *(call(bus, RPC_SUBMIT, buy(f"x{i}")) for i in range(5)))
        await venue.stop()
    finally:
        await slow.close()


async def test_events_go_to_their_subjects_in_seq_order_without_gaps(bus: Bus, start_venue: Start) -> None:
    venue = await start_venue()
    tape = await listen(bus, "orders.>", "trades.>")
    await call(bus, RPC_SUBMIT, buy("stop", price=None, type=OrderType.STOP, stop_price=103, qty=3,
                                    account="carol"))
    requests = []
    for i in range(40):
        requests.append(call(bus, RPC_SUBMIT, buy(f"b{i}", price=100 + i % 5, qty=5)))
        requests.append(call(bus, RPC_SUBMIT, sell(f"s{i}", price=101 + i % 4, qty=3)))
    requests += [call(bus, RPC_SUBMIT, sell(f"m{i}", price=200 + i, qty=5, account="dan")) for i in range(10)]
    requests.append(call(bus, RPC_SUBMIT, buy("bad", symbol="NOPE.SIM")))
    await asyncio.gather(*requests)
    await asyncio.gather(*(call(bus, RPC_CANCEL, CancelOrder(account="alice", client_order_id=f"b{i}",
                                                             symbol="AAPL.SIM")) for i in range(10)),
                         *(call(bus, RPC_MODIFY, ModifyOrder(account="dan", client_order_id=f"m{i}",
                                                             symbol="AAPL.SIM", qty=3)) for i in range(10)))
    total = venue.engine.seq
    await tape.wait_for(lambda items: sum(1 for d in items if d.subject.startswith("orders.")) >= total)

    events: list[Event] = tape.of("orders.")
    assert [e.seq for e in events] == list(range(1, total + 1)), "every event once, in seq order"
    expected_subject = {OrderAccepted: "orders.new", OrderModified: "orders.modified",
                        OrderCanceled: "orders.cancelled", OrderExpired: "orders.cancelled",
                        OrderRejected: "orders.rejected", Trade: "orders.filled"}
    kinds = set()
    for d in tape.items:
        if d.subject.startswith("orders."):
            kinds.add(type(d.data).__name__)
            if d.subject != "orders.triggered":
                assert d.subject == expected_subject[type(d.data)], d
    assert {"OrderAccepted", "Trade", "OrderCanceled", "OrderModified", "OrderRejected",
            "OrderTriggered"} <= kinds
    trades = [e for e in events if isinstance(e, Trade)]
    prints: list[TradePrint] = tape.of("trades.executed")
    assert [(p.seq, p.trade_id, p.price, p.qty, p.aggressor) for p in prints] == \
        [(t.seq, t.trade_id, t.price, t.qty, t.aggressor) for t in trades]


async def test_200_concurrent_submits_are_group_committed_and_all_answered(
        bus: Bus, journal: Journal, start_venue: Start) -> None:
    await start_venue()
    before = msgspec.structs.replace(journal.stats)
    replies = await asyncio.gather(*(call(bus, RPC_SUBMIT, buy(f"c{i}", price=90 + i % 7, qty=1 + i % 3))
                                     for i in range(200)))
    assert all(isinstance(r.events[0], OrderAccepted) for r in replies)
    assert sorted(r.journal_seq for r in replies) == list(range(3, 203))
    appends = journal.stats.appends - before.appends
    transactions = journal.stats.transactions - before.transactions
    assert appends == 200
    assert transactions < appends / 4, f"{transactions} commits for {appends} appends: no grouping"


# ---- recovery -----------------------------------------------------------------------------------
async def test_restart_recovers_the_same_state_and_continues_the_sequences(
        bus: Bus, journal: Journal, start_venue: Start) -> None:
    venue = await start_venue(snapshot_every=7)
    await asyncio.gather(*(call(bus, RPC_SUBMIT, buy(f"b{i}", price=100 - i % 3, qty=5,
                                                     tif=TimeInForce.GTD, expire_ts=T0 * 2))
                           for i in range(10)))
    await asyncio.gather(*(call(bus, RPC_SUBMIT, sell(f"s{i}", price=99, qty=4)) for i in range(6)))
    await venue.stop()
    state, seq, jseq = venue.engine.state_hash(), venue.engine.seq, journal.last_seq
    snap = await journal.latest_snapshot()
    assert snap is not None and snap.seq == jseq, "a clean stop leaves a snapshot of the final state"

    again = await start_venue(snapshot_every=7)
    assert again.engine.state_hash() == state
    assert journal.last_seq == jseq, "instruments already listed are not listed twice"
    r = await call(bus, RPC_SUBMIT, buy("after", price=50))
    assert (r.events[0].seq, r.seq, r.journal_seq) == (seq + 1, seq + 1, jseq + 1)
    assert r.events[0].ts > 0


async def test_stop_finishes_the_commands_in_flight_and_publishes_them(bus: Bus, journal: Journal,
                                                                      start_venue: Start) -> None:
    venue = await start_venue()
    tape = await listen(bus, "orders.>")
    calls = [asyncio.create_task(call(bus, RPC_SUBMIT, buy(f"f{i}", price=100 - i % 5))) for i in range(100)]
    await tape.wait_for(lambda items: len(items) >= 1)  # the first group is out, the rest is in flight
    await venue.stop()
    replies = await asyncio.gather(*calls)
    assert len(replies) == 100 and venue.engine.seq == 100
    assert journal.last_seq == 102
    snap = await journal.latest_snapshot()
    assert snap is not None and snap.seq == 102
    await tape.wait_for(lambda items: len(items) == 100)
    assert [d.data.seq for d in tape.items] == list(range(1, 101))  # type: ignore[attr-defined]
    with pytest.raises(NoRespondersError):  # the venue released its subjects
        await bus.request(RPC_SUBMIT, buy("late"), timeout=1.0)


async def test_periodic_snapshots_restore_to_the_live_state(bus: Bus, journal: Journal,
                                                           start_venue: Start) -> None:
    venue = await start_venue(snapshot_every=5)
    for i in range(13):  # one at a time: journal seqs 3..15, snapshots due at 5, 10 and 15
        await call(bus, RPC_SUBMIT, buy(f"b{i}", price=100 + i))
    tape = await listen(bus, "orders.>")
    await call(bus, RPC_SUBMIT, buy("last"))  # its publication comes after the earlier snapshots' saves
    await tape.wait_for(lambda items: len(items) == 1)
    snap = await journal.latest_snapshot()
    assert snap is not None and snap.seq == 15
    records = [r.command async for r in journal.read(1)]
    replay = MatchingEngine()
    for command in records[:15]:
        replay.apply(command)
    assert snap.state_hash == replay.state_hash()
    assert venue.engine.seq == 14


CHILD = textwrap.dedent("""
    import asyncio, sys
    from decimal import Decimal
    from tradesim.bus import open_bus
    from tradesim.domain import Instrument, NewOrder, OrderType, Side
    from tradesim.services.venue import RPC_SUBMIT, VenueService
    from tradesim.store import open_journal

    async def main(data_dir):
        bus = await open_bus("memory://killed")
        journal = await open_journal(data_dir)
        venue = VenueService(bus, journal, [Instrument(symbol="AAPL.SIM", tick_size=Decimal("0.01"))],
                             snapshot_every=97)
        await venue.start()
        print("ready", flush=True)

        async def client(w):
            n = 0
            while True:
                side = Side.BUY if (w + n) % 2 else Side.SELL
                cid = f"w{w}-{n}"
                reply = await bus.request(RPC_SUBMIT, NewOrder(
                    account=f"acct{w % 5}", client_order_id=cid, symbol="AAPL.SIM", side=side,
                    type=OrderType.LIMIT, price=100 + (n * 7 + w) % 9 - 4, qty=1 + n % 5), timeout=30)
                sys.stdout.write(f"{cid} {reply.journal_seq}\\n")
                sys.stdout.flush()
                n += 1

        await asyncio.gather(*(client(w) for w in range(32)))

    asyncio.run(main(sys.argv[1]))
""")


def run_and_kill(data_dir: Path) -> dict[str, int]:
    """Runs a venue under load in a child process, SIGKILLs it, returns the acknowledged orders."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(data_dir)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None
    lines: list[bytes] = []
    enough = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if len(lines) > 300:
                enough.set()
        enough.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    assert enough.wait(60), "the venue did not get going"
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    reader.join(10)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode() if proc.stderr else ""
    acked: dict[str, int] = {}
    for line in lines[1:]:
        if line.endswith(b"\n"):  # a line cut by the kill was not acknowledged
            cid, seq = line.decode().split()
            acked[cid] = int(seq)
    return acked


async def test_sigkill_then_restart_loses_nothing_acknowledged(tmp_path: Path, bus: Bus) -> None:
    acked = await asyncio.to_thread(run_and_kill, tmp_path)
    assert len(acked) > 300
    async with await open_journal(tmp_path) as journal:
        assert journal.last_seq >= max(acked.values())
        stored = {r.seq: r.command async for r in journal.read(1)}
        for cid, seq in acked.items():
            cmd = stored[seq]
            assert isinstance(cmd, NewOrder) and cmd.client_order_id == cid
        venue = VenueService(bus, journal, [AAPL])
        await venue.start()
        try:
            for cid in acked:
                account = f"acct{int(cid[1:].split('-')[0]) % 5}"
                assert venue.engine.order_by_client(account, cid) is not None, cid
            # the recovered venue answers and continues the journal
            r = await call(bus, RPC_SUBMIT, buy("after-crash", price=1, account="zed"))
            assert r.journal_seq == journal.last_seq and isinstance(r.events[0], OrderAccepted)
            assert (await journal.verify()).ok
        finally:
            await venue.stop()


async def test_a_failed_journal_write_stops_the_venue_and_a_restart_recovers(
        bus: Bus, tmp_path: Path) -> None:
    journal = await open_journal(tmp_path)
    venue = VenueService(bus, journal, [AAPL])
    await venue.start()
    ok = await call(bus, RPC_SUBMIT, buy("kept"))

    async def broken(batch: Any) -> Any:
        raise OSError("disk on fire")

    journal._write_batch = broken  # type: ignore[method-assign]
    results = await asyncio.gather(*(call(bus, RPC_SUBMIT, buy(f"lost{i}")) for i in range(5)),
                                   return_exceptions=True)
    assert all(isinstance(r, RemoteError) and r.error_type == "VenueUnavailableError" for r in results), results
    assert "disk on fire" in str(results[0])
    assert not venue.serving and isinstance(venue.failure, Exception)
    await venue.stop()
    await journal.close()

    async with await open_journal(tmp_path) as reopened:
        again = VenueService(bus, reopened, [AAPL])
        await again.start()
        try:
            assert again.engine.order_by_client("alice", "kept") is not None
            assert again.engine.order_by_client("alice", "lost0") is None
            r = await call(bus, RPC_SUBMIT, buy("lost0"))  # the client's retry goes through now
            assert isinstance(r.events[0], OrderAccepted) and r.journal_seq == ok.journal_seq + 1
        finally:
            await again.stop()


# ---- bad input ----------------------------------------------------------------------------------
async def test_a_wrong_payload_type_is_a_clear_error_and_nothing_is_journaled(
        bus: Bus, journal: Journal, start_venue: Start) -> None:
    await start_venue()
    before = journal.last_seq
    with pytest.raises(RemoteError) as ei:
        await bus.request(RPC_SUBMIT, CancelOrder(account="a", client_order_id="1", symbol="AAPL.SIM"))
    assert ei.value.error_type == "BadVenueRequestError"
    assert "rpc.venue.submit takes NewOrder, got CancelOrder" in ei.value.message
    for subject in (RPC_CANCEL, RPC_MODIFY, RPC_END_OF_DAY, RPC_ORDER_STATUS, RPC_BOOK):
        with pytest.raises(RemoteError, match=r"takes \w+, got InstrumentsRequest") as bad:
            await bus.request(subject, InstrumentsRequest())
        assert bad.value.error_type == "BadVenueRequestError"
    with pytest.raises(RemoteError) as ei2:
        await bus.request(RPC_BOOK, BookRequest(symbol="NOPE.SIM"))
    assert ei2.value.error_type == "UnknownSymbolError" and "NOPE.SIM" in ei2.value.message
    with pytest.raises(RemoteError, match="depth"):
        await bus.request(RPC_BOOK, BookRequest(symbol="AAPL.SIM", depth=0))
    assert journal.last_seq == before


async def test_unknown_symbol_is_an_order_rejected_event(bus: Bus, start_venue: Start) -> None:
    await start_venue()
    tape = await listen(bus, "orders.>")
    r = await call(bus, RPC_SUBMIT, buy("x", symbol="NOPE.SIM"))
    assert len(r.events) == 1
    event = r.events[0]
    assert isinstance(event, OrderRejected) and event.reason is RejectReason.UNKNOWN_SYMBOL
    await tape.wait_for(lambda items: len(items) == 1)
    assert tape.items[0].subject == "orders.rejected" and tape.items[0].data == event


# ---- market data, queries, expiry ---------------------------------------------------------------
async def test_depth_updates_are_conflated_per_batch_and_end_at_the_final_book(
        bus: Bus, start_venue: Start) -> None:
    venue = await start_venue()
    depth = await listen(bus, subjects.MARKET_DEPTH_ALL)
    n = 150
    await asyncio.gather(*(call(bus, RPC_SUBMIT, buy(f"d{i}", price=100 - i % 20, qty=1)) for i in range(n)))
    bids, asks = venue.engine.book("AAPL.SIM").depth(10)
    final_seq = venue.engine.seq
    await depth.wait_for(lambda items: bool(items) and getattr(items[-1].data, "seq", 0) == final_seq)
    updates: list[DepthUpdate] = depth.of("market.depth.AAPL.SIM")
    assert 0 < len(updates) < n / 4, f"{len(updates)} depth messages for {n} commands: not conflated"
    assert all(a.seq < b.seq for a, b in itertools.pairwise(updates))
    assert (updates[-1].bids, updates[-1].asks) == (bids, asks)
    assert len(updates[-1].bids) == 10 and updates[-1].bids[0] == (100, 8, 8)
    assert not depth.of("market.depth.MSFT.SIM"), "an untouched book gets no update"


@pytest.mark.parametrize("lag", [0.0, 0.1])
async def test_every_depth_update_is_the_durable_book_at_its_seq(bus: Bus, journal: Journal, start_venue: Start,
                                                               lag: float) -> None:
    venue = await start_venue(depth_max_lag=lag, depth_levels=5)
    depth = await listen(bus, subjects.MARKET_DEPTH_ALL)

    # An open-loop stream (paced, not synchronised, by a short sleep): new commands arrive while earlier
    # groups are being committed, so the live book is often ahead of what is durable when depth goes out.
    requests = []
    for i in range(160):
        side = buy if i % 2 else sell
        requests.append(asyncio.create_task(call(bus, RPC_SUBMIT, side(
            f"o{i}", price=100 + (i * 7) % 11 - 5, qty=1 + i % 4, symbol="AAPL.SIM" if i % 3 else "MSFT.SIM",
            account=f"a{i % 4}"))))
        if i % 4 == 3:
            await asyncio.sleep(0.0005)
    await asyncio.gather(*requests)
    final = {sym: venue.engine.book(sym).depth(5) for sym in ("AAPL.SIM", "MSFT.SIM")}

    def caught_up(items: list[Delivery]) -> bool:
        last = {d.data.symbol: d.data for d in items if isinstance(d.data, DepthUpdate)}
        return all(sym in last and (last[sym].bids, last[sym].asks) == final[sym] for sym in final)

    await depth.wait_for(caught_up)
    # replay the journal: the book of each symbol after every event seq
    replay = MatchingEngine()
    books: dict[tuple[str, int], tuple[Any, Any]] = {}
    async for record in journal.read(1):
        replay.apply(record.command)
        for sym in replay.instruments:
            books[(sym, replay.seq)] = replay.book(sym).depth(5)
    updates: list[DepthUpdate] = depth.of("market.depth.")
    assert updates
    for u in updates:
        assert (u.bids, u.asks) == books[(u.symbol, u.seq)], f"depth of {u.symbol} at seq {u.seq}"
    for sym in final:
        seqs = [u.seq for u in updates if u.symbol == sym]
        assert seqs == sorted(set(seqs)), "strictly increasing per symbol"


async def test_order_status_lookup(bus: Bus, start_venue: Start) -> None:
    await start_venue()
    await call(bus, RPC_SUBMIT, buy("b1", price=100, qty=10))
    r = await call(bus, RPC_SUBMIT, sell("s1", price=100, qty=4))
    status = await bus.request(RPC_ORDER_STATUS, OrderStatusRequest(account="alice", client_order_id="b1"))
    assert status == OrderStatusReply(found=True, seq=r.seq, order_id=1, status=OrderStatus.PARTIALLY_FILLED,
                                      price=100, qty=10, filled_qty=4, leaves_qty=6)
    missing = await bus.request(RPC_ORDER_STATUS, OrderStatusRequest(account="alice", client_order_id="zz"))
    assert missing == OrderStatusReply(found=False, seq=r.seq)


async def test_end_of_day_expires_day_orders_only(bus: Bus, start_venue: Start) -> None:
    await start_venue()
    tape = await listen(bus, "orders.cancelled")
    await call(bus, RPC_SUBMIT, buy("day", tif=TimeInForce.DAY))
    await call(bus, RPC_SUBMIT, buy("gtc", tif=TimeInForce.GTC))
    await call(bus, RPC_SUBMIT, sell("day2", price=120, tif=TimeInForce.DAY, account="bob"))
    r = await call(bus, RPC_END_OF_DAY, EndOfDayRequest())
    assert [(type(e), getattr(e, "client_order_id", None)) for e in r.events] == \
        [(OrderExpired, "day"), (OrderExpired, "day2")]
    await tape.wait_for(lambda items: len(items) == 2)
    assert [d.data for d in tape.items] == r.events
    status = await bus.request(RPC_ORDER_STATUS, OrderStatusRequest(account="alice", client_order_id="gtc"))
    assert isinstance(status, OrderStatusReply) and status.status is OrderStatus.ACCEPTED


async def test_a_due_gtd_order_expires_on_the_venue_timer_without_other_traffic(
        bus: Bus, journal: Journal, start_venue: Start) -> None:
    clock = FakeClock()
    venue = await start_venue(clock=clock, expiry_interval=0.01)
    tape = await listen(bus, "orders.cancelled")
    due = clock.now + 60 * 10**9
    await call(bus, RPC_SUBMIT, buy("gtd", tif=TimeInForce.GTD, expire_ts=due))
    await call(bus, RPC_SUBMIT, buy("gtd-canceled", tif=TimeInForce.GTD, expire_ts=due))
    await call(bus, RPC_CANCEL, CancelOrder(account="alice", client_order_id="gtd-canceled", symbol="AAPL.SIM"))
    tape.items.clear()
    before = journal.last_seq
    clock.advance(61 * 10**9)
    await tape.wait_for(lambda items: len(items) == 1)
    expired = tape.items[0].data
    assert isinstance(expired, OrderExpired) and expired.client_order_id == "gtd"
    records = [r.command async for r in journal.read(before + 1)]
    assert len(records) == 1 and type(records[0]).__name__ == "ExpireOrders"
    assert venue.engine.order_by_client("alice", "gtd") is not None
    assert venue.engine.order_by_client("alice", "gtd").status is OrderStatus.EXPIRED  # type: ignore[union-attr]


# ---- over NATS ----------------------------------------------------------------------------------
async def test_venue_over_nats(nats_url: str, tmp_path: Path) -> None:  # noqa: F811
    server, client = await open_bus(nats_url), await open_bus(nats_url)
    journal = await open_journal(tmp_path)
    venue = VenueService(server, journal, [AAPL])
    try:
        await venue.start()
        tape = await listen(client, "orders.>", "trades.>", "market.depth.>")
        await call(client, RPC_SUBMIT, buy("b1", price=100, qty=10))
        replies = await asyncio.gather(*(call(client, RPC_SUBMIT, sell(f"s{i}", price=100, qty=1))
                                         for i in range(50)))
        assert journal.stats.transactions < journal.stats.appends
        assert sum(isinstance(e, Trade) for r in replies for e in r.events) == 10
        total = venue.engine.seq
        await tape.wait_for(lambda items: len([d for d in items if d.subject.startswith("orders.")]) >= total)
        assert [e.seq for e in tape.of("orders.")] == list(range(1, total + 1))
        assert len(tape.of("trades.executed")) == 10
        book = await client.request(RPC_BOOK, BookRequest(symbol="AAPL.SIM", depth=1))
        assert isinstance(book, BookReply) and book.asks == [(100, 40, 40)] and book.bids == []
    finally:
        await venue.stop()
        await journal.close()
        await server.close()
        await client.close()


# ---- docs ---------------------------------------------------------------------------------------
def test_the_docs_example_runs(tmp_path: Path) -> None:
    doc = (ROOT / "docs" / "venue.md").read_text()
    examples = [b for b in re.findall(r"```python\n(.*?)```", doc, re.S) if "asyncio.run(" in b]
    assert len(examples) == 2
    outputs = []
    for i, example in enumerate(examples):
        script = tmp_path / f"example{i}.py"
        script.write_text(example)
        proc = subprocess.run([sys.executable, str(script), f"memory://doc-{uuid.uuid4().hex[:8]}"],
                              capture_output=True, text=True, timeout=60, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert proc.returncode == 0, proc.stderr
        outputs.append(proc.stdout)
    assert "journal seq 3: ['OrderAccepted', 'Trade']" in outputs[0]
    assert "bids=[(15025, 60, 1)]" in outputs[0]
    assert "trades.executed seq=3" in outputs[0]
    distributed = outputs[1]
    assert "refused: StaleTokenError fencing token 1 is older than 2: not the current leader" in distributed
    assert "newest token after restart: 2" in distributed
    assert ("['1:orders.new:seq=1', '2:orders.new:seq=2', '3:orders.filled:seq=3', '4:trades.executed:seq=3']"
            in distributed)
