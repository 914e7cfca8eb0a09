"""Smoke test of bench/api.py: a real server subprocess, tiny counts, one JSON line with every figure.

It checks the shape and the consistency of the figures (every order answered 201, every trade delivered to
every WebSocket client), never the timings themselves.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HAS_WS = importlib.util.find_spec("tradesim.api.ws") is not None


def _latency(figures: dict[str, Any]) -> None:
    lat = figures
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99.9"] <= lat["max"]


def test_bench_api_prints_one_sane_json_line() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "api.py"), "--seconds", "0.5", "--rate", "20", "--warmup", "0.2",
         "--connections", "4", "--accounts", "4", "--ws-clients", "3", "--ws-rate", "4", "--ws-seconds", "0.5"],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout
    report = json.loads(lines[0])
    assert report["bench"] == "api" and report["accounts"] == 4
    assert set(report["targets"]) == {"saturation_orders_per_sec", "open_loop_p99_ms_at_2000"}

    open_loop = report["open_loop"]
    assert open_loop["offered_rate"] == 20 and open_loop["orders"] == 10
    assert open_loop["statuses"] == {"201": 10}
    assert open_loop["orders_per_sec"] > 0 and open_loop["seconds"] > 0
    _latency(open_loop["latency_ms"])

    saturation = report["saturation"]
    assert saturation["connections"] == 4 and saturation["orders"] > 0
    assert saturation["statuses"] == {"201": saturation["orders"]}
    _latency(saturation["latency_ms"])

    ws = report["ws_fanout"]
    if HAS_WS:
        assert ws is not None, proc.stderr[-3000:]
        assert ws["clients"] == 3 and ws["trades"] > 0
        assert ws["messages"] == ws["messages_expected"] == ws["trades"] * 3
        assert ws["min_client_messages"] == ws["trades"]
        _latency(ws["delivery_ms"])
    assert "bench/api:" in proc.stderr
