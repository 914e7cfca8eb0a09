"""Reference order book: a slow, obviously-correct model of docs/matching.md to check the engine against.

Written from the spec alone, never from `tradesim.engine`: plain lists, full scans, one rule per
line. Speed does not matter, clarity does. It takes the same domain commands and emits the same
domain events (same seq / order_id / trade_id numbering, reasons and event order). Where the spec
is silent the choice made here is marked `SPEC-GAP` so a mismatch with the engine can be judged.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tradesim.domain import (
    STP,
    AddInstrument,
    CancelOrder,
    CancelReason,
    Command,
    Event,
    ExpireOrders,
    Instrument,
    ModifyOrder,
    NewOrder,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderModified,
    OrderRejected,
    OrderTriggered,
    OrderType,
    RejectReason,
    Side,
    TimeInForce,
    Trade,
)

Level = tuple[int, int, int]  # (price, visible qty, order count)

WAITING = "waiting"  # an untriggered stop, off-book
RESTING = "resting"  # in the book, matchable
ACTIVE = "active"  # an incoming order while it matches
DONE = "done"  # filled, canceled or expired


@dataclass
class RefOrder:
    """One accepted order. `visible` is the matchable slice while it rests (= leaves unless iceberg)."""

    order_id: int
    account: str
    client_order_id: str
    symbol: str
    side: Side
    type: OrderType
    tif: TimeInForce
    price: int | None
    qty: int
    stop_price: int | None
    display_qty: int | None
    post_only: bool
    stp: STP
    expire_ts: int | None
    filled: int = 0
    visible: int = 0
    state: str = ACTIVE
    triggered: bool = False

    @property
    def leaves(self) -> int:
        return self.qty - self.filled

    @property
    def is_market(self) -> bool:
        """STOP enters the book as MARKET once triggered, so both match at any price."""
        return self.type in (OrderType.MARKET, OrderType.STOP)

    def slice(self) -> int:
        """The visible slice for the current leaves: an iceberg shows at most display_qty."""
        if self.display_qty is None:
            return self.leaves
        return min(self.display_qty, self.leaves)


class Rejected(Exception):
    """Raised by a validation step; the command turns into one OrderRejected and changes nothing."""

    def __init__(self, reason: RejectReason, message: str, order_id: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.order_id = order_id


class ReferenceEngine:
    """All symbols of one venue. Queue priority is simply the position in `self.book` (front = oldest)."""

    def __init__(self, instruments: Iterable[Instrument] = ()) -> None:
        self.instruments: dict[str, Instrument] = {i.symbol: i for i in instruments}
        self.orders: list[RefOrder] = []  # every accepted order; orders[k] has order_id k + 1
        self.book: list[RefOrder] = []  # resting orders of every symbol and side, in time priority
        self.stops: list[RefOrder] = []  # waiting stops, in acceptance order
        self.last: dict[str, int] = {}
        self.seq = 0
        self.trade_count = 0
        self.ts = 0
        self.out: list[Event] = []

    # ----------------------------------------------------------------- public API (as the engine's)

    def apply(self, command: Command) -> list[Event]:
        """Dispatches any command, as the journal replay does."""
        if isinstance(command, NewOrder):
            return self.submit(command)
        if isinstance(command, CancelOrder):
            return self.cancel(command)
        if isinstance(command, ModifyOrder):
            return self.modify(command)
        if isinstance(command, ExpireOrders):
            return self.expire(command.ts, end_of_day=command.end_of_day)
        if isinstance(command, AddInstrument):
            self._begin(command.ts)
            self.instruments.setdefault(command.instrument.symbol, command.instrument)
            return self.out
        raise TypeError(f"not a command: {command!r}")

    def submit(self, cmd: NewOrder) -> list[Event]:
        self._begin(cmd.ts)
        try:
            self._validate_new(cmd)
        except Rejected as rej:
            self._reject(cmd, rej)
            return self.out
        order = RefOrder(
            order_id=len(self.orders) + 1, account=cmd.account, client_order_id=cmd.client_order_id,
            symbol=cmd.symbol, side=cmd.side, type=cmd.type, tif=cmd.tif, qty=cmd.qty,
            price=cmd.price if cmd.type in (OrderType.LIMIT, OrderType.STOP_LIMIT) else None,  # ignored
            stop_price=cmd.stop_price if cmd.type in (OrderType.STOP, OrderType.STOP_LIMIT) else None,
            display_qty=cmd.display_qty, post_only=cmd.post_only, stp=cmd.stp,
            expire_ts=cmd.expire_ts,
        )
        self.orders.append(order)
        self._emit(OrderAccepted, order_id=order.order_id, account=order.account,
                   client_order_id=order.client_order_id, symbol=order.symbol, side=order.side,
                   type=order.type, tif=order.tif, price=order.price, qty=order.qty,
                   stop_price=order.stop_price, display_qty=order.display_qty)
        if order.type in (OrderType.STOP, OrderType.STOP_LIMIT):
            order.state = WAITING
            self.stops.append(order)
        else:
            self._incoming(order)
        self._run_stops(order.symbol)
        return self.out

    def cancel(self, cmd: CancelOrder) -> list[Event]:
        self._begin(cmd.ts)
        order = self._live(cmd.account, cmd.client_order_id, cmd.symbol)
        if order is None:
            self._reject(cmd, Rejected(RejectReason.UNKNOWN_ORDER, "no open order with that id"))
            return self.out
        self._finish(order, CancelReason.USER)
        return self.out

    def modify(self, cmd: ModifyOrder) -> list[Event]:
        self._begin(cmd.ts)
        try:
            order, new_price, new_qty = self._validate_modify(cmd)
        except Rejected as rej:
            self._reject(cmd, rej)
            return self.out
        old_leaves = order.leaves
        price_changed = new_price != order.price
        order.price = new_price
        order.qty = new_qty
        self._emit(OrderModified, order_id=order.order_id, account=order.account,
                   client_order_id=order.client_order_id, symbol=order.symbol, price=order.price,
                   qty=order.qty, leaves_qty=order.leaves)
        if order.state == WAITING:
            return self.out  # an untriggered stop has no place in the book to keep or lose
        loses_priority = price_changed or order.leaves > old_leaves
        if not loses_priority:
            order.visible = order.slice()  # spec: the visible slice becomes min(display_qty, leaves)
            return self.out
        # Back of the (new) level; if the new price crosses it first matches as an incoming order.
        self.book.remove(order)
        order.state = ACTIVE
        if self._match(order) and order.leaves > 0:
            self._rest(order)
        elif order.leaves == 0:
            order.state = DONE
        self._run_stops(order.symbol)
        return self.out

    def expire(self, ts: int, end_of_day: bool = False) -> list[Event]:
        """GTD orders with expire_ts <= ts; with end_of_day also every DAY order."""
        self.ts = ts
        self.out = []
        self._expire_due(ts, end_of_day)
        return self.out

    # ------------------------------------------------------------------------------ state queries

    def depth(self, symbol: str, n: int = 10) -> tuple[list[Level], list[Level]]:
        """(bids, asks) as (price, visible qty, order count), best first."""
        sides = []
        for side in (Side.BUY, Side.SELL):
            levels: dict[int, list[int]] = {}
            for o in self._resting(symbol, side):
                assert o.price is not None
                level = levels.setdefault(o.price, [0, 0])
                level[0] += o.visible
                level[1] += 1
            prices = sorted(levels, reverse=side is Side.BUY)[:n]
            sides.append([(p, levels[p][0], levels[p][1]) for p in prices])
        return sides[0], sides[1]

    def best(self, symbol: str, side: Side) -> int | None:
        prices = [o.price for o in self._resting(symbol, side) if o.price is not None]
        if not prices:
            return None
        return max(prices) if side is Side.BUY else min(prices)

    def last_price(self, symbol: str) -> int | None:
        return self.last.get(symbol)

    def order(self, order_id: int) -> RefOrder | None:
        return self.orders[order_id - 1] if 0 < order_id <= len(self.orders) else None

    def order_by_client(self, account: str, client_order_id: str) -> RefOrder | None:
        for o in self.orders:
            if o.account == account and o.client_order_id == client_order_id:
                return o
        return None

    def queue(self, symbol: str, side: Side, price: int) -> list[int]:
        """Order ids at one level in queue order (for tests of priority)."""
        return [o.order_id for o in self._resting(symbol, side) if o.price == price]

    # ------------------------------------------------------------------------------- validation

    def _validate_new(self, cmd: NewOrder) -> None:
        """The spec's table, first failing rule wins."""
        inst = self.instruments.get(cmd.symbol)
        if inst is None:
            raise Rejected(RejectReason.UNKNOWN_SYMBOL, f"symbol {cmd.symbol} is not listed")
        if cmd.qty <= 0 or cmd.qty % inst.lot_size:
            raise Rejected(RejectReason.BAD_QTY, f"qty {cmd.qty} is not a positive lot multiple")
        if cmd.type in (OrderType.LIMIT, OrderType.STOP_LIMIT) and (cmd.price is None or cmd.price <= 0):
            raise Rejected(RejectReason.BAD_PRICE, f"price {cmd.price} must be positive")
        if cmd.type in (OrderType.STOP, OrderType.STOP_LIMIT) and (
            cmd.stop_price is None or cmd.stop_price <= 0
        ):
            raise Rejected(RejectReason.MISSING_STOP_PRICE, "stop orders need a positive stop_price")
        if cmd.display_qty is not None and (
            cmd.type not in (OrderType.LIMIT, OrderType.STOP_LIMIT)
            or cmd.tif in (TimeInForce.IOC, TimeInForce.FOK)
            or not 0 < cmd.display_qty <= cmd.qty
            or cmd.display_qty % inst.lot_size
        ):
            raise Rejected(RejectReason.BAD_QTY, f"bad display_qty {cmd.display_qty}")
        takes_only = cmd.tif in (TimeInForce.IOC, TimeInForce.FOK)
        if cmd.post_only and (cmd.type is not OrderType.LIMIT or takes_only):
            raise Rejected(RejectReason.MALFORMED, "post_only needs a resting LIMIT order")
        if cmd.tif is TimeInForce.GTD:
            if cmd.expire_ts is None:
                raise Rejected(RejectReason.MALFORMED, "GTD needs expire_ts")
            if cmd.expire_ts <= cmd.ts:
                raise Rejected(RejectReason.EXPIRED, "expire_ts is not in the future")
        if self.order_by_client(cmd.account, cmd.client_order_id) is not None:
            raise Rejected(RejectReason.DUPLICATE_CLIENT_ORDER_ID, "client order id already used")
        if cmd.post_only and cmd.price is not None and self._crosses(cmd.symbol, cmd.side, cmd.price):
            raise Rejected(RejectReason.POST_ONLY, "post-only order would take liquidity")

    def _validate_modify(self, cmd: ModifyOrder) -> tuple[RefOrder, int | None, int]:
        """Returns (order, new price, new total qty). SPEC-GAP: check order malformed, unknown, qty, price."""
        if cmd.price is None and cmd.qty is None:
            raise Rejected(RejectReason.MALFORMED, "modify changes nothing")
        order = self._live(cmd.account, cmd.client_order_id, cmd.symbol)
        if order is None:
            raise Rejected(RejectReason.UNKNOWN_ORDER, "no open order with that id")
        new_qty = order.qty if cmd.qty is None else cmd.qty
        new_price = order.price if cmd.price is None else cmd.price
        lot = self.instruments[order.symbol].lot_size
        if new_qty <= order.filled or new_qty % lot:
            raise Rejected(RejectReason.BAD_QTY, f"qty {new_qty} vs filled {order.filled}", order.order_id)
        if cmd.price is not None and cmd.price <= 0:
            raise Rejected(RejectReason.BAD_PRICE, f"price {cmd.price} must be positive", order.order_id)
        if cmd.price is not None and order.type is OrderType.STOP:
            # SPEC-GAP: a stop-market order has no limit price to change (the engine says malformed).
            raise Rejected(RejectReason.MALFORMED, "a stop-market order has no price", order.order_id)
        if order.post_only and new_price is not None and self._crosses(order.symbol, order.side, new_price):
            raise Rejected(RejectReason.POST_ONLY, "post-only order would take liquidity", order.order_id)
        return order, new_price, new_qty

    # --------------------------------------------------------------------------------- matching

    def _incoming(self, order: RefOrder) -> None:
        """A new (or just triggered) order: FOK check, match, then rest or cancel the remainder."""
        order.state = ACTIVE
        if order.tif is TimeInForce.FOK and not self._fok_can_fill(order):
            self._finish(order, CancelReason.FOK)
            return
        if not self._match(order):
            return  # STP canceled the remainder
        if order.leaves == 0:
            order.state = DONE
        elif order.is_market:
            self._finish(order, CancelReason.NO_LIQUIDITY)  # SPEC-GAP: MARKET+IOC says no_liquidity
        elif order.tif is TimeInForce.IOC:
            self._finish(order, CancelReason.IOC)
        elif order.tif is TimeInForce.FOK:
            self._finish(order, CancelReason.FOK)  # unreachable after a passed FOK check
        else:
            self._rest(order)

    def _match(self, taker: RefOrder) -> bool:
        """Matches `taker` against the opposite side; False if STP canceled the taker's remainder."""
        while taker.leaves > 0:
            maker = self._head(taker)
            if maker is None:
                return True
            if maker.account == taker.account and taker.stp is not STP.NONE:
                if taker.stp is STP.CANCEL_NEWEST:
                    self._finish(taker, CancelReason.STP)
                    return False
                self._finish(maker, CancelReason.STP)
                if taker.stp is STP.CANCEL_BOTH:
                    self._finish(taker, CancelReason.STP)
                    return False
                continue  # CANCEL_OLDEST: matching goes on
            self._trade(maker, taker, min(taker.leaves, maker.visible))
        return True

    def _trade(self, maker: RefOrder, taker: RefOrder, qty: int) -> None:
        assert maker.price is not None and qty > 0
        maker.filled += qty
        maker.visible -= qty
        taker.filled += qty
        self.trade_count += 1
        self.last[maker.symbol] = maker.price
        self._emit(Trade, trade_id=self.trade_count, symbol=maker.symbol, price=maker.price, qty=qty,
                   aggressor=taker.side, maker_order_id=maker.order_id, maker_account=maker.account,
                   maker_client_order_id=maker.client_order_id, maker_cum_qty=maker.filled,
                   maker_leaves_qty=maker.leaves, taker_order_id=taker.order_id,
                   taker_account=taker.account, taker_client_order_id=taker.client_order_id,
                   taker_cum_qty=taker.filled, taker_leaves_qty=taker.leaves)
        if maker.leaves == 0:
            self.book.remove(maker)
            maker.state = DONE
        elif maker.visible == 0:
            # Iceberg refill: a new slice joins the back of its level with new time priority.
            self.book.remove(maker)
            maker.visible = maker.slice()
            self.book.append(maker)

    def _head(self, taker: RefOrder) -> RefOrder | None:
        """The first resting order of the best opposite price the taker may trade at, or None."""
        candidates = [
            o for o in self._resting(taker.symbol, taker.side.opposite)
            if taker.is_market or self._price_ok(taker, o.price)
        ]
        if not candidates:
            return None
        prices = [o.price for o in candidates if o.price is not None]
        best = min(prices) if taker.side is Side.BUY else max(prices)
        return next(o for o in candidates if o.price == best)

    def _fok_can_fill(self, taker: RefOrder) -> bool:
        """Dry-runs the match on a copy: fills completely without meeting an own order (stp != none).

        Hidden iceberg quantity counts because the refills are met again. SPEC-GAP (as the engine):
        "an own-account order comes before qty is reached" is judged in the order the taker would
        really meet orders, refilled slices included, so a FOK never ends partly filled.
        """
        trial = copy.deepcopy(self)
        t = trial.orders[taker.order_id - 1]
        while t.leaves > 0:
            maker = trial._head(t)
            if maker is None:
                return False
            if maker.account == t.account and t.stp is not STP.NONE:
                return False
            trial._trade(maker, t, min(t.leaves, maker.visible))
        return True

    def _rest(self, order: RefOrder) -> None:
        order.state = RESTING
        order.visible = order.slice()
        self.book.append(order)

    # ------------------------------------------------------------------------------------ stops

    def _run_stops(self, symbol: str) -> None:
        """After a command's matching: process triggered stops one at a time, cascading.

        SPEC-GAP (as the engine): a stop whose condition held when checked stays triggered even if
        an earlier stop of the same batch moves the price back; stops triggered by a stop's trades
        queue up behind those already triggered.
        """
        queue = self._take_triggered(symbol)
        while queue:
            stop = queue.pop(0)
            self._emit(OrderTriggered, order_id=stop.order_id, account=stop.account,
                       client_order_id=stop.client_order_id, symbol=stop.symbol)
            self._incoming(stop)
            queue += self._take_triggered(symbol)

    def _take_triggered(self, symbol: str) -> list[RefOrder]:
        """Waiting stops the last price triggers, off the waiting list: buys by ascending stop price,
        then sells by descending stop price, ties by acceptance."""
        last = self.last.get(symbol)
        if last is None:
            return []
        buys = [s for s in self.stops if s.symbol == symbol and s.side is Side.BUY
                and s.stop_price is not None and last >= s.stop_price]
        sells = [s for s in self.stops if s.symbol == symbol and s.side is Side.SELL
                 and s.stop_price is not None and last <= s.stop_price]
        buys.sort(key=lambda s: (s.stop_price, s.order_id))
        sells.sort(key=lambda s: (-(s.stop_price or 0), s.order_id))
        for s in buys + sells:
            self.stops.remove(s)
            s.state = ACTIVE
            s.triggered = True
        return buys + sells

    # ----------------------------------------------------------------------------------- expiry

    def _expire_due(self, ts: int, end_of_day: bool) -> None:
        live = [o for o in self.orders if o.state in (RESTING, WAITING)]
        due = [o for o in live if o.tif is TimeInForce.GTD and o.expire_ts is not None and o.expire_ts <= ts]
        due.sort(key=lambda o: (o.expire_ts, o.order_id))
        if end_of_day:  # SPEC-GAP: DAY orders after the GTD ones, by order id
            due += [o for o in live if o.tif is TimeInForce.DAY]
        for o in due:
            self._finish(o, None)

    # ---------------------------------------------------------------------------------- helpers

    def _begin(self, ts: int) -> None:
        """Every command starts by expiring due GTD orders, with the command's ts."""
        self.ts = ts
        self.out = []
        self._expire_due(ts, end_of_day=False)

    def _finish(self, order: RefOrder, reason: CancelReason | None) -> None:
        """Cancels (reason) or expires (None) the order's leaves, wherever it is."""
        if order.state == RESTING:
            self.book.remove(order)
        elif order.state == WAITING:
            self.stops.remove(order)
        order.state = DONE
        common: dict[str, Any] = dict(order_id=order.order_id, account=order.account,
                                      client_order_id=order.client_order_id, symbol=order.symbol,
                                      canceled_qty=order.leaves)
        if reason is None:
            self._emit(OrderExpired, **common)
        else:
            self._emit(OrderCanceled, reason=reason, **common)

    def _reject(self, cmd: NewOrder | CancelOrder | ModifyOrder, rej: Rejected) -> None:
        self._emit(OrderRejected, account=cmd.account, client_order_id=cmd.client_order_id,
                   symbol=cmd.symbol, reason=rej.reason, message=rej.message, order_id=rej.order_id)

    def _emit(self, cls: type[Any], **fields: Any) -> None:
        self.seq += 1
        self.out.append(cls(seq=self.seq, ts=self.ts, **fields))

    def _live(self, account: str, client_order_id: str, symbol: str) -> RefOrder | None:
        o = self.order_by_client(account, client_order_id)
        if o is None or o.symbol != symbol or o.state not in (RESTING, WAITING):
            return None
        return o

    def _resting(self, symbol: str, side: Side) -> list[RefOrder]:
        return [o for o in self.book if o.symbol == symbol and o.side is side]

    def _price_ok(self, taker: RefOrder, maker_price: int | None) -> bool:
        assert taker.price is not None and maker_price is not None
        return maker_price <= taker.price if taker.side is Side.BUY else maker_price >= taker.price

    def _crosses(self, symbol: str, side: Side, price: int) -> bool:
        best = self.best(symbol, side.opposite)
        if best is None:
            return False
        return price >= best if side is Side.BUY else price <= best
