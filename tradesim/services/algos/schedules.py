"""Pure execution schedules: how much of a parent should be done by when (TWAP, VWAP), and how big the next
child is (POV, Iceberg). No I/O and no clock: times are ns arguments, so the schedules are tested alone
and a simulated-time loop can drive the workers that use them.

Quantities are integer units in lot multiples; a schedule's slice sizes always sum to the parent's qty.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import NamedTuple

from tradesim.services.marketdata.messages import Bar

NS = 1_000_000_000
DAY_NS = 86_400 * NS
U_DEPTH = 2.0
"""Default U profile: w(x) = 1 + U_DEPTH * (2x - 1)^2 over the window, so the open and the close trade
U_DEPTH + 1 = 3 times the middle's rate (the familiar intraday volume smile)."""


class Slice(NamedTuple):
    ts: int  # ns: when the slice becomes due
    qty: int


def default_slices(duration_ms: int) -> int:
    """One slice per second of duration, at least one."""
    return max(1, duration_ms // 1000)


def even_split(total: int, parts: int) -> list[int]:
    """`total` into `parts` integers differing by at most one, the larger ones spread evenly (not bunched)."""
    if parts <= 0:
        raise ValueError("parts must be positive")
    return [(i + 1) * total // parts - i * total // parts for i in range(parts)]


def _times(start: int, duration_ns: int, slices: int) -> list[int]:
    return [start + i * duration_ns // slices for i in range(slices)]


def twap_schedule(qty: int, slices: int, start: int, duration_ns: int, lot: int = 1) -> list[Slice]:
    """Equal slices at start + i * duration / slices; the remainder lots spread across the slices."""
    _check(qty, slices, duration_ns, lot)
    sizes = even_split(qty // lot, slices)
    return [Slice(t, n * lot) for t, n in zip(_times(start, duration_ns, slices), sizes, strict=True)]


def u_profile(bins: int, depth: float = U_DEPTH) -> list[float]:
    """Normalised U-shaped volume weights over `bins` equal parts of a window (sum 1, symmetric)."""
    if bins <= 0:
        raise ValueError("bins must be positive")
    raw = [1.0 + depth * (2 * (i + 0.5) / bins - 1) ** 2 for i in range(bins)]
    total = sum(raw)
    return [w / total for w in raw]


def learned_profile(bars: Sequence[Bar], start: int, duration_ns: int, bins: int) -> list[float] | None:
    """Volume weights for the window's bins learned from recorded bars by time of day.

    Each bar's volume is spread evenly over its interval, folded onto the time of day, and summed into
    the bins covering the same time of day as the window; None when the bars say nothing about it.
    """
    if bins <= 0 or duration_ns <= 0:
        raise ValueError("bins and duration must be positive")
    weights = [0.0] * bins
    edges = [start + i * duration_ns // bins for i in range(bins + 1)]
    for bar in bars:
        length = bar.interval_s * NS
        if length <= 0 or bar.volume <= 0:
            continue
        # place the bar on the window's day(s): the same time of day, shifted by whole days
        b0 = bar.start_ts + (start - bar.start_ts) // DAY_NS * DAY_NS
        for shift in (b0 - DAY_NS, b0, b0 + DAY_NS):
            for i in range(bins):
                overlap = min(edges[i + 1], shift + length) - max(edges[i], shift)
                if overlap > 0:
                    weights[i] += bar.volume * overlap / length
    total = sum(weights)
    if total <= 0:
        return None
    return [w / total for w in weights]


def vwap_schedule(qty: int, weights: Sequence[float], start: int, duration_ns: int, lot: int = 1) -> list[Slice]:
    """Slices proportional to `weights` (one per bin), by cumulative rounding so they sum to qty exactly."""
    _check(qty, len(weights), duration_ns, lot)
    if any(w < 0 or not math.isfinite(w) for w in weights) or sum(weights) <= 0:
        raise ValueError("weights must be finite, non-negative, not all zero")
    lots = qty // lot
    total = sum(weights)
    cum = 0.0
    done = 0
    sizes = []
    for i, w in enumerate(weights):
        cum += w
        upto = lots if i == len(weights) - 1 else min(lots, math.floor(lots * cum / total + 1e-9))
        sizes.append(max(0, upto - done))
        done = max(done, upto)
    return [Slice(t, n * lot) for t, n in zip(_times(start, duration_ns, len(weights)), sizes, strict=True)]


def due(schedule: Sequence[Slice], now: int) -> tuple[int, int]:
    """(number of slices due at `now`, their cumulative qty)."""
    count = qty = 0
    for s in schedule:
        if s.ts > now:
            break
        count += 1
        qty += s.qty
    return count, qty


def pov_target(participation: float, market_volume: int, filled: int) -> int:
    """What we should have filled so that our share of all volume since start is `participation`.

    `market_volume` includes our own fills; the target is set on the others' volume
    (ours = p / (1 - p) * others), so our own trades never feed the target (no runaway)."""
    p = Fraction(str(participation))
    others = max(0, market_volume - filled)
    return math.floor(p / (1 - p) * others)


def pov_child(participation: float, market_volume: int, filled: int, open_qty: int, remaining: int,
              min_child: int = 0, lot: int = 1) -> int:
    """The next POV child: catch up to the target, never beyond it nor beyond what is left; 0 when the
    shortfall is below `min_child` (unless it is all that is left)."""
    behind = pov_target(participation, market_volume, filled) - filled - open_qty
    size = min(behind, remaining - open_qty) // lot * lot
    if size <= 0:
        return 0
    if size < max(min_child, lot) and size < remaining - open_qty:
        return 0
    return size


def iceberg_child(display_qty: int, remaining: int, open_qty: int) -> int:
    """One visible child at a time: the next is sent only when none is open."""
    return 0 if open_qty > 0 else min(display_qty, remaining)


def _check(qty: int, slices: int, duration_ns: int, lot: int) -> None:
    if lot <= 0 or qty <= 0 or qty % lot:
        raise ValueError(f"qty {qty} must be a positive multiple of lot {lot}")
    if slices <= 0 or duration_ns <= 0:
        raise ValueError("slices and duration must be positive")
