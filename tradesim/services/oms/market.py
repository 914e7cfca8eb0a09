"""The market as pre-trade checks see it: last price and today's volume from the venue's trades, with
configured reference prices (e.g. previous close) as the band's anchor and the fallback valuation.

Implements `tradesim.services.risk.MarketState`; deterministic (the day comes from the trade's `ts`).
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from tradesim.domain import Trade
from tradesim.services.risk.counters import NS_PER_DAY


class SymbolMarket(msgspec.Struct, kw_only=True):
    symbol: str
    last_price: int | None = None
    day: int = 0
    day_volume: int = 0


class MarketView:
    """Per-symbol last price and day volume, fed with every Trade in venue order."""

    def __init__(self, reference_prices: Mapping[str, int] | None = None, day_offset_ns: int = 0) -> None:
        self._ref = dict(reference_prices or {})
        self._offset = day_offset_ns
        self._symbols: dict[str, SymbolMarket] = {}

    def on_trade(self, trade: Trade) -> None:
        state = self._symbols.setdefault(trade.symbol, SymbolMarket(symbol=trade.symbol))
        day = (trade.ts + self._offset) // NS_PER_DAY
        if day > state.day:
            state.day, state.day_volume = day, 0
        state.day_volume += trade.qty
        state.last_price = trade.price

    def reference_price(self, symbol: str) -> int | None:
        return self._ref.get(symbol)

    def last_price(self, symbol: str) -> int | None:
        state = self._symbols.get(symbol)
        return state.last_price if state is not None else None

    def day_volume(self, symbol: str) -> int:
        state = self._symbols.get(symbol)
        return state.day_volume if state is not None else 0

    def snapshot(self) -> list[SymbolMarket]:
        return [msgspec.structs.replace(s) for _, s in sorted(self._symbols.items())]

    def restore(self, states: list[SymbolMarket]) -> None:
        self._symbols = {s.symbol: msgspec.structs.replace(s) for s in states}
