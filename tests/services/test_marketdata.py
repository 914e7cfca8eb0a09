"""Market data: the GBM reference process, file reference prices, bars, the store (SQLite and PostgreSQL),
and the service against a real VenueService on a memory bus with a SQLite journal."""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from tests.support.pg import create_database, drop_database
from tradesim.bus import Bus, Delivery, open_bus, subjects
from tradesim.domain import Instrument, NewOrder, OrderType, Side
from tradesim.services.marketdata import (
    RPC_BARS,
    RPC_TICKER,
    Bar,
    BarBuilder,
    BarsReply,
    BarsRequest,
    FileReference,
    FileReferenceError,
    GbmParams,
    GbmProcess,
    MarketDataError,
    MarketDataService,
    Tick,
    TickerRequest,
    aggregate,
    gbm_processes,
)
from tradesim.services.marketdata.store import MarketDataStore, open_marketdata_store
from tradesim.services.venue import RPC_SUBMIT, TradePrint, VenueReply, VenueService
from tradesim.store import open_journal

pytestmark = pytest.mark.timeout(60)

AAPL = Instrument(symbol="AAPL.SIM", tick_size=Decimal("0.01"))
MSFT = Instrument(symbol="MSFT.SIM", tick_size=Decimal("0.01"))
S = 1_000_000_000
MIN = 60 * S
T0 = 1_700_000_000 * S - (1_700_000_000 * S) % MIN  # a minute boundary


class Clock:
    """A clock tests move by hand (ns)."""

    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


async def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.005)


# ---- GBM --------------------------------------------------------------------------------------
def test_gbm_same_seed_same_path_and_seeds_differ() -> None:
    def path(seed: int) -> list[int]:
        p = GbmProcess(15_000, GbmParams(drift=0.05, volatility=0.4), seed=seed)
        return [p.step(60.0) for _ in range(500)]

    assert path(7) == path(7)
    assert path(7) != path(8)


def test_gbm_log_returns_match_theory() -> None:
    mu, sigma, dt_s = 0.1, 0.3, 86_400.0
    params = GbmParams(drift=mu, volatility=sigma)
    p = GbmProcess(10**12, params, seed=12345)  # a huge price: tick rounding is irrelevant to the log path
    n = 20_000
    returns = []
    for _ in range(n):
        before = p.log_price
        p.step(dt_s)
        returns.append(p.log_price - before)
    dt = dt_s / params.year_seconds
    mean = sum(returns) / n
    var = sum((r - mean) ** 2 for r in returns) / (n - 1)
    expected_mean, expected_var = (mu - sigma**2 / 2) * dt, sigma**2 * dt
    assert abs(mean - expected_mean) < 4 * math.sqrt(expected_var / n)
    assert abs(var / expected_var - 1) < 4 * math.sqrt(2 / n)  # the sample variance's relative std error


def test_gbm_never_non_positive_and_on_tick() -> None:
    p = GbmProcess(1, GbmParams(drift=-5.0, volatility=3.0), seed=1)
    for _ in range(5_000):
        price = p.step(86_400.0)
        assert isinstance(price, int) and price >= 1
    with pytest.raises(ValueError):
        GbmProcess(0)
    with pytest.raises(ValueError):
        GbmParams(volatility=-0.1)


def test_gbm_steps_by_clock_time_and_symbols_are_independent() -> None:
    p = GbmProcess(10_000, seed=3)
    assert p.at(T0) == 10_000 and p.steps == 0
    assert p.at(T0) == 10_000 and p.steps == 0  # no time passed
    p.at(T0 + S // 10)
    p.at(T0 + S // 10 - 1)  # time going back changes nothing
    assert p.steps == 1
    both = gbm_processes({"AAPL.SIM": 15_000, "MSFT.SIM": 30_000}, seed=9)
    alone = gbm_processes({"AAPL.SIM": 15_000}, seed=9)
    assert [both["AAPL.SIM"].step(1.0) for _ in range(50)] == [alone["AAPL.SIM"].step(1.0) for _ in range(50)]


def test_file_reference(tmp_path: Path) -> None:
    f = tmp_path / "ref.csv"
    f.write_text(f"ts,price\n{T0},150.25\n{T0 + S},150.30\n")
    ref = FileReference.load(f, AAPL)
    assert ref.at(T0 - 1) is None
    assert ref.at(T0) == 15_025
    assert ref.at(T0 + S // 2) == 15_025
    assert ref.at(T0 + 10 * S) == 15_030
    looped = FileReference.load(f, AAPL, loop=True)
    assert looped.at(T0 + S + S // 2) == 15_025
    f.write_text(f"{T0},150.25\n{T0 + S},150.255\n")
    with pytest.raises(FileReferenceError, match=r"ref.csv:2: .*not a multiple of tick"):
        FileReference.load(f, AAPL)


# ---- bars -------------------------------------------------------------------------------------
TRADES = [  # (ts, price, qty)
    (T0 + 1 * S, 100, 5), (T0 + 20 * S, 103, 2), (T0 + 59 * S, 99, 1),
    (T0 + MIN + 5 * S, 101, 10), (T0 + MIN + 6 * S, 102, 3),
    (T0 + 3 * MIN, 98, 4),
]


def test_bar_builder_exact_ohlcv() -> None:
    b = BarBuilder("AAPL.SIM", 60)
    closed = [bar for ts, price, qty in TRADES if (bar := b.add(ts, price, qty)) is not None]
    assert closed == [
        Bar(symbol="AAPL.SIM", start_ts=T0, interval_s=60, open=100, high=103, low=99, close=99, volume=8,
            turnover=100 * 5 + 103 * 2 + 99, trades=3),
        Bar(symbol="AAPL.SIM", start_ts=T0 + MIN, interval_s=60, open=101, high=102, low=101, close=102, volume=13,
            turnover=1010 + 306, trades=2),
    ]
    assert b.close_due(T0 + 4 * MIN - 1) is None
    last = b.close_due(T0 + 4 * MIN)
    assert last is not None and (last.start_ts, last.open, last.volume) == (T0 + 3 * MIN, 98, 4)
    # a late trade (in a closed minute) is kept, in the next bar, and counted
    assert b.add(T0 + 2 * S, 97, 1) is None
    assert b.current is not None and b.current.start_ts == T0 + 4 * MIN and b.late_trades == 1
    five = aggregate(closed, 300)
    assert len(five) == 1 and (five[0].open, five[0].high, five[0].low, five[0].close, five[0].volume,
                               five[0].trades) == (100, 103, 99, 102, 21, 5)


# ---- store ------------------------------------------------------------------------------------
def bar_at(start: int, close: int = 100) -> Bar:
    return Bar(symbol="AAPL.SIM", start_ts=start, interval_s=60, open=100, high=max(100, close), low=min(100, close),
               close=close, volume=10, turnover=1000, trades=2)


def tick_at(ts: int) -> Tick:
    return Tick(symbol="AAPL.SIM", ts=ts, seq=ts // S, bid=99, bid_qty=5, ask=None, ask_qty=0, last=100, last_qty=1,
                volume=10, turnover=1000, trades=2, reference=101)


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path)
        return
    url, name = create_database()
    try:
        yield url
    finally:
        drop_database(name)


@pytest.fixture
async def store(target: str) -> AsyncIterator[MarketDataStore]:
    s = await open_marketdata_store(target)
    try:
        yield s
    finally:
        await s.close()


async def test_store_bars_and_ticks(store: MarketDataStore) -> None:
    for i in range(5):
        store.add_bar(bar_at(T0 + i * MIN))
        store.add_tick(tick_at(T0 + i * S))
    store.add_bar(bar_at(T0, close=105))  # a bar stored again replaces the first
    await store.flush()
    bars = await store.bars("AAPL.SIM", 60)
    assert [b.start_ts for b in bars] == [T0 + i * MIN for i in range(5)]
    assert bars[0].close == 105 and bars[0].high == 105
    assert [b.start_ts for b in await store.bars("AAPL.SIM", 60, limit=2)] == [T0 + 3 * MIN, T0 + 4 * MIN]
    ranged = await store.bars("AAPL.SIM", 60, start_ts=T0 + MIN, end_ts=T0 + 3 * MIN)
    assert [b.start_ts for b in ranged] == [T0 + MIN, T0 + 2 * MIN]
    assert await store.bars("MSFT.SIM", 60) == [] and await store.bars("AAPL.SIM", 300) == []
    ticks = await store.ticks("AAPL.SIM", start_ts=T0 + S, limit=3)
    assert ticks == [tick_at(T0 + i * S) for i in (1, 2, 3)]
    assert store.written_ticks == 5 and store.failed_writes == 0


async def test_store_writes_in_background_and_reopens(tmp_path: Path) -> None:
    s = await open_marketdata_store(tmp_path)
    s.add_bar(bar_at(T0))
    await wait_for(lambda: s.written_bars == 1)  # the writer task got it without a flush
    s.add_bar(bar_at(T0 + MIN))
    await s.close()  # close writes what is queued
    again = await open_marketdata_store(f"sqlite://{tmp_path}/journal.db")  # beside the journal
    assert len(await again.bars("AAPL.SIM")) == 2
    await again.close()


# ---- the service ------------------------------------------------------------------------------
class System:
    def __init__(self, bus: Bus, venue: VenueService, md: MarketDataService, clock: Clock) -> None:
        self.bus, self.venue, self.md, self.clock = bus, venue, md, clock
        self.ticks: list[Tick] = []
        self.bars: list[Bar] = []

    async def order(self, account: str, coid: str, side: Side, price: int, qty: int) -> VenueReply:
        reply = await self.bus.request(RPC_SUBMIT, NewOrder(account=account, client_order_id=coid, symbol="AAPL.SIM",
                                                            side=side, type=OrderType.LIMIT, price=price, qty=qty),
                                       timeout=5.0)
        assert isinstance(reply, VenueReply)
        return reply


@pytest.fixture
async def system(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[System]]]:
    made: list[tuple[System, MarketDataStore | None]] = []
    bus = await open_bus(f"memory://md-{uuid.uuid4().hex}")
    journal = await open_journal(tmp_path / "journal")
    clock = Clock()
    venue = VenueService(bus, journal, [AAPL, MSFT], clock=clock)
    await venue.start()

    async def make(*, interval: float = 0.02, store: bool = False) -> System:
        md_store = await open_marketdata_store(tmp_path / "md") if store else None
        md = MarketDataService(bus, [AAPL, MSFT], clock=clock, interval=interval, reference={"AAPL.SIM": 15_000},
                               gbm=GbmParams(volatility=0.5), seed=42, store=md_store)
        sysm = System(bus, venue, md, clock)

        async def on_tick(d: Delivery) -> None:
            assert isinstance(d.data, Tick)
            sysm.ticks.append(d.data)

        async def on_bar(d: Delivery) -> None:
            assert isinstance(d.data, Bar)
            sysm.bars.append(d.data)

        await bus.subscribe("market.tick.AAPL.SIM", on_tick)
        await bus.subscribe("market.bar.>", on_bar)
        await md.start()
        made.append((sysm, md_store))
        return sysm

    yield make
    for sysm, md_store in made:
        await sysm.md.stop()
        if md_store is not None:
            await md_store.close()
    await venue.stop()
    await journal.close()
    await bus.close()


async def test_ticks_reflect_the_real_book(system: Callable[..., Awaitable[System]]) -> None:
    s = await system()
    await s.order("alice", "b1", Side.BUY, 15_000, 100)
    await s.order("bob", "a1", Side.SELL, 15_010, 30)
    await wait_for(lambda: bool(s.ticks) and s.ticks[-1].bid == 15_000 and s.ticks[-1].ask == 15_010)
    s.clock.now += S
    await s.order("carol", "t1", Side.SELL, 15_000, 40)  # trades 40 at 150.00
    await wait_for(lambda: s.ticks[-1].last == 15_000)
    t = s.ticks[-1]
    assert (t.bid, t.bid_qty, t.ask, t.ask_qty) == (15_000, 60, 15_010, 30)
    assert (t.last, t.last_qty, t.volume, t.turnover, t.trades) == (15_000, 40, 40, 600_000, 1)
    assert t.seq == s.venue.engine.seq and t.ts == s.clock.now
    assert t.reference is not None and t.reference > 0
    ticker = await s.bus.request(RPC_TICKER, TickerRequest(symbol="AAPL.SIM"))
    assert isinstance(ticker, Tick) and (ticker.bid, ticker.last, ticker.volume) == (15_000, 15_000, 40)
    msft = await s.bus.request(RPC_TICKER, TickerRequest(symbol="MSFT.SIM"))
    assert isinstance(msft, Tick) and msft.bid is None and msft.reference is None
    err = await s.bus.request(RPC_TICKER, TickerRequest(symbol="NOPE.SIM"))
    assert isinstance(err, MarketDataError) and err.error == "unknown_symbol" and "NOPE.SIM" in err.message
    err = await s.bus.request(RPC_BARS, BarsRequest(symbol="NOPE.SIM"))
    assert isinstance(err, MarketDataError) and err.error == "unknown_symbol"
    err = await s.bus.request(RPC_BARS, BarsRequest(symbol="AAPL.SIM", interval_s=45))
    assert isinstance(err, MarketDataError) and err.error == "bad_request"


async def test_start_takes_the_existing_book(system: Callable[..., Awaitable[System]]) -> None:
    first = await system(interval=10.0)
    await first.order("alice", "b1", Side.BUY, 14_990, 7)
    s = await system(interval=10.0)  # started after the order: no depth update will come for it
    t = s.md.tick("AAPL.SIM")
    assert (t.bid, t.bid_qty) == (14_990, 7)


async def test_conflation_one_tick_per_interval(system: Callable[..., Awaitable[System]]) -> None:
    interval = 0.05
    s = await system(interval=interval)
    await wait_for(lambda: len(s.ticks) >= 1)
    loop = asyncio.get_running_loop()
    start, before = loop.time(), len(s.ticks)
    n = 200
    await asyncio.gather(*(s.order("alice", f"b{i}", Side.BUY, 14_000 + i, 1) for i in range(n)))
    await wait_for(lambda: s.ticks[-1].bid == 14_000 + n - 1)
    elapsed = loop.time() - start
    published = len(s.ticks) - before
    assert published <= elapsed / interval + 2  # at most one per interval, whatever the burst
    assert published < n / 4
    assert s.ticks[-1].bid_qty == 1 and s.ticks[-1].seq == s.venue.engine.seq


async def test_bars_from_trades_published_and_stored(system: Callable[..., Awaitable[System]]) -> None:
    s = await system(interval=0.01, store=True)
    for seq, (ts, price, qty) in enumerate(TRADES, start=1_000):
        await s.bus.publish(subjects.TRADES_EXECUTED, TradePrint(seq=seq, ts=ts, trade_id=seq, symbol="AAPL.SIM",
                                                                 price=price, qty=qty, aggressor=Side.BUY))
    await s.bus.publish(subjects.TRADES_EXECUTED, TradePrint(seq=1_000, ts=T0, trade_id=1, symbol="AAPL.SIM",
                                                             price=1, qty=1, aggressor=Side.BUY))  # a repeat
    await wait_for(lambda: len(s.bars) == 2)
    expected = BarBuilder("AAPL.SIM")
    want = [b for ts, p, q in TRADES if (b := expected.add(ts, p, q)) is not None]
    assert s.bars == want
    s.clock.now = T0 + 4 * MIN  # the clock passes the end of the open bar: the timer closes it
    await wait_for(lambda: len(s.bars) == 3)
    assert s.bars[2].start_ts == T0 + 3 * MIN and s.bars[2].volume == 4
    reply = await s.bus.request(RPC_BARS, BarsRequest(symbol="AAPL.SIM"))
    assert isinstance(reply, BarsReply) and reply.bars == s.bars
    reply = await s.bus.request(RPC_BARS, BarsRequest(symbol="AAPL.SIM", start_ts=T0 + MIN, limit=1))
    assert isinstance(reply, BarsReply) and reply.bars == [s.bars[1]]
    reply = await s.bus.request(RPC_BARS, BarsRequest(symbol="AAPL.SIM", interval_s=300))
    assert isinstance(reply, BarsReply) and reply.bars == aggregate(s.bars, 300)
    assert sum(b.volume for b in reply.bars) == 25
    assert s.md.store is not None
    await s.md.store.flush()
    assert await s.md.store.bars("AAPL.SIM") == s.bars
    recorded = await s.md.store.ticks("AAPL.SIM", limit=10_000)
    assert recorded and recorded[-1].volume == sum(q for _, _, q in TRADES)


async def test_bars_through_the_venue(system: Callable[..., Awaitable[System]]) -> None:
    s = await system(interval=0.01)
    await s.order("alice", "b1", Side.BUY, 15_000, 100)
    s.clock.now += 5 * S
    await s.order("bob", "s1", Side.SELL, 15_000, 10)
    s.clock.now += MIN
    await s.order("bob", "s2", Side.SELL, 15_000, 5)
    await wait_for(lambda: len(s.bars) == 1)
    assert (s.bars[0].start_ts, s.bars[0].volume, s.bars[0].turnover) == (T0, 10, 150_000)
