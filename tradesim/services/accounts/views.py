"""Read-only figures of the ledger (views) and its whole state (snapshot), as msgspec Structs.

Views are computed on demand from the state and the last marks; they are copies, so holding one never
changes (or is changed by) the ledger. The snapshot holds only lists, sorted, so that its encoding is
canonical and `state_hash` compares two ledgers in one line.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum

import msgspec

from tradesim.domain import Instrument

SNAPSHOT_VERSION = 1


class AccountKind(StrEnum):
    """A cash account spends only its cash; a margin account may use its equity as collateral."""

    CASH = "cash"
    MARGIN = "margin"


class PositionView(msgspec.Struct, frozen=True, kw_only=True):
    """One position's figures in the account currency; prices are decimals of the instrument."""

    account: str
    symbol: str
    qty: int  # signed units
    avg_price: Decimal | None  # cost / (qty * multiplier), rounded to 1e-10 if inexact; None when flat
    cost_basis: Decimal  # exact signed cost of the open part
    mark_price: Decimal | None  # last mark, None if never marked
    market_value: Decimal  # qty * mark * multiplier (valued at cost when unmarked)
    unrealized_pnl: Decimal  # market_value - cost_basis
    realized_pnl: Decimal  # gross, before fees
    fees: Decimal
    margined: bool  # margin_rate > 0: notional never moves cash
    margin_used: Decimal  # |market_value| * margin_rate, 0 for cash instruments


class AccountView(msgspec.Struct, frozen=True, kw_only=True):
    """One account's figures; see docs/accounts.md for the formulas."""

    account: str
    kind: AccountKind
    currency: str
    cash: Decimal
    net_deposits: Decimal  # opening cash + deposits - withdrawals
    equity: Decimal  # cash + Σ market value (cash instruments) + Σ unrealized (margined)
    unrealized_pnl: Decimal
    realized_pnl: Decimal
    fees: Decimal
    margin_used: Decimal
    margin_available: Decimal  # equity - margin_used
    cash_available: Decimal  # cash - margin_used + min(0, unrealized of margined positions)
    buying_power: Decimal  # cash_available for cash accounts, margin_available for margin accounts
    positions: tuple[PositionView, ...]  # by symbol


class PositionState(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    qty: int
    cost: Decimal
    realized: Decimal
    fees: Decimal


class AccountState(msgspec.Struct, frozen=True, kw_only=True):
    account: str
    kind: AccountKind
    currency: str
    cash: Decimal
    net_deposits: Decimal
    positions: list[PositionState]  # by symbol, flat ones included (they carry realized P&L and fees)


class MarkState(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    price: int  # ticks


class AppliedTrades(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    trade_ids: list[int]  # ascending


class LedgerSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """Everything that decides the ledger's future figures; `Ledger.restore` rebuilds it exactly."""

    pnl_quantum: Decimal
    auto_open: bool
    instruments: list[Instrument]  # by symbol
    accounts: list[AccountState]  # by account
    marks: list[MarkState]  # by symbol
    applied: list[AppliedTrades]  # by symbol
    version: int = SNAPSHOT_VERSION
