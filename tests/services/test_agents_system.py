"""Agents end to end on the embedded System: a maker keeps a two-sided book against noise traders,
skews after one-sided flow, and replays identically from the same seed and the same driven events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from tests.support.config import quiet_config
from tradesim.bus import Delivery, subjects
from tradesim.services.accounts.messages import AccountReply, GetAccount
from tradesim.services.agents import (
    AgentsConfig,
    MarketMakerAgent,
    MarketMakerParams,
    NoiseTraderAgent,
    NoiseTraderParams,
    QuoteParams,
    RiskParams,
    SymbolAgents,
    agent_accounts,
)
from tradesim.services.config import AccountConfig
from tradesim.services.marketdata.messages import Tick
from tradesim.services.system import System
from tradesim.services.venue.messages import BookReply, BookRequest, TradePrint

SYMBOL = "AAPL.SIM"
REF = 19_000  # 190.00
STEP = 100_000_000  # 100 ms of simulated time per step


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000 * 1_000_000_000

    def __call__(self) -> int:
        return self.now


def mm_params(**kw: object) -> MarketMakerParams:
    base: dict[str, object] = dict(
        quotes=QuoteParams(levels=3, base_size=100, gamma=0.02, k=0.5, inventory_unit=100),
        risk=RiskParams(position_limit=5_000), requote_interval_s=0.0, keep_history=True)
    base.update(kw)
    return MarketMakerParams(**base)  # type: ignore[arg-type]


class Harness:
    def __init__(self, system: System, clock: Clock) -> None:
        self.system = system
        self.clock = clock
        self.last_trade = 0
        self.agents: list[MarketMakerAgent | NoiseTraderAgent] = []

    async def on_print(self, d: Delivery) -> None:
        if isinstance(d.data, TradePrint):
            self.last_trade = max(self.last_trade, d.data.seq)

    async def settle(self) -> None:
        """Until every agent has seen every trade and no maker is mid-round."""
        for _ in range(500):
            await asyncio.sleep(0.002)
            if all(a.seen_seq >= self.last_trade for a in self.agents) and not any(
                    isinstance(a, MarketMakerAgent) and a.busy for a in self.agents):
                return
        raise AssertionError("agents did not settle")

    def tick(self) -> Tick:
        return Tick(symbol=SYMBOL, ts=self.clock(), seq=0, bid=None, bid_qty=0, ask=None, ask_qty=0, last=None,
                    last_qty=0, volume=0, turnover=0, trades=0, reference=REF)

    async def book(self) -> BookReply:
        reply = await self.system.bus.request("rpc.venue.book", BookRequest(symbol=SYMBOL, depth=10), timeout=5)
        assert isinstance(reply, BookReply)
        return reply

    async def position(self, account: str) -> int:
        reply = await self.system.bus.request("rpc.accounts.get", GetAccount(account=account), timeout=5)
        assert isinstance(reply, AccountReply)
        return sum(p.qty for p in reply.account.positions if p.symbol == SYMBOL)


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    h = await start_system(tmp_path)
    yield h
    await stop(h)


AGENTS = AgentsConfig(symbols=[SymbolAgents(symbol=SYMBOL, market_makers=1, noise_traders=3)])


async def start_system(tmp_path: Path) -> Harness:
    base = quiet_config(tmp_path)
    extra = [AccountConfig(id=a, cash=cash, kind=kind, currency=ccy)
             for a, (cash, kind, ccy) in agent_accounts(AGENTS, base.instruments).items()]
    config = msgspec.structs.replace(base, accounts=[*base.accounts, *extra])
    clock = Clock()
    system = System(config, clock=clock, algo_workers=0)
    await system.start()
    h = Harness(system, clock)
    await system.bus.subscribe(subjects.TRADES_EXECUTED, h.on_print)
    return h


async def stop(h: Harness) -> None:
    for agent in h.agents:
        await agent.stop()
    await h.system.stop()


async def add_agents(h: Harness, mm: MarketMakerParams, noise: NoiseTraderParams,
                     seed: int = 42) -> tuple[MarketMakerAgent, list[NoiseTraderAgent]]:
    inst = h.system.config.instrument(SYMBOL)
    maker = MarketMakerAgent(h.system.bus, "mm-AAPL.SIM-1", SYMBOL, inst, mm, clock=h.clock, seed=seed,
                             reference=REF)
    noises = [NoiseTraderAgent(h.system.bus, f"noise-AAPL.SIM-{n}", SYMBOL, inst, noise, clock=h.clock,
                               seed=seed * 100 + n, reference=REF) for n in (1, 2, 3)]
    await maker.start()
    for n in noises:
        await n.start(autorun=False)
    h.agents = [maker, *noises]
    return maker, noises


async def drive(h: Harness, maker: MarketMakerAgent, noises: list[NoiseTraderAgent], steps: int) -> None:
    """One step: 100 ms pass, the maker gets a tick, each noise trader gets one arrival, all settle."""
    for _ in range(steps):
        h.clock.now += STEP
        await maker.on_tick(h.tick())
        await h.settle()
        for n in noises:
            await n.arrive()
            await h.settle()


async def test_maker_keeps_a_two_sided_book_while_noise_trades(harness: Harness) -> None:
    maker, noises = await add_agents(harness, mm_params(), NoiseTraderParams(
        market_prob=0.5, max_lots=30, mean_distance_ticks=8, min_distance_ticks=3, order_ttl_s=2.0))
    await drive(harness, maker, noises, 40)
    book = await harness.book()
    assert book.bids and book.asks and book.bids[0][0] < book.asks[0][0]
    assert maker.fills.fills > 0, "noise market orders should have hit the maker"
    live = list(maker.executor.live.values())
    assert {o.side.value for o in live} == {"buy", "sell"}
    assert maker.executor.requests < 40 * 3, "the maker churned: it should leave quotes within the threshold alone"
    assert await harness.position(maker.account) == maker.inventory
    for n in noises:
        assert await harness.position(n.account) == n.fills.inventory


async def test_one_sided_flow_skews_the_maker_against_its_inventory(harness: Harness) -> None:
    maker, noises = await add_agents(harness, mm_params(), NoiseTraderParams(
        market_prob=1.0, buy_prob=1.0, min_lots=50, max_lots=50))
    h = harness
    h.clock.now += STEP
    await maker.on_tick(h.tick())
    await h.settle()
    flat = maker.last_quotes
    assert flat.bids and flat.asks and maker.inventory == 0
    await drive(h, maker, noises, 4)  # 12 market buys of 50 lift the maker's asks
    assert maker.inventory < 0
    assert await h.position(maker.account) == maker.inventory
    skewed = maker.last_quotes
    assert skewed.reservation > flat.reservation  # short: it wants to buy back, so it quotes higher
    assert skewed.bids[0].price > flat.bids[0].price
    book = await h.book()
    assert book.bids and book.asks


async def test_same_seed_same_driven_events_same_orders(tmp_path: Path) -> None:
    async def run(path: Path, seed: int) -> list[object]:
        h = await start_system(path)
        try:
            maker, noises = await add_agents(h, mm_params(use_depth=False), NoiseTraderParams(
                market_prob=0.4, max_lots=40, order_ttl_s=1.0, keep_history=True), seed=seed)
            await drive(h, maker, noises, 15)
            return [maker.gateway.sent, *(n.gateway.sent for n in noises), maker.inventory]
        finally:
            await stop(h)

    first = await run(tmp_path / "a", 7)
    second = await run(tmp_path / "b", 7)
    other = await run(tmp_path / "c", 8)
    assert first == second
    assert first != other
    assert len(first[0]) > 6  # type: ignore[arg-type]
