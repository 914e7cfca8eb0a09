"""The risk adjuster: turns the generator's ideal quotes into ones the inventory allows (pure).

The position state comes from |inventory| / limit (seed 02's Normal / Warning / Critical / OverLimit):

| state     | when                                   | quotes                                                   |
|-----------|----------------------------------------|----------------------------------------------------------|
| NORMAL    | ratio < warning_fraction               | as generated                                             |
| WARNING   | warning_fraction ≤ ratio < critical | wider by `warning_widen_ticks`; adding side x `warning_size_factor`|
| CRITICAL  | critical_fraction ≤ ratio < 1          | only the reducing side                                   |
| OVERLIMIT | ratio ≥ 1                              | none; `flatten`: market order back to the warning line |
"""

from __future__ import annotations

import enum
import math

import msgspec

from tradesim.services.agents.quotes import QuoteLevel, Quotes


class PositionState(enum.Enum):
    NORMAL = "normal"
    WARNING = "warning"
    CRITICAL = "critical"
    OVERLIMIT = "overlimit"


class RiskParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    position_limit: int = 2_000  # units
    warning_fraction: float = 0.5
    critical_fraction: float = 0.8
    warning_widen_ticks: int = 2  # each side
    warning_size_factor: float = 0.5  # size multiplier of the side that adds to inventory
    flatten: bool = False  # OverLimit: send a market order back to the warning line

    def __post_init__(self) -> None:
        if self.position_limit <= 0:
            raise ValueError("position_limit must be positive")
        if not 0 < self.warning_fraction <= self.critical_fraction <= 1:
            raise ValueError("0 < warning_fraction <= critical_fraction <= 1 is required")
        if self.warning_widen_ticks < 0 or not 0 <= self.warning_size_factor <= 1:
            raise ValueError("warning_widen_ticks >= 0 and 0 <= warning_size_factor <= 1 are required")


def position_state(inventory: int, params: RiskParams) -> PositionState:
    ratio = abs(inventory) / params.position_limit
    if ratio >= 1:
        return PositionState.OVERLIMIT
    if ratio >= params.critical_fraction:
        return PositionState.CRITICAL
    if ratio >= params.warning_fraction:
        return PositionState.WARNING
    return PositionState.NORMAL


def _shrink(levels: list[QuoteLevel], factor: float, lot_size: int) -> list[QuoteLevel]:
    """Scales sizes down to lot multiples; a level that rounds to nothing is dropped."""
    out = []
    for level in levels:
        qty = int(level.qty * factor) // lot_size * lot_size
        if qty > 0:
            out.append(msgspec.structs.replace(level, qty=qty))
    return out


def adjust(quotes: Quotes, inventory: int, params: RiskParams, lot_size: int = 1) -> Quotes:
    """The quotes the position state allows. The adding side is bids when long, asks when short."""
    state = position_state(inventory, params)
    if state is PositionState.NORMAL or inventory == 0:
        return quotes
    long = inventory > 0
    if state is PositionState.WARNING:
        w = params.warning_widen_ticks
        bids = [msgspec.structs.replace(b, price=b.price - w) for b in quotes.bids if b.price - w > 0]
        asks = [msgspec.structs.replace(a, price=a.price + w) for a in quotes.asks]
        if long:
            bids = _shrink(bids, params.warning_size_factor, lot_size)
        else:
            asks = _shrink(asks, params.warning_size_factor, lot_size)
        return msgspec.structs.replace(quotes, bids=bids, asks=asks)
    if state is PositionState.CRITICAL:
        return msgspec.structs.replace(quotes, bids=[] if long else quotes.bids, asks=quotes.asks if long else [])
    taker = 0
    if params.flatten:
        target = math.floor(params.warning_fraction * params.position_limit)
        excess = (abs(inventory) - target) // lot_size * lot_size
        taker = -excess if long else excess
    return Quotes(bids=[], asks=[], reservation=quotes.reservation, spread=quotes.spread, taker_qty=taker)
