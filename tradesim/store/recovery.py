"""Start-up: rebuild the matching engine from the newest usable snapshot plus a replay of the journal tail.

Snapshots are taken by `Snapshotter` (which the venue calls after applying each command). Recovery
trusts nothing it reads: a snapshot must restore to its recorded `state_hash` (else the next older
one is tried, down to an empty engine), and every replayed record must extend the hash chain.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable

import msgspec

from tradesim.domain import Instrument
from tradesim.engine import EngineSnapshot, MatchingEngine
from tradesim.store.chain import GENESIS_HASH, ChainChecker
from tradesim.store.journal import CorruptRecordError, Journal, StoredSnapshot

log = logging.getLogger(__name__)

DEFAULT_SNAPSHOT_EVERY = 10_000


def hash_text(state_hash: object) -> str:
    """Engine state hashes as stored: hex for bytes, `str()` otherwise."""
    return state_hash.hex() if isinstance(state_hash, bytes | bytearray) else str(state_hash)


def restore_snapshot(stored: StoredSnapshot) -> MatchingEngine:
    """Decodes and restores a stored snapshot; raises ValueError unless it restores to its state hash."""
    try:
        state = msgspec.msgpack.decode(stored.data, type=EngineSnapshot)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValueError(f"snapshot at seq {stored.seq} does not decode: {exc}") from exc
    engine = MatchingEngine.restore(state)
    actual = hash_text(engine.state_hash())
    if actual != stored.state_hash:
        raise ValueError(f"snapshot at seq {stored.seq} restores to state hash {actual[:16]}…, "
                         f"recorded {stored.state_hash[:16]}…")
    return engine


class Snapshotter:
    """Saves an engine snapshot every `every` commands; the venue calls `maybe_save` after each apply."""

    def __init__(self, journal: Journal, every: int = DEFAULT_SNAPSHOT_EVERY, *,
                 last_snapshot_seq: int = 0) -> None:
        if every < 1:
            raise ValueError("every must be >= 1")
        self.journal = journal
        self.every = every
        self.last_snapshot_seq = last_snapshot_seq

    async def maybe_save(self, seq: int, engine: MatchingEngine) -> bool:
        """Snapshots `engine` (its state right after command `seq`) if `every` commands have passed."""
        if seq - self.last_snapshot_seq < self.every:
            return False
        await self.save(seq, engine)
        return True

    async def save(self, seq: int, engine: MatchingEngine) -> None:
        """Snapshots now. The state is captured before the first await, so the engine may move on."""
        data = engine.canonical_bytes()  # encoded once: stored, and hashed (== engine.state_hash())
        await self.journal.save_snapshot_bytes(seq, data, hashlib.sha256(data).hexdigest())
        self.last_snapshot_seq = seq


async def recover(journal: Journal, *, instruments: Iterable[Instrument] = ()) -> tuple[MatchingEngine, int]:
    """Returns the engine as it was after the journal's last command, and that command's seq.

    Starts from the newest snapshot that restores correctly (`instruments` seed the engine only when
    there is none) and replays the rest through `MatchingEngine.apply`. A record that does not extend
    the chain raises CorruptRecordError naming its seq.
    """
    last_seq = journal.last_seq
    engine: MatchingEngine | None = None
    start, prev_hash = 1, GENESIS_HASH
    stored = await journal.latest_snapshot(max_seq=last_seq)
    while stored is not None:
        try:
            candidate = restore_snapshot(stored)
        except ValueError as exc:
            log.warning("skipping snapshot: %s", exc)
            stored = await journal.latest_snapshot(max_seq=stored.seq - 1)
            continue
        async for row in journal.read_raw(stored.seq):
            if row.seq == stored.seq:
                engine, start, prev_hash = candidate, stored.seq + 1, row.hash
            break
        if engine is not None:
            break
        log.warning("skipping snapshot at seq %d: its journal record is missing", stored.seq)
        stored = await journal.latest_snapshot(max_seq=stored.seq - 1)
    if engine is None:
        engine = MatchingEngine(instruments=list(instruments))
    checker = ChainChecker(start, prev_hash)
    async for row in journal.read_raw(start):
        bad = checker.check(row)
        if bad is not None:
            raise CorruptRecordError(bad.seq, f"{bad.problem.replace('_', ' ')}: {bad.detail}")
        assert checker.command is not None
        engine.apply(checker.command)
    replayed_to = checker.next_seq - 1
    if replayed_to != last_seq:
        raise CorruptRecordError(replayed_to + 1,
                                 f"journal ends at seq {replayed_to}, its head is seq {last_seq}")
    return engine, replayed_to
