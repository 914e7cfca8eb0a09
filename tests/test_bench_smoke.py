"""Smoke test of bench/engine.py: each workload runs with a tiny --ops and prints one sane JSON line.

It checks the shape and the consistency of the figures, never the timings themselves.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_bench(*args: str) -> tuple[dict[str, object], str]:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "engine.py"), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
    )
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout
    return json.loads(lines[0]), proc.stderr


@pytest.mark.parametrize("workload", ["mixed", "exchange_core"])
def test_workload_prints_one_sane_json_line(workload: str) -> None:
    report, stderr = run_bench("--workload", workload, "--ops", "3000", "--seed", "7")
    assert report["bench"] == "engine" and report["workload"] == workload and report["seed"] == 7
    results = report["results"]
    assert isinstance(results, dict) and list(results) == [workload]
    figures = results[workload]
    assert figures["ops"] == 3000 + figures["prefill_ops"]
    assert figures["ops_per_sec"] > 0 and figures["seconds"] > 0
    lat = figures["latency_ns"]
    assert 0 < lat["p50"] <= lat["p99"] <= lat["p99.9"] <= lat["max"]
    assert figures["latency_samples"] == -(-figures["ops"] // figures["latency_sample_every"])
    assert figures["trades"] > 0
    assert figures["events"] >= figures["ops"]  # every command yields at least one event
    assert figures["resting_orders"] > 0 and figures["price_levels"] > 0
    assert "generating" in stderr and "ran" in stderr  # progress goes to stderr
    if workload == "exchange_core":
        assert 500 <= figures["resting_orders"] <= 1500 and figures["prefill_ops"] >= 1000


def test_all_runs_both_and_is_reproducible() -> None:
    first, _ = run_bench("--workload", "all", "--ops", "1500", "--seed", "3")
    again, _ = run_bench("--workload", "all", "--ops", "1500", "--seed", "3")
    results, results_again = first["results"], again["results"]
    assert isinstance(results, dict) and isinstance(results_again, dict)
    assert set(results) == {"mixed", "exchange_core"}
    for name in results:  # same seed: same workload, so the same counts (timings may differ)
        for key in ("ops", "events", "trades", "resting_orders", "price_levels"):
            assert results[name][key] == results_again[name][key], (name, key)
