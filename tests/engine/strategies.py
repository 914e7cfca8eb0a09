"""Hypothesis strategies for random command streams that make a matching engine work hard.

Prices sit in a narrow band so orders cross often; few accounts so self-trade prevention fires;
cancels and modifies mostly name client order ids generated earlier in the same stream. Every
order type, TIF, flag and STP mode appears, plus some invalid commands for each rejection reason.
Choices the spec leaves open (a price on MARKET/STOP orders, expire_ts on non-GTD orders) are
never generated, so engine and reference can be compared.
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

# Repeats weight the choice; the first entry is what hypothesis shrinks towards.
_KINDS = ("limit",) * 9 + ("market", "stop", "stop_limit") + ("cancel",) * 3 + ("modify",) * 4 + (
    "expire", "end_of_day")
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
    """What the generator has sent so far, so later commands can name earlier orders."""

    orders: list[tuple[str, str, str, OrderType]] = field(default_factory=list)  # account, cid, sym, type
    restable: list[tuple[str, str, str, OrderType]] = field(default_factory=list)  # could be resting
    next_cid: dict[str, int] = field(default_factory=dict)

    def fresh_cid(self, account: str) -> str:
        n = self.next_cid.get(account, 0) + 1
        self.next_cid[account] = n
        return f"{account}{n}"


def _price(draw: st.DrawFn, symbol: str) -> int:
    mid = MID.get(symbol, 100)
    return draw(st.integers(mid - BAND, mid + BAND))


def _lot(symbol: str) -> int:
    return next((i.lot_size for i in INSTRUMENTS if i.symbol == symbol), 1)


def _new_order(draw: st.DrawFn, kind: str, ts: int, symbols: list[str], accounts: tuple[str, ...],
               known: _Known) -> NewOrder:
    account = draw(st.sampled_from(accounts))
    symbol = draw(st.sampled_from(symbols)) if draw(st.integers(0, 49)) else UNKNOWN_SYMBOL
    lot = _lot(symbol)
    own = [k for k in known.orders if k[0] == account]
    cid = own[draw(st.integers(0, len(own) - 1))][1] if own and not draw(st.integers(0, 24)) else (
        known.fresh_cid(account))
    otype = {"limit": OrderType.LIMIT, "market": OrderType.MARKET, "stop": OrderType.STOP,
             "stop_limit": OrderType.STOP_LIMIT}[kind]
    tif = draw(st.sampled_from(_TIFS))
    qty = lot * draw(st.integers(1, 20))
    if not draw(st.integers(0, 40)):
        qty = draw(st.sampled_from([0, -lot, lot + 1 if lot > 1 else 0]))  # bad_qty
    limited = otype in (OrderType.LIMIT, OrderType.STOP_LIMIT)
    price = _price(draw, symbol) if limited else None
    if limited and not draw(st.integers(0, 50)):
        price = draw(st.sampled_from([0, -1, None]))  # bad_price
    stop_price = _price(draw, symbol) if otype in (OrderType.STOP, OrderType.STOP_LIMIT) else None
    if stop_price is not None and not draw(st.integers(0, 40)):
        stop_price = None  # missing_stop_price
    display_qty = None
    if limited and qty > lot and not draw(st.integers(0, 3)):
        display_qty = lot * draw(st.integers(1, max(1, qty // lot - 1)))
        if not draw(st.integers(0, 15)):
            display_qty = draw(st.sampled_from([0, qty + lot]))  # bad display
    post_only = otype is OrderType.LIMIT and not draw(st.integers(0, 5))
    if not draw(st.integers(0, 60)):
        post_only = True  # perhaps on a type or TIF that may not carry it: malformed
    expire_ts = None
    if tif is TimeInForce.GTD:
        expire_ts = ts + draw(st.integers(1, 40))
        if not draw(st.integers(0, 20)):
            expire_ts = draw(st.sampled_from([None, ts, ts - 1]))  # malformed / expired
    stp = draw(st.sampled_from(_STPS))
    known.orders.append((account, cid, symbol, otype))
    if otype is not OrderType.MARKET and tif not in (TimeInForce.IOC, TimeInForce.FOK):
        known.restable.append((account, cid, symbol, otype))
    return NewOrder(account=account, client_order_id=cid, symbol=symbol, side=draw(st.sampled_from(Side)),
                    type=otype, tif=tif, price=price, qty=qty, ts=ts, stop_price=stop_price,
                    display_qty=display_qty, post_only=post_only, stp=stp, expire_ts=expire_ts)


def _target(draw: st.DrawFn, symbols: list[str], accounts: tuple[str, ...],
            known: _Known) -> tuple[str, str, str, OrderType | None]:
    """An earlier order (usually), a never-used id, or an earlier id under the wrong symbol."""
    roll = draw(st.integers(0, 19))
    if known.restable and roll < 12:  # recent resting-type orders are the ones most likely open
        return known.restable[-draw(st.integers(1, min(4, len(known.restable))))]
    if known.orders and roll < 17:
        return known.orders[draw(st.integers(0, len(known.orders) - 1))]
    if known.orders and roll == 17 and len(symbols) > 1:
        account, cid, symbol, otype = known.orders[draw(st.integers(0, len(known.orders) - 1))]
        return account, cid, next(s for s in symbols if s != symbol), otype
    return draw(st.sampled_from(accounts)), "nope", draw(st.sampled_from(symbols)), None


def _modify(draw: st.DrawFn, ts: int, symbols: list[str], accounts: tuple[str, ...],
            known: _Known) -> ModifyOrder:
    account, cid, symbol, otype = _target(draw, symbols, accounts, known)
    what = draw(st.sampled_from(("price", "qty", "both", "price", "qty", "both", "neither")))
    price = _price(draw, symbol) if what in ("price", "both") else None
    if otype is OrderType.STOP and draw(st.integers(0, 3)):
        price = None  # mostly change what a stop-market order has; a price is rejected malformed
    if price is not None and not draw(st.integers(0, 40)):
        price = 0  # bad_price
    lot = _lot(symbol)
    wants_qty = what in ("qty", "both") or (what == "price" and price is None)  # stop's price dropped
    qty = lot * draw(st.integers(1, 25)) if wants_qty else None
    return ModifyOrder(account=account, client_order_id=cid, symbol=symbol, price=price, qty=qty, ts=ts)


@st.composite
def scenarios(draw: st.DrawFn, min_commands: int = 1, max_commands: int = 60) -> Scenario:
    """1 or 2 symbols, 2 to 4 accounts, up to `max_commands` commands with strictly increasing ts."""
    instruments = INSTRUMENTS[: draw(st.integers(1, 2))]
    symbols = [i.symbol for i in instruments]
    accounts = ACCOUNTS[: draw(st.integers(2, 4))]
    known = _Known()
    ts = draw(st.integers(0, 3))
    commands: list[Command] = []
    for _ in range(draw(st.integers(min_commands, max_commands))):
        ts += draw(st.integers(1, 3))
        kind = draw(st.sampled_from(_KINDS))
        if kind == "cancel":
            account, cid, symbol, _ = _target(draw, symbols, accounts, known)
            commands.append(CancelOrder(account=account, client_order_id=cid, symbol=symbol, ts=ts))
        elif kind == "modify":
            commands.append(_modify(draw, ts, symbols, accounts, known))
        elif kind in ("expire", "end_of_day"):
            commands.append(ExpireOrders(ts=ts, end_of_day=kind == "end_of_day"))
        else:
            commands.append(_new_order(draw, kind, ts, symbols, accounts, known))
    return Scenario(instruments=tuple(instruments), commands=tuple(commands))
