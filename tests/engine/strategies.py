"""Hypothesis strategies for random command streams that make a matching engine work hard.

Prices sit in a narrow band so orders cross often; few accounts so self-trade prevention fires;
cancels and modifies mostly name client order ids generated earlier in the same stream. Every
order type, TIF, flag and STP mode appears, plus some invalid commands for each rejection reason.
Fields an order's type ignores (a price on MARKET/STOP, stop_price on non-stops, expire_ts on
non-GTD orders) are sent now and then too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from hypothesis import strategies as st

from tradesim.domain import (
    STP,
    CancelOrder,
    Command,
    ExpireOrders,
    Instrument,
    ModifyOrder,
    NewOrder,
    OrderType,
    Side,
    TimeInForce,
)

INSTRUMENTS = (
    Instrument(symbol="XX.SIM", tick_size=Decimal("0.01"), lot_size=1),
    Instrument(symbol="YY.SIM", tick_size=Decimal("0.5"), lot_size=5),
)
MID = {"XX.SIM": 100, "YY.SIM": 40}
BAND = 3  # prices within MID ± BAND ticks: most orders can cross something
ACCOUNTS = ("a", "b", "c", "d")
UNKNOWN_SYMBOL = "ZZ.SIM"

# Repeats weight a choice; the first entry is what hypothesis shrinks towards.
_TIFS = (TimeInForce.GTC,) * 4 + (TimeInForce.DAY, TimeInForce.DAY, TimeInForce.IOC, TimeInForce.IOC,
                                  TimeInForce.FOK, TimeInForce.GTD, TimeInForce.GTD)
_STPS = (STP.CANCEL_NEWEST, STP.CANCEL_OLDEST, STP.CANCEL_BOTH, STP.NONE)


@dataclass(frozen=True)
class Scenario:
    """Instruments to list and the commands to feed, in order (ts strictly increasing)."""

    instruments: tuple[Instrument, ...]
    commands: tuple[Command, ...]

    @property
    def symbols(self) -> list[str]:
        return [i.symbol for i in self.instruments]


@dataclass
class _Known:
    """What the builder has sent so far, so later commands can name earlier orders."""

    orders: list[tuple[str, str, str, OrderType]] = field(default_factory=list)  # account, cid, sym, type
    restable: list[tuple[str, str, str, OrderType]] = field(default_factory=list)  # could be resting
    next_cid: dict[str, int] = field(default_factory=dict)

    def fresh_cid(self, account: str) -> str:
        n = self.next_cid.get(account, 0) + 1
        self.next_cid[account] = n
        return f"{account}{n}"


@dataclass(frozen=True)
class Op:
    """One command in abstract form. Fields are drawn independently, so hypothesis can delete and
    simplify ops one by one; `_Builder` resolves them (targets by index) into real commands.

    `oddity` 0 is a well-formed command; 1-8 pick one way to be invalid (see `_Builder._new_order`).
    """

    kind: str
    ts_step: int = 1
    account: int = 0
    symbol: int = 0
    side: Side = Side.BUY
    tif: TimeInForce = TimeInForce.GTC
    price: int = 0  # offset from the symbol's mid, in ticks
    stop: int = 0  # offset from the mid
    lots: int = 1
    display_lots: int = 0  # 0 = not an iceberg
    post_only: bool = False
    stp: STP = STP.CANCEL_NEWEST
    expire_in: int = 1
    target: int = 0  # which earlier order a cancel/modify names
    target_mode: int = 0  # 0-11 a recent resting-type order, 12-16 any, 17 wrong symbol, else unknown
    modify: str = "price"
    oddity: int = 0
    stray: bool = False  # also send the fields this order type ignores


def _lot(symbol: str) -> int:
    return next((i.lot_size for i in INSTRUMENTS if i.symbol == symbol), 1)


def _one_in(n: int) -> st.SearchStrategy[bool]:
    return st.integers(0, n - 1).map(lambda x: x == 0)


_ts_step = st.integers(1, 3)
_target = st.integers(0, 1_000)
_target_mode = st.integers(0, 19)
_oddity = st.sampled_from((0,) * 40 + (1, 2, 3, 4, 5, 6, 7, 8))

new_orders = st.builds(
    Op,
    kind=st.sampled_from(("limit",) * 9 + ("market", "stop", "stop_limit")),
    ts_step=_ts_step,
    account=st.integers(0, len(ACCOUNTS) - 1),
    symbol=st.integers(0, len(INSTRUMENTS) - 1),
    side=st.sampled_from(Side),
    tif=st.sampled_from(_TIFS),
    price=st.integers(-BAND, BAND),
    stop=st.integers(-BAND, BAND),
    lots=st.integers(1, 20),
    display_lots=st.integers(0, 3).flatmap(lambda x: st.integers(1, 19) if x == 0 else st.just(0)),
    post_only=_one_in(6),
    stp=st.sampled_from(_STPS),
    expire_in=st.integers(1, 40),
    target=_target,
    oddity=_oddity,
    stray=_one_in(8),
)
cancels = st.builds(Op, kind=st.just("cancel"), ts_step=_ts_step, account=st.integers(0, 3),
                    symbol=st.integers(0, 1), target=_target, target_mode=_target_mode)
modifies = st.builds(
    Op, kind=st.just("modify"), ts_step=_ts_step, account=st.integers(0, 3), symbol=st.integers(0, 1),
    price=st.integers(-BAND, BAND), lots=st.integers(1, 25), target=_target, target_mode=_target_mode,
    modify=st.sampled_from(("price", "qty", "both", "price", "qty", "both", "neither")), oddity=_oddity,
)
expiries = st.builds(Op, kind=st.sampled_from(("expire", "end_of_day")), ts_step=_ts_step)
_BY_KIND = {"new": new_orders, "cancel": cancels, "modify": modifies, "expiry": expiries}
# Repeats weight the kinds: about 60% new orders, 15% cancels, 20% modifies, 5% expiries.
ops = st.sampled_from(("new",) * 12 + ("cancel",) * 3 + ("modify",) * 4 + ("expiry",)).flatmap(
    _BY_KIND.__getitem__)
"""Abstract commands; `scenarios` draws lists of them and builds the real commands."""


class _Builder:
    """Turns a list of `Op` into commands over the chosen symbols and accounts."""

    def __init__(self, symbols: list[str], accounts: tuple[str, ...]) -> None:
        self.symbols = symbols
        self.accounts = accounts
        self.known = _Known()
        self.ts = 0

    def build(self, op: Op) -> Command:
        self.ts += op.ts_step
        if op.kind == "cancel":
            account, cid, symbol, _ = self._target(op)
            return CancelOrder(account=account, client_order_id=cid, symbol=symbol, ts=self.ts)
        if op.kind == "modify":
            return self._modify(op)
        if op.kind in ("expire", "end_of_day"):
            return ExpireOrders(ts=self.ts, end_of_day=op.kind == "end_of_day")
        return self._new_order(op)

    def _new_order(self, op: Op) -> NewOrder:
        ts, odd = self.ts, op.oddity
        account = self.accounts[op.account % len(self.accounts)]
        symbol = UNKNOWN_SYMBOL if odd == 7 else self.symbols[op.symbol % len(self.symbols)]
        lot = _lot(symbol)
        mid = MID.get(symbol, 100)
        own = [k for k in self.known.orders if k[0] == account]
        cid = own[op.target % len(own)][1] if odd == 8 and own else self.known.fresh_cid(account)
        otype = {"limit": OrderType.LIMIT, "market": OrderType.MARKET, "stop": OrderType.STOP,
                 "stop_limit": OrderType.STOP_LIMIT}[op.kind]
        qty = lot * op.lots if odd != 1 else (0, -lot, lot + 1 if lot > 1 else 0)[op.target % 3]
        limited = otype in (OrderType.LIMIT, OrderType.STOP_LIMIT)
        price = mid + op.price if limited or op.stray else None
        if limited and odd == 2:
            price = (0, -1, None)[op.target % 3]
        stops = otype in (OrderType.STOP, OrderType.STOP_LIMIT)
        stop_price = mid + op.stop if (stops and odd != 3) or op.stray else None
        display_qty = None
        if op.display_lots and limited:
            display_qty = lot * min(op.display_lots, max(1, op.lots - 1))
        if odd == 4:
            display_qty = (0, qty + lot)[op.target % 2]
        post_only = (op.post_only and otype is OrderType.LIMIT) or odd == 5
        expire_ts = ts + op.expire_in if op.tif is TimeInForce.GTD or op.stray else None
        if op.tif is TimeInForce.GTD and odd == 6:
            expire_ts = (None, ts, ts - 1)[op.target % 3]
        self.known.orders.append((account, cid, symbol, otype))
        if otype is not OrderType.MARKET and op.tif not in (TimeInForce.IOC, TimeInForce.FOK):
            self.known.restable.append((account, cid, symbol, otype))
        return NewOrder(account=account, client_order_id=cid, symbol=symbol, side=op.side, type=otype,
                        tif=op.tif, price=price, qty=qty, ts=ts, stop_price=stop_price,
                        display_qty=display_qty, post_only=post_only, stp=op.stp, expire_ts=expire_ts)

    def _target(self, op: Op) -> tuple[str, str, str, OrderType | None]:
        """An earlier order (usually), a never-used id, or an earlier id under the wrong symbol."""
        known, mode = self.known, op.target_mode
        if known.restable and mode < 12:  # recent resting-type orders are the ones most likely open
            return known.restable[-1 - op.target % min(4, len(known.restable))]
        if known.orders and mode < 17:
            return known.orders[op.target % len(known.orders)]
        if known.orders and mode == 17 and len(self.symbols) > 1:
            account, cid, symbol, otype = known.orders[op.target % len(known.orders)]
            return account, cid, next(s for s in self.symbols if s != symbol), otype
        account = self.accounts[op.account % len(self.accounts)]
        return account, "nope", self.symbols[op.symbol % len(self.symbols)], None

    def _modify(self, op: Op) -> ModifyOrder:
        account, cid, symbol, otype = self._target(op)
        what = op.modify
        price = MID.get(symbol, 100) + op.price if what in ("price", "both") else None
        if otype is OrderType.STOP and op.target_mode % 4:
            price = None  # mostly change what a stop-market order has; a price is rejected malformed
        if price is not None and op.oddity == 2:
            price = 0  # bad_price
        wants_qty = what in ("qty", "both") or (what == "price" and price is None)  # stop's price dropped
        qty = _lot(symbol) * op.lots if wants_qty else None
        return ModifyOrder(account=account, client_order_id=cid, symbol=symbol, price=price, qty=qty,
                           ts=self.ts)


@st.composite
def scenarios(draw: st.DrawFn, min_commands: int = 1, max_commands: int = 60) -> Scenario:
    """1 or 2 symbols, 2 to 4 accounts, up to `max_commands` commands with strictly increasing ts."""
    instruments = INSTRUMENTS[: draw(st.integers(1, 2))]
    accounts = ACCOUNTS[: draw(st.integers(2, 4))]
    builder = _Builder([i.symbol for i in instruments], accounts)
    # Chunks of ops rather than one flat list: st.lists keeps lists short on average, and a list
    # of lists still lets the shrinker delete ops one by one.
    chunks = draw(st.lists(st.lists(ops, max_size=15), min_size=1, max_size=max(1, max_commands // 6)))
    flat = [op for chunk in chunks for op in chunk][:max_commands]
    while len(flat) < min_commands:
        flat.append(draw(ops))
    commands = [builder.build(op) for op in flat]
    return Scenario(instruments=tuple(instruments), commands=tuple(commands))
