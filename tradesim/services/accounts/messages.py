"""The PositionTracker's wire contract: requests to `rpc.accounts.*`, their replies and its errors.

Money is exact `Decimal` in the account currency (a decimal string on the wire), prices are decimals of
the instrument (the ledger's views), quantities integer units. Every reply carries `seq`, the highest
venue sequence the tracker had processed when it answered, so a caller can tell how fresh it is.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final

import msgspec

from tradesim.services.accounts.views import AccountKind, AccountView, PositionView

UNKNOWN_ACCOUNT: Final = "unknown_account"
MALFORMED: Final = "malformed"


class GetAccount(msgspec.Struct, frozen=True, kw_only=True, tag="accounts.get", tag_field="kind"):
    """`rpc.accounts.get`: one account's figures."""

    account: str


class GetPositions(msgspec.Struct, frozen=True, kw_only=True, tag="accounts.get_positions", tag_field="kind"):
    """`rpc.accounts.positions`: one account's positions; flat ones (realized P&L only) unless `open_only`."""

    account: str
    open_only: bool = False


class ListAccounts(msgspec.Struct, frozen=True, kw_only=True, tag="accounts.list", tag_field="kind"):
    """`rpc.accounts.list`: a summary of every account, by id."""


class AccountReply(msgspec.Struct, frozen=True, kw_only=True, tag="accounts.account", tag_field="kind"):
    account: AccountView
    seq: int


class PositionsReply(msgspec.Struct, frozen=True, kw_only=True, tag="accounts.positions", tag_field="kind"):
    account: str
    positions: list[PositionView]  # by symbol
    seq: int


class AccountSummary(msgspec.Struct, frozen=True, kw_only=True):
    """The headline figures of one account (an AccountView without its positions)."""

    account: str
    kind: AccountKind
    currency: str
    cash: Decimal
    equity: Decimal
    realized_pnl: Decimal
    unrealized_pnl: Decimal
    fees: Decimal
    margin_used: Decimal
    buying_power: Decimal
    open_positions: int


class AccountsListReply(msgspec.Struct, frozen=True, kw_only=True, tag="accounts.accounts", tag_field="kind"):
    accounts: list[AccountSummary]  # by account
    seq: int


class AccountsError(msgspec.Struct, frozen=True, kw_only=True, tag="accounts.error", tag_field="kind"):
    """A refused query: `error` is `unknown_account` or `malformed` (wrong request type or empty account)."""

    error: str
    message: str


class AccountsMetrics(msgspec.Struct, frozen=True, kw_only=True):
    """What the tracker reports to the service registry (metadata) and to /metrics."""

    accounts: int
    trades_applied: int
    duplicates: int
    reordered: int  # late trades re-ordered into seq order
    late: int  # trades older than the re-ordering window
    errors: int  # events the ledger refused (unknown symbol, currency mismatch, ...)
    marks: int
    last_seq: int
    last_ts: int
    lag_ns: int  # wall clock now - ts of the newest event processed (0 before any)


def summary(view: AccountView) -> AccountSummary:
    """The summary of an account view."""
    return AccountSummary(
        account=view.account,
        kind=view.kind,
        currency=view.currency,
        cash=view.cash,
        equity=view.equity,
        realized_pnl=view.realized_pnl,
        unrealized_pnl=view.unrealized_pnl,
        fees=view.fees,
        margin_used=view.margin_used,
        buying_power=view.buying_power,
        open_positions=sum(1 for p in view.positions if p.qty),
    )


ACCOUNTS_MESSAGES: tuple[type[msgspec.Struct], ...] = (
    GetAccount,
    GetPositions,
    ListAccounts,
    AccountReply,
    PositionsReply,
    AccountsListReply,
    AccountsError,
)
