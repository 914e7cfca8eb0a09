"""Average-cost arithmetic of one signed position: a fill goes in, the realized P&L comes out.

The open part of a position is held as its exact cost (signed money: Σ signed qty * price * multiplier),
never as a rounded average price. A reduction removes the average-cost share `cost * closed / |qty|` of
that cost; when the share is not a whole number of `quantum` it is rounded half-even to the quantum and
the remainder stays in the cost of what is still open. Closing the whole position removes exactly the
cost that is left, so over a round trip the realized P&L is exact and money is conserved to the unit.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import msgspec

ZERO = Decimal(0)


class Position(msgspec.Struct, kw_only=True):
    """Mutable state of one account's position in one symbol (the ledger owns it; views are copies)."""

    symbol: str
    qty: int = 0  # signed units: > 0 long, < 0 short
    cost: Decimal = ZERO  # signed money of the open part; 0 when flat
    realized: Decimal = ZERO  # gross realized P&L, before fees
    fees: Decimal = ZERO  # fees paid on this symbol (negative for net rebates)


def _sign(value: int) -> int:
    return (value > 0) - (value < 0)


def cost_share(cost: Decimal, closed: int, open_qty: int, quantum: Decimal) -> Decimal:
    """The average-cost share of `cost` for `closed` of `open_qty` units (both > 0), on the quantum grid.

    Exact when the share falls on the grid; otherwise rounded half-even to the grid.
    """
    if closed == open_qty:
        return cost
    share = Fraction(cost) * closed / open_qty
    steps = round(share / Fraction(quantum))
    if Fraction(steps) * Fraction(quantum) == share:
        return cost * closed / open_qty  # exact, keeps the natural exponent
    return Decimal(steps) * quantum


def apply_fill(position: Position, signed_qty: int, unit_value: Decimal, quantum: Decimal) -> Decimal:
    """Books a fill of `signed_qty` units (> 0 bought, < 0 sold) at `unit_value` money per unit.

    Returns the P&L realized by the fill: on a reduction, proceeds minus the average-cost share of the
    cost; a fill that crosses zero closes the whole position first and opens the rest at the fill price.
    """
    qty = position.qty
    if qty == 0 or _sign(qty) == _sign(signed_qty):
        position.qty = qty + signed_qty
        position.cost += signed_qty * unit_value
        return ZERO
    closed = min(abs(signed_qty), abs(qty))
    removed = cost_share(position.cost, closed, abs(qty), quantum)
    # Long: sold `closed` units for closed * value against `removed` of cost. Short: the mirror image.
    realized = _sign(qty) * closed * unit_value - removed
    position.qty = qty - _sign(qty) * closed
    position.cost -= removed
    rest = abs(signed_qty) - closed
    if rest:  # flipped through zero: the remainder opens a new position at the fill price
        position.qty = _sign(signed_qty) * rest
        position.cost = _sign(signed_qty) * rest * unit_value
    elif position.qty == 0:
        position.cost = ZERO
    position.realized += realized
    return realized
