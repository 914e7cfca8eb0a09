"""Each service built from the system configuration, once: the embedded `System` and the role processes
both call these, so that a service runs with the same settings whether it shares a process or not."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tradesim.bus import Bus
from tradesim.services.accounts.service import AccountsService
from tradesim.services.agents.service import AgentsService
from tradesim.services.config import SystemConfig
from tradesim.services.marketdata.service import MarketDataService
from tradesim.services.marketdata.store import MarketDataStore
from tradesim.services.oms.service import OmsService
from tradesim.services.risk.monitor import RiskMonitorService
from tradesim.services.signals.service import DecisionAgent

Clock = Callable[[], int]


def accounts_service(bus: Bus, config: SystemConfig, *, clock: Clock = time.time_ns,
                     follow: bool = False) -> AccountsService:
    """The position tracker over every traded account; `follow` reads the venue's event stream from its start."""
    return AccountsService(bus, config.instruments, config.trading_accounts(), clock=clock, follow=follow)


def risk_monitor(bus: Bus, config: SystemConfig, *, follow: bool = False) -> RiskMonitorService:
    """The post-trade risk monitor over every traded account, with the `[monitor]` settings."""
    return RiskMonitorService(bus, config.instruments, config.trading_accounts(), config.monitor, follow=follow)


def oms_service(bus: Bus, config: SystemConfig, *, clock: Clock = time.time_ns, **options: Any) -> OmsService:
    """The OMS with the configured risk and compliance packs; `options` are OmsService's keywords (stores, …)."""
    return OmsService(bus, config.instruments, config.trading_accounts(), config.risk, config.compliance,
                      clock=clock, reference_prices=config.reference_prices, **options)


def marketdata_service(bus: Bus, config: SystemConfig, *, clock: Clock = time.time_ns,
                       store: MarketDataStore | None = None,
                       active: Callable[[], bool] | None = None) -> MarketDataService:
    """Ticks and bars with the `[marketdata]` settings; `active` gates publishing (single-active roles)."""
    md = config.marketdata
    return MarketDataService(
        bus, config.instruments, clock=clock, interval=md.interval, reference=config.reference_prices,
        gbm={i.symbol: md.symbols.get(i.symbol, md.gbm) for i in config.instruments}, seed=md.seed,
        store=store, record_every=md.record_every, active=active)


def agents_service(bus: Bus, config: SystemConfig, *, clock: Clock = time.time_ns) -> AgentsService:
    """The configured market makers and noise traders."""
    return AgentsService(bus, config.agents, config.instruments, clock=clock,
                         reference_prices=config.reference_prices)


def decision_agent(bus: Bus, config: SystemConfig, *, clock: Clock = time.time_ns) -> DecisionAgent:
    """The signals webhook's decision agent (only meaningful when `[signals] enabled`)."""
    return DecisionAgent(bus, config.signals, config.instruments, clock=clock,
                         reference_prices=config.reference_prices)
