"""PositionTracker over the memory bus: exact figures from real Trade/TradePrint events, dedup, re-ordering,
replica agreement, RPC errors, metrics and snapshot/restore."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import msgspec
import pytest

from tradesim.bus import Bus, Codec, RemoteError, open_bus, subjects
from tradesim.domain import Instrument, Side, Trade
from tradesim.services.accounts.messages import (
    AccountReply,
    AccountsError,
    AccountsListReply,
    GetAccount,
    GetPositions,
    ListAccounts,
    PositionsReply,
)
from tradesim.services.accounts.replica import Applied, LedgerReplica
from tradesim.services.accounts.service import RPC_GET, RPC_LIST, RPC_POSITIONS, AccountsService
from tradesim.services.venue.messages import TradePrint

AAPL = Instrument(symbol="AAPL.SIM", tick_size=Decimal("0.01"), taker_fee_bps=Decimal(1))
IF = Instrument(
    symbol="IF2501.CFFEX",
    tick_size=Decimal("0.2"),
    multiplier=Decimal(300),
    currency="USD",
    margin_rate=Decimal("0.12"),
)
INSTRUMENTS = [AAPL, IF]
ACCOUNTS = {"alice": (Decimal(100_000), "cash", "USD"), "bob": (Decimal(100_000), "margin", "USD")}


def trade(
    seq: int,
    price: int,
    qty: int,
    maker: str = "bob",
    taker: str = "alice",
    aggressor: Side = Side.BUY,
    symbol: str = "AAPL.SIM",
    trade_id: int | None = None,
) -> Trade:
    return Trade(
        seq=seq,
        ts=seq * 1000,
        trade_id=seq if trade_id is None else trade_id,
        symbol=symbol,
        price=price,
        qty=qty,
        aggressor=aggressor,
        maker_order_id=1,
        maker_account=maker,
        maker_client_order_id="m",
        maker_cum_qty=qty,
        maker_leaves_qty=0,
        taker_order_id=2,
        taker_account=taker,
        taker_client_order_id="t",
        taker_cum_qty=qty,
        taker_leaves_qty=0,
    )


def tape(t: Trade) -> TradePrint:
    return TradePrint(
        seq=t.seq, ts=t.ts, trade_id=t.trade_id, symbol=t.symbol, price=t.price, qty=t.qty, aggressor=t.aggressor
    )


@pytest.fixture
async def bus() -> AsyncIterator[Bus]:
    b = await open_bus(f"memory://accounts-{uuid.uuid4().hex[:8]}")
    yield b
    await b.close()


@pytest.fixture
async def tracker(bus: Bus) -> AsyncIterator[AccountsService]:
    service = AccountsService(bus, INSTRUMENTS, ACCOUNTS)
    await service.start()
    yield service
    await service.stop()


async def test_trades_give_exact_positions_cash_and_pnl(bus: Bus, tracker: AccountsService) -> None:
    # alice buys 100 AAPL at 150.00 from bob (taker fee 1 bp = 1.50), then sells 40 at 151.25 to bob.
    t1 = trade(1, 15000, 100)
    t2 = trade(2, 15125, 40, maker="bob", taker="alice", aggressor=Side.SELL)
    for t in (t1, t2):
        await bus.publish(subjects.ORDERS_FILLED, t)
        await bus.publish(subjects.TRADES_EXECUTED, tape(t))
    await tracker.wait_for_seq(2)
    reply = await bus.request(RPC_GET, GetAccount(account="alice"))
    assert isinstance(reply, AccountReply)
    alice = reply.account
    # cash: 100000 - 15000 - 1.5 + 40 * 151.25 - 0.605 = 91047.895
    assert alice.cash == Decimal("91047.895")
    (pos,) = alice.positions
    assert (pos.qty, pos.avg_price, pos.realized_pnl, pos.mark_price) == (
        60,
        Decimal("150"),
        Decimal("50.00"),
        Decimal("151.25"),
    )
    assert pos.unrealized_pnl == Decimal("75.00")  # 60 * 1.25
    assert alice.equity == Decimal("91047.895") + Decimal("9075.00")
    assert reply.seq == 2
    positions = await bus.request(RPC_POSITIONS, GetPositions(account="bob"))
    assert isinstance(positions, PositionsReply)
    assert [(p.symbol, p.qty) for p in positions.positions] == [("AAPL.SIM", -60)]


async def test_margined_futures_and_list(bus: Bus, tracker: AccountsService) -> None:
    # bob (margin) buys 2 IF at 3850.2 from alice; the print at 3860.0 marks it.
    t = trade(5, 19251, 2, maker="alice", taker="bob", symbol="IF2501.CFFEX")
    await bus.publish(subjects.ORDERS_FILLED, t)
    await bus.publish(
        subjects.TRADES_EXECUTED,
        TradePrint(seq=6, ts=6, trade_id=6, symbol="IF2501.CFFEX", price=19300, qty=1, aggressor=Side.BUY),
    )
    await tracker.wait_for_seq(6)
    reply = await bus.request(RPC_LIST, ListAccounts())
    assert isinstance(reply, AccountsListReply)
    by_id = {a.account: a for a in reply.accounts}
    assert list(by_id) == ["alice", "bob"]
    assert by_id["bob"].unrealized_pnl == Decimal("5880.0")  # (3860.0 - 3850.2) * 2 * 300
    assert by_id["bob"].margin_used == Decimal("277920.00")  # 3860 * 2 * 300 * 0.12
    assert by_id["bob"].cash == Decimal(100_000)
    assert by_id["alice"].open_positions == 1


async def test_duplicates_are_ignored(bus: Bus, tracker: AccountsService) -> None:
    t = trade(1, 15000, 10)
    for _ in range(3):
        await bus.publish(subjects.ORDERS_FILLED, t)
    await bus.publish(subjects.ORDERS_FILLED, trade(2, 15000, 1))
    await tracker.wait_for_seq(2)
    assert tracker.ledger.position("alice", "AAPL.SIM").qty == 11
    m = tracker.metrics()
    assert (m.trades_applied, m.duplicates, m.last_seq, m.accounts) == (2, 2, 2, 2)


async def test_two_trackers_agree_and_reordering_matches_in_order(bus: Bus) -> None:
    rng = random.Random(7)
    events: list[Trade] = []
    for seq in range(1, 201):
        symbol = rng.choice(["AAPL.SIM", "IF2501.CFFEX"])
        buyer, seller = rng.sample(["alice", "bob", "carol"], 2)
        maker, taker = (seller, buyer) if rng.random() < 0.5 else (buyer, seller)
        aggressor = Side.BUY if taker == buyer else Side.SELL
        price = rng.randint(14_000, 16_000) if symbol == "AAPL.SIM" else rng.randint(19_000, 19_500)
        events.append(trade(seq, price, rng.randint(1, 5), maker, taker, aggressor, symbol))
    a = AccountsService(bus, INSTRUMENTS, ACCOUNTS)
    b = AccountsService(bus, INSTRUMENTS, ACCOUNTS)
    await a.start()
    await b.start()
    for t in events:
        await bus.publish(subjects.ORDERS_FILLED, t)
    await a.wait_for_seq(200)
    await b.wait_for_seq(200)
    assert a.state_hash() == b.state_hash()
    # A replica fed the same trades shuffled within a small distance, with redeliveries, ends equal.
    shuffled = LedgerReplica(INSTRUMENTS, ACCOUNTS, window=16)
    jittered = sorted(events, key=lambda t: t.seq + rng.uniform(0, 10))
    outcomes = []
    for t in jittered + jittered[:20]:
        outcomes.append(shuffled.apply_trade(t))
        shuffled.mark(t.symbol, t.seq, t.price)  # as the tracker marks from each trade, latest seq wins
    assert Applied.REORDERED in outcomes
    assert outcomes.count(Applied.DUPLICATE) == 20
    assert shuffled.late == 0
    assert shuffled.state_hash() == a.state_hash()
    await a.stop()
    await b.stop()


def test_a_trade_older_than_the_window_is_booked_after_the_checkpoint() -> None:
    replica = LedgerReplica(INSTRUMENTS, ACCOUNTS, window=2)
    for seq in range(2, 10):
        replica.apply_trade(trade(seq, 15000, 1))
    assert replica.apply_trade(trade(1, 15000, 1)) is Applied.LATE
    assert replica.ledger.position("alice", "AAPL.SIM").qty == 9
    replica.apply_trade(trade(11, 15000, 1))
    assert replica.apply_trade(trade(10, 15000, 1)) is Applied.REORDERED  # a rebuild keeps the late one
    assert replica.ledger.position("alice", "AAPL.SIM").qty == 11


async def test_unknown_account_and_malformed_requests(bus: Bus, tracker: AccountsService) -> None:
    for subject, req in ((RPC_GET, GetAccount(account="mallory")), (RPC_POSITIONS, GetPositions(account="x"))):
        reply = await bus.request(subject, req)
        assert isinstance(reply, AccountsError)
        assert reply.error == "unknown_account"
        assert "mallory" in reply.message or "'x'" in reply.message
    wrong = await bus.request(RPC_GET, ListAccounts())
    assert wrong == AccountsError(error="malformed", message="expected GetAccount, got ListAccounts")
    empty = await bus.request(RPC_POSITIONS, GetPositions(account=""))
    assert isinstance(empty, AccountsError) and empty.error == "malformed"


class Garbage(msgspec.Struct, frozen=True, tag="test.garbage", tag_field="kind"):
    junk: int


async def test_undecodable_request_gets_an_error_reply(bus: Bus, tracker: AccountsService) -> None:
    client = await open_bus(bus.url, codec=Codec(Garbage, *bus.codec.types))
    try:
        with pytest.raises(RemoteError) as err:
            await client.request(RPC_GET, Garbage(junk=1))
        assert err.value.error_type == "CodecError"
    finally:
        await client.close()


async def test_refused_trade_is_counted_not_fatal(bus: Bus, tracker: AccountsService) -> None:
    await bus.publish(subjects.ORDERS_FILLED, trade(1, 100, 1, symbol="NOPE.SIM"))
    await bus.publish(subjects.ORDERS_FILLED, trade(2, 15000, 1))
    await tracker.wait_for_seq(2)
    m = tracker.metrics()
    assert (m.errors, m.trades_applied) == (1, 1)


async def test_snapshot_restore_round_trip(bus: Bus, tracker: AccountsService) -> None:
    for seq in (1, 2, 3):
        await bus.publish(subjects.ORDERS_FILLED, trade(seq, 15000 + seq, seq))
    await tracker.wait_for_seq(3)
    snap = tracker.snapshot()
    encoded = msgspec.msgpack.encode(snap)
    other = AccountsService(bus, INSTRUMENTS, {})
    other.restore(msgspec.msgpack.decode(encoded, type=type(snap)))
    assert other.state_hash() == tracker.state_hash()
    assert other.last_seq == 3
    other.apply_trade(trade(2, 1, 1))  # a redelivery after restore is still a duplicate
    assert other.state_hash() == tracker.state_hash()


def test_docs_example_runs() -> None:
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "positions-and-risk-monitor.md").read_text()
    (block,) = re.findall(r"```python\n(.*?)```", doc, re.S)
    exec(compile(block, "docs/positions-and-risk-monitor.md", "exec"), {})
