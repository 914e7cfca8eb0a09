"""`AgentsService`: builds the configured market makers and noise traders and starts/stops them together.

Account ids are `mm-{SYMBOL}-{n}` and `noise-{SYMBOL}-{n}` (n from 1); `agent_accounts(config)` gives the
`{account: (cash, kind, currency)}` the runtime must open in the OMS and the ledger before starting.
Seeds derive from `AgentsConfig.seed`, the symbol and the agent's index, so adding a symbol does not
change the flow of the others.
"""

from __future__ import annotations

import zlib
from decimal import Decimal

import msgspec

from tradesim.bus import Bus
from tradesim.domain import Instrument
from tradesim.services.agents.feed import SharedFeed
from tradesim.services.agents.gateway import Clock
from tradesim.services.agents.market_maker import MarketMakerAgent, MarketMakerParams
from tradesim.services.agents.noise import NoiseTraderAgent, NoiseTraderParams


class SymbolAgents(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How many agents of each kind trade one symbol, and with what."""

    symbol: str
    market_makers: int = 1
    noise_traders: int = 5
    market_maker: MarketMakerParams = MarketMakerParams()
    noise: NoiseTraderParams = NoiseTraderParams()
    mm_cash: Decimal = Decimal(5_000_000)
    noise_cash: Decimal = Decimal(1_000_000)
    kind: str = "margin"  # account kind (margin lets agents go short without borrowing rules)


class AgentsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    symbols: list[SymbolAgents] = []
    seed: int = 0


def mm_account(symbol: str, n: int) -> str:
    return f"mm-{symbol}-{n}"


def noise_account(symbol: str, n: int) -> str:
    return f"noise-{symbol}-{n}"


def agent_seed(base: int, symbol: str, kind: str, n: int) -> int:
    """Stable across processes (crc32, not hash(), which is salted per process)."""
    return (base * 1_000_003 + zlib.crc32(f"{kind}:{symbol}:{n}".encode())) & 0x7FFF_FFFF


def agent_accounts(config: AgentsConfig, instruments: list[Instrument]) -> dict[str, tuple[Decimal, str, str]]:
    """`{account: (cash, kind, currency)}` for every agent, in the instrument's currency."""
    currency = {i.symbol: i.currency for i in instruments}
    accounts: dict[str, tuple[Decimal, str, str]] = {}
    for s in config.symbols:
        if s.symbol not in currency:
            raise ValueError(f"agents: unknown symbol {s.symbol!r}")
        for n in range(1, s.market_makers + 1):
            accounts[mm_account(s.symbol, n)] = (s.mm_cash, s.kind, currency[s.symbol])
        for n in range(1, s.noise_traders + 1):
            accounts[noise_account(s.symbol, n)] = (s.noise_cash, s.kind, currency[s.symbol])
    return accounts


Agent = MarketMakerAgent | NoiseTraderAgent


class AgentsService:
    """Owns every agent of the config; `start()` starts makers first so noise meets a quoted book."""

    def __init__(self, bus: Bus, config: AgentsConfig, instruments: list[Instrument], *, clock: Clock,
                 reference_prices: dict[str, int] | None = None) -> None:
        by_symbol = {i.symbol: i for i in instruments}
        refs = reference_prices or {}
        self.makers: list[MarketMakerAgent] = []
        self.noise: list[NoiseTraderAgent] = []
        self.feed = SharedFeed(bus)
        for s in config.symbols:
            instrument = by_symbol.get(s.symbol)
            if instrument is None:
                raise ValueError(f"agents: unknown symbol {s.symbol!r}")
            ref = refs.get(s.symbol)
            for n in range(1, s.market_makers + 1):
                self.makers.append(MarketMakerAgent(
                    bus, mm_account(s.symbol, n), s.symbol, instrument, s.market_maker, clock=clock,
                    seed=agent_seed(config.seed, s.symbol, "mm", n), reference=ref, feed=self.feed))
            for n in range(1, s.noise_traders + 1):
                self.noise.append(NoiseTraderAgent(
                    bus, noise_account(s.symbol, n), s.symbol, instrument, s.noise, clock=clock,
                    seed=agent_seed(config.seed, s.symbol, "noise", n), reference=ref, feed=self.feed))

    @property
    def agents(self) -> list[Agent]:
        return [*self.makers, *self.noise]

    async def start(self) -> None:
        for agent in self.agents:
            await agent.start()
        for maker in self.makers:
            await maker.requote()

    async def stop(self) -> None:
        for agent in reversed(self.agents):
            await agent.stop()
