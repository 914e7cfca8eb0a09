"""docs/algos.md: the example runs as written and prints what the comments say."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "algos.md"


def test_algos_doc_example_runs(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    example = next(b for b in blocks if "asyncio.run(main())" in b)
    script = tmp_path / "example.py"
    script.write_text(example)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                         cwd=DOC.parents[1])
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "algo-1 running",
        "completed 100 19000",
        "[('algo-1-1', 25), ('algo-1-2', 25), ('algo-1-3', 25), ('algo-1-4', 25)]",
        "True",
        "bad_params twap: needs duration_ms > 0",
    ]
