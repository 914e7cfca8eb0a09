"""bench/oms.py runs end to end and reports its fields (timings are the machine's business)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "oms.py"


async def test_bench_oms_reports_its_fields() -> None:
    spec = importlib.util.spec_from_file_location("bench_oms", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_oms"] = module
    spec.loader.exec_module(module)
    result = await module.run(orders=120, clients=5, accounts=3, warmup=20, seed=3)
    assert {"orders_per_s", "p50_ms", "p99_ms", "requests", "submits", "cancels", "trades", "errors"} <= set(result)
    assert result["requests"] >= 120 and result["errors"] == 0 and result["orders_per_s"] > 0
    assert result["submits"] > 0 and result["cancels"] > 0 and result["trades"] > 0
    assert result["p50_ms"] <= result["p99_ms"]
