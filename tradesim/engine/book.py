"""The order book of one instrument: price levels in time priority, and the stops waiting off-book.

A side keeps `levels`, price → level, where a level is an insertion-ordered `dict[order_id, Order]`
(FIFO iteration, O(1) cancel), and `keys`, the level prices times the side's sign in ascending
order, so that the best level is always `keys[-1]` for both sides (bids: highest price; asks: the
lowest price, stored negated) and removing it is a cheap `pop()`.
"""

from __future__ import annotations

from bisect import bisect_left, insort

from tradesim.domain import Instrument, Side, Trade
from tradesim.engine.order import Order

Level = dict[int, Order]
DepthLevel = tuple[int, int, int]


class BookSide:
    """One side of a book. `sign` is +1 for bids, -1 for asks; a level's key is `sign * price`.

    `sums` caches a level's visible quantity for `depth` (price -> sum): whatever changes a level's
    orders or their `visible_qty` drops its entry (`BookSide` methods here, the engine where it edits
    a level in place), so depth re-adds only the levels that changed since it last ran.
    """

    __slots__ = ("keys", "levels", "sign", "sums")

    def __init__(self, sign: int) -> None:
        self.sign: int = sign
        self.levels: dict[int, Level] = {}
        self.keys: list[int] = []
        self.sums: dict[int, int] = {}

    def best(self) -> int | None:
        """Best price of the side, None when empty."""
        keys = self.keys
        return keys[-1] * self.sign if keys else None

    def append(self, order: Order) -> None:
        """Puts `order` at the back of the level of its price (creating the level if needed)."""
        price: int = order.price  # type: ignore[assignment]  # resting orders always have a price
        level = self.levels.get(price)
        if level is None:
            self.add_level(price, order)
        else:
            level[order.order_id] = order
            self.sums.pop(price, None)

    def add_level(self, price: int, order: Order) -> None:
        """Opens the level `price` (not present yet) with `order` as its only order."""
        self.levels[price] = {order.order_id: order}
        self.sums.pop(price, None)
        insort(self.keys, price * self.sign)

    def remove(self, order: Order) -> None:
        """Takes a resting `order` out of its level, dropping the level when it becomes empty."""
        price: int = order.price  # type: ignore[assignment]
        level = self.levels[price]
        del level[order.order_id]
        self.sums.pop(price, None)
        if not level:
            self.drop_level(price)

    def drop_level(self, price: int) -> None:
        del self.levels[price]
        self.sums.pop(price, None)
        keys = self.keys
        key = price * self.sign
        if keys[-1] == key:
            keys.pop()
        else:
            del keys[bisect_left(keys, key)]

    def depth(self, n: int) -> list[DepthLevel]:
        """Up to `n` levels best first as (price, visible qty, order count)."""
        out: list[DepthLevel] = []
        keys = self.keys
        levels = self.levels
        sums = self.sums
        sign = self.sign
        i = len(keys) - 1
        while i >= 0 and len(out) < n:
            price = keys[i] * sign
            level = levels[price]
            visible = sums.get(price)
            if visible is None:
                visible = 0
                for order in level.values():
                    visible += order.visible_qty
                sums[price] = visible
            out.append((price, visible, len(level)))
            i -= 1
        return out

    def prices_best_first(self) -> list[int]:
        sign = self.sign
        return [key * sign for key in reversed(self.keys)]

    def orders(self) -> list[Order]:
        """Every resting order, best level first and in queue order within a level."""
        out: list[Order] = []
        for price in self.prices_best_first():
            out.extend(self.levels[price].values())
        return out


class OrderBook:
    """Bids, asks, untriggered stops and the last trade price of one instrument.

    Stops are kept as sorted `(key, order_id)` lists where a prefix is what triggers: buy stops by
    `stop_price` ascending (trigger when `last >= stop`), sell stops by `-stop_price` ascending
    (trigger when `last <= stop`), which is also the documented processing order.
    """

    __slots__ = (
        "asks",
        "bids",
        "buy_stops",
        "instrument",
        "last_price",
        "lot_size",
        "sell_stops",
        "symbol",
        "trade_by_buyer",
        "trade_by_seller",
    )

    def __init__(self, instrument: Instrument) -> None:
        self.instrument: Instrument = instrument
        self.symbol: str = instrument.symbol
        self.lot_size: int = instrument.lot_size
        self.bids: BookSide = BookSide(1)
        self.asks: BookSide = BookSide(-1)
        self.buy_stops: list[tuple[int, int]] = []
        self.sell_stops: list[tuple[int, int]] = []
        self.last_price: int | None = None
        # Trade events are made by `msgspec.structs.replace` on these (per aggressor side): CPython
        # passes a call with more than 15 keyword arguments (14 plus one positional) through a dict,
        # which made building the 17-field Trade directly about four times slower.
        self.trade_by_buyer: Trade = _trade_template(self.symbol, Side.BUY)
        self.trade_by_seller: Trade = _trade_template(self.symbol, Side.SELL)

    def best_bid(self) -> int | None:
        return self.bids.best()

    def best_ask(self) -> int | None:
        return self.asks.best()

    def depth(self, n: int = 10) -> tuple[list[DepthLevel], list[DepthLevel]]:
        """Bids and asks, best first, as (price, visible qty, order count); hidden iceberg qty not shown."""
        return self.bids.depth(n), self.asks.depth(n)

    def add_stop(self, order: Order, stop_price: int) -> None:
        if order.is_buy:
            insort(self.buy_stops, (stop_price, order.order_id))
        else:
            insort(self.sell_stops, (-stop_price, order.order_id))

    def remove_stop(self, order: Order, stop_price: int) -> None:
        if order.is_buy:
            stops = self.buy_stops
            entry = (stop_price, order.order_id)
        else:
            stops = self.sell_stops
            entry = (-stop_price, order.order_id)
        del stops[bisect_left(stops, entry)]

    def pop_triggered(self) -> list[int]:
        """Order ids of the stops the last price triggers, in processing order, taken off the stop lists.

        Buy stops (ascending stop price) come before sell stops (descending stop price); both can
        trigger together only when the last price jumped across a gap.
        """
        last = self.last_price
        out: list[int] = []
        if last is None:
            return out
        stops = self.buy_stops
        n = 0
        while n < len(stops) and stops[n][0] <= last:
            out.append(stops[n][1])
            n += 1
        if n:
            del stops[:n]
        stops = self.sell_stops
        n = 0
        while n < len(stops) and stops[n][0] <= -last:
            out.append(stops[n][1])
            n += 1
        if n:
            del stops[:n]
        return out

    def stop_order_ids(self) -> tuple[list[int], list[int]]:
        """Waiting buy and sell stop order ids in trigger-processing order."""
        return [oid for _, oid in self.buy_stops], [oid for _, oid in self.sell_stops]


def _trade_template(symbol: str, aggressor: Side) -> Trade:
    return Trade(
        seq=0,
        ts=0,
        trade_id=0,
        symbol=symbol,
        price=0,
        qty=0,
        aggressor=aggressor,
        maker_order_id=0,
        maker_account="",
        maker_client_order_id="",
        maker_cum_qty=0,
        maker_leaves_qty=0,
        taker_order_id=0,
        taker_account="",
        taker_client_order_id="",
        taker_cum_qty=0,
        taker_leaves_qty=0,
    )
