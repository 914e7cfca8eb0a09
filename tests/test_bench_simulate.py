"""bench/simulate.py runs and prints one JSON line with its figures (no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_simulate_bench_prints_its_figures() -> None:
    result = subprocess.run([sys.executable, "bench/simulate.py", "--duration", "20", "--noise", "3"],
                            capture_output=True, text=True, check=True, cwd=ROOT, timeout=300)
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    figures = json.loads(lines[0])
    assert figures["bench"] == "simulate" and figures["simulated_s"] == 20
    assert figures["trades"] > 0 and figures["events"] >= figures["trades"]
    assert figures["simulated_s_per_wall_s"] > 0 and "bench/simulate:" in result.stderr
