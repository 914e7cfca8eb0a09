"""Historical-simulation Value at Risk: pure, exact functions (Fractions in, Fractions out, no floats).

Method. For every held symbol, the simple returns of its recorded trade prices, `r = (p_i - p_{i-1}) /
p_{i-1}`, most recent last. Scenario k (k = 0 the most recent) applies each symbol's k-th most recent
return to the position's current exposure (`qty * mark * multiplier`, signed): the scenario P&L is
`Σ exposure_s * r_s[k]` and its loss the negative of that. With n scenarios (the shortest held history,
capped by the window), the losses are sorted ascending `L(1) <= ... <= L(n)` and

    VaR_c = max(0, L(ceil(c * n)))

i.e. the empirical quantile with the "lower" inverse-CDF convention: the smallest loss that at least a
fraction c of the scenarios do not exceed. With n = 20: VaR 95% = L(19), the second largest loss;
VaR 99% = L(20), the largest. A book that gains in that scenario has VaR 0 (never negative).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction

import msgspec

MONEY_QUANTUM = Decimal("0.01")


class VarResult(msgspec.Struct, frozen=True, kw_only=True):
    """VaR at each confidence (exact), over `observations` scenarios."""

    observations: int
    var: dict[Decimal, Fraction]  # confidence -> VaR in money, >= 0


def simple_returns(prices: Iterable[int]) -> list[Fraction]:
    """Consecutive simple returns of a price series (ticks); a non-positive price breaks the chain."""
    out: list[Fraction] = []
    previous: int | None = None
    for price in prices:
        if previous is not None and previous > 0 and price > 0:
            out.append(Fraction(price - previous, previous))
        previous = price
    return out


def scenario_losses(
    exposures: Mapping[str, Decimal | Fraction], returns: Mapping[str, Sequence[Fraction]], n: int
) -> list[Fraction]:
    """Loss of each of the `n` most recent scenarios (index 0 = most recent); every exposure needs n returns."""
    losses: list[Fraction] = []
    for k in range(1, n + 1):
        pnl = sum((Fraction(exp) * returns[symbol][-k] for symbol, exp in sorted(exposures.items())), Fraction(0))
        losses.append(-pnl)
    return losses


def quantile_loss(losses: Sequence[Fraction], confidence: Decimal | Fraction) -> Fraction:
    """L(ceil(c * n)) of the ascending losses (1-based): the lower empirical quantile at confidence c."""
    if not losses:
        raise ValueError("no scenarios")
    c = Fraction(confidence)
    if not 0 < c < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    rank = max(1, math.ceil(c * len(losses)))
    return sorted(losses)[rank - 1]


def historical_var(
    exposures: Mapping[str, Decimal | Fraction],
    returns: Mapping[str, Sequence[Fraction]],
    confidences: Iterable[Decimal],
    *,
    window: int | None = None,
    min_observations: int = 1,
) -> VarResult | None:
    """VaR of the exposures at each confidence (see the module docstring); None without enough history.

    Symbols with zero exposure are ignored; a book with no exposure has VaR 0 at every confidence.
    """
    held = {s: e for s, e in exposures.items() if e != 0}
    levels = list(confidences)
    if not held:
        return VarResult(observations=0, var={c: Fraction(0) for c in levels})
    n = min(len(returns.get(s, ())) for s in held)
    if window is not None:
        n = min(n, window)
    if n < max(1, min_observations):
        return None
    losses = scenario_losses(held, returns, n)
    return VarResult(observations=n, var={c: max(Fraction(0), quantile_loss(losses, c)) for c in levels})


def to_money(value: Fraction, quantum: Decimal = MONEY_QUANTUM) -> Decimal:
    """An exact figure shown in money: rounded half-even to `quantum` (the only rounding of VaR)."""
    steps = round(value / Fraction(quantum))  # round() of a Fraction is half-even
    return (Decimal(steps) * quantum).quantize(quantum, rounding=ROUND_HALF_EVEN)
