"""Warm standby venue: follows a shard's journal stream and keeps its own identical matching engine.

The standby restores the newest usable snapshot from the stream's snapshot store, then applies every
journal record to its engine as it arrives (a `JournalFollower`), checking that each one extends the
hash chain with the next seq — no gap, no duplicate, no altered record. Because the engine is
deterministic, its `state_hash()` at seq N equals the leader's and a from-scratch replay's at seq N.

On failover the new leader calls `promote()`: the standby applies the stream up to its end, verifies
that its head is the stream's last record, stops following and hands over `(engine, last_seq)` —
the same shape `tradesim.store.recovery.recover` returns — with its journal positioned to append
right after that seq (a stale writer then appends nothing: see `JetStreamJournal`). `events_after()`
gives the events of recently applied records, so the new leader can publish those the old leader
journaled but never published. See docs/venue-ha.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable

import msgspec

from tradesim.domain import Event, Instrument
from tradesim.engine import MatchingEngine
from tradesim.store.chain import GENESIS_HASH, ChainChecker, record_hash
from tradesim.store.jetstream import Delivery, JetStreamJournal, JournalFollower
from tradesim.store.journal import CorruptRecordError, JournalError, JournalRecord
from tradesim.store.recovery import restore_snapshot

log = logging.getLogger("tradesim.venue.standby")

DEFAULT_KEEP_EVENTS = 10_000
"""Records whose events a standby keeps for `events_after` (the old leader's unpublished tail)."""


class StandbyError(JournalError):
    """The standby cannot go on (it diverged from the stream, or was asked something it cannot do)."""


class StandbyLag(msgspec.Struct, frozen=True):
    """How far behind the leader a standby is: journal records stored in the stream but not applied yet
    (as of the newest delivery), and how long after being stored the newest applied record was applied."""

    records: int
    delay_ms: float


class VenueStandby:
    """Follows `journal` (a shard's `JetStreamJournal`, never appended to while standing by).

    `instruments` seed the engine only when no snapshot is usable — pass what the leader's recovery
    got (the venue passes none: its listings are journaled). `id_base` is the shard's id block (an engine
    replayed from the first record numbers its ids from it; a snapshot carries it in its counters).
    `keep_events` records' events are kept
    for `events_after`. `on_apply(record, events)` is called after each record is applied (metrics).
    """

    def __init__(self, journal: JetStreamJournal, *, instruments: Iterable[Instrument] = (),
                 keep_events: int = DEFAULT_KEEP_EVENTS, id_base: int = 0,
                 on_apply: Callable[[JournalRecord, list[Event]], None] | None = None) -> None:
        if keep_events < 0:
            raise ValueError(f"keep_events must be >= 0, got {keep_events}")
        self.journal = journal
        self.instruments = list(instruments)
        self.on_apply = on_apply
        self.id_base = id_base
        self._engine = MatchingEngine(instruments=self.instruments, id_base=id_base)
        self._last_seq = 0
        self._head = GENESIS_HASH
        self._checker = ChainChecker()
        self._events: deque[list[Event]] = deque(maxlen=keep_events)
        self._follower: JournalFollower | None = None
        self._failure: BaseException | None = None
        self._delay_ms = 0.0
        self._end_seen = 0
        self._started = False
        self._promoted = False
        self.snapshot_seq = 0
        """Seq of the snapshot the engine was restored from (0: replayed from the first record)."""

    # ---- state --------------------------------------------------------------------------------------
    @property
    def engine(self) -> MatchingEngine:
        """The standby's engine, as after record `last_seq` (read-only use while following)."""
        return self._engine

    @property
    def last_seq(self) -> int:
        """Seq of the last journal record applied."""
        return self._last_seq

    @property
    def head_hash(self) -> bytes:
        """Hash of the last journal record applied (`GENESIS_HASH` before the first)."""
        return self._head

    @property
    def lag(self) -> StandbyLag:
        return StandbyLag(max(0, self._end_seen - self._last_seq), self._delay_ms)

    @property
    def following(self) -> bool:
        return self._follower is not None and self._follower.running and self._failure is None

    @property
    def failure(self) -> BaseException | None:
        """Why the standby stopped following (a CorruptRecordError naming the seq), if it did."""
        return self._failure

    # ---- lifecycle ----------------------------------------------------------------------------------
    async def start(self) -> None:
        """Restores the newest usable snapshot, then follows the stream from the record after it."""
        if self._started:
            raise RuntimeError("standby already started")
        self._started = True
        engine, seq, head = await self._restore()
        self._engine, self._last_seq, self._head = engine, seq, head
        self.snapshot_seq = seq
        self._checker = ChainChecker(seq + 1, head)
        await self._follow()
        log.info("standby %s: restored at seq %d, following", self.journal.stream, seq)

    async def _restore(self) -> tuple[MatchingEngine, int, bytes]:
        journal = self.journal
        stored = await journal.latest_snapshot()
        while stored is not None:
            try:
                engine = restore_snapshot(stored)
            except ValueError as exc:
                log.warning("standby %s: skipping snapshot: %s", journal.stream, exc)
                stored = await journal.latest_snapshot(max_seq=stored.seq - 1)
                continue
            record = await journal.record_at(stored.seq)
            if record is None or record.seq != stored.seq:
                log.warning("standby %s: skipping snapshot at seq %d: its journal record is missing",
                            journal.stream, stored.seq)
                stored = await journal.latest_snapshot(max_seq=stored.seq - 1)
                continue
            if record_hash(record.prev_hash, record.seq, record.ts, record.command) != record.hash:
                raise CorruptRecordError(record.seq, "the snapshot's journal record does not match its hash")
            return engine, stored.seq, record.hash
        return MatchingEngine(instruments=self.instruments, id_base=self.id_base), 0, GENESIS_HASH

    async def _follow(self) -> None:
        follower = self.journal.follow(self._last_seq + 1, self._on_delivery)
        await follower.start()
        self._follower = follower

    async def stop(self) -> None:
        """Stops following (the engine stays as it is)."""
        follower, self._follower = self._follower, None
        if follower is not None:
            await follower.stop()

    # ---- applying -----------------------------------------------------------------------------------
    def _on_delivery(self, delivery: Delivery) -> None:
        if self._failure is not None:
            raise self._failure
        row = delivery.record
        bad = self._checker.check(row)
        if bad is not None:
            error = CorruptRecordError(bad.seq, f"standby of {self.journal.stream} stops: "
                                                f"{bad.problem.replace('_', ' ')}: {bad.detail}")
            self._fail(error)
            raise error
        command = self._checker.command
        assert command is not None
        try:
            events = self._engine.apply(command)
        except Exception as exc:  # an engine bug: the standby's state is unknown from here on
            self._fail(StandbyError(f"standby of {self.journal.stream}: applying seq {row.seq} failed: "
                                    f"{type(exc).__name__}: {exc}"))
            raise
        self._last_seq = row.seq
        self._head = row.hash
        if events:
            self._events.append(events)
        self._end_seen = max(self._end_seen, delivery.stream_seq + delivery.pending)
        self._delay_ms = (time.time_ns() - delivery.stored_ns) / 1e6
        if self.on_apply is not None:
            self.on_apply(JournalRecord(row.seq, row.ts, command, row.prev_hash, row.hash), events)

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
            log.error("%s", exc)

    def _check_failed(self) -> None:
        if self._failure is not None:
            raise self._failure
        follower = self._follower
        if follower is not None and follower.failure is not None:
            self._fail(follower.failure)
            raise follower.failure

    # ---- catching up and taking over ----------------------------------------------------------------
    async def catch_up(self, timeout: float = 10.0) -> MatchingEngine:
        """Applies the stream up to its current end, checks that the head is the stream's last record,
        and returns the engine (as after `last_seq`). StandbyError/CorruptRecordError if it cannot."""
        if not self._started:
            raise StandbyError("catch_up() before start()")
        if self._promoted:
            raise StandbyError("this standby was promoted; its engine belongs to the leader now")
        self._check_failed()
        journal = self.journal
        end = await journal.stream_end()
        self._end_seen = max(self._end_seen, end)
        follower = self._follower
        if follower is None:  # stopped: follow again, the pull below fetches the backlog at once
            await self._follow()
            follower = self._follower
            assert follower is not None
        try:
            await asyncio.wait_for(follower.pull_to(end), timeout)
        except TimeoutError:
            raise StandbyError(f"standby of {journal.stream} at seq {self._last_seq} did not reach the stream's "
                               f"end (seq {end}) within {timeout}s") from None
        self._check_failed()
        if self._last_seq < end:
            raise CorruptRecordError(self._last_seq + 1, f"the stream ends at seq {end} but its records end at "
                                                         f"seq {self._last_seq}")
        if end:
            record = await journal.record_at(end)
            if record is None or (self._last_seq == end and record.hash != self._head):
                raise CorruptRecordError(end, "the standby's head is not the stream's last record")
        return self._engine

    async def promote(self, timeout: float = 10.0) -> tuple[MatchingEngine, int]:
        """Catches up, stops following and positions `journal` to append right after the last record.

        Returns `(engine, last_seq)` like `recover()`. If the stream keeps growing (the old leader still
        writes) it catches up again until `timeout`, then raises StandbyError. The caller must hold the
        venue leadership: from here on the journal's appends fence out any other writer.
        """
        deadline = time.monotonic() + timeout
        while True:
            await self.catch_up(max(0.1, deadline - time.monotonic()))
            await self.stop()
            end = await self.journal.stream_end()
            if end == self._last_seq:
                break
            if time.monotonic() >= deadline:
                raise StandbyError(f"stream {self.journal.stream} kept growing past seq {self._last_seq} "
                                   f"(now {end}) for {timeout}s: another venue is still appending")
        self.journal.take_over(self._last_seq, self._head)
        self._promoted = True
        log.info("standby %s: promoted at seq %d (event seq %d)", self.journal.stream, self._last_seq,
                 self._engine.seq)
        return self._engine, self._last_seq

    def events_after(self, event_seq: int) -> list[Event]:
        """The events the engine emitted after venue event seq `event_seq`, in order (for republishing the
        old leader's unpublished tail). LookupError if they are older than the `keep_events` window."""
        if event_seq >= self._engine.seq:
            return []
        out = [event for events in self._events for event in events if event.seq > event_seq]
        if not out or out[0].seq != event_seq + 1:
            oldest = self._events[0][0].seq if self._events else self._engine.seq + 1
            raise LookupError(f"events after seq {event_seq} are not kept any more (the oldest kept is seq "
                              f"{oldest}); raise keep_events")
        return out
