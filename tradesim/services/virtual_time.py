"""An asyncio event loop on simulated time: when there is nothing to do until the next timer, time jumps.

Every service takes its time from an injected clock and waits with `asyncio.sleep`, so running them on
this loop turns an hour of market into however long the work itself takes. Work handed to an executor
(the SQLite journal's writer) runs inline, on the loop's thread, so that a run is reproducible: the
order in which callbacks run depends only on the program, never on how fast a thread or the disk is.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor
from typing import Any, TypeVar, TypeVarTuple

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

# 2026-01-05 09:30:00 UTC: simulated runs start on a weekday morning unless told otherwise.
DEFAULT_EPOCH_NS = 1_767_605_400_000_000_000


# While callbacks are ready, real I/O is polled only on every Nth loop iteration: a simulation runs
# tens of iterations per order and touches no socket, so a poll (a syscall) each time was ~3% of its
# wall time. Real I/O is polled always before simulated time jumps, so it is never starved for long.
_BUSY_POLL_EVERY = 64


class _JumpingSelector(selectors.DefaultSelector):
    """Polls real I/O; when the loop would wait for a timer, advances the loop's clock instead."""

    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualTimeLoop | None = None
        self._busy = 0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        loop = self.loop
        assert loop is not None
        if timeout is not None and timeout <= 0:  # callbacks are ready: poll only now and then
            self._busy += 1
            if self._busy < _BUSY_POLL_EVERY:
                return []
            self._busy = 0
            return super().select(0)
        ready = super().select(0)
        if ready:
            return ready
        if timeout is None:  # no timer at all: only the outside world can wake us
            return super().select(None)
        loop.advance(timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """`time()` is simulated seconds since the start; `clock_ns()` is the matching wall-clock-like ns."""

    def __init__(self, epoch_ns: int = DEFAULT_EPOCH_NS) -> None:
        selector = _JumpingSelector()
        super().__init__(selector)
        selector.loop = self
        self.epoch_ns = epoch_ns
        self._now = 0.0
        self.jumps = 0

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds
        self.jumps += 1

    def clock_ns(self) -> int:
        """The injected clock for services: epoch + simulated time, in integer nanoseconds."""
        return self.epoch_ns + round(self._now * 1_000_000_000)

    def run_in_executor(self, executor: Executor | None, func: Callable[[*Ts], T],
                        *args: *Ts) -> asyncio.Future[T]:
        """Runs `func` now, on this thread: no real concurrency may decide the order of events."""
        future: asyncio.Future[T] = self.create_future()
        try:
            future.set_result(func(*args))
        except BaseException as exc:  # delivered to the awaiting caller, as an executor would
            future.set_exception(exc)
        return future


def run_simulated(main: Callable[[VirtualTimeLoop], Coroutine[Any, Any, T]],
                  epoch_ns: int = DEFAULT_EPOCH_NS) -> T:
    """Runs `main(loop)` to completion on a fresh VirtualTimeLoop and closes it (as asyncio.run does)."""
    loop = VirtualTimeLoop(epoch_ns)
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(main(loop))
    finally:
        try:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
