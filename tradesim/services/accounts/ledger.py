"""The accounts ledger: a deterministic state machine of cash, positions and P&L, fed with trades and marks.

Pure: no bus, no I/O, no clock. The PositionTracker service wraps it; pre-trade risk reads its buying
power. All money is exact `Decimal` in the account currency, computed under a context that traps any
inexact operation, so a figure is either exact or an error (the one deliberate rounding, the average-cost
share of a partial reduction, is explicit: see `position.py`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from contextlib import AbstractContextManager
from decimal import (
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    localcontext,
)
from fractions import Fraction
from typing import Final, NamedTuple

import msgspec

from tradesim.domain import Instrument, Side, Trade
from tradesim.services.accounts.errors import (
    AccountExistsError,
    CurrencyMismatchError,
    InstrumentMismatchError,
    InsufficientFundsError,
    InvalidAccountError,
    InvalidAmountError,
    InvalidTradeError,
    UnknownAccountError,
    UnknownInstrumentError,
)
from tradesim.services.accounts.position import ZERO, Position, apply_fill
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

_EXACT: Final = Context(prec=100, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation, DivisionByZero, Overflow, Inexact])
_ROUND: Final = Context(prec=100, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation, DivisionByZero, Overflow])
_BPS: Final = Decimal(10_000)
_AVG_PRICE_STEP: Final = Decimal("1e-10")
_HASH_ENCODER: Final = msgspec.msgpack.Encoder(order="deterministic")
DEFAULT_PNL_QUANTUM: Final = Decimal("0.01")


def _exact() -> AbstractContextManager[Context]:
    """The exact decimal context (a plain `localcontext`: a generator-based wrapper cost ~1 µs per use)."""
    return localcontext(_EXACT)


def _money(value: Decimal | int | str, what: str) -> Decimal:
    """Money from the edge: exact decimals only (a float is refused, it is already rounded)."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str):
        raise InvalidAmountError(f"{what} must be a Decimal, int or decimal string, got {value!r}")
    try:
        amount = Decimal(value)
    except (InvalidOperation, ValueError) as exc:
        raise InvalidAmountError(f"{what} {value!r} is not a number") from exc
    if not amount.is_finite():
        raise InvalidAmountError(f"{what} {value!r} is not finite")
    return amount


class _Account(msgspec.Struct, kw_only=True):
    kind: AccountKind
    currency: str
    cash: Decimal
    net_deposits: Decimal
    positions: dict[str, Position] = msgspec.field(default_factory=dict)


class AccountFigures(NamedTuple):
    """The figures of an `AccountView` that checks read, and each position's qty by symbol (sorted)."""

    cash_available: Decimal
    margin_available: Decimal
    equity: Decimal
    margin_used: Decimal
    net_deposits: Decimal
    positions: dict[str, int]


class Ledger:
    """Cash, positions and P&L of every account, from trades (both sides) and marks.

    Deterministic: the same calls in the same order give the same state (`state_hash`). Idempotent on
    trades: a trade is known by (symbol, trade_id) — the symbol names its venue (`CODE.VENUE`) and the venue
    numbers its trades — so a redelivered trade is a no-op. With `auto_open` (the default) a trade for an
    account never opened opens it with zero cash in the instrument's currency: the trade already happened
    at the venue, and a projection that refused it would stop following the venue. Without it, such a trade
    raises `UnknownAccountError` and changes nothing.
    """

    __slots__ = ("_accounts", "_applied", "_instruments", "_marks", "auto_open", "pnl_quantum")

    def __init__(
        self,
        instruments: Iterable[Instrument] = (),
        *,
        auto_open: bool = True,
        pnl_quantum: Decimal = DEFAULT_PNL_QUANTUM,
    ) -> None:
        if not isinstance(pnl_quantum, Decimal) or not pnl_quantum.is_finite() or pnl_quantum <= 0:
            raise InvalidAmountError(f"pnl_quantum must be a positive Decimal, got {pnl_quantum!r}")
        self.auto_open = auto_open
        self.pnl_quantum = pnl_quantum
        self._accounts: dict[str, _Account] = {}
        self._instruments: dict[str, Instrument] = {}
        self._marks: dict[str, int] = {}
        self._applied: dict[str, set[int]] = {}
        for instrument in instruments:
            self.add_instrument(instrument)

    # --- reference data and money movements -------------------------------------------------------

    def add_instrument(self, instrument: Instrument) -> None:
        """Adds or updates an instrument. Margin rate, fees and flags may change; tick size, multiplier and
        currency may not (open positions are booked in them)."""
        _check_compatible(self._instruments.get(instrument.symbol), instrument)
        self._instruments[instrument.symbol] = instrument

    def open_account(
        self,
        account: str,
        cash: Decimal | int | str = 0,
        kind: AccountKind | str = AccountKind.CASH,
        currency: str = "USD",
    ) -> None:
        """Opens `account` with `cash` (≥ 0) in `currency`; `kind` is "cash" or "margin"."""
        if not isinstance(account, str) or not account:
            raise InvalidAccountError(f"account id must be a non-empty string, got {account!r}")
        if account in self._accounts:
            raise AccountExistsError(f"account {account!r} is already open")
        try:
            account_kind = AccountKind(kind)
        except ValueError as exc:
            raise InvalidAccountError(f"account kind must be 'cash' or 'margin', got {kind!r}") from exc
        amount = _money(cash, "opening cash")
        if amount < 0:
            raise InvalidAmountError(f"opening cash must not be negative, got {amount}")
        self._accounts[account] = _Account(kind=account_kind, currency=currency, cash=amount, net_deposits=amount)

    def deposit(self, account: str, amount: Decimal | int | str) -> None:
        """Adds cash (> 0) to an open account."""
        state = self._account(account)
        value = _money(amount, "deposit")
        if value <= 0:
            raise InvalidAmountError(f"deposit must be positive, got {value}")
        with _exact():
            state.cash += value
            state.net_deposits += value

    def withdraw(self, account: str, amount: Decimal | int | str) -> None:
        """Takes cash (> 0) out, up to `cash_available`."""
        state = self._account(account)
        value = _money(amount, "withdrawal")
        if value <= 0:
            raise InvalidAmountError(f"withdrawal must be positive, got {value}")
        available = self.cash_available(account)
        if value > available:
            raise InsufficientFundsError(f"withdrawal {value} exceeds cash available {available} of {account!r}")
        with _exact():
            state.cash -= value
            state.net_deposits -= value

    # --- events --------------------------------------------------------------------------------------

    def apply_trade(self, trade: Trade, instrument: Instrument | None = None) -> bool:
        """Books both sides of `trade`; returns False (and changes nothing) if it was already applied.

        `instrument` is remembered (as `add_instrument`); without it the known one is used. Every check is
        made before anything changes, so an error leaves the ledger as it was.
        """
        applied = self._applied.get(trade.symbol)
        if applied is not None and trade.trade_id in applied:
            return False
        inst = self._check_instrument(trade.symbol, instrument)
        if isinstance(trade.qty, bool) or not isinstance(trade.qty, int) or trade.qty <= 0:
            raise InvalidTradeError(f"trade {trade.trade_id} on {trade.symbol}: qty {trade.qty!r} is not positive")
        if isinstance(trade.price, bool) or not isinstance(trade.price, int):
            raise InvalidTradeError(f"trade {trade.trade_id} on {trade.symbol}: price {trade.price!r} is not ticks")
        to_open = []
        for account in dict.fromkeys((trade.maker_account, trade.taker_account)):
            state = self._accounts.get(account)
            if state is None:
                if not self.auto_open:
                    raise UnknownAccountError(f"trade {trade.trade_id} on {trade.symbol}: unknown account {account!r}")
                to_open.append(account)
            elif state.currency != inst.currency:
                raise CurrencyMismatchError(
                    f"trade {trade.trade_id} on {trade.symbol}: instrument currency {inst.currency} "
                    f"is not the currency {state.currency} of account {account!r}"
                )
        # All checks passed: from here on nothing raises.
        if instrument is not None:
            self._instruments[inst.symbol] = inst
        for account in to_open:
            self._accounts[account] = _Account(
                kind=AccountKind.CASH, currency=inst.currency, cash=ZERO, net_deposits=ZERO
            )
        with _exact():
            unit = inst.from_ticks(trade.price) * inst.multiplier
            notional = unit * trade.qty
            maker_fee = notional * inst.maker_fee_bps / _BPS
            taker_fee = notional * inst.taker_fee_bps / _BPS
            taker_qty = trade.qty if trade.aggressor is Side.BUY else -trade.qty
            if trade.maker_account == trade.taker_account:
                # A self-trade (STP off) changes no position and moves no notional; both fees are paid.
                self._book_fee(trade.maker_account, trade.symbol, maker_fee + taker_fee)
            else:
                self._book_fill(trade.maker_account, inst, -taker_qty, unit, maker_fee)
                self._book_fill(trade.taker_account, inst, taker_qty, unit, taker_fee)
        self._applied.setdefault(trade.symbol, set()).add(trade.trade_id)
        return True

    def mark(self, symbol: str, price_ticks: int) -> None:
        """Sets the last price of `symbol` (ticks): unrealized P&L, equity and margin follow it."""
        if isinstance(price_ticks, bool) or not isinstance(price_ticks, int):
            raise InvalidTradeError(f"mark of {symbol}: price {price_ticks!r} is not ticks")
        self._marks[symbol] = price_ticks

    def has_applied(self, symbol: str, trade_id: int) -> bool:
        applied = self._applied.get(symbol)
        return applied is not None and trade_id in applied

    # --- queries -------------------------------------------------------------------------------------

    @property
    def accounts(self) -> list[str]:
        return sorted(self._accounts)

    def account(self, account: str) -> AccountView:
        """A snapshot of one account's figures, positions by symbol."""
        state = self._account(account)
        with _exact():
            valued = [self._valued(p) for _, p in sorted(state.positions.items())]
            views = tuple(self._view_of(account, v) for v in valued)
            totals = _totals(state.cash, valued)
            unrealized = realized = fees = ZERO
            for view in views:
                unrealized += view.unrealized_pnl
                realized += view.realized_pnl
                fees += view.fees
        return AccountView(
            account=account,
            kind=state.kind,
            currency=state.currency,
            cash=state.cash,
            net_deposits=state.net_deposits,
            equity=totals.equity,
            unrealized_pnl=unrealized,
            realized_pnl=realized,
            fees=fees,
            margin_used=totals.margin_used,
            margin_available=totals.margin_available,
            cash_available=totals.cash_available,
            buying_power=totals.cash_available if state.kind is AccountKind.CASH else totals.margin_available,
            positions=views,
        )

    def position(self, account: str, symbol: str) -> PositionView:
        """The account's position in `symbol` (a flat one if it never traded it)."""
        state = self._account(account)
        position = state.positions.get(symbol)
        if position is None:
            if symbol not in self._instruments:
                raise UnknownInstrumentError(f"unknown symbol {symbol!r}")
            position = Position(symbol=symbol)
        with _exact():
            return self._position_view(account, position)

    def figures(self, account: str) -> AccountFigures:
        """What a pre-trade check reads of `account(account)`, the same totals without a view per position:
        the OMS needs it for nearly every order (each trade moves the mark)."""
        state = self._account(account)
        with _exact():
            valued = [self._valued(p) for _, p in sorted(state.positions.items())]
            totals = _totals(state.cash, valued)
        return AccountFigures(
            cash_available=totals.cash_available, margin_available=totals.margin_available, equity=totals.equity,
            margin_used=totals.margin_used, net_deposits=state.net_deposits,
            positions={v.position.symbol: v.position.qty for v in valued})

    def qty(self, account: str, symbol: str) -> int:
        """`position(account, symbol).qty` without building the view (the risk monitor reads it per trade)."""
        state = self._account(account)
        position = state.positions.get(symbol)
        if position is None:
            if symbol not in self._instruments:
                raise UnknownInstrumentError(f"unknown symbol {symbol!r}")
            return 0
        return position.qty

    def cash_available(self, account: str) -> Decimal:
        """Cash not held as margin nor owed to losing margined positions: what a cash purchase may spend."""
        return self.account(account).cash_available

    def margin_available(self, account: str) -> Decimal:
        """Equity not used as margin: what a new margined position may take."""
        return self.account(account).margin_available

    def buying_power(self, account: str) -> Decimal:
        """`cash_available` for a cash account, `margin_available` for a margin account."""
        return self.account(account).buying_power

    # --- state ---------------------------------------------------------------------------------------

    def snapshot(self) -> LedgerSnapshot:
        """The whole state as immutable Structs (canonical order), independent of the live ledger."""
        return LedgerSnapshot(
            pnl_quantum=self.pnl_quantum,
            auto_open=self.auto_open,
            instruments=[self._instruments[s] for s in sorted(self._instruments)],
            accounts=[
                AccountState(
                    account=name,
                    kind=state.kind,
                    currency=state.currency,
                    cash=state.cash,
                    net_deposits=state.net_deposits,
                    positions=[
                        PositionState(symbol=p.symbol, qty=p.qty, cost=p.cost, realized=p.realized, fees=p.fees)
                        for _, p in sorted(state.positions.items())
                    ],
                )
                for name, state in sorted(self._accounts.items())
            ],
            marks=[MarkState(symbol=s, price=self._marks[s]) for s in sorted(self._marks)],
            applied=[AppliedTrades(symbol=s, trade_ids=sorted(ids)) for s, ids in sorted(self._applied.items())],
        )

    @classmethod
    def restore(cls, snapshot: LedgerSnapshot) -> Ledger:
        """A ledger in exactly the state of `snapshot`."""
        ledger = cls(snapshot.instruments, auto_open=snapshot.auto_open, pnl_quantum=snapshot.pnl_quantum)
        for acc in snapshot.accounts:
            ledger._accounts[acc.account] = _Account(
                kind=acc.kind,
                currency=acc.currency,
                cash=acc.cash,
                net_deposits=acc.net_deposits,
                positions={
                    p.symbol: Position(symbol=p.symbol, qty=p.qty, cost=p.cost, realized=p.realized, fees=p.fees)
                    for p in acc.positions
                },
            )
        ledger._marks = {m.symbol: m.price for m in snapshot.marks}
        ledger._applied = {a.symbol: set(a.trade_ids) for a in snapshot.applied}
        return ledger

    def state_hash(self) -> str:
        """sha256 of the canonical snapshot: equal hashes, equal ledgers."""
        return hashlib.sha256(_HASH_ENCODER.encode(self.snapshot())).hexdigest()

    # --- internals -----------------------------------------------------------------------------------

    def _account(self, account: str) -> _Account:
        state = self._accounts.get(account)
        if state is None:
            raise UnknownAccountError(f"unknown account {account!r}")
        return state

    def _check_instrument(self, symbol: str, instrument: Instrument | None) -> Instrument:
        known = self._instruments.get(symbol)
        if instrument is None:
            if known is None:
                raise UnknownInstrumentError(f"no instrument for {symbol!r}: pass it to apply_trade or add_instrument")
            return known
        if instrument.symbol != symbol:
            raise InstrumentMismatchError(f"instrument {instrument.symbol!r} given for a trade on {symbol!r}")
        _check_compatible(known, instrument)
        return instrument

    def _book_fill(self, account: str, inst: Instrument, signed_qty: int, unit: Decimal, fee: Decimal) -> None:
        state = self._accounts[account]
        position = state.positions.get(inst.symbol)
        if position is None:
            position = state.positions[inst.symbol] = Position(symbol=inst.symbol)
        realized = apply_fill(position, signed_qty, unit, self.pnl_quantum)
        if inst.margin_rate > 0:
            state.cash += realized  # margined: only realized P&L (and fees) reach cash
        else:
            state.cash -= signed_qty * unit  # cash instrument: the notional changes hands
        state.cash -= fee
        position.fees += fee

    def _book_fee(self, account: str, symbol: str, fee: Decimal) -> None:
        state = self._accounts[account]
        position = state.positions.get(symbol)
        if position is None:
            position = state.positions[symbol] = Position(symbol=symbol)
        state.cash -= fee
        position.fees += fee

    def _position_view(self, account: str, position: Position) -> PositionView:
        return self._view_of(account, self._valued(position))

    def _valued(self, position: Position) -> _Valued:
        """The position under its symbol's mark (at cost while unmarked): what views and totals read."""
        inst = self._instruments[position.symbol]
        mark = self._marks.get(position.symbol)
        mark_price = None if mark is None else inst.from_ticks(mark)
        value = position.cost if mark_price is None else position.qty * mark_price * inst.multiplier
        margined = inst.margin_rate > 0
        margin = abs(value) * inst.margin_rate if margined else ZERO
        return _Valued(position, inst.multiplier, mark_price, value, margined, margin)

    @staticmethod
    def _view_of(account: str, v: _Valued) -> PositionView:
        position = v.position
        return PositionView(
            account=account,
            symbol=position.symbol,
            qty=position.qty,
            avg_price=_avg_price(position.cost, position.qty, v.multiplier),
            cost_basis=position.cost,
            mark_price=v.mark_price,
            market_value=v.value,
            unrealized_pnl=v.value - position.cost,
            realized_pnl=position.realized,
            fees=position.fees,
            margined=v.margined,
            margin_used=v.margin,
        )


class _Valued(NamedTuple):
    position: Position
    multiplier: Decimal
    mark_price: Decimal | None
    value: Decimal  # market value, or cost while unmarked
    margined: bool
    margin: Decimal  # margin used (ZERO when not margined)


class _Totals(NamedTuple):
    equity: Decimal
    margin_used: Decimal
    cash_available: Decimal
    margin_available: Decimal


def _totals(cash: Decimal, valued: Iterable[_Valued]) -> _Totals:
    """An account's totals from its valued positions (in the exact context): a margined position adds its
    unrealized P&L to equity, an unmargined one its market value; losses on margined positions are owed
    out of cash."""
    equity = cash
    margin_used = margined_unrealized = ZERO
    for v in valued:
        margin_used += v.margin
        if v.margined:
            unrealized = v.value - v.position.cost
            equity += unrealized
            margined_unrealized += unrealized
        else:
            equity += v.value
    return _Totals(equity, margin_used, cash - margin_used + min(ZERO, margined_unrealized), equity - margin_used)


def _check_compatible(known: Instrument | None, instrument: Instrument) -> None:
    """Open positions are booked in the tick size, multiplier and currency: those may never change."""
    if known is None:
        return
    for field in ("tick_size", "multiplier", "currency"):
        if getattr(known, field) != getattr(instrument, field):
            raise InstrumentMismatchError(
                f"{instrument.symbol}: {field} {getattr(instrument, field)} "
                f"differs from the known {getattr(known, field)}"
            )


def _avg_price(cost: Decimal, qty: int, multiplier: Decimal) -> Decimal | None:
    """cost / (qty * multiplier): exact when it falls on the 1e-10 grid, else rounded half-even to it."""
    if qty == 0:
        return None
    try:  # fast path (risk checks read this per order): a terminating quotient needs no Fraction
        quotient = _EXACT.divide(cost, qty * multiplier)
    except Inexact:
        pass  # non-terminating: round through Fraction below
    else:
        on_grid = _ROUND.quantize(quotient, _AVG_PRICE_STEP)
        return quotient if on_grid == quotient else on_grid
    exact = Fraction(cost) / (qty * Fraction(multiplier))
    steps = round(exact / Fraction(_AVG_PRICE_STEP))
    if Fraction(steps) * Fraction(_AVG_PRICE_STEP) == exact:
        return cost / (qty * multiplier)
    return Decimal(steps) * _AVG_PRICE_STEP
