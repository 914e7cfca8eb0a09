"""The embedded system: every service in one asyncio process, started and stopped in the right order.

Venue, OMS (with its algo desk), position tracker, risk monitor, market data, algo workers and the
simulated participants (market makers, noise traders) share one bus and one journal.

Start-up is event sourcing end to end: the venue recovers its engine from the journal (snapshot +
tail), and the projections that live only in memory — positions, risk states, the OMS's view of the
venue's orders — are rebuilt by replaying the journal through a scratch engine and publishing the
regenerated events before the venue takes new commands. Shutdown drains in the reverse order, so
that nothing acknowledged is lost and the venue writes a final snapshot.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

from tradesim.bus import Bus, open_bus, subjects
from tradesim.domain import Event, Trade
from tradesim.engine import MatchingEngine
from tradesim.services.accounts.service import AccountsService
from tradesim.services.agents.service import AgentsService
from tradesim.services.algos.worker import AlgoWorker
from tradesim.services.config import SystemConfig
from tradesim.services.lobster import LobsterReplay, LobsterStats
from tradesim.services.marketdata.service import MarketDataService
from tradesim.services.marketdata.store import MarketDataStore, open_marketdata_store
from tradesim.services.oms.service import OmsService
from tradesim.services.oms.store import OrderStore, SqliteOrderStore
from tradesim.services.risk.monitor import RiskMonitorService
from tradesim.services.roles import build
from tradesim.services.signals.service import DecisionAgent  # signals
from tradesim.services.venue.service import EVENT_SUBJECTS, VenueService, trade_print
from tradesim.store import Journal, open_journal

log = logging.getLogger("tradesim.system")

Progress = Callable[[str], None]


class System:
    """Every service on one bus and one journal, as `tradesim run` and `tradesim simulate` run them.

    `fsync=False` turns off the journal's fsync (SQLite `synchronous=OFF`): for simulations, which can
    be run again, never for a venue whose acknowledgements mean something. `order_store` replaces the
    OMS's `<data_dir>/oms.db`: a simulation in a scratch directory keeps its orders in memory (its
    SQLite transaction per OMS batch was ~15% of a simulation's time, for a file deleted at the end).
    """

    def __init__(self, config: SystemConfig, *, clock: Callable[[], int] = time.time_ns,
                 progress: Progress | None = None, fsync: bool = True, algo_workers: int = 1,
                 order_store: OrderStore | None = None) -> None:
        self.config = config
        self.clock = clock
        self._progress = progress or (lambda message: log.info(message))
        self._fsync = fsync
        self._algo_workers = algo_workers
        self._order_store = order_store
        self._bus: Bus | None = None
        self._journal: Journal | None = None
        self._md_store: MarketDataStore | None = None
        self.venue: VenueService | None = None
        self.oms: OmsService | None = None
        self.accounts: AccountsService | None = None
        self.risk: RiskMonitorService | None = None
        self.marketdata: MarketDataService | None = None
        self.agents: AgentsService | None = None
        self.workers: list[AlgoWorker] = []
        self.signals: DecisionAgent | None = None  # signals: the webhook's decision agent
        self.replays: list[LobsterReplay] = []
        self._replay_tasks: list[asyncio.Task[object]] = []
        self.replayed_events = 0

    @property
    def bus(self) -> Bus:
        if self._bus is None:
            raise RuntimeError("the system is not started")
        return self._bus

    @property
    def journal(self) -> Journal:
        if self._journal is None:
            raise RuntimeError("the system is not started")
        return self._journal

    async def start(self) -> None:
        settings = self.config.settings
        data_dir = Path(settings.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        self._bus = bus = await open_bus(settings.bus)
        self._journal = journal = await open_journal(settings.journal_target,
                                                     synchronous="FULL" if self._fsync else "OFF")
        self._md_store = await open_marketdata_store(settings.db or settings.data_dir)
        config = self.config
        instruments = config.instruments
        accounts = config.trading_accounts()
        self.accounts = build.accounts_service(bus, config, clock=self.clock)
        self.risk = build.risk_monitor(bus, config)
        orders = self._order_store if self._order_store is not None else SqliteOrderStore(
            data_dir / "oms.db", synchronous="NORMAL" if self._fsync else "OFF")
        self.oms = build.oms_service(bus, config, clock=self.clock, store=orders)
        await self.accounts.start()
        await self.risk.start()
        await self.oms.start()
        await self._rebuild_projections(bus, journal)
        self.venue = VenueService(bus, journal, instruments, clock=self.clock,
                                  snapshot_every=settings.snapshot_every)
        await self.venue.start()
        self.marketdata = build.marketdata_service(bus, config, clock=self.clock, store=self._md_store)
        await self.marketdata.start()
        self.workers = [AlgoWorker(bus, f"algo-{n + 1}", clock=self.clock, settings=config.algos)
                        for n in range(self._algo_workers)]
        for worker in self.workers:
            await worker.start()
        self.agents = build.agents_service(bus, config, clock=self.clock)
        await self.agents.start()
        if config.signals.enabled:  # signals: webhook signals -> order intents -> OMS
            self.signals = build.decision_agent(bus, config, clock=self.clock)
            await self.signals.start()
        for replay in config.replays:
            runner = LobsterReplay(bus, replay.messages, config.instrument(replay.symbol),
                                   speed=replay.speed or None,
                                   limit=replay.limit, clock=self.clock, on_progress=self._replay_progress)
            self.replays.append(runner)
            self._replay_tasks.append(asyncio.create_task(runner.run(), name=f"lobster-{replay.symbol}"))
        self._progress(f"venue serving at journal seq {journal.last_seq} ({len(instruments)} instruments, "
                       f"{len(accounts)} accounts, {len(self.agents.agents)} agents)")

    async def stop(self) -> None:
        """Stops taking orders, drains what is in flight, snapshots, and closes the journal and the bus."""
        if self.signals is not None:  # signals
            await self.signals.stop()
        for runner in self.replays:
            runner.stop()
        await asyncio.gather(*self._replay_tasks, return_exceptions=True)
        if self.agents is not None:
            await self.agents.stop()
        for worker in self.workers:
            await worker.stop()
        for service in (self.marketdata, self.oms, self.venue, self.risk, self.accounts):
            if service is not None:
                await service.stop()
        if self._md_store is not None:
            await self._md_store.close()
        if self._journal is not None:
            await self._journal.close()
        if self._bus is not None:
            await self._bus.close()
        self._journal = self._bus = self._md_store = None

    def _replay_progress(self, stats: LobsterStats) -> None:
        self._progress(f"LOBSTER replay: {stats.lines:,} lines, {stats.commands:,} commands, "
                       f"{stats.trades:,} trades, {stats.unknown_ids:,} orders from before the file")

    async def _rebuild_projections(self, bus: Bus, journal: Journal) -> None:
        """Replays the journal through a scratch engine and publishes what it regenerates, in seq order,
        so that in-memory projections come back exactly as they were (the OMS and the trackers dedupe)."""
        if journal.last_seq == 0:
            return
        self._progress(f"rebuilding positions and orders from {journal.last_seq:,} journaled commands")
        engine = MatchingEngine()
        last_trade = 0
        count = 0
        async for record in journal.read(1):
            events: list[Event] = engine.apply(record.command)
            for event in events:
                await bus.publish(EVENT_SUBJECTS[type(event)], event)
                if isinstance(event, Trade):
                    await bus.publish(subjects.TRADES_EXECUTED, trade_print(event))
                    last_trade = event.seq
            count += len(events)
            if record.seq % 100_000 == 0:
                self._progress(f"  replayed {record.seq:,} commands")
        self.replayed_events = count
        if last_trade:
            assert self.accounts is not None and self.risk is not None
            await self.accounts.wait_for_seq(last_trade, timeout=60)
            await self.risk.wait_for_seq(last_trade, timeout=60)
        self._progress(f"rebuilt from {count:,} events")
