"""Smoke test of `bench/journal.py --backends jetstream`: the JSON line carries the journal figures and the
standby lag run, and the standby's engine equals a replay (the figures themselves are not asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.nats_server import nats_server, nats_url  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parents[2]


def test_bench_jetstream_backend_prints_journal_and_standby_figures(nats_url: str) -> None:  # noqa: F811
    done = subprocess.run([sys.executable, "bench/journal.py", "--backends", "jetstream", "--count", "300",
                           "--writers", "10", "--nats-url", nats_url, "--lag-rate", "500", "--lag-seconds", "0.5"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout
    figures = json.loads(lines[0])["jetstream"]
    assert "error" not in figures, figures
    assert figures["appends"] == 300 and figures["chain_verified"] is True
    lag = figures["standby_lag"]
    assert lag["orders"] == lag["applied"] == 250
    assert lag["standby_equals_replay"] is True
    assert {"lag_p50_ms", "lag_p99_ms", "lag_max_ms", "rate_per_s"} <= set(lag)
