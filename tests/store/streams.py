"""Streams of simple valid commands (limit, market, cancel, modify) for journal and recovery tests."""

from __future__ import annotations

import random
from decimal import Decimal

from hypothesis import strategies as st

from tradesim.domain import (
    AddInstrument,
    CancelOrder,
    Command,
    Instrument,
    ModifyOrder,
    NewOrder,
    OrderType,
    Side,
    TimeInForce,
)

SYMBOL = "X.SIM"
INSTRUMENT = Instrument(symbol=SYMBOL, tick_size=Decimal("0.01"), lot_size=1)
ACCOUNTS = ("alice", "bob", "carol")
OPS = ("limit", "limit", "limit", "market", "ioc", "cancel", "modify")

Step = tuple[str, int, bool, int, int, int]
"""(op, account index, buy?, price offset, qty, reference to an earlier order)."""


def listing(ts: int = 0) -> AddInstrument:
    return AddInstrument(instrument=INSTRUMENT, ts=ts)


def build(steps: list[Step], *, start: int = 0) -> list[Command]:
    """Commands from steps; order `i` is client id `c{start+i}`, cancels/modifies refer to earlier ones."""
    commands: list[Command] = []
    for i, (op, account_index, buy, offset, qty, ref) in enumerate(steps, start=start):
        account = ACCOUNTS[account_index % len(ACCOUNTS)]
        ts = 1_000 + i
        side = Side.BUY if buy else Side.SELL
        price = 10_000 + offset
        if op in ("cancel", "modify") and i > start:
            target = f"c{start + ref % (i - start)}"
            if op == "cancel":
                commands.append(CancelOrder(account=account, client_order_id=target, symbol=SYMBOL, ts=ts))
            else:
                commands.append(ModifyOrder(account=account, client_order_id=target, symbol=SYMBOL,
                                            price=price, qty=qty + 5, ts=ts))
            continue
        order_type = OrderType.MARKET if op == "market" else OrderType.LIMIT
        tif = TimeInForce.IOC if op == "ioc" else TimeInForce.GTC
        commands.append(NewOrder(account=account, client_order_id=f"c{i}", symbol=SYMBOL, side=side,
                                 type=order_type, tif=tif, price=None if op == "market" else price,
                                 qty=qty, ts=ts))
    return commands


steps_strategy = st.lists(
    st.tuples(st.sampled_from(OPS), st.integers(0, 2), st.booleans(), st.integers(-5, 5),
              st.integers(1, 20), st.integers(0, 1_000)),
    min_size=1, max_size=60)


def random_commands(rng: random.Random, n: int, *, start: int = 0) -> list[Command]:
    """`n` commands drawn from `rng` (for load generators that cannot use hypothesis)."""
    steps: list[Step] = [(rng.choice(OPS), rng.randrange(3), rng.random() < 0.5, rng.randint(-5, 5),
                          rng.randint(1, 20), rng.randrange(1_000)) for _ in range(n)]
    return build(steps, start=start)
