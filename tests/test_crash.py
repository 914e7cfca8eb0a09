"""A real crash test: SIGKILL a journaling process under load, then check nothing acknowledged was lost.

The writer (tests/support/crash_writer.py) prints every seq after `append` returns. After each kill
the journal must hold every printed command at its seq, its chain must verify, and `recover()` must
build the same engine as a fresh one replaying the journal. Rounds reuse the data directory, so each
restart also recovers from the previous crash and continues the chain.
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.support.crash_writer import key
from tradesim.engine import MatchingEngine
from tradesim.store import open_journal
from tradesim.store.recovery import recover

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 3


def run_and_kill(data_dir: Path, seed: int, rng: random.Random) -> dict[int, str]:
    """Starts the writer, SIGKILLs it at a random moment under load; returns the acknowledged seqs."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.crash_writer", str(data_dir), str(seed)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    lines: list[bytes] = []
    started = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line == b"ready\n":
                started.set()
            lines.append(line)
        started.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    assert started.wait(30), "writer did not start"
    time.sleep(rng.uniform(0.3, 1.0))
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    reader.join(10)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode() if proc.stderr else ""
    acked: dict[int, str] = {}
    for line in lines:
        if line.endswith(b"\n") and line != b"ready\n":  # a line cut by the kill was not acknowledged
            seq, name = line.decode().split()
            acked[int(seq)] = name
    return acked


async def check(data_dir: Path, acked: dict[int, str]) -> int:
    async with await open_journal(data_dir) as journal:
        assert journal.last_seq >= max(acked)
        stored = {record.seq: record.command async for record in journal.read()}
        lost = {seq: name for seq, name in acked.items() if seq not in stored or key(stored[seq]) != name}
        assert not lost, f"acknowledged but not journaled: {sorted(lost)[:10]}"
        report = await journal.verify()
        assert report.ok and report.count == journal.last_seq, report
        engine, last_seq = await recover(journal)
        fresh = MatchingEngine(instruments=[])
        for seq in range(1, last_seq + 1):
            fresh.apply(stored[seq])
        assert last_seq == journal.last_seq
        assert engine.state_hash() == fresh.state_hash()
        print(f"acked {len(acked)}, journal {last_seq}, snapshot at "
              f"{getattr(await journal.latest_snapshot(), 'seq', None)}")
        return last_seq


def test_nothing_acknowledged_is_lost_after_sigkill(tmp_path: Path) -> None:
    rng = random.Random()
    all_acked: dict[int, str] = {}
    for round_number in range(1, ROUNDS + 1):
        acked = run_and_kill(tmp_path, round_number, rng)
        assert len(acked) > 50, f"round {round_number}: only {len(acked)} acknowledgements before the kill"
        assert not set(acked) & set(all_acked), "a seq was reused after a crash"
        all_acked.update(acked)
        last_seq = asyncio.run(check(tmp_path, all_acked))
        assert last_seq >= max(all_acked)
