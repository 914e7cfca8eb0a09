"""The ledger's refusals: each names what was wrong, and none leaves the ledger half-changed."""

from __future__ import annotations


class LedgerError(ValueError):
    """Base of every error the accounts ledger raises; the ledger's state is unchanged when it is raised."""


class UnknownAccountError(LedgerError):
    """An account the ledger has never opened (and may not open on its own)."""


class InvalidAccountError(LedgerError):
    """An account id that is not a non-empty string, or an account kind other than "cash" or "margin"."""


class AccountExistsError(LedgerError):
    """`open_account` for an account that is already open."""


class UnknownInstrumentError(LedgerError):
    """A trade or query for a symbol whose instrument was never given to the ledger."""


class InstrumentMismatchError(LedgerError):
    """An instrument that contradicts the one already known (tick, multiplier, currency) or the trade's symbol."""


class CurrencyMismatchError(LedgerError):
    """A trade in an instrument whose currency is not the account's: the ledger does no FX."""


class InvalidAmountError(LedgerError):
    """Money that is not a finite decimal (floats are refused: they are not exact) or has the wrong sign."""


class InvalidTradeError(LedgerError):
    """A trade whose quantity or price cannot be booked (quantity not a positive int, price not an int)."""


class InsufficientFundsError(LedgerError):
    """A withdrawal larger than the cash available."""
