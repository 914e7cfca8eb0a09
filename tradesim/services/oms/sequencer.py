"""Exactly once, in venue order: venue events arrive twice (in RPC replies and on subjects) and in any
interleaving; this releases each `seq` once, contiguously, buffering the ones that come early.

The venue numbers its events without gaps, so "applied up to N" is the whole state of the stream and
is what the OMS persists.
"""

from __future__ import annotations

from collections.abc import Iterable

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
