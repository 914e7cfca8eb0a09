"""Tests of the accounts ledger: worked examples with exact figures, refusals, and properties on random trades.

Worked examples are computed by hand (see the comments) so that a wrong formula shows as a wrong number.
The properties hold for any trade sequence among three accounts: positions net to zero, money is conserved
but for fees, the realized P&L matches an exact rational average-cost reference to within the rounding
quantum, and replicas, restores and redeliveries all agree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal as D
from fractions import Fraction
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tradesim.domain import Instrument, Side, Trade
from tradesim.services.accounts import (
    AccountExistsError,
    AccountKind,
    CurrencyMismatchError,
    InstrumentMismatchError,
    InsufficientFundsError,
    InvalidAccountError,
    InvalidAmountError,
    InvalidTradeError,
    Ledger,
    LedgerSnapshot,
    UnknownAccountError,
    UnknownInstrumentError,
)

AAPL = Instrument(symbol="AAPL.SIM", tick_size=D("0.01"))
AAPL_FEES = Instrument(symbol="AAPL.SIM", tick_size=D("0.01"), maker_fee_bps=D("1"), taker_fee_bps=D("2.5"))
IF = Instrument(
    symbol="IF2501.CFFEX",
    tick_size=D("0.2"),
    multiplier=D(300),
    currency="CNY",
    margin_rate=D("0.12"),
    maker_fee_bps=D("0.23"),
    taker_fee_bps=D("0.23"),
)

_ids = iter(range(1, 1_000_000))


def trade(
    buyer: str,
    seller: str,
    price: int,
    qty: int,
    *,
    symbol: str = "AAPL.SIM",
    aggressor: Side = Side.BUY,
    trade_id: int | None = None,
) -> Trade:
    """A trade where `buyer` buys `qty` from `seller`; the aggressor side decides who is the taker."""
    tid = next(_ids) if trade_id is None else trade_id
    maker, taker = (seller, buyer) if aggressor is Side.BUY else (buyer, seller)
    return Trade(
        seq=tid,
        ts=0,
        trade_id=tid,
        symbol=symbol,
        price=price,
        qty=qty,
        aggressor=aggressor,
        maker_order_id=2 * tid,
        maker_account=maker,
        maker_client_order_id=f"m{tid}",
        maker_cum_qty=qty,
        maker_leaves_qty=0,
        taker_order_id=2 * tid + 1,
        taker_account=taker,
        taker_client_order_id=f"t{tid}",
        taker_cum_qty=qty,
        taker_leaves_qty=0,
    )


def equity_ledger(instrument: Instrument = AAPL) -> Ledger:
    ledger = Ledger([instrument])
    ledger.open_account("alice", D("100000"))
    ledger.open_account("bob", D("100000"))
    return ledger


# --- worked examples: cash instruments --------------------------------------------------------------


def test_buy_then_sell_at_a_profit() -> None:
    ledger = equity_ledger()
    ledger.apply_trade(trade("alice", "bob", 15000, 100))  # alice buys 100 @ 150.00: pays 15000
    assert ledger.account("alice").cash == D("85000")
    ledger.apply_trade(trade("bob", "alice", 15525, 100))  # alice sells 100 @ 155.25: gets 15525
    alice = ledger.position("alice", "AAPL.SIM")
    assert (alice.qty, alice.avg_price, alice.cost_basis) == (0, None, D(0))
    assert alice.realized_pnl == D("525.00")
    assert ledger.account("alice").cash == D("100525.00")
    assert ledger.account("alice").equity == D("100525.00")
    # bob was short 100 @ 150 and bought back at 155.25: the mirror image.
    assert ledger.position("bob", "AAPL.SIM").realized_pnl == D("-525.00")
    assert ledger.account("bob").cash == D("99475.00")


def test_partial_reduction_keeps_the_average_price() -> None:
    ledger = equity_ledger()
    ledger.apply_trade(trade("alice", "bob", 15000, 100))
    ledger.apply_trade(trade("bob", "alice", 16000, 40))  # 40 * (160 - 150) = 400
    pos = ledger.position("alice", "AAPL.SIM")
    assert (pos.qty, pos.avg_price, pos.cost_basis, pos.realized_pnl) == (60, D("150"), D("9000"), D("400"))
    assert ledger.account("alice").cash == D("100000") - D("15000") + D("6400")


def test_average_price_on_adds() -> None:
    ledger = equity_ledger()
    ledger.apply_trade(trade("alice", "bob", 15000, 100))
    ledger.apply_trade(trade("alice", "bob", 15300, 200))  # (15000 + 30600) / 300 = 152
    pos = ledger.position("alice", "AAPL.SIM")
    assert (pos.qty, pos.avg_price, pos.cost_basis, pos.realized_pnl) == (300, D("152"), D("45600"), D(0))
    assert ledger.account("alice").cash == D("54400")


def test_flip_long_to_short_through_zero() -> None:
    ledger = equity_ledger()
    ledger.apply_trade(trade("alice", "bob", 15000, 100))
    ledger.apply_trade(trade("bob", "alice", 14000, 150))  # closes 100 at -10 each, opens 50 short @ 140
    pos = ledger.position("alice", "AAPL.SIM")
    assert (pos.qty, pos.avg_price, pos.cost_basis, pos.realized_pnl) == (-50, D("140"), D("-7000"), D("-1000"))
    assert ledger.account("alice").cash == D("100000") - D("15000") + D("21000")
    bob = ledger.position("bob", "AAPL.SIM")  # bob: short 100 @ 150, buys 150 @ 140 -> +1000, long 50 @ 140
    assert (bob.qty, bob.avg_price, bob.realized_pnl) == (50, D("140"), D("1000"))


def test_short_then_cover() -> None:
    ledger = equity_ledger()
    ledger.apply_trade(trade("bob", "alice", 20000, 50))  # alice shorts 50 @ 200: receives 10000
    assert ledger.account("alice").cash == D("110000")
    pos = ledger.position("alice", "AAPL.SIM")
    assert (pos.qty, pos.avg_price, pos.cost_basis) == (-50, D("200"), D("-10000"))
    ledger.mark("AAPL.SIM", 19500)  # short gains 50 * 5
    view = ledger.account("alice")
    assert view.unrealized_pnl == D("250")
    assert view.equity == D("110000") - D("9750")  # cash + market value (negative for a short)
    ledger.apply_trade(trade("alice", "bob", 19000, 50))  # covers at 190: 50 * 10
    pos = ledger.position("alice", "AAPL.SIM")
    assert (pos.qty, pos.realized_pnl, pos.unrealized_pnl) == (0, D("500"), D(0))
    assert ledger.account("alice").cash == D("100500")


def test_unrealized_pnl_and_equity_after_mark() -> None:
    ledger = equity_ledger()
    ledger.apply_trade(trade("alice", "bob", 15000, 100))
    before = ledger.account("alice")  # unmarked: valued at cost
    assert (before.unrealized_pnl, before.equity) == (D(0), D("100000"))
    ledger.mark("AAPL.SIM", 15250)
    pos = ledger.position("alice", "AAPL.SIM")
    assert (pos.mark_price, pos.market_value, pos.unrealized_pnl) == (D("152.50"), D("15250.00"), D("250.00"))
    view = ledger.account("alice")
    assert (view.cash, view.equity, view.unrealized_pnl) == (D("85000"), D("100250.00"), D("250.00"))
    assert (view.margin_used, view.margin_available, view.cash_available) == (D(0), D("100250.00"), D("85000"))


def test_inexact_average_cost_share_is_rounded_and_the_round_trip_stays_exact() -> None:
    ledger = equity_ledger()
    ledger.apply_trade(trade("alice", "bob", 10000, 1))
    ledger.apply_trade(trade("alice", "bob", 10100, 2))  # cost 302 for 3: avg 100.666...
    assert ledger.position("alice", "AAPL.SIM").avg_price == D("100.6666666667")
    ledger.apply_trade(trade("bob", "alice", 10200, 1))  # share 100.666... -> 100.67; realized 1.33
    pos = ledger.position("alice", "AAPL.SIM")
    assert (pos.realized_pnl, pos.cost_basis) == (D("1.33"), D("201.33"))
    ledger.apply_trade(trade("bob", "alice", 10200, 2))  # the rest: 204 - 201.33 = 2.67
    assert ledger.position("alice", "AAPL.SIM").realized_pnl == D("4.00")  # exactly 3 * 102 - 302


def test_fees_maker_versus_taker() -> None:
    ledger = equity_ledger(AAPL_FEES)
    # alice takes (buys) 100 @ 150 from bob's resting order: notional 15000.
    ledger.apply_trade(trade("alice", "bob", 15000, 100, aggressor=Side.BUY))
    alice, bob = ledger.account("alice"), ledger.account("bob")
    assert alice.fees == D("3.75")  # taker 2.5 bps
    assert bob.fees == D("1.5")  # maker 1 bps
    assert alice.cash == D("100000") - D("15000") - D("3.75")
    assert bob.cash == D("100000") + D("15000") - D("1.5")
    # Now alice's order rests and bob takes: the roles swap.
    ledger.apply_trade(trade("alice", "bob", 15000, 100, aggressor=Side.SELL))
    assert ledger.account("alice").fees == D("3.75") + D("1.5")
    assert ledger.account("bob").fees == D("1.5") + D("3.75")


def test_maker_rebate_is_a_negative_fee() -> None:
    inst = Instrument(symbol="AAPL.SIM", tick_size=D("0.01"), maker_fee_bps=D("-0.2"), taker_fee_bps=D("0.3"))
    ledger = equity_ledger(inst)
    ledger.apply_trade(trade("alice", "bob", 12345, 7))  # notional 864.15
    assert ledger.account("bob").fees == D("-0.017283")
    assert ledger.account("alice").fees == D("0.0259245")
    assert ledger.account("bob").cash == D("100864.167283")


# --- worked examples: futures ------------------------------------------------------------------------


def test_futures_margin_pnl_and_equity() -> None:
    ledger = Ledger([IF])
    ledger.open_account("alice", D("1000000"), kind="margin", currency="CNY")
    ledger.open_account("bob", D("1000000"), kind="margin", currency="CNY")
    # alice takes 2 lots @ 3850.2 (19251 ticks of 0.2): notional 3850.2 * 2 * 300 = 2310120.
    ledger.apply_trade(trade("alice", "bob", 19251, 2, symbol="IF2501.CFFEX"))
    fee = D("53.13276")  # 2310120 * 0.23 / 10000
    alice = ledger.account("alice")
    assert alice.cash == D("1000000") - fee  # the notional does not move cash
    assert alice.margin_used == D("277214.4")  # unmarked: at the average price, 2310120 * 0.12
    assert alice.equity == D("1000000") - fee
    pos = ledger.position("alice", "IF2501.CFFEX")
    assert (pos.qty, pos.avg_price, pos.margined) == (2, D("3850.2"), True)

    ledger.mark("IF2501.CFFEX", 19300)  # 3860.0
    alice = ledger.account("alice")
    assert alice.unrealized_pnl == D("5880")  # (3860.0 - 3850.2) * 2 * 300
    assert alice.margin_used == D("277920")  # 3860 * 2 * 300 * 0.12
    assert alice.equity == D("1000000") - fee + D("5880")
    assert alice.margin_available == alice.equity - D("277920")
    assert alice.buying_power == alice.margin_available
    assert alice.cash_available == alice.cash - D("277920")  # gains are not spendable cash
    bob = ledger.account("bob")  # short 2: loses 5880, which cash_available already counts
    assert bob.unrealized_pnl == D("-5880")
    assert bob.cash_available == D("1000000") - fee - D("277920") - D("5880")

    # alice sells 1 lot @ 3870.0 to bob (bob takes): realized (3870 - 3850.2) * 300 = 5940 reaches cash.
    ledger.apply_trade(trade("bob", "alice", 19350, 1, symbol="IF2501.CFFEX", aggressor=Side.BUY))
    fee2 = D("26.703")  # 3870 * 300 * 0.23 / 10000
    pos = ledger.position("alice", "IF2501.CFFEX")
    assert (pos.qty, pos.realized_pnl, pos.avg_price) == (1, D("5940.0"), D("3850.2"))
    assert ledger.account("alice").cash == D("1000000") - fee - fee2 + D("5940")
    assert ledger.account("bob").cash == D("1000000") - fee - fee2 - D("5940")


def test_margin_rate_change_is_taken_but_the_multiplier_may_not_change() -> None:
    ledger = Ledger([IF])
    ledger.open_account("alice", D("1000000"), kind="margin", currency="CNY")
    ledger.open_account("bob", D("1000000"), kind="margin", currency="CNY")
    ledger.apply_trade(trade("alice", "bob", 19250, 1, symbol="IF2501.CFFEX"))  # 3850 * 300 = 1155000
    ledger.add_instrument(msgspec.structs.replace(IF, margin_rate=D("0.15")))
    assert ledger.account("alice").margin_used == D("173250.00")
    with pytest.raises(InstrumentMismatchError):
        ledger.add_instrument(msgspec.structs.replace(IF, multiplier=D(200)))
    with pytest.raises(InstrumentMismatchError):
        ledger.apply_trade(trade("alice", "bob", 19250, 1, symbol="IF2501.CFFEX"), AAPL)


# --- accounts, refusals and idempotency --------------------------------------------------------------


def test_duplicate_trade_is_a_no_op() -> None:
    ledger = equity_ledger(AAPL_FEES)
    t = trade("alice", "bob", 15000, 100)
    assert ledger.apply_trade(t) is True
    digest = ledger.state_hash()
    assert ledger.apply_trade(t) is False
    assert ledger.state_hash() == digest
    assert ledger.has_applied("AAPL.SIM", t.trade_id)
    # The same id on another symbol (another venue or shard numbering its own trades) is a different trade.
    ledger.add_instrument(msgspec.structs.replace(AAPL, symbol="AAPL.OTHER"))
    assert ledger.apply_trade(msgspec.structs.replace(t, symbol="AAPL.OTHER")) is True


def test_unknown_account_auto_opens_with_zero_cash_in_the_instrument_currency() -> None:
    ledger = Ledger([IF])
    ledger.apply_trade(trade("carol", "dave", 19250, 1, symbol="IF2501.CFFEX"))
    carol = ledger.account("carol")
    assert (carol.kind, carol.currency, carol.net_deposits) == (AccountKind.CASH, "CNY", D(0))
    assert carol.cash == D("-26.565")  # the fee: 1155000 * 0.23 / 10000
    assert ledger.accounts == ["carol", "dave"]


def test_unknown_account_is_refused_when_auto_open_is_off_and_nothing_changes() -> None:
    ledger = Ledger([AAPL], auto_open=False)
    ledger.open_account("alice", D("1000"))
    digest = ledger.state_hash()
    t = trade("alice", "mallory", 100, 1)
    with pytest.raises(UnknownAccountError, match="mallory"):
        ledger.apply_trade(t)
    assert ledger.state_hash() == digest
    assert not ledger.has_applied("AAPL.SIM", t.trade_id)
    with pytest.raises(UnknownAccountError):
        ledger.account("mallory")


def test_refusals_change_nothing() -> None:
    ledger = Ledger([AAPL, IF])
    ledger.open_account("alice", D("1000"))
    ledger.open_account("bob", D("1000"))
    digest = ledger.state_hash()
    with pytest.raises(CurrencyMismatchError):  # USD accounts, CNY future: no FX
        ledger.apply_trade(trade("alice", "bob", 19250, 1, symbol="IF2501.CFFEX"))
    with pytest.raises(UnknownInstrumentError):
        ledger.apply_trade(trade("alice", "bob", 100, 1, symbol="MSFT.SIM"))
    with pytest.raises(InvalidTradeError):
        ledger.apply_trade(trade("alice", "bob", 100, 0))
    with pytest.raises(AccountExistsError):
        ledger.open_account("alice", D("5"))
    with pytest.raises(InvalidAmountError):
        ledger.open_account("carol", 1.5)  # type: ignore[arg-type]
    with pytest.raises(InvalidAmountError):
        ledger.open_account("carol", D("-1"))
    with pytest.raises(InvalidAmountError):
        ledger.open_account("carol", D("NaN"))
    with pytest.raises(InvalidAccountError):
        ledger.open_account("carol", 0, kind="prime")
    with pytest.raises(InvalidAccountError):
        ledger.open_account("", 0)
    with pytest.raises(InsufficientFundsError):
        ledger.withdraw("alice", D("1000.01"))
    assert ledger.state_hash() == digest


def test_deposit_and_withdraw() -> None:
    ledger = equity_ledger()
    ledger.deposit("alice", "250.50")
    ledger.withdraw("alice", D("100000"))
    view = ledger.account("alice")
    assert (view.cash, view.net_deposits) == (D("250.50"), D("250.50"))


def test_self_trade_moves_no_position_and_pays_both_fees() -> None:
    ledger = equity_ledger(AAPL_FEES)
    ledger.apply_trade(trade("alice", "alice", 15000, 100))
    view = ledger.account("alice")
    assert ledger.position("alice", "AAPL.SIM").qty == 0
    assert view.fees == D("5.25")
    assert view.cash == D("100000") - D("5.25")


def test_snapshot_round_trips_through_the_wire() -> None:
    ledger = equity_ledger(AAPL_FEES)
    ledger.add_instrument(IF)
    ledger.apply_trade(trade("alice", "bob", 15000, 100))
    ledger.mark("AAPL.SIM", 15100)
    ledger.mark("IF2501.CFFEX", 19000)  # a mark for a symbol nobody holds is kept too
    data = msgspec.msgpack.encode(ledger.snapshot())
    restored = Ledger.restore(msgspec.msgpack.decode(data, type=LedgerSnapshot))
    assert restored.state_hash() == ledger.state_hash()
    assert restored.account("alice") == ledger.account("alice")
    restored.apply_trade(trade("bob", "alice", 15200, 10))
    assert restored.state_hash() != ledger.state_hash()  # independent copies


def test_docs_example_runs() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "accounts.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "docs/accounts.md", "exec"), {})


# --- properties on random trade sequences -----------------------------------------------------------

EQ = Instrument(symbol="EQ.SIM", tick_size=D("0.01"), currency="CNY", maker_fee_bps=D("-0.2"), taker_fee_bps=D("0.35"))
INSTRUMENTS = {EQ.symbol: EQ, IF.symbol: IF}
MID = {EQ.symbol: 10_000, IF.symbol: 19_250}
ACCOUNTS = ("a", "b", "c")


@dataclass(frozen=True)
class Step:
    """One input: a trade (qty > 0) or a mark (qty == 0)."""

    symbol: str
    price: int
    qty: int
    maker: int
    taker: int
    aggressor: Side


@st.composite
def steps(draw: st.DrawFn, symbols: tuple[str, ...] = (EQ.symbol, IF.symbol)) -> list[Step]:
    out = []
    for _ in range(draw(st.integers(0, 40))):
        symbol = draw(st.sampled_from(symbols))
        price = MID[symbol] + draw(st.integers(-30, 30))
        is_mark = draw(st.integers(0, 9)) == 0
        out.append(
            Step(
                symbol=symbol,
                price=price,
                qty=0 if is_mark else draw(st.integers(1, 9)),
                maker=draw(st.integers(0, 2)),
                taker=draw(st.integers(0, 2)),
                aggressor=draw(st.sampled_from(Side)),
            )
        )
    return out


def to_events(script: list[Step]) -> list[Trade | tuple[str, int]]:
    events: list[Trade | tuple[str, int]] = []
    for i, s in enumerate(script, start=1):
        if s.qty == 0:
            events.append((s.symbol, s.price))
            continue
        maker, taker = ACCOUNTS[s.maker], ACCOUNTS[s.taker]
        buyer, seller = (taker, maker) if s.aggressor is Side.BUY else (maker, taker)
        events.append(trade(buyer, seller, s.price, s.qty, symbol=s.symbol, aggressor=s.aggressor, trade_id=i))
    return events


def fresh_ledger() -> Ledger:
    ledger = Ledger(INSTRUMENTS.values())
    for i, name in enumerate(ACCOUNTS):
        ledger.open_account(name, D(1_000_000 * (i + 1)), kind="margin", currency="CNY")
    return ledger


def feed(ledger: Ledger, events: list[Trade | tuple[str, int]]) -> Ledger:
    for event in events:
        if isinstance(event, Trade):
            ledger.apply_trade(event)
        else:
            ledger.mark(*event)
    return ledger


def total_fees(ledger: Ledger) -> D:
    return sum((ledger.account(a).fees for a in ACCOUNTS), D(0))


@given(steps())
def test_positions_net_to_zero_per_symbol(script: list[Step]) -> None:
    ledger = feed(fresh_ledger(), to_events(script))
    for symbol in INSTRUMENTS:
        assert sum(ledger.position(a, symbol).qty for a in ACCOUNTS) == 0


def expected_fees(events: list[Trade | tuple[str, int]]) -> D:
    """Every trade pays notional * (maker bps + taker bps) / 10000, self-trades included."""
    total = D(0)
    for event in events:
        if isinstance(event, Trade):
            inst = INSTRUMENTS[event.symbol]
            notional = inst.from_ticks(event.price) * event.qty * inst.multiplier
            total += notional * (inst.maker_fee_bps + inst.taker_fee_bps) / 10_000
    return total


@given(steps(), st.integers(-50, 50), st.integers(-50, 50))
def test_money_is_conserved_but_for_fees(script: list[Step], eq_move: int, if_move: int) -> None:
    events = to_events(script)
    ledger = feed(fresh_ledger(), events)
    ledger.mark(EQ.symbol, MID[EQ.symbol] + eq_move)  # everyone marked at the same prices
    ledger.mark(IF.symbol, MID[IF.symbol] + if_move)
    views = [ledger.account(a) for a in ACCOUNTS]
    fees = sum((v.fees for v in views), D(0))
    assert fees == expected_fees(events)
    assert sum((v.equity for v in views), D(0)) == sum((v.net_deposits for v in views), D(0)) - fees
    for v in views:  # per account: what it made is what it realized plus what it holds unrealized
        assert v.equity - v.net_deposits + v.fees == v.realized_pnl + v.unrealized_pnl


@given(steps(symbols=(EQ.symbol,)))
def test_equity_cash_only_moves_between_accounts(script: list[Step]) -> None:
    ledger = feed(fresh_ledger(), to_events(script))
    cash = sum((ledger.account(a).cash for a in ACCOUNTS), D(0))
    assert cash == D(6_000_000) - total_fees(ledger)


def flatten(ledger: Ledger, symbol: str, price: int) -> None:
    """Closes every position in `symbol` with trades between longs and shorts at `price`."""
    tid = 10_000
    while True:
        qty = {a: ledger.position(a, symbol).qty for a in ACCOUNTS}
        longs = [a for a in ACCOUNTS if qty[a] > 0]
        shorts = [a for a in ACCOUNTS if qty[a] < 0]
        if not longs:
            assert not shorts
            return
        tid += 1
        size = min(qty[longs[0]], -qty[shorts[0]])
        ledger.apply_trade(trade(shorts[0], longs[0], price, size, symbol=symbol, trade_id=tid))


@given(steps(symbols=(IF.symbol,)), st.integers(-50, 50))
def test_futures_cash_changes_by_fees_alone_once_everyone_is_flat(script: list[Step], move: int) -> None:
    ledger = feed(fresh_ledger(), to_events(script))
    flatten(ledger, IF.symbol, MID[IF.symbol] + move)
    cash = sum((ledger.account(a).cash for a in ACCOUNTS), D(0))
    assert cash == D(6_000_000) - total_fees(ledger)
    assert sum((ledger.account(a).realized_pnl for a in ACCOUNTS), D(0)) == 0


def reference_realized(events: list[Trade | tuple[str, int]]) -> tuple[dict[tuple[str, str], Fraction], int]:
    """Exact rational average-cost P&L per (account, symbol), and the number of partial reductions."""
    qty: dict[tuple[str, str], int] = {}
    cost: dict[tuple[str, str], Fraction] = {}
    realized: dict[tuple[str, str], Fraction] = {}
    partials = 0
    for event in events:
        if not isinstance(event, Trade) or event.maker_account == event.taker_account:
            continue
        inst = INSTRUMENTS[event.symbol]
        unit = Fraction(inst.tick_size) * event.price * Fraction(inst.multiplier)
        buyer = event.taker_account if event.aggressor is Side.BUY else event.maker_account
        seller = event.maker_account if event.aggressor is Side.BUY else event.taker_account
        for account, dq in ((buyer, event.qty), (seller, -event.qty)):
            key = (account, event.symbol)
            q, c = qty.get(key, 0), cost.get(key, Fraction(0))
            realized.setdefault(key, Fraction(0))
            if q == 0 or (q > 0) == (dq > 0):
                qty[key], cost[key] = q + dq, c + dq * unit
                continue
            closed = min(abs(dq), abs(q))
            partials += closed < abs(q)
            avg = c / q
            realized[key] += closed * (unit - avg) * (1 if q > 0 else -1)
            q2 = q + dq
            qty[key], cost[key] = q2, (avg * q2 if (q2 > 0) == (q > 0) else q2 * unit)
    return realized, partials


@given(steps())
def test_realized_pnl_matches_exact_average_cost_within_the_rounding(script: list[Step]) -> None:
    events = to_events(script)
    ledger = feed(fresh_ledger(), events)
    expected, partials = reference_realized(events)
    tolerance = Fraction(ledger.pnl_quantum) / 2 * partials
    for (account, symbol), value in expected.items():
        assert abs(Fraction(ledger.position(account, symbol).realized_pnl) - value) <= tolerance


@given(steps())
def test_exact_average_cost_when_no_rounding_is_needed(script: list[Step]) -> None:
    """With a fine enough quantum no share is ever rounded: realized equals the rational reference."""
    events = to_events(script)
    ledger = Ledger(INSTRUMENTS.values(), pnl_quantum=D("1e-30"))
    feed(ledger, events)
    expected, _ = reference_realized(events)
    for (account, symbol), value in expected.items():
        # Shares of up to 9 units: 1/(1..9) has no finite expansion in general, so allow one quantum per step.
        assert abs(Fraction(ledger.position(account, symbol).realized_pnl) - value) <= Fraction(1, 10**28)


@given(steps(), st.data())
def test_replicas_restores_and_redeliveries_agree(script: list[Step], data: st.DataObject) -> None:
    events = to_events(script)
    original = feed(fresh_ledger(), events)
    replica = feed(fresh_ledger(), events)
    assert replica.state_hash() == original.state_hash()
    assert replica.snapshot() == original.snapshot()

    cut = data.draw(st.integers(0, len(events)))
    head = feed(fresh_ledger(), events[:cut])
    wire = msgspec.msgpack.encode(head.snapshot())
    restored = Ledger.restore(msgspec.msgpack.decode(wire, type=LedgerSnapshot))
    assert restored.state_hash() == head.state_hash()
    assert feed(restored, events[cut:]).state_hash() == original.state_hash()

    # At-least-once delivery: any earlier trades again, in any order, change nothing.
    trades = [e for e in events if isinstance(e, Trade)]
    again = data.draw(st.lists(st.sampled_from(trades), max_size=10)) if trades else []
    digest = original.state_hash()
    for t in again:
        assert original.apply_trade(t) is False
    assert original.state_hash() == digest
