"""Exactly once, in venue order: venue events arrive twice (in RPC replies and on subjects) and in any
interleaving; this releases each `seq` once, contiguously, buffering the ones that come early.

The venue numbers its events without gaps, so "applied up to N" is the whole state of the stream and
is what the OMS persists. Each venue shard numbers its own events, so the OMS holds one sequencer per
shard (`ShardSequencer`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence

from tradesim.domain import Event


class EventSequencer:
    """Offer events in any order, any number of times; `offer` returns the ones now due, in seq order."""

    def __init__(self, applied: int = 0) -> None:
        self.applied = applied
        self._early: dict[int, Event] = {}

    def offer(self, events: Iterable[Event]) -> list[Event]:
        for event in events:
            if event.seq > self.applied:
                self._early.setdefault(event.seq, event)
        due: list[Event] = []
        nxt = self.applied + 1
        while nxt in self._early:
            due.append(self._early.pop(nxt))
            nxt += 1
        self.applied = nxt - 1
        return due

    @property
    def waiting(self) -> int:
        """Events held back by a gap."""
        return len(self._early)

    @property
    def gap(self) -> tuple[int, int] | None:
        """(first missing seq, first buffered seq) when events wait behind a gap."""
        if not self._early:
            return None
        return (self.applied + 1, min(self._early))

    def skip_to(self, seq: int) -> list[Event]:
        """Declare everything up to `seq` applied elsewhere (a fresh OMS joining a running venue)."""
        if seq > self.applied:
            self.applied = seq
            for s in [s for s in self._early if s <= seq]:
                del self._early[s]
        return self.offer(())


class ShardSequencer:
    """One `EventSequencer` per venue shard: each shard numbers its events from 1, so "applied up to N"
    only means something per shard. `shard_of(symbol)` names an event's shard (its symbol's, from the
    config's `ShardMap`); with one shard this is exactly an `EventSequencer`.

    It also tracks the stream position safe to resume following from (`stream_safe`): events of several
    shards interleave in `VENUE_EVENTS`, and one shard's events may wait behind a gap while another's
    are applied, so the position is the one before the oldest stream message still waiting."""

    def __init__(self, shards: Sequence[str], shard_of: Callable[[str], str],
                 applied: Mapping[str, int] | None = None) -> None:
        if not shards:
            raise ValueError("a ShardSequencer needs at least one shard")
        known = dict(applied or {})
        unknown = sorted(set(known) - set(shards))
        if unknown:
            raise ValueError(f"applied seqs of unknown venue shards {unknown} (shards: {list(shards)})")
        self.names = list(shards)
        self.shard_of = shard_of
        self._seqs = {name: EventSequencer(known.get(name, 0)) for name in self.names}
        self._held: dict[str, deque[tuple[int, int]]] = {name: deque() for name in self.names}

    def _of(self, event: Event) -> str:
        name = self.shard_of(event.symbol)
        if name not in self._seqs:
            raise ValueError(f"event seq {event.seq} on {event.symbol}: shard {name!r} is not one of {self.names}")
        return name

    def offer(self, events: Iterable[Event]) -> list[Event]:
        """Offer events of any shards; returns the ones now due (each shard's in its seq order)."""
        by_shard: dict[str, list[Event]] = {}
        for event in events:
            by_shard.setdefault(self._of(event), []).append(event)
        due: list[Event] = []
        for name, batch in by_shard.items():
            due.extend(self._seqs[name].offer(batch))
            self._release(name)
        return due

    def offer_at(self, event: Event, stream_seq: int) -> list[Event]:
        """Offer one event read from the stream at `stream_seq` (see `stream_safe`)."""
        name = self._of(event)
        due = self._seqs[name].offer((event,))
        if event.seq > self._seqs[name].applied:
            self._held[name].append((event.seq, stream_seq))
        self._release(name)
        return due

    def _release(self, name: str) -> None:
        held, applied = self._held[name], self._seqs[name].applied
        while held and held[0][0] <= applied:
            held.popleft()

    def stream_safe(self, stream_seq: int) -> int:
        """The highest position <= `stream_seq` (the last one read) such that every event read from the
        stream at or before it is applied: following again from the next one loses nothing."""
        waiting = [held[0][1] for held in self._held.values() if held]
        return min(waiting) - 1 if waiting else stream_seq

    def skip_to(self, shard: str, seq: int) -> list[Event]:
        due = self._seqs[shard].skip_to(seq)
        self._release(shard)
        return due

    def applied(self, shard: str) -> int:
        return self._seqs[shard].applied

    @property
    def applied_seqs(self) -> dict[str, int]:
        return {name: s.applied for name, s in self._seqs.items()}

    @property
    def total(self) -> int:
        """Events applied over all shards (with one shard: its applied seq)."""
        return sum(s.applied for s in self._seqs.values())

    @property
    def waiting(self) -> int:
        return sum(s.waiting for s in self._seqs.values())

    @property
    def gap(self) -> dict[str, tuple[int, int]]:
        """Per shard with events held back: (first missing seq, first buffered seq)."""
        return {name: g for name, s in self._seqs.items() if (g := s.gap) is not None}
