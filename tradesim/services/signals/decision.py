"""The decision rule, as a pure function: a signal, the rules, the position and the book → an intent or a skip.

Pure so that the same inputs always give the same decision (replayable from the audit record) and so
that the rules are tested without a bus.
"""

from __future__ import annotations

import hashlib

import msgspec

from tradesim.domain import Instrument, OrderType, Side
from tradesim.services.signals.config import SignalsConfig
from tradesim.services.signals.messages import OrderIntent, RiskParams, Signal

CID_PREFIX = "sig-"
MAX_CID = 64  # the OMS's limit on client_order_id


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    """An intent to execute, or a skip with its reason code."""

    intent: OrderIntent | None = None
    skip: str = ""
    message: str = ""


def client_order_id(correlation_id: str) -> str:
    """`sig-<correlation id>`, or a hash of it when too long: the OMS refuses a second order under it."""
    cid = CID_PREFIX + correlation_id
    if len(cid) <= MAX_CID:
        return cid
    return CID_PREFIX + hashlib.sha256(correlation_id.encode()).hexdigest()[:40]


def reference_price(signal: Signal, best_bid: int | None, best_ask: int | None, last: int | None,
                    configured: int | None) -> tuple[int, str] | None:
    """What the limit price is offset from: the signal's price, else the far touch, else the last trade,
    else the configured reference price."""
    if signal.price is not None:
        return signal.price, "signal"
    touch = best_ask if signal.side is Side.BUY else best_bid
    if touch is not None:
        return touch, "book"
    if last is not None:
        return last, "last"
    if configured is not None:
        return configured, "config"
    return None


def decide(signal: Signal, config: SignalsConfig, instrument: Instrument, position: int,
           reference: tuple[int, str] | None, ts: int) -> Decision:
    """Size = the signal's qty, else base_qty x strength, in whole lots, cut to what keeps |position| within
    max_position; price = reference ± limit_offset_ticks (a marketable limit, IOC by default)."""
    base_qty, max_position, offset = config.rules(signal.symbol)
    if signal.strength < config.min_strength:
        return Decision(skip="weak_signal", message=f"strength {signal.strength:g} < min_strength "
                                                    f"{config.min_strength:g}")
    lot = instrument.lot_size
    wanted = signal.qty if signal.qty is not None else int(base_qty * signal.strength)
    headroom = max_position - position if signal.side is Side.BUY else max_position + position
    qty = min(wanted, max(headroom, 0))
    qty -= qty % lot
    if qty <= 0:
        reason = "max_position" if wanted >= lot else "zero_size"
        return Decision(skip=reason, message=f"size {wanted} at position {position} (max {max_position}, "
                                             f"lot {lot}) leaves nothing to trade")
    if reference is None:
        return Decision(skip="no_price", message=f"no signal price, book, last trade or reference price for "
                                                 f"{signal.symbol}")
    ref, source = reference
    price = ref + offset if signal.side is Side.BUY else ref - offset
    if price <= 0:
        return Decision(skip="no_price", message=f"limit price {price} ticks is not positive")
    risk = RiskParams(strength=signal.strength, base_qty=base_qty, max_position=max_position,
                      position_before=position, limit_offset_ticks=offset, reference_price=ref,
                      reference=source, stop_loss_bps=config.stop_loss_bps)
    return Decision(intent=OrderIntent(
        correlation_id=signal.correlation_id, agent_id=config.agent_id, account=config.account,
        symbol=signal.symbol, side=signal.side, qty=qty, type=OrderType.LIMIT, tif=config.tif, price=price,
        client_order_id=client_order_id(signal.correlation_id), risk=risk, ts=ts))
