"""Configurations for tests: the demo venue on a private memory bus, without agents and with market-data
ticks an hour apart, so that the books and the tick stream hold only what a test puts in them."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import msgspec

from tradesim.services.agents.service import AgentsConfig
from tradesim.services.config import MarketDataConfig, SystemConfig, load_config


def quiet_config(data_dir: str | Path, **settings: Any) -> SystemConfig:
    config = load_config(env={}).with_settings(data_dir=str(data_dir), bus=f"memory://{uuid.uuid4().hex}",
                                               **settings)
    return msgspec.structs.replace(config, agents=AgentsConfig(), marketdata=MarketDataConfig(interval=3600.0))
