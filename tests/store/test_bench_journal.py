"""Smoke test of bench/journal.py: one JSON line with the figures for both backends (not the timings)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.pg import server_url

ROOT = Path(__file__).resolve().parents[2]
FIGURES = {"appends", "seconds", "appends_per_s", "ack_p50_ms", "ack_p99_ms", "ack_max_ms", "transactions",
           "avg_batch", "chain_verified", "durability"}


def test_bench_prints_one_json_line_per_run() -> None:
    done = subprocess.run([sys.executable, "bench/journal.py", "--count", "300", "--writers", "10",
                           "--pg-url", server_url()],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout
    result = json.loads(lines[0])
    assert result["bench"] == "journal" and result["writers"] == 10
    for backend in ("sqlite", "postgres"):
        figures = result[backend]
        assert "error" not in figures, figures
        assert set(figures) >= FIGURES, figures
        assert figures["appends"] == 300 and figures["chain_verified"] is True
        assert figures["transactions"] <= figures["appends"]
    assert "bench/journal:" in done.stderr
