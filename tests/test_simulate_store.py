"""Where a simulation keeps its OMS orders: memory in a scratch run, `<data_dir>/oms.db` in a kept one."""

from __future__ import annotations

from pathlib import Path

import msgspec

from tradesim.services.agents.service import AgentsConfig, SymbolAgents
from tradesim.services.config import SystemConfig, load_config
from tradesim.services.simulation import simulate


def small_config() -> SystemConfig:
    config = load_config(env={})
    return msgspec.structs.replace(config, agents=AgentsConfig(symbols=[
        SymbolAgents(symbol="AAPL.SIM", market_makers=1, noise_traders=4)]))


def test_kept_data_dir_gets_the_sqlite_order_store_and_the_same_market(tmp_path: Path) -> None:
    scratch = msgspec.to_builtins(simulate(small_config(), 20, seed=3))
    kept = msgspec.to_builtins(simulate(small_config().with_settings(data_dir=str(tmp_path)), 20, seed=3))
    assert (tmp_path / "oms.db").exists()
    scratch.pop("wall_s")
    kept.pop("wall_s")
    assert kept == scratch and kept["trades"] > 0
