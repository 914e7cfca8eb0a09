"""OHLCV bars from a trade stream: pure, exact (integer ticks and units), boundaries from trade time."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from tradesim.services.marketdata.messages import Bar

NS_PER_S: Final = 1_000_000_000


class BarBuilder:
    """Builds one symbol's bars of `interval_s` seconds, aligned to multiples of the interval since epoch.

    A trade whose ts falls after the open bar closes it (the closed bar is returned) and opens the
    next. `close_due(now)` closes the open bar once `now` is past its end, so a quiet market still
    publishes its last bar. A late trade (ts inside a bar already closed) goes into the open bar —
    or opens one at the end of the last closed bar — so no trade is ever dropped and closed bars are
    never changed after publication; `late_trades` counts them.
    """

    __slots__ = ("_bar", "closed_until", "interval_ns", "interval_s", "late_trades", "symbol")

    def __init__(self, symbol: str, interval_s: int = 60) -> None:
        if interval_s <= 0:
            raise ValueError(f"bar interval must be positive, got {interval_s}")
        self.symbol = symbol
        self.interval_s = interval_s
        self.interval_ns = interval_s * NS_PER_S
        # [start_ts, open, high, low, close, volume, turnover, trades] of the open bar
        self._bar: list[int] | None = None
        self.closed_until: int | None = None  # end of the newest closed bar
        self.late_trades = 0

    @property
    def current(self) -> Bar | None:
        """The open (not yet closed) bar, if any."""
        return None if self._bar is None else self._make(self._bar)

    def add(self, ts: int, price: int, qty: int) -> Bar | None:
        """Folds one trade in; returns the bar it closed, if it closed one."""
        start = ts - ts % self.interval_ns
        if self.closed_until is not None and start < self.closed_until:
            self.late_trades += 1
            start = self.closed_until if self._bar is None else self._bar[0]
        closed: Bar | None = None
        bar = self._bar
        if bar is not None and start > bar[0]:
            closed = self._close()
            bar = None
        if bar is None:
            self._bar = [start, price, price, price, price, qty, price * qty, 1]
            return closed
        if start < bar[0]:  # before the open bar but not in a closed one: only possible for a late trade
            self.late_trades += 1
        if price > bar[2]:
            bar[2] = price
        if price < bar[3]:
            bar[3] = price
        bar[4] = price
        bar[5] += qty
        bar[6] += price * qty
        bar[7] += 1
        return closed

    def close_due(self, now: int) -> Bar | None:
        """Closes the open bar if `now` (ns) is at or past its end."""
        if self._bar is not None and now >= self._bar[0] + self.interval_ns:
            return self._close()
        return None

    def _close(self) -> Bar:
        assert self._bar is not None
        bar = self._make(self._bar)
        self.closed_until = self._bar[0] + self.interval_ns
        self._bar = None
        return bar

    def _make(self, b: list[int]) -> Bar:
        return Bar(symbol=self.symbol, start_ts=b[0], interval_s=self.interval_s, open=b[1], high=b[2], low=b[3],
                   close=b[4], volume=b[5], turnover=b[6], trades=b[7])


def aggregate(bars: Iterable[Bar], interval_s: int) -> list[Bar]:
    """Bars of a longer interval (a multiple of theirs) from bars sorted by start: exact OHLCV sums."""
    out: list[Bar] = []
    span = interval_s * NS_PER_S
    for bar in bars:
        if interval_s % bar.interval_s:
            raise ValueError(f"cannot build {interval_s}s bars from {bar.interval_s}s bars")
        start = bar.start_ts - bar.start_ts % span
        if out and out[-1].start_ts == start:
            prev = out[-1]
            out[-1] = Bar(symbol=prev.symbol, start_ts=start, interval_s=interval_s, open=prev.open,
                          high=max(prev.high, bar.high), low=min(prev.low, bar.low), close=bar.close,
                          volume=prev.volume + bar.volume, turnover=prev.turnover + bar.turnover,
                          trades=prev.trades + bar.trades)
        else:
            out.append(Bar(symbol=bar.symbol, start_ts=start, interval_s=interval_s, open=bar.open,
                           high=bar.high, low=bar.low, close=bar.close, volume=bar.volume,
                           turnover=bar.turnover, trades=bar.trades))
    return out
