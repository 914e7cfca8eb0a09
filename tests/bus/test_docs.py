"""The Python examples of docs/bus.md run as written, on both backends."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "bus.md"
EXAMPLES = [b for b in re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S) if "asyncio.run(" in b]


def test_docs_have_examples() -> None:
    assert len(EXAMPLES) >= 4


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", ["memory", "nats"])
@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_example_runs(index: int, backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    url = "memory://" if backend == "memory" else request.getfixturevalue("nats_url")
    script = tmp_path / f"example{index}.py"
    script.write_text(EXAMPLES[index])
    proc = subprocess.run([sys.executable, str(script), url], capture_output=True, text=True, timeout=50, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()
