"""Signals without HTTP: the decision rule (sizing, position cap, price, skips), the HMAC verifier, the body schema."""

from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest

from tradesim.domain import Instrument, Side
from tradesim.services.signals import SignalsConfig, SymbolRules, decide
from tradesim.services.signals.decision import client_order_id, reference_price
from tradesim.services.signals.messages import Signal
from tradesim.services.signals.schema import SignalError, parse
from tradesim.services.signals.verify import NonceCacheFullError, WebhookAuthError, WebhookVerifier, sign

AAPL = Instrument(symbol="AAPL.SIM", tick_size=Decimal("0.01"), lot_size=1)
LOTS = Instrument(symbol="IF.X", tick_size=Decimal("0.2"), lot_size=10)
CONFIG = SignalsConfig(account="acct", base_qty=100, max_position=120, limit_offset_ticks=3,
                       symbols={"IF.X": SymbolRules(base_qty=55, limit_offset_ticks=0)})


def sig(side: Side = Side.BUY, strength: float = 0.5, **kw: object) -> Signal:
    return Signal(correlation_id="c1", source="t", symbol=str(kw.pop("symbol", "AAPL.SIM")), side=side,
                  strength=strength, **kw)  # type: ignore[arg-type]


def test_size_from_strength_price_from_reference() -> None:
    d = decide(sig(strength=0.5), CONFIG, AAPL, 0, (19000, "book"), ts=7)
    assert d.intent is not None
    i = d.intent
    assert (i.qty, i.price, i.side, i.account, i.client_order_id, i.ts) == (50, 19003, Side.BUY, "acct", "sig-c1", 7)
    assert (i.risk.position_before, i.risk.max_position, i.risk.reference) == (0, 120, "book")
    s = decide(sig(Side.SELL, 1.0), CONFIG, AAPL, 0, (19000, "book"), ts=7).intent
    assert s is not None and (s.qty, s.price) == (100, 18997)
    # deterministic: same inputs, same decision
    assert decide(sig(), CONFIG, AAPL, 5, (19000, "book"), 7) == decide(sig(), CONFIG, AAPL, 5, (19000, "book"), 7)


def test_position_cap_lots_and_skips() -> None:
    capped = decide(sig(strength=1.0), CONFIG, AAPL, 90, (19000, "book"), 0).intent
    assert capped is not None and capped.qty == 30  # 120 - 90
    assert decide(sig(strength=1.0), CONFIG, AAPL, 120, (19000, "book"), 0).skip == "max_position"
    sell = decide(sig(Side.SELL, 1.0), CONFIG, AAPL, 120, (19000, "book"), 0).intent
    assert sell is not None and sell.qty == 100  # selling reduces a long: room up to -120
    lots = decide(sig(strength=1.0, symbol="IF.X"), CONFIG, LOTS, 0, (100, "book"), 0).intent
    assert lots is not None and (lots.qty, lots.price) == (50, 100)  # 55 -> whole lots of 10, offset 0
    assert decide(sig(strength=0.05), CONFIG, AAPL, 0, (19000, "book"), 0).skip == "weak_signal"
    assert decide(sig(strength=0.15, symbol="IF.X"), CONFIG, LOTS, 0, (1, "book"), 0).skip == "zero_size"
    assert decide(sig(), CONFIG, AAPL, 0, None, 0).skip == "no_price"
    given = decide(sig(qty=7), CONFIG, AAPL, 0, (19000, "book"), 0).intent
    assert given is not None and given.qty == 7


def test_reference_price_order_and_client_order_id() -> None:
    assert reference_price(sig(price=123), 1, 2, 3, 4) == (123, "signal")
    assert reference_price(sig(), 1, 2, 3, 4) == (2, "book")  # a buy looks at the ask
    assert reference_price(sig(Side.SELL), 1, 2, 3, 4) == (1, "book")
    assert reference_price(sig(), 1, None, 3, 4) == (3, "last")
    assert reference_price(sig(), None, None, None, 4) == (4, "config")
    assert reference_price(sig(), None, None, None, None) is None
    long_id = "x" * 100
    assert len(client_order_id(long_id)) <= 64 and client_order_id(long_id) == client_order_id(long_id)
    assert client_order_id(long_id) != client_order_id("y" * 100)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_verifier_window_nonces_and_keys() -> None:
    clock = Clock(1_000_000.0)
    v = WebhookVerifier(["k0", "k1"], window=300, max_nonces=2, clock=clock)
    body = b'{"a":1}'

    def check(ts: str, nonce: str, key: str = "k0", payload: bytes = body) -> str:
        return v.verify(ts, nonce, sign(key, ts, nonce, payload), payload)

    assert check("1000000", "n1") == "0" and check("999800", "n2", "k1") == "1"
    for args, code in ((("1000000", "n1"), "replayed_nonce"), (("999699", "n3"), "stale_timestamp"),
                       (("1000301", "n3"), "stale_timestamp"), (("soon", "n3"), "bad_timestamp")):
        with pytest.raises(WebhookAuthError) as err:
            check(*args)
        assert err.value.code == code
    with pytest.raises(WebhookAuthError) as err:
        v.verify("1000000", "n4", sign("k0", "1000000", "n4", b"other"), body)
    assert err.value.code == "bad_signature"
    with pytest.raises(WebhookAuthError) as err:
        v.verify("1000000", "n4", "zz\u00e9", body)
    assert err.value.code == "bad_signature"
    with pytest.raises(NonceCacheFullError):  # full: refuse rather than forget a nonce
        check("1000000", "n5")
    clock.now += 301  # n2 (ts 999800) expires at 1000100 and n1 at 1000300: both forgotten
    assert check("1000301", "n1") == "0"
    with pytest.raises(WebhookAuthError) as err:
        v.verify(None, "n9", "ab", body)
    assert err.value.code == "missing_signature"


def test_schema_counts_unknown_fields() -> None:
    given, unknown = parse(b'{"correlation_id":"a","source":"s","symbol":"X","side":"BUY","strength":1,'
                           b'"zeta":1,"alpha":2,"price":"1.5","ts":"2025-01-15T10:30:00Z"}')
    assert unknown == ["alpha", "zeta"] and given.side == "buy" and given.price == Decimal("1.5")
    with pytest.raises(SignalError) as err:
        parse(b'{"source":"s","extra":1}')
    assert err.value.code == "missing_field" and err.value.unknown_fields == ["extra"]
    with pytest.raises(SignalError) as err:
        parse(b'[1]')
    assert err.value.code == "invalid_signal"


def test_config_rules_and_checks() -> None:
    assert CONFIG.rules("IF.X") == (55, 120, 0) and CONFIG.rules("AAPL.SIM") == (100, 120, 3)
    with pytest.raises(ValueError):
        msgspec.convert({"window": 0}, SignalsConfig)
    with pytest.raises(ValueError):
        msgspec.convert({"symbols": {"X": {"base_qty": -1}}}, SignalsConfig)
