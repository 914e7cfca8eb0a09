"""One account's fills in one symbol: inventory and cash flow, each venue trade counted exactly once.

A trade reaches an agent twice (in the OrderReply of the request that made it and on `orders.filled`);
the venue's event `seq` identifies it, so the second copy is dropped.
"""

from __future__ import annotations

from collections import deque

import msgspec

from tradesim.domain import Side, Trade


class Fill(msgspec.Struct, frozen=True, kw_only=True):
    """Our side of one trade."""

    seq: int
    ts: int
    client_order_id: str
    side: Side
    price: int
    qty: int
    leaves: int  # our order's leaves after this fill
    maker: bool


class FillTracker:
    """Turns trades into our `Fill`s, dedupes them, and keeps inventory (units) and cash (ticks·units)."""

    def __init__(self, account: str, symbol: str, *, memory: int = 100_000) -> None:
        self.account = account
        self.symbol = symbol
        self.inventory = 0
        self.cash_ticks = 0  # - Σ bought price·qty + Σ sold price·qty
        self.volume = 0
        self.fills = 0
        self._seen: set[int] = set()
        self._order: deque[int] = deque()
        self._memory = memory

    def on_trade(self, trade: Trade) -> list[Fill]:
        """Our fills in `trade` (none if it is not ours or already counted)."""
        if trade.symbol != self.symbol or trade.seq in self._seen:
            return []
        sides: list[Fill] = []
        taker_side = trade.aggressor
        maker_side = Side.SELL if taker_side is Side.BUY else Side.BUY
        if trade.maker_account == self.account:
            sides.append(Fill(seq=trade.seq, ts=trade.ts, client_order_id=trade.maker_client_order_id,
                              side=maker_side, price=trade.price, qty=trade.qty,
                              leaves=trade.maker_leaves_qty, maker=True))
        if trade.taker_account == self.account:
            sides.append(Fill(seq=trade.seq, ts=trade.ts, client_order_id=trade.taker_client_order_id,
                              side=taker_side, price=trade.price, qty=trade.qty,
                              leaves=trade.taker_leaves_qty, maker=False))
        if not sides:
            return []
        self._remember(trade.seq)
        for fill in sides:
            signed = fill.qty if fill.side is Side.BUY else -fill.qty
            self.inventory += signed
            self.cash_ticks -= signed * fill.price
            self.volume += fill.qty
            self.fills += 1
        return sides

    def _remember(self, seq: int) -> None:
        self._seen.add(seq)
        self._order.append(seq)
        if len(self._order) > self._memory:
            self._seen.discard(self._order.popleft())
