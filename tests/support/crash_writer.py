"""Load generator for the crash test: a venue-like process journaling commands until it is SIGKILLed.

Usage: python -m tests.support.crash_writer DATA_DIR SEED [WRITERS]. It recovers the engine from the
journal, then WRITERS tasks append random commands; after each `append` returns it prints
`<seq> <key>` (flushed), so every printed line is an acknowledged command. Like the venue, it applies
commands to the engine in seq order and snapshots every SNAPSHOT_EVERY commands.
"""

from __future__ import annotations

import asyncio
import random
import sys

from tests.store.streams import listing, random_commands
from tradesim.domain import AddInstrument, Command
from tradesim.store import open_journal
from tradesim.store.recovery import Snapshotter, recover

SNAPSHOT_EVERY = 300
CHUNK = 400


def key(command: Command) -> str:
    """What the parent checks a journaled command against."""
    if isinstance(command, AddInstrument):
        return "instrument"
    return f"{command.__struct_config__.tag}:{getattr(command, 'account', '')}:" \
           f"{getattr(command, 'client_order_id', '')}"


async def main(data_dir: str, seed: int, writers: int) -> None:
    journal = await open_journal(data_dir)
    engine, last_seq = await recover(journal)
    snapshotter = Snapshotter(journal, every=SNAPSHOT_EVERY, last_snapshot_seq=last_seq)
    out = sys.stdout
    if last_seq == 0:
        record = await journal.append(listing())
        engine.apply(record.command)
        last_seq = record.seq
        out.write(f"{record.seq} {key(record.command)}\n")
    ready: dict[int, Command] = {}
    applied = last_seq
    out.write("ready\n")
    out.flush()

    async def apply_in_order() -> None:
        nonlocal applied
        while applied + 1 in ready:
            applied += 1
            engine.apply(ready.pop(applied))
            await snapshotter.maybe_save(applied, engine)

    async def writer(w: int) -> None:
        rng = random.Random(seed * 1_000 + w)
        base = (seed * 100 + w) * 10_000_000
        chunk = 0
        while True:
            for command in random_commands(rng, CHUNK, start=base + chunk * CHUNK):
                record = await journal.append(command)
                out.write(f"{record.seq} {key(command)}\n")
                out.flush()
                ready[record.seq] = command
                await apply_in_order()
            chunk += 1

    await asyncio.gather(*(writer(w) for w in range(writers)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 32))
