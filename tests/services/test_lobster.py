"""LOBSTER replay: the whole AMZN sample through a real MatchingEngine, a prefix through the venue on a
memory bus, and bad or surprising input (malformed lines, ids that predate the file)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path

import pytest

from tradesim.bus import open_bus
from tradesim.domain import CancelOrder, Instrument, ModifyOrder, NewOrder, OrderType, Side, TimeInForce
from tradesim.engine import MatchingEngine
from tradesim.services.lobster import (
    LobsterError,
    LobsterReplay,
    LobsterStats,
    day_start_ns,
    lobster_commands,
    read_messages,
    replay_into_engine,
)
from tradesim.services.venue import VenueService
from tradesim.store import open_journal

pytestmark = pytest.mark.timeout(120)

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "lobster"  # ../shared beside the repository
MESSAGES = DATA / "AMZN_2012-06-21_34200000_57600000_message_1.csv"
ORDERBOOK = DATA / "AMZN_2012-06-21_34200000_57600000_orderbook_1.csv"
AMZN = Instrument(symbol="AMZN.SIM", tick_size=Decimal("0.01"))


@pytest.fixture
def lobster_sample() -> Path:
    """The AMZN sample from ../shared/data/lobster; missing, it is a failure that says where it belongs."""
    if not MESSAGES.exists():
        pytest.fail(f"LOBSTER sample missing: expected {MESSAGES} (the repository's ../shared/data/lobster)")
    return MESSAGES


needs_sample = pytest.mark.usefixtures("lobster_sample")


@needs_sample
def test_whole_amzn_sample_through_an_engine() -> None:
    engine = MatchingEngine([AMZN])
    stats = replay_into_engine(engine, MESSAGES, AMZN)
    assert stats.lines == 57_515
    assert (stats.new, stats.modifies, stats.hidden_executions, stats.halts) == (27_845, 16 - 4, 2_445, 0)
    assert stats.executions == 5_896 and stats.unknown_ids == 7_475
    # every execution traded exactly the order it targeted, and the engine refused nothing
    assert stats.trades == stats.executions and stats.mismatched == 0 and stats.rejected == 0
    assert stats.commands == stats.new + stats.modifies + stats.cancels + stats.executions + stats.stale_cancels
    # the top of book at the close is the file's (the quantities may lack orders older than the file)
    last = ORDERBOOK.read_text().strip().splitlines()[-1].split(",")
    book = engine.book("AMZN.SIM")
    assert book.best_ask() == int(last[0]) // 100 and book.best_bid() == int(last[2]) // 100


@needs_sample
def test_without_the_orderbook_file_it_still_runs() -> None:
    engine = MatchingEngine([AMZN])
    stats = replay_into_engine(engine, MESSAGES, AMZN, orderbook=None)
    assert stats.lines == 57_515 and stats.executions == 5_896
    assert stats.mismatched < stats.executions // 5  # stale orders are only caught at executions


def test_mapping_and_unknown_ids(tmp_path: Path) -> None:
    f = tmp_path / "X_2012-06-21_34200000_57600000_message_1.csv"
    f.write_text(
        "34200.5,1,11,100,1500100,1\n"  # new buy 150.01 x 100
        "34200.6,2,11,30,1500100,1\n"  # partial cancel 30 → total 70
        "34200.7,4,11,20,1500100,1\n"  # execution of 20 → a sell IOC from the taker
        "34200.8,3,99,10,1500200,-1\n"  # delete of an order older than the file
        "34200.9,5,0,5,1500150,-1\n"  # hidden execution
        "34201.0,7,0,0,-1,-1\n"  # halt
        "34201.1,3,11,50,1500100,1\n"  # delete the rest
    )
    x = Instrument(symbol="X.SIM", tick_size=Decimal("0.01"))
    stats = LobsterStats()
    cmds = list(lobster_commands(f, x, stats=stats))
    midnight = day_start_ns(f)
    assert midnight == 1_340_236_800 * 1_000_000_000
    assert cmds == [
        NewOrder(account="lobster", client_order_id="11", symbol="X.SIM", side=Side.BUY, type=OrderType.LIMIT,
                 tif=TimeInForce.GTC, price=15001, qty=100, ts=midnight + 34_200_500_000_000),
        ModifyOrder(account="lobster", client_order_id="11", symbol="X.SIM", qty=70, ts=midnight + 34_200_600_000_000),
        NewOrder(account="lobster-taker", client_order_id="11-3", symbol="X.SIM", side=Side.SELL,
                 type=OrderType.LIMIT, tif=TimeInForce.IOC, price=15001, qty=20, ts=midnight + 34_200_700_000_000),
        CancelOrder(account="lobster", client_order_id="11", symbol="X.SIM", ts=midnight + 34_201_100_000_000),
    ]
    assert (stats.unknown_ids, stats.hidden_executions, stats.halts, stats.commands) == (1, 1, 1, 4)
    engine = MatchingEngine([x])
    stats = replay_into_engine(engine, f, x)
    assert (stats.trades, stats.traded_qty, stats.rejected, stats.mismatched) == (1, 20, 0, 0)
    assert engine.book("X.SIM").depth(1) == ([], [])


def test_malformed_line_names_the_line(tmp_path: Path) -> None:
    f = tmp_path / "bad.csv"
    f.write_text("34200.5,1,11,100,1500100,1\n34200.6,1,12,abc,1500100,1\n")
    with pytest.raises(LobsterError, match=r"bad.csv:2: .*abc"):
        list(read_messages(f))
    f.write_text("34200.5,9,11,100,1500100,1\n")
    with pytest.raises(LobsterError, match=r"bad.csv:1: unknown event type 9"):
        list(read_messages(f))
    f.write_text("34200.5,1,11,100,1500150,1\n")  # 150.015: not on a 0.01 tick
    with pytest.raises(LobsterError, match=r"bad.csv:1: .*not a multiple of tick"):
        list(lobster_commands(f, AMZN))


@needs_sample
async def test_prefix_through_the_venue_on_the_memory_bus(tmp_path: Path) -> None:
    lines = 1_500
    bus = await open_bus(f"memory://lobster-{uuid.uuid4().hex}")
    journal = await open_journal(tmp_path)
    venue = VenueService(bus, journal, [AMZN])
    await venue.start()
    progress: list[int] = []
    try:
        replay = LobsterReplay(bus, MESSAGES, AMZN, limit=lines, progress_every=500,
                               on_progress=lambda s: progress.append(s.lines))
        stats = await replay.run()
    finally:
        await venue.stop()
        await journal.close()
        await bus.close()
    engine = MatchingEngine([AMZN])
    direct = replay_into_engine(engine, MESSAGES, AMZN, limit=lines)
    assert stats.lines == direct.lines == lines
    assert (stats.commands, stats.trades, stats.traded_qty) == (direct.commands, direct.trades, direct.traded_qty)
    assert stats.rejected == 0 and stats.mismatched == 0 and stats.trades > 0
    assert venue.engine.book("AMZN.SIM").depth(10) == engine.book("AMZN.SIM").depth(10)
    assert len(progress) == direct.commands // 500 and progress == sorted(progress)


@needs_sample
def test_docs_example_runs(tmp_path: Path) -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "marketdata.md").read_text()
    example = doc.split("```python\n")[2].split("```")[0]
    script = tmp_path / "example.py"
    script.write_text(example)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    assert "mismatched=0" in done.stdout and "progress" in done.stdout
