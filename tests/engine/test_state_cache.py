"""The engine's cached snapshot parts (finished orders' states and encodings) never change what
`snapshot()`, `canonical_bytes()` and `state_hash()` return: checked against a plain encoding of a
snapshot built without the cache, after every command of random scenarios (so cached orders are
read back while the engine moves on)."""

from __future__ import annotations

import hashlib

from hypothesis import given
from msgspec.structs import replace

from tests.engine.strategies import Scenario, scenarios
from tradesim.engine import MatchingEngine
from tradesim.engine.matching import _HASH_ENCODER, _array_header
from tradesim.engine.snapshot import order_state


def uncached_bytes(engine: MatchingEngine) -> bytes:
    """The canonical encoding of a snapshot whose order states are all built afresh from the orders."""
    snap = engine.snapshot()
    fresh = [order_state(order) for order in engine._orders.values()]
    return _HASH_ENCODER.encode(replace(snap, orders=fresh))


@given(scenarios(max_commands=80))
def test_cached_state_equals_fresh_encoding(scenario: Scenario) -> None:
    engine = MatchingEngine(instruments=list(scenario.instruments))
    for command in scenario.commands:
        engine.apply(command)
        expected = uncached_bytes(engine)
        assert engine.canonical_bytes() == expected
        assert _HASH_ENCODER.encode(engine.snapshot()) == expected
        assert engine.state_hash() == hashlib.sha256(expected).hexdigest()


def test_array_header_matches_msgpack() -> None:
    for n in (0, 1, 15, 16, 65_535, 65_536, 70_000):
        assert _array_header(n) == _HASH_ENCODER.encode([None] * n)[: len(_array_header(n))]
        assert _HASH_ENCODER.encode([None] * n) == _array_header(n) + b"\xc0" * n
