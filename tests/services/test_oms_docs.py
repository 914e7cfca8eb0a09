"""docs/oms.md: the example runs as written and prints what the comments say."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "oms.md"


def test_oms_doc_example_runs(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    example = next(b for b in blocks if "asyncio.run(main())" in b)
    script = tmp_path / "example.py"
    script.write_text(example)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                         cwd=DOC.parents[1])
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines == [
        "accepted 1",
        "filled 300000 [30]",
        "rejected max_order_qty order qty exceeds limit: 2000 > 1000",
        "canceled 30",
        "OmsError(error='unknown_account', message=\"unknown account 'mallory'\")",
    ]
