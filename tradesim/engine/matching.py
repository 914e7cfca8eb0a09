"""The matching engine: commands in, events out, by the rules of docs/matching.md.

Pure and synchronous: no I/O, no clock, no randomness; time is the command's `ts`. The hot paths
(a plain limit that rests, a cancel, a limit or market order that takes) are written out with
local variables and without per-order allocation beyond the order and its events, because the
engine is expected to run at around a million operations per second.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from heapq import heappop, heappush
from typing import Final

import msgspec
from msgspec.structs import replace as _replace

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
    OrderStatus,
    OrderTriggered,
    OrderType,
    RejectReason,
    Side,
    TimeInForce,
    Trade,
    transition,
)
from tradesim.engine.book import BookSide, OrderBook
from tradesim.engine.order import (
    ACCEPTED_TO_CANCELED,
    ACCEPTED_TO_FILLED,
    ACCEPTED_TO_PARTIAL,
    NEW_TO_ACCEPTED,
    PARTIAL_TO_FILLED,
    Order,
)
from tradesim.engine.snapshot import (
    BookState,
    EngineSnapshot,
    LevelState,
    OrderState,
    order_from_state,
    order_state,
)

_BUY: Final = Side.BUY
_SELL: Final = Side.SELL
_LIMIT: Final = OrderType.LIMIT
_MARKET: Final = OrderType.MARKET
_STOP: Final = OrderType.STOP
_STOP_LIMIT: Final = OrderType.STOP_LIMIT
_GTC: Final = TimeInForce.GTC
_DAY: Final = TimeInForce.DAY
_IOC: Final = TimeInForce.IOC
_FOK: Final = TimeInForce.FOK
_GTD: Final = TimeInForce.GTD
_STP_NONE: Final = STP.NONE
_CANCEL_NEWEST: Final = STP.CANCEL_NEWEST
_CANCEL_BOTH: Final = STP.CANCEL_BOTH
_ACCEPTED: Final = OrderStatus.ACCEPTED
_PARTIALLY_FILLED: Final = OrderStatus.PARTIALLY_FILLED
_FILLED: Final = OrderStatus.FILLED
_CANCELED: Final = OrderStatus.CANCELED
_EXPIRED: Final = OrderStatus.EXPIRED
_TRIGGERED: Final = OrderStatus.TRIGGERED
_R_USER: Final = CancelReason.USER
_R_IOC: Final = CancelReason.IOC
_R_FOK: Final = CancelReason.FOK
_R_STP: Final = CancelReason.STP
_R_NO_LIQUIDITY: Final = CancelReason.NO_LIQUIDITY

# Canonical encoding for state_hash: unordered collections (instrument flags) are sorted.
_HASH_ENCODER: Final = msgspec.msgpack.Encoder(order="deterministic")
_KEY_BOOKS: Final = _HASH_ENCODER.encode("books")
_KEY_VERSION: Final = _HASH_ENCODER.encode("version")
_EMPTY_ARRAY: Final = 0x90


def _array_header(n: int) -> bytes:
    """The msgpack header of an array of `n` items."""
    if n < 16:
        return bytes((0x90 | n,))
    if n < 0x10000:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


class MatchingEngine:
    """Order books of all listed instruments, matched by price-time priority.

    Every public command method returns the events it caused, in order, each with the next venue
    sequence number. Bad input never raises: it yields `OrderRejected` and leaves the state as it was.
    """

    __slots__ = ("_books", "_clients", "_expiry", "_final_bytes", "_final_states", "_instruments", "_order_id",
                 "_orders", "_seq", "_trade_id")

    def __init__(self, instruments: Iterable[Instrument] = (), *, id_base: int = 0) -> None:
        """`id_base`: order ids and trade ids are numbered from `id_base + 1` (a venue shard's block, so
        ids are unique over every shard; see `ShardMap.id_base`). The counters carry it into snapshots."""
        if isinstance(id_base, bool) or not isinstance(id_base, int) or id_base < 0:
            raise ValueError(f"id_base must be a non-negative int, got {id_base!r}")
        self._instruments: dict[str, Instrument] = {}
        self._books: dict[str, OrderBook] = {}
        # Every accepted order, live or finished, by id and by (account, client order id).
        self._orders: dict[int, Order] = {}
        self._clients: dict[str, dict[str, Order]] = {}
        # Heap of (expire_ts, order_id) of GTD orders; entries of finished orders are skipped lazily.
        self._expiry: list[tuple[int, int]] = []
        self._seq: int = 0
        self._order_id: int = id_base
        self._trade_id: int = id_base
        # A finished order (leaves_qty == 0) never changes again, so its snapshot state and that state's
        # canonical encoding are built once: snapshot() and state_hash() stay O(live orders) in Python
        # work as the order history grows (a venue hashes its state at every registry heartbeat).
        self._final_states: dict[int, OrderState] = {}
        self._final_bytes: dict[int, bytes] = {}
        for instrument in instruments:
            self._list(instrument)

    # ------------------------------------------------------------------ queries

    @property
    def instruments(self) -> Mapping[str, Instrument]:
        return self._instruments

    @property
    def seq(self) -> int:
        """Sequence number of the last event emitted (0 before the first)."""
        return self._seq

    def book(self, symbol: str) -> OrderBook:
        """The book of a listed symbol; KeyError for an unlisted one."""
        return self._books[symbol]

    def order(self, order_id: int) -> Order | None:
        return self._orders.get(order_id)

    def order_by_client(self, account: str, client_order_id: str) -> Order | None:
        orders = self._clients.get(account)
        return orders.get(client_order_id) if orders is not None else None

    # ------------------------------------------------------------------ commands

    def apply(self, command: Command) -> list[Event]:
        """Runs any journaled command; the replay and the venue both go through here."""
        if isinstance(command, NewOrder):
            return self.submit(command)
        if isinstance(command, CancelOrder):
            return self.cancel(command)
        if isinstance(command, ModifyOrder):
            return self.modify(command)
        if isinstance(command, ExpireOrders):
            return self.expire(command.ts, command.end_of_day)
        return self.add_instrument(command)

    def add_instrument(self, command: AddInstrument | Instrument) -> list[Event]:
        """Lists an instrument. Listing a symbol again is ignored: the first listing stands."""
        events: list[Event] = []
        if isinstance(command, AddInstrument):
            self._expire_due(command.ts, events)
            instrument = command.instrument
        else:
            instrument = command
        self._list(instrument)
        return events

    def expire(self, ts: int, end_of_day: bool = False) -> list[Event]:
        """Expires GTD orders due at `ts`; at the end of the day also every DAY order."""
        events: list[Event] = []
        self._expire_due(ts, events)
        if end_of_day:
            day_orders: list[Order] = []
            for book in self._books.values():
                for order in book.bids.orders():
                    if order.command.tif is _DAY:
                        day_orders.append(order)
                for order in book.asks.orders():
                    if order.command.tif is _DAY:
                        day_orders.append(order)
                for stops in book.stop_order_ids():
                    for oid in stops:
                        order = self._orders[oid]
                        if order.command.tif is _DAY:
                            day_orders.append(order)
            day_orders.sort(key=_order_id_of)
            for order in day_orders:
                self._expire_order(order, ts, events)
        return events

    def submit(self, cmd: NewOrder) -> list[Event]:
        """A new order: validate, accept, match, then rest, cancel the remainder or wait as a stop."""
        events: list[Event] = []
        ts = cmd.ts
        expiry = self._expiry
        if expiry and expiry[0][0] <= ts:
            self._expire_due(ts, events)
        book = self._books.get(cmd.symbol)
        if book is None:
            self._reject_new(cmd, RejectReason.UNKNOWN_SYMBOL, f"symbol {cmd.symbol} is not listed", events)
            return events
        qty = cmd.qty
        if qty <= 0 or qty % book.lot_size:
            self._reject_new(
                cmd,
                RejectReason.BAD_QTY,
                f"qty {qty} must be a positive multiple of lot size {book.lot_size}",
                events,
            )
            return events
        otype = cmd.type
        tif = cmd.tif
        price = cmd.price
        # A plain limit (no iceberg, not post-only, not GTD) needs only the price check here.
        plain = otype is _LIMIT and cmd.display_qty is None and not cmd.post_only and tif is not _GTD
        if plain:
            if price is None or price <= 0:
                self._reject_new(cmd, RejectReason.BAD_PRICE, f"limit price {price} must be positive", events)
                return events
        else:
            rejection = _check_new(cmd, book.instrument)
            if rejection is not None:
                self._reject_new(cmd, rejection[0], rejection[1], events)
                return events
            if otype is _MARKET or otype is _STOP:
                price = None
        account = cmd.account
        coid = cmd.client_order_id
        clients = self._clients.get(account)
        if clients is not None and coid in clients:
            self._reject_new(
                cmd,
                RejectReason.DUPLICATE_CLIENT_ORDER_ID,
                f"client order id {coid} already used by account {account}",
                events,
            )
            return events
        is_buy = cmd.side is _BUY
        # Whether a limit price reaches the opposite best (keys: see BookSide).
        if price is None:
            crosses = False
        elif is_buy:
            keys = book.asks.keys
            crosses = len(keys) > 0 and -keys[-1] <= price
        else:
            keys = book.bids.keys
            crosses = len(keys) > 0 and keys[-1] >= price
        if crosses and cmd.post_only:
            self._reject_new(cmd, RejectReason.POST_ONLY, f"post-only order at {price} would take liquidity", events)
            return events

        # Accepted from here on.
        oid = self._order_id + 1
        self._order_id = oid
        order = Order(oid, cmd, is_buy, price, qty)
        order.status = NEW_TO_ACCEPTED
        self._orders[oid] = order
        if clients is None:
            self._clients[account] = {coid: order}
        else:
            clients[coid] = order
        seq = self._seq + 1
        self._seq = seq
        if plain and not crosses and (tif is _GTC or tif is _DAY):
            # The most common command of all: a passive GTC or DAY limit, to the back of its level.
            events.append(
                OrderAccepted(
                    seq=seq,
                    ts=ts,
                    order_id=oid,
                    account=account,
                    client_order_id=coid,
                    symbol=book.symbol,
                    side=cmd.side,
                    type=otype,
                    tif=tif,
                    price=price,
                    qty=qty,
                )
            )
            side = book.bids if is_buy else book.asks
            level = side.levels.get(price)  # type: ignore[arg-type]  # plain: price checked above
            if level is None:
                side.add_level(price, order)  # type: ignore[arg-type]
            else:
                level[oid] = order
                side.sums.pop(price, None)  # type: ignore[arg-type]
            return events

        display = cmd.display_qty
        if display is not None:
            order.display_qty = display
            order.visible_qty = display
        events.append(
            OrderAccepted(
                seq=seq,
                ts=ts,
                order_id=oid,
                account=account,
                client_order_id=coid,
                symbol=book.symbol,
                side=cmd.side,
                type=otype,
                tif=tif,
                price=price,
                qty=qty,
                stop_price=cmd.stop_price if otype is _STOP or otype is _STOP_LIMIT else None,
                display_qty=display,
            )
        )
        if tif is _GTD:
            expire_ts: int = cmd.expire_ts  # type: ignore[assignment]  # checked by _check_new
            heappush(expiry, (expire_ts, oid))

        if otype is _LIMIT and not crosses and tif is not _IOC and tif is not _FOK:
            (book.bids if is_buy else book.asks).append(order)
            return events

        if otype is _STOP or otype is _STOP_LIMIT:
            stop: int = cmd.stop_price  # type: ignore[assignment]  # checked by _check_new
            order.armed = True
            book.add_stop(order, stop)
            last = book.last_price
            if last is not None and (last >= stop if is_buy else last <= stop):
                self._run_stops(book, ts, events)
            return events

        # Taking order (as _execute, written out for the common case).
        trade_id = self._trade_id
        if tif is _FOK and not self._fok_fillable(book, order):
            self._cancel_order(order, _R_FOK, book.symbol, ts, events)
            return events
        if self._match(book, order, ts, events) and order.leaves_qty:
            if price is None:
                self._cancel_order(order, _R_NO_LIQUIDITY, book.symbol, ts, events)
            elif tif is _IOC or tif is _FOK:
                self._cancel_order(order, _R_IOC if tif is _IOC else _R_FOK, book.symbol, ts, events)
            else:
                self._rest(book, order)
        if self._trade_id != trade_id and (book.buy_stops or book.sell_stops):
            self._run_stops(book, ts, events)
        return events

    def cancel(self, cmd: CancelOrder) -> list[Event]:
        """Cancels an open order (resting or waiting stop) of the account: `OrderCanceled(reason=user)`."""
        events: list[Event] = []
        ts = cmd.ts
        expiry = self._expiry
        if expiry and expiry[0][0] <= ts:
            self._expire_due(ts, events)
        account = cmd.account
        coid = cmd.client_order_id
        symbol = cmd.symbol
        clients = self._clients.get(account)
        order = clients.get(coid) if clients is not None else None
        if order is None or not order.leaves_qty or order.command.symbol != symbol:
            self._reject_unknown(account, coid, symbol, ts, events)
            return events
        book = self._books[symbol]
        if order.armed:
            book.remove_stop(order, order.command.stop_price)  # type: ignore[arg-type]
        else:
            side = book.bids if order.is_buy else book.asks
            price: int = order.price  # type: ignore[assignment]  # resting orders have a price
            level = side.levels[price]
            del level[order.order_id]
            side.sums.pop(price, None)
            if not level:
                side.drop_level(price)
        canceled = order.leaves_qty
        order.leaves_qty = 0
        order.visible_qty = 0
        status = order.status
        order.status = ACCEPTED_TO_CANCELED if status is _ACCEPTED else transition(status, _CANCELED)
        seq = self._seq + 1
        self._seq = seq
        events.append(
            OrderCanceled(
                seq=seq,
                ts=ts,
                order_id=order.order_id,
                account=account,
                client_order_id=coid,
                symbol=symbol,
                reason=_R_USER,
                canceled_qty=canceled,
            )
        )
        return events

    def modify(self, cmd: ModifyOrder) -> list[Event]:
        """Cancel/replace of an open order; see docs/matching.md "Modify" for priority and matching."""
        events: list[Event] = []
        ts = cmd.ts
        expiry = self._expiry
        if expiry and expiry[0][0] <= ts:
            self._expire_due(ts, events)
        account = cmd.account
        coid = cmd.client_order_id
        symbol = cmd.symbol
        new_price = cmd.price
        new_qty = cmd.qty
        if new_price is None and new_qty is None:
            self._reject(
                account,
                coid,
                symbol,
                RejectReason.MALFORMED,
                "modify changes neither price nor qty",
                ts,
                events,
                None,
            )
            return events
        clients = self._clients.get(account)
        order = clients.get(coid) if clients is not None else None
        if order is None or not order.leaves_qty or order.command.symbol != symbol:
            self._reject_unknown(account, coid, symbol, ts, events)
            return events
        oid = order.order_id
        book = self._books[symbol]
        lot = book.lot_size
        if new_qty is not None and (new_qty <= order.filled_qty or new_qty % lot):
            self._reject_modify(
                order,
                RejectReason.BAD_QTY,
                f"qty {new_qty} must be a multiple of lot size {lot} above the filled qty {order.filled_qty}",
                ts,
                events,
            )
            return events
        if new_price is not None:
            if new_price <= 0:
                self._reject_modify(order, RejectReason.BAD_PRICE, f"price {new_price} must be positive", ts, events)
                return events
            if order.price is None:
                self._reject_modify(order, RejectReason.MALFORMED, "a stop-market order has no limit price", ts, events)
                return events
        old_price = order.price
        price = new_price if new_price is not None else old_price
        qty = new_qty if new_qty is not None else order.qty
        leaves = qty - order.filled_qty
        is_buy = order.is_buy
        opp = book.asks if is_buy else book.bids
        crosses = not order.armed and price is not None and len(opp.keys) > 0 and opp.keys[-1] >= opp.sign * price
        if crosses and order.command.post_only:
            self._reject_modify(
                order, RejectReason.POST_ONLY, f"post-only order at {price} would take liquidity", ts, events
            )
            return events

        keeps_priority = price == old_price and leaves <= order.leaves_qty
        own: BookSide = book.bids if is_buy else book.asks
        if not order.armed and not keeps_priority:
            own.remove(order)
        order.price = price
        order.qty = qty
        order.leaves_qty = leaves
        display = order.display_qty
        order.visible_qty = display if 0 < display < leaves else leaves
        if keeps_priority and not order.armed:  # changed in place, in its level
            own.sums.pop(price, None)  # type: ignore[arg-type]  # a resting order has a price
        seq = self._seq + 1
        self._seq = seq
        events.append(
            OrderModified(
                seq=seq,
                ts=ts,
                order_id=oid,
                account=account,
                client_order_id=coid,
                symbol=symbol,
                price=price,
                qty=qty,
                leaves_qty=leaves,
            )
        )
        if order.armed or keeps_priority:
            return events
        if not crosses:
            own.append(order)
            return events
        trade_id = self._trade_id
        if self._match(book, order, ts, events) and order.leaves_qty:
            self._rest(book, order)
        if self._trade_id != trade_id and (book.buy_stops or book.sell_stops):
            self._run_stops(book, ts, events)
        return events

    def reject(
        self,
        *,
        account: str,
        client_order_id: str,
        symbol: str,
        reason: RejectReason,
        message: str,
        ts: int = 0,
        order_id: int | None = None,
    ) -> OrderRejected:
        """An `OrderRejected` for input refused before it became a command (e.g. an off-tick price at
        the edge), numbered in the venue's event sequence so the event stream has no gaps."""
        events: list[Event] = []
        self._reject(account, client_order_id, symbol, reason, message, ts, events, order_id)
        event = events[0]
        assert isinstance(event, OrderRejected)
        return event

    # ------------------------------------------------------------------ state

    def snapshot(self) -> EngineSnapshot:
        """The whole state as one msgspec Struct (encodable with msgspec.msgpack)."""
        books: list[BookState] = []
        for book in self._books.values():
            buy_stops, sell_stops = book.stop_order_ids()
            books.append(
                BookState(
                    symbol=book.symbol,
                    last_price=book.last_price,
                    bids=_levels(book.bids),
                    asks=_levels(book.asks),
                    buy_stops=buy_stops,
                    sell_stops=sell_stops,
                )
            )
        return EngineSnapshot(
            seq=self._seq,
            order_id=self._order_id,
            trade_id=self._trade_id,
            instruments=list(self._instruments.values()),
            orders=self._order_states(),
            books=books,
        )

    def _order_states(self) -> list[OrderState]:
        """Every order's state, by order id; a finished order's is cached (see `_final_states`)."""
        final = self._final_states
        out: list[OrderState] = []
        append = out.append
        get = final.get
        for oid, order in self._orders.items():
            state = get(oid)
            if state is None:
                state = order_state(order)
                if not order.leaves_qty:
                    final[oid] = state
            append(state)
        return out

    @classmethod
    def restore(cls, snapshot: EngineSnapshot) -> MatchingEngine:
        """An engine that behaves exactly as the one that took `snapshot` from that point on."""
        engine = cls(snapshot.instruments)
        engine._seq = snapshot.seq
        engine._order_id = snapshot.order_id
        engine._trade_id = snapshot.trade_id
        orders = engine._orders
        clients = engine._clients
        for state in snapshot.orders:
            order = order_from_state(state)
            orders[order.order_id] = order
            clients.setdefault(order.account, {})[order.client_order_id] = order
            if order.leaves_qty and order.command.tif is _GTD:
                expire_ts: int = order.command.expire_ts  # type: ignore[assignment]  # GTD has one
                heappush(engine._expiry, (expire_ts, order.order_id))
        for state_book in snapshot.books:
            book = engine._books[state_book.symbol]
            book.last_price = state_book.last_price
            for side, levels in ((book.bids, state_book.bids), (book.asks, state_book.asks)):
                for level_state in levels:
                    for oid in level_state.order_ids:
                        side.append(orders[oid])
            for oid in (*state_book.buy_stops, *state_book.sell_stops):
                order = orders[oid]
                book.add_stop(order, order.command.stop_price)  # type: ignore[arg-type]
        return engine

    def state_hash(self) -> str:
        """SHA-256 hex of the canonical msgpack encoding of `snapshot()`: equal hashes, equal state.

        Computed from the cached encodings of finished orders (msgpack concatenates: a list's encoding
        is its header followed by its items' encodings), so only live orders are encoded anew; the
        bytes hashed are exactly `_HASH_ENCODER.encode(self.snapshot())`."""
        return hashlib.sha256(self.canonical_bytes()).hexdigest()

    def canonical_bytes(self) -> bytes:
        """`_HASH_ENCODER.encode(self.snapshot())` (deterministic msgpack), built from cached parts."""
        snap = self.snapshot()
        encode = _HASH_ENCODER.encode
        empty = encode(_replace(snap, orders=[]))
        tail = _KEY_BOOKS + encode(snap.books) + _KEY_VERSION + encode(snap.version)
        cut = len(empty) - len(tail) - 1
        if cut < 0 or empty[cut] != _EMPTY_ARRAY or not empty.endswith(tail):  # pragma: no cover - layout guard
            return encode(snap)
        cache = self._final_bytes
        get = cache.get
        parts: list[bytes] = [empty[:cut], _array_header(len(snap.orders))]
        append = parts.append
        for state in snap.orders:
            data = get(state.order_id)
            if data is None:
                data = encode(state)
                if not state.leaves_qty:
                    cache[state.order_id] = data
            append(data)
        append(empty[cut + 1:])
        return b"".join(parts)

    # ------------------------------------------------------------------ internals

    def _list(self, instrument: Instrument) -> None:
        if instrument.symbol not in self._instruments:
            self._instruments[instrument.symbol] = instrument
            self._books[instrument.symbol] = OrderBook(instrument)

    def _execute(self, book: OrderBook, order: Order, ts: int, events: list[Event]) -> None:
        """An incoming order (new or just triggered): FOK check, matching, then rest or cancel the rest."""
        cmd = order.command
        tif = cmd.tif
        if tif is _FOK and not self._fok_fillable(book, order):
            self._cancel_order(order, _R_FOK, book.symbol, ts, events)
            return
        if not self._match(book, order, ts, events) or not order.leaves_qty:
            return
        if order.price is None:
            self._cancel_order(order, _R_NO_LIQUIDITY, book.symbol, ts, events)
        elif tif is _IOC or tif is _FOK:
            self._cancel_order(order, _R_IOC if tif is _IOC else _R_FOK, book.symbol, ts, events)
        else:
            self._rest(book, order)

    def _rest(self, book: OrderBook, order: Order) -> None:
        """Puts an order's remainder at the back of its level with a fresh display slice."""
        display = order.display_qty
        leaves = order.leaves_qty
        order.visible_qty = display if 0 < display < leaves else leaves
        (book.bids if order.is_buy else book.asks).append(order)

    def _fok_fillable(self, book: OrderBook, order: Order) -> bool:
        """Whether matching would fill the whole order, walking the queue as matching would."""
        opp = book.asks if order.is_buy else book.bids
        sign = opp.sign
        levels = opp.levels
        limit = order.price
        need = order.leaves_qty
        account = order.account
        check_stp = order.command.stp is not _STP_NONE
        for key in reversed(opp.keys):
            if limit is not None and key < sign * limit:
                break
            hidden = 0
            for maker in levels[key * sign].values():
                if check_stp and maker.account == account:
                    return False
                need -= maker.visible_qty
                if need <= 0:
                    return True
                hidden += maker.leaves_qty - maker.visible_qty
            # Every iceberg of the level refills behind the others and meets the taker again.
            need -= hidden
            if need <= 0:
                return True
        return False

    def _match(self, book: OrderBook, taker: Order, ts: int, events: list[Event]) -> bool:
        """Matches `taker` against the opposite side within its limit. False if STP canceled it.

        A level is walked with one iterator and changed only afterwards: orders used up (filled or
        STP-canceled) leave it, iceberg refills move to its back, then the level is walked again if
        the taker still has quantity, so a refill is met only after the orders that were ahead.
        """
        is_buy = taker.is_buy
        opp = book.asks if is_buy else book.bids
        keys = opp.keys
        levels = opp.levels
        sums = opp.sums
        sign = opp.sign
        limit = taker.price
        bound = sign * limit if limit is not None else 0
        unbounded = limit is None
        tcmd = taker.command
        # Made on the first trade: the book's template with this taker and ts filled in.
        template: Trade | None = None
        stp = tcmd.stp
        stp_on = stp is not _STP_NONE
        taker_account = taker.account
        taker_id = taker.order_id
        taker_coid = taker.client_order_id
        symbol = book.symbol
        filled_before = taker.filled_qty
        stp_hit = False
        while keys:
            key = keys[-1]
            if not unbounded and key < bound:
                break
            price = key * sign
            level = levels[price]
            sums.pop(price, None)  # this level's visible quantity is about to change
            used: list[Order] = []
            traded = False
            for maker in level.values():
                if stp_on and maker.account == taker_account:
                    if stp is _CANCEL_NEWEST:
                        stp_hit = True
                        break
                    self._cancel_order(maker, _R_STP, symbol, ts, events)
                    used.append(maker)
                    if stp is _CANCEL_BOTH:
                        stp_hit = True
                        break
                    continue
                qty = taker.leaves_qty
                visible = maker.visible_qty
                if visible < qty:
                    qty = visible
                maker.visible_qty = visible - qty
                maker_leaves = maker.leaves_qty - qty
                maker.leaves_qty = maker_leaves
                maker.filled_qty += qty
                taker_leaves = taker.leaves_qty - qty
                taker.leaves_qty = taker_leaves
                taker.filled_qty += qty
                status = maker.status
                if maker_leaves == 0:
                    if status is _ACCEPTED:
                        maker.status = ACCEPTED_TO_FILLED
                    elif status is _PARTIALLY_FILLED:
                        maker.status = PARTIAL_TO_FILLED
                    else:
                        maker.status = transition(status, _FILLED)
                elif status is _ACCEPTED:
                    maker.status = ACCEPTED_TO_PARTIAL
                elif status is not _PARTIALLY_FILLED:
                    maker.status = transition(status, _PARTIALLY_FILLED)
                trade_id = self._trade_id + 1
                self._trade_id = trade_id
                seq = self._seq + 1
                self._seq = seq
                if template is None:
                    template = _replace(
                        book.trade_by_buyer if is_buy else book.trade_by_seller,
                        ts=ts,
                        taker_order_id=taker_id,
                        taker_account=taker_account,
                        taker_client_order_id=taker_coid,
                    )
                # At most 14 keywords: CPython calls with more through a dict (see OrderBook).
                events.append(
                    _replace(
                        template,
                        seq=seq,
                        trade_id=trade_id,
                        price=price,
                        qty=qty,
                        maker_order_id=maker.order_id,
                        maker_account=maker.account,
                        maker_client_order_id=maker.client_order_id,
                        maker_cum_qty=maker.filled_qty,
                        maker_leaves_qty=maker_leaves,
                        taker_cum_qty=taker.filled_qty,
                        taker_leaves_qty=taker_leaves,
                    )
                )
                traded = True
                if maker.visible_qty == 0:
                    if maker_leaves:
                        # Iceberg: next slice, to the back of the level (moved below).
                        display = maker.display_qty
                        maker.visible_qty = display if display < maker_leaves else maker_leaves
                    used.append(maker)
                if taker_leaves == 0:
                    break
            if traded:
                book.last_price = price
            for maker in used:
                del level[maker.order_id]
                if maker.leaves_qty:
                    level[maker.order_id] = maker
            if not level:
                del levels[price]
                keys.pop()
            if stp_hit or not taker.leaves_qty:
                break
        if taker.filled_qty != filled_before:
            status = taker.status
            if status is _ACCEPTED:
                taker.status = ACCEPTED_TO_FILLED if not taker.leaves_qty else ACCEPTED_TO_PARTIAL
            elif taker.leaves_qty:
                if status is not _PARTIALLY_FILLED:
                    taker.status = transition(status, _PARTIALLY_FILLED)
            else:
                taker.status = transition(status, _FILLED)
        if stp_hit:
            self._cancel_order(taker, _R_STP, symbol, ts, events)
            return False
        return True

    def _run_stops(self, book: OrderBook, ts: int, events: list[Event]) -> None:
        """Triggers the stops the last price reached, one at a time, until the cascade ends."""
        queue = book.pop_triggered()
        orders = self._orders
        i = 0
        while i < len(queue):
            order = orders[queue[i]]
            i += 1
            order.armed = False
            order.status = transition(order.status, _TRIGGERED)
            seq = self._seq + 1
            self._seq = seq
            events.append(
                OrderTriggered(
                    seq=seq,
                    ts=ts,
                    order_id=order.order_id,
                    account=order.account,
                    client_order_id=order.client_order_id,
                    symbol=book.symbol,
                )
            )
            trade_id = self._trade_id
            self._execute(book, order, ts, events)
            if self._trade_id != trade_id:
                queue.extend(book.pop_triggered())

    def _cancel_order(self, order: Order, reason: CancelReason, symbol: str, ts: int, events: list[Event]) -> None:
        """Closes an order already out of (or never in) the book and says so."""
        canceled = order.leaves_qty
        order.leaves_qty = 0
        order.visible_qty = 0
        order.status = transition(order.status, _CANCELED)
        seq = self._seq + 1
        self._seq = seq
        events.append(
            OrderCanceled(
                seq=seq,
                ts=ts,
                order_id=order.order_id,
                account=order.account,
                client_order_id=order.client_order_id,
                symbol=symbol,
                reason=reason,
                canceled_qty=canceled,
            )
        )

    def _expire_due(self, ts: int, events: list[Event]) -> None:
        """Expires the GTD orders with `expire_ts <= ts`, by expire_ts then order id."""
        expiry = self._expiry
        orders = self._orders
        while expiry and expiry[0][0] <= ts:
            _, oid = heappop(expiry)
            order = orders[oid]
            if order.leaves_qty:
                self._expire_order(order, ts, events)

    def _expire_order(self, order: Order, ts: int, events: list[Event]) -> None:
        book = self._books[order.command.symbol]
        if order.armed:
            book.remove_stop(order, order.command.stop_price)  # type: ignore[arg-type]
        else:
            (book.bids if order.is_buy else book.asks).remove(order)
        canceled = order.leaves_qty
        order.leaves_qty = 0
        order.visible_qty = 0
        order.status = transition(order.status, _EXPIRED)
        seq = self._seq + 1
        self._seq = seq
        events.append(
            OrderExpired(
                seq=seq,
                ts=ts,
                order_id=order.order_id,
                account=order.account,
                client_order_id=order.client_order_id,
                symbol=book.symbol,
                canceled_qty=canceled,
            )
        )

    def _reject_new(self, cmd: NewOrder, reason: RejectReason, message: str, events: list[Event]) -> None:
        self._reject(cmd.account, cmd.client_order_id, cmd.symbol, reason, message, cmd.ts, events, None)

    def _reject_modify(self, order: Order, reason: RejectReason, message: str, ts: int, events: list[Event]) -> None:
        cmd = order.command
        self._reject(cmd.account, cmd.client_order_id, cmd.symbol, reason, message, ts, events, order.order_id)

    def _reject_unknown(self, account: str, client_order_id: str, symbol: str, ts: int, events: list[Event]) -> None:
        self._reject(
            account,
            client_order_id,
            symbol,
            RejectReason.UNKNOWN_ORDER,
            f"no open order {client_order_id} of account {account} on {symbol}",
            ts,
            events,
            None,
        )

    def _reject(
        self,
        account: str,
        client_order_id: str,
        symbol: str,
        reason: RejectReason,
        message: str,
        ts: int,
        events: list[Event],
        order_id: int | None,
    ) -> None:
        seq = self._seq + 1
        self._seq = seq
        events.append(
            OrderRejected(
                seq=seq,
                ts=ts,
                account=account,
                client_order_id=client_order_id,
                symbol=symbol,
                reason=reason,
                message=message,
                order_id=order_id,
            )
        )


def _levels(side: BookSide) -> list[LevelState]:
    return [LevelState(price=price, order_ids=list(side.levels[price])) for price in side.prices_best_first()]


def _order_id_of(order: Order) -> int:
    return order.order_id


def _check_new(cmd: NewOrder, instrument: Instrument) -> tuple[RejectReason, str] | None:
    """The static checks of a new order after symbol and qty (docs/matching.md, first failing rule wins)."""
    otype = cmd.type
    tif = cmd.tif
    has_limit = otype is _LIMIT or otype is _STOP_LIMIT
    if has_limit and (cmd.price is None or cmd.price <= 0):
        return RejectReason.BAD_PRICE, f"limit price {cmd.price} must be positive"
    if (otype is _STOP or otype is _STOP_LIMIT) and (cmd.stop_price is None or cmd.stop_price <= 0):
        return RejectReason.MISSING_STOP_PRICE, f"{otype.value} order needs a positive stop_price"
    display = cmd.display_qty
    if display is not None:
        if not has_limit or tif is _IOC or tif is _FOK:
            return RejectReason.BAD_QTY, "display_qty needs a LIMIT or STOP_LIMIT order that may rest"
        if display <= 0 or display > cmd.qty or display % instrument.lot_size:
            return RejectReason.BAD_QTY, (
                f"display_qty {display} must be a multiple of lot size {instrument.lot_size} in (0, qty]"
            )
    if cmd.post_only and (otype is not _LIMIT or tif is _IOC or tif is _FOK):
        return RejectReason.MALFORMED, "post_only needs a LIMIT order that may rest"
    if tif is _GTD:
        if cmd.expire_ts is None:
            return RejectReason.MALFORMED, "GTD order needs expire_ts"
        if cmd.expire_ts <= cmd.ts:
            return RejectReason.EXPIRED, f"expire_ts {cmd.expire_ts} is not after ts {cmd.ts}"
    return None
