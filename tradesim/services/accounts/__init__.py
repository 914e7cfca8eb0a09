"""Accounts: the pure ledger of cash, positions, P&L and margin that the PositionTracker service wraps."""

from tradesim.services.accounts.errors import (
    AccountExistsError,
    CurrencyMismatchError,
    InstrumentMismatchError,
    InsufficientFundsError,
    InvalidAccountError,
    InvalidAmountError,
    InvalidTradeError,
    LedgerError,
    UnknownAccountError,
    UnknownInstrumentError,
)
from tradesim.services.accounts.ledger import DEFAULT_PNL_QUANTUM, AccountFigures, Ledger
from tradesim.services.accounts.views import (
    AccountKind,
    AccountState,
    AccountView,
    AppliedTrades,
    LedgerSnapshot,
    MarkState,
    PositionState,
    PositionView,
)

__all__ = [
    "DEFAULT_PNL_QUANTUM",
    "AccountExistsError",
    "AccountFigures",
    "AccountKind",
    "AccountState",
    "AccountView",
    "AppliedTrades",
    "CurrencyMismatchError",
    "InstrumentMismatchError",
    "InsufficientFundsError",
    "InvalidAccountError",
    "InvalidAmountError",
    "InvalidTradeError",
    "Ledger",
    "LedgerError",
    "LedgerSnapshot",
    "MarkState",
    "PositionState",
    "PositionView",
    "UnknownAccountError",
    "UnknownInstrumentError",
]
