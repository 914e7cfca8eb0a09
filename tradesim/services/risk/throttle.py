"""Time-window filters keyed by `ts`: order rate per account and duplicate-order detection.

Both are sliding windows over the timestamps of orders that went forward; nothing reads a clock, so a
replay of the same orders gives the same answers.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable

NS_PER_MS = 1_000_000


class RateWindow:
    """How many orders each account sent in the last `window_ms` (sliding window)."""

    def __init__(self) -> None:
        self._sent: dict[str, deque[int]] = {}

    def count(self, account: str, ts: int, window_ms: int) -> int:
        """Orders recorded in (ts - window, ts]; forgets older ones."""
        sent = self._sent.get(account)
        if not sent:
            return 0
        horizon = ts - window_ms * NS_PER_MS
        while sent and sent[0] <= horizon:
            sent.popleft()
        return len(sent)

    def record(self, account: str, ts: int) -> None:
        self._sent.setdefault(account, deque()).append(ts)


class DuplicateWindow:
    """Last `ts` of each order key (account, symbol, side, price, qty), forgotten after the window passes."""

    def __init__(self) -> None:
        self._last: dict[Hashable, int] = {}
        self._order: deque[tuple[int, Hashable]] = deque()
        self._horizon_ms = 0

    def last_seen(self, key: Hashable, ts: int, window_ms: int) -> int | None:
        """`ts` of the same order within the last `window_ms`, or None."""
        self._horizon_ms = max(self._horizon_ms, window_ms)
        self._prune(ts)
        seen = self._last.get(key)
        if seen is None or ts - seen >= window_ms * NS_PER_MS:
            return None
        return seen

    def record(self, key: Hashable, ts: int) -> None:
        self._last[key] = ts
        self._order.append((ts, key))

    def _prune(self, ts: int) -> None:
        horizon = ts - self._horizon_ms * NS_PER_MS
        while self._order and self._order[0][0] <= horizon:
            old_ts, key = self._order.popleft()
            if self._last.get(key) == old_ts:
                del self._last[key]
