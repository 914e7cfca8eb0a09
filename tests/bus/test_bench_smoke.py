"""bench/bus.py runs end to end with a tiny count and prints one JSON line with every figure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tradesim.bus.natsserver import NatsServerNotFoundError, find_nats_server

ROOT = Path(__file__).resolve().parents[2]
FIELDS = {"pubsub_p50_us", "pubsub_p99_us", "msgs_per_s", "rpc_p50_us", "rpc_p99_us", "meets_target"}


@pytest.mark.timeout(120)
def test_bench_prints_one_json_line() -> None:
    try:
        find_nats_server()
    except NatsServerNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bus.py"), "--count", "50"],
        capture_output=True,
        text=True,
        timeout=110,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout
    result = json.loads(lines[0])
    assert result["bench"] == "bus" and result["count"] == 50
    for backend in ("memory", "nats"):
        figures = result[backend]
        assert figures.keys() >= FIELDS, figures
        for f in FIELDS - {"meets_target"}:
            assert figures[f] > 0, (backend, f)
        assert figures["pubsub_p50_us"] <= figures["pubsub_p99_us"]
    assert "bench/bus:" in proc.stderr, "progress goes to stderr"
