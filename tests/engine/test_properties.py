"""Property tests of the matching engine on random command streams (see strategies.py).

Invariants that must hold whatever the stream: an uncrossed book, conserved quantities, trades
within both limits, FIFO within a level, determinism, snapshot/restore equivalence, and event for
event agreement with the independent reference book (reference.py). Settings come from the
hypothesis profile loaded in tests/conftest.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from tests.engine.reference import ReferenceEngine
from tests.engine.strategies import Scenario, scenarios
from tradesim.domain import (
    TERMINAL,
    CancelOrder,
    Event,
    ExpireOrders,
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
    Side,
    TimeInForce,
    Trade,
)
from tradesim.engine import MatchingEngine

Levels = list[tuple[int, int, int]]

# The profile's settings, minus the "explain" phase: on a failure it costs more than the shrink itself.
fast_failure = settings(phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink])


def fresh(scenario: Scenario) -> MatchingEngine:
    return MatchingEngine(instruments=list(scenario.instruments))


def run(engine: Any, commands: Any) -> list[list[Event]]:
    """Events per command, through `apply` (the journal's path)."""
    return [list(engine.apply(cmd)) for cmd in commands]


def run_typed(engine: MatchingEngine, commands: Any) -> list[list[Event]]:
    """Events per command, through submit/cancel/modify/expire (the API's path)."""
    out: list[list[Event]] = []
    for cmd in commands:
        if isinstance(cmd, NewOrder):
            out.append(list(engine.submit(cmd)))
        elif isinstance(cmd, CancelOrder):
            out.append(list(engine.cancel(cmd)))
        elif isinstance(cmd, ModifyOrder):
            out.append(list(engine.modify(cmd)))
        elif isinstance(cmd, ExpireOrders):
            out.append(list(engine.expire(cmd.ts, end_of_day=cmd.end_of_day)))
        else:
            out.append(list(engine.apply(cmd)))
    return out


def depth(engine: MatchingEngine, symbol: str) -> tuple[Levels, Levels]:
    bids, asks = engine.book(symbol).depth(10_000)
    return [tuple(lv) for lv in bids], [tuple(lv) for lv in asks]  # type: ignore[misc]


def comparable(event: Event) -> dict[str, Any]:
    """An event as a dict with its type; a rejection's free-text message is not compared."""
    d: dict[str, Any] = {"event": type(event).__name__, **msgspec.structs.asdict(event)}
    if isinstance(event, OrderRejected):
        d["message"] = ""
    return d


def explain(scenario: Scenario, upto: int) -> str:
    lines = [f"  {i}: {c!r}" for i, c in enumerate(scenario.commands[: upto + 1])]
    return "commands:\n" + "\n".join(lines)


# ------------------------------------------------------------------------------ event ledger


@dataclass
class Tracked:
    """What the events say about one order; `prio` is its place in time (None when not resting)."""

    symbol: str
    side: Side
    type: OrderType
    tif: TimeInForce
    price: int | None
    qty: int
    display: int | None
    cum: int = 0
    canceled: int = 0
    leaves: int = 0
    visible: int = 0
    prio: int | None = None
    waiting: bool = False  # untriggered stop
    done: bool = False


class Ledger:
    """Replays the engine's events into per-order books and collects violations by property.

    It knows only what events carry, so it checks the engine from outside: conservation, limits
    and queue priority.
    """

    def __init__(self) -> None:
        self.orders: dict[int, Tracked] = {}
        self.clock = 0
        self.pending: list[int] = []  # incoming orders that rest once their matching is over
        self.final: dict[int, OrderStatus] = {}  # the status each finished order must end in
        self.violations: dict[str, list[str]] = {"conservation": [], "limits": [], "fifo": []}

    def feed(self, events: list[Event]) -> None:
        for e in events:
            if isinstance(e, OrderAccepted | OrderTriggered):
                self._settle()
            self._on(e)
        self._settle()

    def _bad(self, kind: str, msg: str) -> None:
        self.violations[kind].append(msg)

    def _slice(self, o: Tracked) -> int:
        return o.leaves if o.display is None else min(o.display, o.leaves)

    def _settle(self) -> None:
        """The previous incoming order has finished matching: if still open it joins the back."""
        for oid in self.pending:
            o = self.orders[oid]
            if not o.done and o.leaves > 0 and o.type is not OrderType.MARKET:
                o.prio, self.clock = self.clock, self.clock + 1
                o.visible = self._slice(o)
        self.pending = []

    def _on(self, e: Event) -> None:
        if isinstance(e, OrderAccepted):
            o = Tracked(symbol=e.symbol, side=e.side, type=e.type, tif=e.tif, price=e.price, qty=e.qty,
                        display=e.display_qty, leaves=e.qty)
            self.orders[e.order_id] = o
            o.waiting = e.type in (OrderType.STOP, OrderType.STOP_LIMIT)
            if not o.waiting:
                self._incoming(e.order_id)
        elif isinstance(e, OrderTriggered):
            o = self.orders[e.order_id]
            if not o.waiting:
                self._bad("conservation", f"order {e.order_id} triggered but was not a waiting stop")
            o.waiting = False
            self._incoming(e.order_id)
        elif isinstance(e, Trade):
            self._trade(e)
        elif isinstance(e, OrderCanceled | OrderExpired):
            o = self.orders[e.order_id]
            if o.done:
                self._bad("conservation", f"order {e.order_id} ended twice")
            if e.canceled_qty != o.leaves:
                self._bad("conservation", f"order {e.order_id} canceled {e.canceled_qty}, leaves {o.leaves}")
            o.canceled, o.leaves, o.done, o.prio = e.canceled_qty, 0, True, None
            self.final[e.order_id] = OrderStatus.EXPIRED if isinstance(e, OrderExpired) else OrderStatus.CANCELED
            self._check_total(e.order_id)
        elif isinstance(e, OrderModified):
            self._modified(e)

    def _incoming(self, oid: int) -> None:
        o = self.orders[oid]
        if o.type is OrderType.STOP:
            o.type = OrderType.MARKET  # a triggered stop-market order is a MARKET order from here on
        self.pending.append(oid)

    def _modified(self, e: OrderModified) -> None:
        o = self.orders[e.order_id]
        if e.leaves_qty != e.qty - o.cum:
            self._bad("conservation", f"modify of {e.order_id}: leaves {e.leaves_qty} != {e.qty} - {o.cum}")
        loses = e.price != o.price or e.leaves_qty > o.leaves
        o.price, o.qty, o.leaves = e.price, e.qty, e.leaves_qty
        if o.waiting:
            return
        if loses:
            o.prio = None
            self.pending.append(e.order_id)
        else:
            o.visible = self._slice(o)

    def _check_total(self, oid: int) -> None:
        o = self.orders[oid]
        if o.cum + o.leaves + o.canceled != o.qty:
            self._bad("conservation", f"order {oid}: filled {o.cum} + leaves {o.leaves} + canceled "
                                      f"{o.canceled} != qty {o.qty}")

    def _trade(self, t: Trade) -> None:
        maker, taker = self.orders[t.maker_order_id], self.orders[t.taker_order_id]
        # Limits: at the maker's price, never beyond the taker's limit.
        if t.price != maker.price:
            self._bad("limits", f"trade {t.trade_id} at {t.price}, maker rests at {maker.price}")
        if taker.price is not None and taker.type is not OrderType.MARKET and (
            (taker.side is Side.BUY and t.price > taker.price)
            or (taker.side is Side.SELL and t.price < taker.price)
        ):
            self._bad("limits", f"trade {t.trade_id} at {t.price} beyond taker limit {taker.price}")
        if t.aggressor is not taker.side or maker.side is taker.side:
            self._bad("limits", f"trade {t.trade_id}: sides maker {maker.side} taker {taker.side}")
        # FIFO: the maker is the head of the best level of its side.
        if maker.prio is None:
            self._bad("fifo", f"trade {t.trade_id}: maker {t.maker_order_id} is not resting")
        else:
            for oid, o in self.orders.items():
                same_side = o.symbol == maker.symbol and o.side is maker.side
                if oid == t.maker_order_id or o.prio is None or not same_side:
                    continue
                assert o.price is not None
                better = o.price < t.price if maker.side is Side.SELL else o.price > t.price
                if better or (o.price == t.price and o.prio < maker.prio):
                    self._bad("fifo", f"trade {t.trade_id}: maker {t.maker_order_id} hit before order {oid} "
                                      f"(price {o.price}, ahead in queue)")
            if t.qty > maker.visible:
                self._bad("fifo", f"trade {t.trade_id}: qty {t.qty} > visible {maker.visible}")
        # Conservation: the trade's cum/leaves agree with the running totals.
        for oid, o, cum, leaves in ((t.maker_order_id, maker, t.maker_cum_qty, t.maker_leaves_qty),
                                    (t.taker_order_id, taker, t.taker_cum_qty, t.taker_leaves_qty)):
            o.cum += t.qty
            o.leaves -= t.qty
            if (cum, leaves) != (o.cum, o.leaves) or cum + leaves != o.qty:
                self._bad("conservation", f"trade {t.trade_id}: order {oid} cum/leaves {cum}/{leaves}, "
                                          f"expected {o.cum}/{o.leaves} of {o.qty}")
            if o.leaves == 0:
                o.done, o.prio = True, None
                self.final[oid] = OrderStatus.FILLED
                self._check_total(oid)
        maker.visible -= t.qty
        if not maker.done and maker.visible <= 0:
            maker.prio, self.clock = self.clock, self.clock + 1  # iceberg refill: back of the level
            maker.visible = self._slice(maker)

    def open_orders(self) -> dict[int, Tracked]:
        return {oid: o for oid, o in self.orders.items() if not o.done}


def ledger_of(scenario: Scenario) -> tuple[MatchingEngine, Ledger]:
    engine, ledger = fresh(scenario), Ledger()
    for cmd in scenario.commands:
        ledger.feed(list(engine.apply(cmd)))
    return engine, ledger


# -------------------------------------------------------------------------------- properties


@fast_failure
@given(scenarios())
def test_book_never_crossed(scenario: Scenario) -> None:
    """After every command each side is sorted best first and best bid < best ask."""
    engine = fresh(scenario)
    for i, cmd in enumerate(scenario.commands):
        engine.apply(cmd)
        for symbol in scenario.symbols:
            bids, asks = depth(engine, symbol)
            why = explain(scenario, i)
            assert [p for p, _, _ in bids] == sorted({p for p, _, _ in bids}, reverse=True), why
            assert [p for p, _, _ in asks] == sorted({p for p, _, _ in asks}), why
            assert all(q > 0 and n > 0 for _, q, n in bids + asks), explain(scenario, i)
            if bids and asks:
                assert bids[0][0] < asks[0][0], f"crossed {bids[0]} / {asks[0]}\n" + explain(scenario, i)


@fast_failure
@given(scenarios())
def test_quantity_conserved(scenario: Scenario) -> None:
    """For every order filled + leaves + canceled/expired = quantity, and open orders show in depth."""
    engine, ledger = ledger_of(scenario)
    assert not ledger.violations["conservation"], ledger.violations["conservation"]
    for oid, o in ledger.orders.items():
        state = engine.order(oid)
        assert state is not None, oid
        assert (state.qty, state.filled_qty, state.leaves_qty) == (o.qty, o.cum, o.leaves), oid
        assert o.cum + o.leaves + o.canceled == o.qty and (o.leaves > 0) != o.done, oid
        assert (state.status in TERMINAL) == o.done, (oid, state.status)
        assert state.status is ledger.final.get(oid, state.status), (oid, state.status)
    for symbol in scenario.symbols:
        bids, asks = depth(engine, symbol)
        resting = [o for o in ledger.open_orders().values() if o.symbol == symbol and not o.waiting]
        shown = sum(q for _, q, _ in bids + asks)
        assert shown <= sum(o.leaves for o in resting), symbol
        assert sum(n for _, _, n in bids + asks) == len(resting), symbol


@fast_failure
@given(scenarios())
def test_trades_within_limits(scenario: Scenario) -> None:
    """A trade is at the maker's resting price and never beyond the taker's limit."""
    _, ledger = ledger_of(scenario)
    assert not ledger.violations["limits"], ledger.violations["limits"]


@fast_failure
@given(scenarios())
def test_fifo_within_level(scenario: Scenario) -> None:
    """The maker of every trade is the oldest order of the best level (icebergs re-queue on refill)."""
    _, ledger = ledger_of(scenario)
    assert not ledger.violations["fifo"], ledger.violations["fifo"]


@fast_failure
@given(scenarios())
def test_deterministic(scenario: Scenario) -> None:
    """Two fresh engines, one fed through apply() and one through the typed methods, agree exactly."""
    a, b = fresh(scenario), fresh(scenario)
    events_a, events_b = run(a, scenario.commands), run_typed(b, scenario.commands)
    assert events_a == events_b
    assert a.state_hash() == b.state_hash()


@fast_failure
@given(scenarios(), st.data())
def test_snapshot_restore_equals_uninterrupted_run(scenario: Scenario, data: st.DataObject) -> None:
    """Snapshot at any point, restore (also via msgpack bytes), run the rest: same events and hash."""
    split = data.draw(st.integers(0, len(scenario.commands)), label="split")
    via_bytes = data.draw(st.booleans(), label="via_bytes")
    whole = fresh(scenario)
    expected = run(whole, scenario.commands)

    first = fresh(scenario)
    run(first, scenario.commands[:split])
    snap = first.snapshot()
    if via_bytes:
        snap = msgspec.msgpack.decode(msgspec.msgpack.encode(snap), type=type(snap))
    restored = MatchingEngine.restore(snap)
    assert restored.state_hash() == first.state_hash()
    assert run(restored, scenario.commands[split:]) == expected[split:]
    assert restored.state_hash() == whole.state_hash()


@fast_failure
@given(scenarios())
def test_engine_equals_reference(scenario: Scenario) -> None:
    """Event for event (rejection messages aside), depth and last price, after every command."""
    engine, ref = fresh(scenario), ReferenceEngine(scenario.instruments)
    for i, cmd in enumerate(scenario.commands):
        got = [comparable(e) for e in engine.apply(cmd)]
        want = [comparable(e) for e in ref.apply(cmd)]
        assert got == want, f"events differ at command {i}\n{explain(scenario, i)}\n" + "\n".join(
            ["engine:", *map(repr, got), "reference:", *map(repr, want)])
        for symbol in scenario.symbols:
            book = engine.book(symbol)
            assert depth(engine, symbol) == ref.depth(symbol, 10_000), f"depth at {i}\n{explain(scenario, i)}"
            assert book.last_price == ref.last_price(symbol), f"last at {i}"
            assert (book.best_bid(), book.best_ask()) == (ref.best(symbol, Side.BUY), ref.best(symbol, Side.SELL))
    for o in ref.orders:
        found = engine.order_by_client(o.account, o.client_order_id)
        assert found is not None and found.order_id == o.order_id, (o.account, o.client_order_id)
