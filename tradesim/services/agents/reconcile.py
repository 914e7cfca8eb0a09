"""Reconciliation: which requests turn the live orders into the desired quotes (pure).

Per side, live orders and desired levels are paired best price first. A pair is left alone when the
live price is within `threshold_bps` of the desired one and its leaves equal the desired size — so
small moves of the fair price cause no churn. Otherwise the live order is modified (one request
instead of cancel + new; a pure size cut keeps queue priority). Unpaired live orders are cancelled,
unpaired levels placed. The plan is ordered so the book never crosses itself mid-way: cancels,
then modifies that move away from the other side, then those that move towards it, then new orders.
"""

from __future__ import annotations

import msgspec

from tradesim.domain import Side
from tradesim.services.agents.quotes import QuoteLevel


class LiveOrder(msgspec.Struct, kw_only=True):
    """A resting order of ours as the executor last heard of it."""

    client_order_id: str
    side: Side
    price: int
    qty: int  # total ordered (FIX OrderQty)
    filled: int = 0
    order_id: int | None = None
    pending: bool = False  # a cancel/modify the OMS has not settled; leave it alone

    @property
    def leaves(self) -> int:
        return self.qty - self.filled


class Place(msgspec.Struct, frozen=True, kw_only=True):
    side: Side
    price: int
    qty: int


class Cancel(msgspec.Struct, frozen=True, kw_only=True):
    client_order_id: str


class Modify(msgspec.Struct, frozen=True, kw_only=True):
    client_order_id: str
    price: int
    qty: int  # new total quantity = filled + desired leaves
    improves: bool  # moves towards the other side (or grows): goes after the ones that move away


Action = Place | Cancel | Modify


def within(live_price: int, desired_price: int, threshold_bps: float) -> bool:
    """|live - desired| ≤ threshold_bps · desired / 10 000 (ticks scale like prices, so bps hold)."""
    return abs(live_price - desired_price) * 10_000 <= threshold_bps * abs(desired_price)


def _best_first(side: Side, price: int) -> int:
    return -price if side is Side.BUY else price


def _side_plan(side: Side, desired: list[QuoteLevel], live: list[LiveOrder],
               threshold_bps: float) -> tuple[list[Cancel], list[Modify], list[Place]]:
    cancels: list[Cancel] = []
    modifies: list[Modify] = []
    places: list[Place] = []
    want = sorted(desired, key=lambda d: _best_first(side, d.price))
    have = sorted(live, key=lambda o: (_best_first(side, o.price), o.client_order_id))
    for order, level in zip(have, want, strict=False):
        price_ok = within(order.price, level.price, threshold_bps)
        if price_ok and order.leaves == level.qty:
            continue
        price = order.price if price_ok else level.price
        towards = price > order.price if side is Side.BUY else price < order.price
        modifies.append(Modify(client_order_id=order.client_order_id, price=price, qty=order.filled + level.qty,
                               improves=towards or level.qty > order.leaves))
    cancels.extend(Cancel(client_order_id=o.client_order_id) for o in have[len(want):])
    places.extend(Place(side=side, price=d.price, qty=d.qty) for d in want[len(have):])
    return cancels, modifies, places


def reconcile(bids: list[QuoteLevel], asks: list[QuoteLevel], live: list[LiveOrder],
              threshold_bps: float) -> list[Action]:
    """The requests, in a safe order, that bring the non-pending `live` orders to `bids`/`asks`."""
    settled = [o for o in live if not o.pending]
    bc, bm, bp = _side_plan(Side.BUY, bids, [o for o in settled if o.side is Side.BUY], threshold_bps)
    ac, am, ap = _side_plan(Side.SELL, asks, [o for o in settled if o.side is Side.SELL], threshold_bps)
    modifies = bm + am
    plan: list[Action] = [*bc, *ac]
    plan.extend(m for m in modifies if not m.improves)
    plan.extend(m for m in modifies if m.improves)
    plan.extend([*bp, *ap])
    return plan
