"""The quote generator: Avellaneda-Stoikov quotes from the processed market and the inventory (pure).

    sigma_t  = sigma · fair                          (price volatility in ticks per √s)
    r    = s - q · gamma · sigma_t² · tau              (reservation price; q = inventory / inventory_unit)
    delta    = gamma · sigma_t² · tau + (2/gamma) · ln(1 + gamma/k) + 2 · adverse_weight · max(adverse, 0)
    s    = fair + imbalance_weight · imbalance · (best_ask - best_bid) / 2
    bid_i = floor(r - max(delta/2, min_half_spread) - i · level_spacing),  ask_i = ceil(r + … + i · spacing)

tau = T - t in seconds. Prices are ticks; sizes are units (lot multiples). Bids round down and asks
up, so rounding never narrows the spread, and the ask is pushed above the bid if they would touch.
"""

from __future__ import annotations

import math

import msgspec

from tradesim.domain import Side
from tradesim.services.agents.processors import MarketView


class QuoteParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Avellaneda-Stoikov and ladder parameters (see docs/agents.md for units)."""

    gamma: float = 0.01  # risk aversion, 1/ticks
    k: float = 0.5  # order-arrival decay, 1/ticks
    inventory_unit: int = 100  # units of inventory that make q = 1
    levels: int = 3
    level_spacing_ticks: int = 2
    base_size: int = 100  # units at level 0
    size_growth: float = 1.0  # size of level i = base_size · size_growth^i
    min_half_spread_ticks: float = 1.0
    imbalance_weight: float = 0.0  # shift of s towards the heavy side, in half-spreads of the book
    adverse_weight: float = 1.0  # spread widening per tick of adverse selection (each side)

    def __post_init__(self) -> None:
        if self.gamma <= 0 or self.k <= 0:
            raise ValueError("gamma and k must be positive")
        if self.inventory_unit <= 0 or self.levels < 1 or self.level_spacing_ticks < 1 or self.base_size <= 0:
            raise ValueError("inventory_unit, levels, level_spacing_ticks and base_size must be positive")
        if self.size_growth <= 0 or self.min_half_spread_ticks < 0.5:
            raise ValueError("size_growth must be positive and min_half_spread_ticks at least 0.5")


class QuoteLevel(msgspec.Struct, frozen=True, kw_only=True):
    side: Side
    price: int  # ticks
    qty: int  # units


class Quotes(msgspec.Struct, frozen=True, kw_only=True):
    """What the maker wants resting, best level first per side, plus an optional taker order:
    `taker_qty` > 0 buys, < 0 sells, at market (the risk adjuster's flatten)."""

    bids: list[QuoteLevel] = []
    asks: list[QuoteLevel] = []
    reservation: float = 0.0
    spread: float = 0.0
    taker_qty: int = 0


def reservation_price(s: float, q: float, gamma: float, sigma_ticks: float, tau: float) -> float:
    """r = s - q·gamma·sigma²·tau: a long maker values the asset below mid, so it quotes lower to sell it off."""
    return s - q * gamma * sigma_ticks ** 2 * tau


def optimal_spread(gamma: float, sigma_ticks: float, tau: float, k: float) -> float:
    """delta = gammasigma²tau + (2/gamma)·ln(1 + gamma/k): the total bid-ask spread, in ticks."""
    return gamma * sigma_ticks ** 2 * tau + (2 / gamma) * math.log1p(gamma / k)


def level_size(params: QuoteParams, level: int, lot_size: int) -> int:
    """base_size · growth^level rounded down to lots, at least one lot."""
    raw = params.base_size * params.size_growth ** level
    return max(lot_size, int(raw) // lot_size * lot_size)


def generate_quotes(view: MarketView, inventory: int, tau: float, params: QuoteParams,
                    lot_size: int = 1) -> Quotes:
    """The full ladder for `view`; no quotes while there is no fair price yet."""
    if view.fair is None:
        return Quotes()
    s = view.fair
    if view.best_bid is not None and view.best_ask is not None and view.best_ask > view.best_bid:
        s += params.imbalance_weight * view.imbalance * (view.best_ask - view.best_bid) / 2
    sigma_ticks = view.sigma * view.fair
    tau = max(tau, 0.0)
    q = inventory / params.inventory_unit
    r = reservation_price(s, q, params.gamma, sigma_ticks, tau)
    delta = optimal_spread(params.gamma, sigma_ticks, tau, params.k)
    delta += 2 * params.adverse_weight * max(view.adverse, 0.0)
    half = max(delta / 2, params.min_half_spread_ticks)
    bid0 = math.floor(r - half)
    ask0 = math.ceil(r + half)
    if ask0 <= bid0:  # only possible through rounding of a degenerate half spread
        ask0 = bid0 + 1
    bids: list[QuoteLevel] = []
    asks: list[QuoteLevel] = []
    for i in range(params.levels):
        size = level_size(params, i, lot_size)
        offset = i * params.level_spacing_ticks
        if bid0 - offset > 0:
            bids.append(QuoteLevel(side=Side.BUY, price=bid0 - offset, qty=size))
        asks.append(QuoteLevel(side=Side.SELL, price=ask0 + offset, qty=size))
    return Quotes(bids=bids, asks=asks, reservation=r, spread=2 * half)


def keep_passive(quotes: Quotes, best_bid: int | None, best_ask: int | None) -> Quotes:
    """Pulls levels that would take liquidity back to one tick inside the opposite best, so a post-only
    quote is not rejected (a maker's quotes rest; they never cross the market)."""
    bids, asks = quotes.bids, quotes.asks
    if best_ask is not None:
        bids = [b if b.price < best_ask else msgspec.structs.replace(b, price=best_ask - 1)
                for b in bids if best_ask - 1 > 0]
    if best_bid is not None:
        asks = [a if a.price > best_bid else msgspec.structs.replace(a, price=best_bid + 1) for a in asks]
    return msgspec.structs.replace(quotes, bids=bids, asks=asks)
