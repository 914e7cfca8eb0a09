"""What an account can still do: the Ledger replica's figures minus what its working orders reserve.

Pre-trade risk expects `cash_available` / `margin_available` net of working orders, and the
compliance and risk rules read the open quantity per side and the open order count. Working orders
here are every non-terminal record, HELD and PENDING_* included: a held order is routed without a
second check when approved, so it must already count.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from tradesim.domain import Instrument, Side
from tradesim.services.accounts import AccountFigures
from tradesim.services.oms.records import OrderRecord
from tradesim.services.risk import TradingState

_BPS = Decimal(10_000)


def reservation(record: OrderRecord, instrument: Instrument) -> tuple[Decimal, Decimal]:
    """(cash, margin) the order's open quantity holds: a cash-instrument buy holds its notional plus the
    taker fee; a margined order (either side, conservatively) holds its initial margin."""
    price = record.reserve_price
    if price is None or record.leaves_qty <= 0:
        return Decimal(0), Decimal(0)
    value = instrument.from_ticks(price) * record.leaves_qty * instrument.multiplier
    if instrument.margin_rate > 0:
        return Decimal(0), value * instrument.margin_rate
    if record.side is Side.BUY:
        return value * (1 + instrument.taker_fee_bps / _BPS), Decimal(0)
    return Decimal(0), Decimal(0)


@dataclass(frozen=True, slots=True)
class AccountExposure:
    """An immutable `risk.AccountState` for one check, built by `exposure_of()`."""

    cash_available: Decimal
    margin_available: Decimal
    equity: Decimal
    pnl_today: Decimal
    open_order_count: int
    positions: Mapping[str, int]
    open_qtys: Mapping[tuple[str, Side], int] = field(default_factory=dict)
    trading_state: TradingState = TradingState.ACTIVE

    def position(self, symbol: str) -> int:
        return self.positions.get(symbol, 0)

    def open_qty(self, symbol: str, side: Side) -> int:
        return self.open_qtys.get((symbol, side), 0)


class Reserved:
    """Running totals of one account's working orders (their reservations summed), kept up to date by
    removing an order's old share and adding its new one on every change: a check costs O(1), not
    O(working orders)."""

    __slots__ = ("cash", "count", "margin", "open_qtys")

    def __init__(self) -> None:
        self.cash = Decimal(0)
        self.margin = Decimal(0)
        self.count = 0
        self.open_qtys: dict[tuple[str, Side], int] = {}

    def add(self, share: Share, sign: int) -> None:
        cash, margin, symbol, side, leaves = share
        self.cash += sign * cash
        self.margin += sign * margin
        self.count += sign
        if leaves > 0:
            key = (symbol, side)
            qty = self.open_qtys.get(key, 0) + sign * leaves
            if qty:
                self.open_qtys[key] = qty
            else:
                self.open_qtys.pop(key, None)


Share = tuple[Decimal, Decimal, str, Side, int]
"""One working order's part of `Reserved`: (cash, margin, symbol, side, leaves qty)."""


def share(record: OrderRecord, instrument: Instrument) -> Share:
    cash, margin = reservation(record, instrument)
    return cash, margin, record.symbol, record.side, record.leaves_qty


def exposure_of(view: AccountFigures, reserved: Reserved, pnl_today: Decimal) -> AccountExposure:
    """The account as risk sees it now: the ledger's figures net of what its working orders reserve."""
    held = reserved.cash + reserved.margin
    return AccountExposure(
        cash_available=view.cash_available - held,
        margin_available=view.margin_available - held,
        equity=view.equity,
        pnl_today=pnl_today,
        open_order_count=reserved.count,
        positions=dict(view.positions),
        open_qtys=dict(reserved.open_qtys),
    )
