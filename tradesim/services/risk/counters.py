"""Per-account daily message counters (orders, cancels, trades) that reset when `ts` enters a new day.

Daily limits and the order-to-trade ratio need "today" without reading a clock: the day is derived from
the event's `ts` (ns since the epoch), shifted by `day_offset_ns` so a venue can start its day at, e.g.,
17:00 New York. A `ts` from an earlier day than the one stored is counted in the current day (late events
never resurrect a finished day).
"""

from __future__ import annotations

import msgspec

NS_PER_DAY = 86_400 * 1_000_000_000


class DayCounts(msgspec.Struct, kw_only=True):
    day: int
    orders: int = 0
    cancels: int = 0
    trades: int = 0


class DailyCounters:
    """The OMS feeds every order, cancel and trade of an account; rules read today's counts."""

    def __init__(self, day_offset_ns: int = 0) -> None:
        self._offset = day_offset_ns
        self._by_account: dict[str, DayCounts] = {}

    def day_of(self, ts: int) -> int:
        return (ts + self._offset) // NS_PER_DAY

    def get(self, account: str, ts: int) -> DayCounts:
        """Today's counts as of `ts` (a fresh zero record on the first event of a new day)."""
        day = self.day_of(ts)
        counts = self._by_account.get(account)
        if counts is None or day > counts.day:
            counts = DayCounts(day=day)
            self._by_account[account] = counts
        return counts

    def add_order(self, account: str, ts: int) -> None:
        self.get(account, ts).orders += 1

    def add_cancel(self, account: str, ts: int) -> None:
        self.get(account, ts).cancels += 1

    def add_trade(self, account: str, ts: int) -> None:
        self.get(account, ts).trades += 1
