"""`tradesim simulate`: the whole system with agents on simulated time — reproducible from a seed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from tradesim.cli import CliError, main
from tradesim.cli.simulate import parse_duration
from tradesim.services.agents.service import AgentsConfig, SymbolAgents
from tradesim.services.config import SystemConfig, load_config
from tradesim.services.simulation import simulate

ROOT = Path(__file__).resolve().parent.parent

SMALL = """
[[instruments]]
symbol = "AAPL.SIM"
tick_size = "0.01"
flags = ["shortable"]
reference_price = "190.00"

[[agents.symbols]]
symbol = "AAPL.SIM"
market_makers = 1
noise_traders = 4
"""


def small_config() -> SystemConfig:
    config = load_config(env={})
    return msgspec.structs.replace(config, agents=AgentsConfig(symbols=[
        SymbolAgents(symbol="AAPL.SIM", market_makers=1, noise_traders=4)]))


def comparable(summary: object) -> dict[str, object]:
    data = msgspec.to_builtins(summary)
    assert isinstance(data, dict)
    data.pop("wall_s")
    return data


def test_same_seed_same_market_and_a_two_sided_book() -> None:
    first = simulate(small_config(), 60, seed=11)
    again = simulate(small_config(), 60, seed=11)
    other = simulate(small_config(), 60, seed=12)
    assert comparable(first) == comparable(again)
    assert comparable(first) != comparable(other)
    aapl = next(s for s in first.symbols if s.symbol == "AAPL.SIM")
    assert first.trades > 20 and aapl.trades == first.trades
    assert aapl.mean_spread is not None and aapl.mean_spread > 0  # the maker kept both sides
    assert sum(sum(a.position.values()) for a in first.agents) == 0  # every trade has two agent sides
    assert {a.account for a in first.agents} == {"mm-AAPL.SIM-1", *(f"noise-AAPL.SIM-{n}" for n in range(1, 5))}


def test_reproducible_across_processes_and_hash_seeds(tmp_path: Path) -> None:
    config = tmp_path / "small.toml"
    config.write_text(SMALL)
    outputs = []
    for hash_seed in ("1", "2"):
        result = subprocess.run(
            [sys.executable, "-m", "tradesim", "simulate", "--config", str(config), "--duration", "30s",
             "--seed", "5", "--json", "--quiet"],
            capture_output=True, text=True, check=True, cwd=ROOT, env={**os.environ, "PYTHONHASHSEED": hash_seed})
        summary = json.loads(result.stdout)
        summary.pop("wall_s")
        outputs.append(summary)
    assert outputs[0] == outputs[1] and outputs[0]["trades"] > 0


def test_cli_prints_a_summary_with_progress(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "small.toml"
    config.write_text(SMALL)
    assert main(["simulate", "--config", str(config), "--duration", "2m", "--seed", "1"]) == 0
    out, err = capsys.readouterr()
    assert "simulated 00:01:00 of 00:02:00" in err and "simulated 00:02:00 of 00:02:00" in err
    assert "AAPL.SIM" in out and "mm-AAPL.SIM-1" in out and "net P&L" in out


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("15m", 900), ("1h", 3600), ("1h30m", 5400),
                                               ("2.5", 2.5)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "1d", "-5", "0", "h"])
def test_bad_duration_is_refused(text: str) -> None:
    with pytest.raises(CliError, match="duration"):
        parse_duration(text)


def test_a_config_without_agents_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "none.toml"
    config.write_text('[[instruments]]\nsymbol = "X.SIM"\ntick_size = "0.01"\n')
    assert main(["simulate", "--config", str(config), "--duration", "10s"]) == 2
    assert "no agents" in capsys.readouterr().err
