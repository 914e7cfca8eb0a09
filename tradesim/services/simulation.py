"""A whole-system simulation on simulated time: the embedded system, its agents, a seed, a duration.

The system runs on a `VirtualTimeLoop`, so an hour of market takes as long as its work does, and the
same configuration and seed give the same trades. What a run saw is summed up from the bus: trades
and volume from the public tape, the mean quoted spread from the market-data ticks, and every agent's
P&L from the position tracker.
"""

from __future__ import annotations

import asyncio
import math
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import msgspec

from tradesim.bus import Delivery, subjects
from tradesim.services.agents.service import agent_accounts
from tradesim.services.config import SystemConfig
from tradesim.services.marketdata.messages import Tick
from tradesim.services.oms.store import MemoryOrderStore, OrderStore
from tradesim.services.system import System
from tradesim.services.venue.messages import TradePrint
from tradesim.services.virtual_time import VirtualTimeLoop, run_simulated


class SymbolSummary(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    trades: int
    volume: int
    # Mean of (ask - bid) over the ticks that had both sides, in price units; None if there were none.
    mean_spread: Decimal | None
    last: Decimal | None


class AgentSummary(msgspec.Struct, frozen=True, kw_only=True):
    account: str
    position: dict[str, int]
    realized_pnl: Decimal
    unrealized_pnl: Decimal
    fees: Decimal
    net_pnl: Decimal  # realized + unrealized - fees


class SimulationSummary(msgspec.Struct, frozen=True, kw_only=True):
    seed: int
    simulated_s: float
    wall_s: float
    journaled_commands: int
    events: int
    trades: int
    volume: int
    symbols: list[SymbolSummary]
    agents: list[AgentSummary]

    @property
    def speedup(self) -> float:
        return self.simulated_s / self.wall_s if self.wall_s else 0.0


class _Tape:
    """Counts what the public feeds showed during the run."""

    def __init__(self) -> None:
        self.trades: dict[str, int] = {}
        self.volume: dict[str, int] = {}
        self.spread_sum: dict[str, int] = {}
        self.spread_n: dict[str, int] = {}
        self.last: dict[str, int] = {}
        self.last_seq = 0

    async def on_print(self, d: Delivery) -> None:
        t = d.data
        assert isinstance(t, TradePrint)
        self.trades[t.symbol] = self.trades.get(t.symbol, 0) + 1
        self.volume[t.symbol] = self.volume.get(t.symbol, 0) + t.qty
        self.last[t.symbol] = t.price
        self.last_seq = t.seq

    async def on_tick(self, d: Delivery) -> None:
        tick = d.data
        assert isinstance(tick, Tick)
        if tick.bid is not None and tick.ask is not None:
            self.spread_sum[tick.symbol] = self.spread_sum.get(tick.symbol, 0) + tick.ask - tick.bid
            self.spread_n[tick.symbol] = self.spread_n.get(tick.symbol, 0) + 1


def simulate(config: SystemConfig, duration_s: float, *, seed: int | None = None,
             progress: Callable[[str], None] | None = None, progress_every_s: float = 60.0) -> SimulationSummary:
    """Runs the system for `duration_s` simulated seconds and returns what happened.

    `seed` replaces the agents' and the market data's seeds. Without a `data_dir` of its own in the
    configuration's settings (the default `./data`), the run uses a fresh temporary directory, and
    the OMS keeps its orders in memory: nothing outlives the run there, so SQLite would only cost time.
    """
    if seed is not None:
        config = msgspec.structs.replace(
            config, agents=msgspec.structs.replace(config.agents, seed=seed),
            marketdata=msgspec.structs.replace(config.marketdata, seed=seed))
    with tempfile.TemporaryDirectory(prefix="tradesim-sim-") as scratch:
        throwaway = config.settings.data_dir == "./data" and not config.settings.db
        if throwaway:
            config = config.with_settings(data_dir=str(Path(scratch) / "data"))
        if config.settings.bus == "memory://":
            config = config.with_settings(bus=f"memory://simulation-{Path(scratch).name}")
        return run_simulated(lambda loop: _run(loop, config, duration_s, progress, progress_every_s,
                                               MemoryOrderStore() if throwaway else None))


async def _run(loop: VirtualTimeLoop, config: SystemConfig, duration_s: float,
               progress: Callable[[str], None] | None, progress_every_s: float,
               order_store: OrderStore | None) -> SimulationSummary:
    say = progress or (lambda _: None)
    started = time.perf_counter()
    system = System(config, clock=loop.clock_ns, fsync=False, progress=say, order_store=order_store)
    await system.start()
    tape = _Tape()
    bus = system.bus
    await bus.subscribe(subjects.TRADES_EXECUTED, tape.on_print)
    await bus.subscribe("market.tick.>", tape.on_tick)
    begin = loop.time()
    try:
        steps = max(1, math.ceil(duration_s / progress_every_s))
        for step in range(1, steps + 1):
            done = min(step * progress_every_s, duration_s)
            await asyncio.sleep(max(0.0, begin + done - loop.time()))
            wall = time.perf_counter() - started
            say(f"simulated {_hms(done)} of {_hms(duration_s)}: {sum(tape.trades.values()):,} trades, "
                f"{done / wall:,.0f}x real time")
        assert system.venue is not None and system.accounts is not None
        events = system.venue.engine.seq
        journaled = system.journal.last_seq
        if tape.last_seq:  # the tracker has booked every trade the tape showed
            await system.accounts.wait_for_seq(tape.last_seq, timeout=5)
        summary = _summarise(system, tape, duration_s, time.perf_counter() - started, events, journaled)
    finally:
        await system.stop()
    return msgspec.structs.replace(summary, wall_s=time.perf_counter() - started)


def _summarise(system: System, tape: _Tape, duration_s: float, wall_s: float, events: int,
               journaled: int) -> SimulationSummary:
    config = system.config
    assert system.accounts is not None
    symbols = []
    for instrument in config.instruments:
        s = instrument.symbol
        n = tape.spread_n.get(s, 0)
        spread = instrument.tick_size * Decimal(tape.spread_sum[s]) / n if n else None
        last = tape.last.get(s)
        if spread is not None:
            spread = spread.quantize(instrument.tick_size / 100)
        symbols.append(SymbolSummary(symbol=s, trades=tape.trades.get(s, 0), volume=tape.volume.get(s, 0),
                                     mean_spread=spread, last=None if last is None else instrument.from_ticks(last)))
    agents = []
    ledger = system.accounts.ledger
    for account in agent_accounts(config.agents, config.instruments):
        view = ledger.account(account)
        agents.append(AgentSummary(
            account=account, position={p.symbol: p.qty for p in view.positions if p.qty},
            realized_pnl=view.realized_pnl, unrealized_pnl=view.unrealized_pnl, fees=view.fees,
            net_pnl=view.realized_pnl + view.unrealized_pnl - view.fees))
    return SimulationSummary(
        seed=config.agents.seed, simulated_s=duration_s, wall_s=wall_s, journaled_commands=journaled,
        events=events, trades=sum(tape.trades.values()), volume=sum(tape.volume.values()),
        symbols=symbols, agents=agents)


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"
