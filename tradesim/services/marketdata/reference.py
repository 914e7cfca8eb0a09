"""Reference prices: a seeded geometric Brownian motion per symbol, or prices replayed from a file.

Both are pure (no clock, no I/O after loading): the caller says what time it is, in ns, and gets
integer ticks back. The same seed and the same sequence of times give the same path, bit for bit.
"""

from __future__ import annotations

import csv
import hashlib
import math
import random
from bisect import bisect_right
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Final, Protocol

import msgspec

from tradesim.domain import Instrument, OffTickError

NS_PER_S: Final = 1_000_000_000
# Seconds in the year the drift and volatility are quoted over (calendar year; simulated time runs 24/7).
YEAR_SECONDS: Final = 365.25 * 24 * 3600


class GbmParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """dS/S = drift dt + volatility dW, both annualised (0.05 = 5 % a year; 0.2 = 20 % a year)."""

    drift: float = 0.0
    volatility: float = 0.2
    year_seconds: float = YEAR_SECONDS

    def __post_init__(self) -> None:
        if not math.isfinite(self.drift):
            raise ValueError(f"drift must be finite, got {self.drift}")
        if not math.isfinite(self.volatility) or self.volatility < 0:
            raise ValueError(f"volatility must be finite and >= 0, got {self.volatility}")
        if not self.year_seconds > 0:
            raise ValueError(f"year_seconds must be positive, got {self.year_seconds}")


DEFAULT_GBM: Final = GbmParams()


class ReferenceSource(Protocol):
    """What the market-data service asks for a reference price: ticks at time `ts` (ns), or None."""

    def at(self, ts: int) -> int | None: ...


def symbol_seed(seed: int, symbol: str) -> int:
    """A per-symbol seed: adding or removing a symbol never changes another symbol's path."""
    digest = hashlib.sha256(f"{seed}:{symbol}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


class GbmProcess:
    """One symbol's GBM, stepped exactly: log S moves by (mu - sigma^2/2) dt + sigma sqrt(dt) Z.

    The state is the continuous log price (a float), so rounding to ticks never feeds back into the
    path; `price` is that value rounded to the nearest tick and never below 1 tick.
    """

    __slots__ = ("_log", "_rng", "last_ts", "params", "steps")

    def __init__(self, initial: int, params: GbmParams = DEFAULT_GBM, *, seed: int = 0,
                 start_ts: int | None = None) -> None:
        if isinstance(initial, bool) or not isinstance(initial, int) or initial <= 0:
            raise ValueError(f"initial price must be a positive number of ticks, got {initial!r}")
        self.params = params
        self._log = math.log(initial)
        self._rng = random.Random(seed)
        self.last_ts = start_ts  # the time the current price refers to; None until the first at()
        self.steps = 0

    @property
    def price(self) -> int:
        return _to_ticks(self._log)

    @property
    def log_price(self) -> float:
        return self._log

    def step(self, dt_seconds: float) -> int:
        """Moves the process `dt_seconds` forward (one normal draw) and returns the new price in ticks."""
        if dt_seconds <= 0:
            return self.price
        p = self.params
        dt = dt_seconds / p.year_seconds
        z = self._rng.gauss(0.0, 1.0)
        self._log += (p.drift - 0.5 * p.volatility * p.volatility) * dt + p.volatility * math.sqrt(dt) * z
        self.steps += 1
        return self.price

    def at(self, ts: int) -> int:
        """The price at `ts` (ns): steps by the time since the last call; a time not after it changes nothing."""
        if self.last_ts is None:
            self.last_ts = ts
            return self.price
        if ts <= self.last_ts:
            return self.price
        dt = (ts - self.last_ts) / NS_PER_S
        self.last_ts = ts
        return self.step(dt)


def _to_ticks(log_price: float) -> int:
    value = math.exp(log_price) if log_price < 700 else math.inf
    if not math.isfinite(value):
        raise OverflowError("reference price overflowed; check drift/volatility")
    return max(1, round(value))


def gbm_processes(reference: Mapping[str, int], params: GbmParams | Mapping[str, GbmParams] = DEFAULT_GBM, *,
                  seed: int = 0) -> dict[str, GbmProcess]:
    """One seeded process per symbol with a reference price; `params` may differ per symbol."""
    out: dict[str, GbmProcess] = {}
    for symbol, initial in reference.items():
        p = params if isinstance(params, GbmParams) else params.get(symbol, DEFAULT_GBM)
        out[symbol] = GbmProcess(initial, p, seed=symbol_seed(seed, symbol))
    return out


class FileReferenceError(ValueError):
    """A reference-price file that cannot be used; the message names the file and the line."""


class FileReference:
    """Reference prices replayed from a CSV of `ts,price` rows (ns, decimal price), sorted by time.

    `at(ts)` is the last price at or before `ts`, None before the first row. A `#` line or a header
    row `ts,price` is skipped. With `loop=True` the file repeats, shifted by its own span.
    """

    def __init__(self, times: list[int], prices: list[int], *, loop: bool = False) -> None:
        if not times:
            raise FileReferenceError("no reference prices")
        self.times = times
        self.prices = prices
        self.loop = loop

    @classmethod
    def load(cls, path: str | Path, instrument: Instrument, *, loop: bool = False) -> FileReference:
        times: list[int] = []
        prices: list[int] = []
        with Path(path).open(newline="") as f:
            for n, row in enumerate(csv.reader(f), start=1):
                if not row or row[0].startswith("#") or (n == 1 and row[0].strip() == "ts"):
                    continue
                try:
                    if len(row) != 2:
                        raise ValueError(f"expected 2 fields (ts,price), got {len(row)}")
                    ts = int(row[0])
                    price = instrument.to_ticks(Decimal(row[1].strip()))
                    if price <= 0:
                        raise ValueError(f"price {row[1]!r} must be positive")
                except (ValueError, ArithmeticError, OffTickError) as exc:
                    raise FileReferenceError(f"{path}:{n}: {exc}") from None
                if times and ts < times[-1]:
                    raise FileReferenceError(f"{path}:{n}: ts {ts} is before the previous row's {times[-1]}")
                times.append(ts)
                prices.append(price)
        if not times:
            raise FileReferenceError(f"{path}: no reference prices")
        return cls(times, prices, loop=loop)

    def at(self, ts: int) -> int | None:
        first, last = self.times[0], self.times[-1]
        if self.loop and ts > last and last > first:
            ts = first + (ts - first) % (last - first)
        i = bisect_right(self.times, ts)
        return self.prices[i - 1] if i else None
