"""`Ledger.figures` and `Ledger.qty`, the risk checks' shortcuts, agree with `Ledger.account` to the Decimal.

The OMS and the risk monitor read these per order and per trade instead of building a full view; any
difference (even a Decimal's exponent, which shows in alert figures) would change what they decide or say.
"""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.services.test_ledger import ACCOUNTS, EQ, IF, INSTRUMENTS, MID, Step, feed, steps, to_events
from tradesim.services.accounts import Ledger, UnknownAccountError, UnknownInstrumentError


def _ledger(kind: str) -> Ledger:
    ledger = Ledger(INSTRUMENTS.values())
    for i, name in enumerate(ACCOUNTS):
        ledger.open_account(name, D(1_000_000 * (i + 1)), kind=kind, currency="CNY")
    return ledger


@given(steps(), st.sampled_from(["cash", "margin"]), st.integers(-50, 50), st.booleans())
def test_figures_and_qty_match_the_account_view(script: list[Step], kind: str, move: int, marked: bool) -> None:
    ledger = feed(_ledger(kind), to_events(script))
    if marked:
        ledger.mark(IF.symbol, MID[IF.symbol] + move)
    for account in ACCOUNTS:
        view = ledger.account(account)
        figures = ledger.figures(account)
        for field in ("cash_available", "margin_available", "equity", "margin_used", "net_deposits"):
            assert str(getattr(figures, field)) == str(getattr(view, field)), field
        assert figures.positions == {p.symbol: p.qty for p in view.positions}
        assert list(figures.positions) == [p.symbol for p in view.positions]
        for symbol in INSTRUMENTS:
            assert ledger.qty(account, symbol) == ledger.position(account, symbol).qty


def test_qty_of_an_unknown_symbol_is_refused_like_position() -> None:
    ledger = _ledger("cash")
    with pytest.raises(UnknownInstrumentError):
        ledger.position("a", "NOPE.SIM")
    with pytest.raises(UnknownInstrumentError):
        ledger.qty("a", "NOPE.SIM")
    with pytest.raises(UnknownAccountError):
        ledger.qty("nobody", EQ.symbol)
    assert ledger.qty("a", EQ.symbol) == 0
