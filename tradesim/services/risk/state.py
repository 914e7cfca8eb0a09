"""What the rule engines read about an account and a market, as Protocols.

The accounts ledger and the market-data service are written elsewhere; the OMS adapts them to these
read-only views, so the rules stay pure and tests can use plain dataclasses.
Money is `Decimal` in the account currency; prices are integer ticks; quantities integer units.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Protocol

from tradesim.domain import Side


class TradingState(StrEnum):
    """ACTIVE trades freely, REDUCING may only shrink positions, HALTED may not trade at all."""

    ACTIVE = "active"
    REDUCING = "reducing"
    HALTED = "halted"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]

    def worst(self, other: TradingState) -> TradingState:
        """The more restrictive of two states (a halt from any source wins)."""
        return self if self.severity >= other.severity else other


_SEVERITY = {TradingState.ACTIVE: 0, TradingState.REDUCING: 1, TradingState.HALTED: 2}


class AccountState(Protocol):
    """One account as the ledger sees it now."""

    @property
    def cash_available(self) -> Decimal: ...

    @property
    def margin_available(self) -> Decimal: ...

    @property
    def equity(self) -> Decimal: ...

    @property
    def pnl_today(self) -> Decimal:
        """Realized plus unrealized P&L since the start of the trading day."""
        ...

    @property
    def open_order_count(self) -> int: ...

    @property
    def trading_state(self) -> TradingState: ...

    def position(self, symbol: str) -> int:
        """Signed net position in units (short < 0)."""
        ...

    def open_qty(self, symbol: str, side: Side) -> int:
        """Leaves quantity of the account's working orders on that side."""
        ...


class MarketState(Protocol):
    """Prices and volume of the current trading day, per symbol."""

    def reference_price(self, symbol: str) -> int | None:
        """The price bands are measured from (e.g. previous close or a fair value), in ticks."""
        ...

    def last_price(self, symbol: str) -> int | None: ...

    def day_volume(self, symbol: str) -> int:
        """Units traded so far today."""
        ...


class Activity(Protocol):
    """Today's message counts for an account (see `DailyCounters`)."""

    @property
    def orders(self) -> int: ...

    @property
    def cancels(self) -> int: ...

    @property
    def trades(self) -> int: ...
