"""Subject names, validation and NATS wildcard matching (pure functions, no backend)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tradesim.bus import SubjectError, subjects
from tradesim.bus.subjects import covers, matches, overlaps, validate_pattern, validate_subject


def test_subject_names() -> None:
    assert subjects.market_tick("AAPL.SIM") == "market.tick.AAPL.SIM"
    assert subjects.market_depth("IF2501.CFFEX") == "market.depth.IF2501.CFFEX"
    assert [subjects.orders_algo(a) for a in subjects.ALGOS] == [
        "orders.algo.twap",
        "orders.algo.vwap",
        "orders.algo.pov",
        "orders.algo.iceberg",
    ]
    assert subjects.rpc("oms", "buy") == "rpc.oms.buy"
    assert (
        subjects.ORDERS_NEW,
        subjects.ORDERS_FILLED,
        subjects.ORDERS_CANCELLED,
        subjects.ORDERS_REJECTED,
        subjects.TRADES_EXECUTED,
        subjects.SIGNALS_NORMALIZED,
        subjects.DECISIONS_ORDER_INTENT,
        subjects.RISK_ALERTS,
        subjects.AUDIT_EVENT,
    ) == (
        "orders.new",
        "orders.filled",
        "orders.cancelled",
        "orders.rejected",
        "trades.executed",
        "signals.normalized",
        "decisions.order_intent",
        "risk.alerts",
        "audit.event",
    )
    assert matches(subjects.MARKET_TICK_ALL, subjects.market_tick("AAPL.SIM"))
    assert matches(subjects.ORDERS_ALGO_ALL, subjects.orders_algo("pov"))
    assert matches(subjects.TRADES_ALL, subjects.TRADES_EXECUTED)
    assert matches(subjects.RPC_ALL, subjects.rpc("oms", "buy"))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: subjects.orders_algo("moo"), "unknown algo"),  # type: ignore[arg-type]
        (lambda: subjects.rpc("oms.x", "buy"), "rpc service"),
        (lambda: subjects.rpc("oms", ""), "rpc method"),
        (lambda: subjects.market_tick(""), "empty token at position 3"),
        (lambda: subjects.market_tick("AAPL..SIM"), "empty token"),
        (lambda: subjects.market_tick("A*"), "wildcard inside token"),
        (lambda: subjects.market_tick("*"), "only allowed in patterns"),
        (lambda: subjects.market_tick("A B"), "whitespace"),
    ],
)
def test_bad_names_give_clear_errors(call: object, message: str) -> None:
    with pytest.raises(SubjectError, match=message):
        call()  # type: ignore[operator]


def test_validation() -> None:
    assert validate_subject("a.b") == "a.b"
    assert validate_pattern("a.*.>") == "a.*.>"
    for bad in ("", ".a", "a.", "a..b", "a.>.b", "a.b*", "a.>x", "a\tb"):
        with pytest.raises(SubjectError):
            validate_pattern(bad)
    for bad in ("a.*", "a.>", "x y"):
        with pytest.raises(SubjectError):
            validate_subject(bad)


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("a.b", "a.b", True),
        ("a.b", "a.c", False),
        ("a.*", "a.b", True),
        ("a.*", "a.b.c", False),
        ("a.*", "a", False),
        ("*.b", "a.b", True),
        ("a.>", "a.b", True),
        ("a.>", "a.b.c.d", True),
        ("a.>", "a", False),
        (">", "a", True),
        (">", "a.b", True),
        ("a.*.c", "a.b.c", True),
        ("a.*.c", "a.b.d", False),
        ("a.b.c", "a.b", False),
    ],
)
def test_matching(pattern: str, subject: str, expected: bool) -> None:
    assert matches(pattern, subject) is expected


def test_covers_and_overlaps() -> None:
    assert covers("a.>", "a.b.*")
    assert covers("a.*", "a.b")
    assert covers("a.>", "a.>")
    assert not covers("a.*", "a.>")
    assert not covers("a.b", "a.*")
    assert overlaps("a.*", "a.b")
    assert overlaps("a.>", "*.b.c")
    assert not overlaps("a.*", "a.b.c")
    assert not overlaps("a.>", "a")


_token = st.sampled_from(["a", "b", "c"])
_subject = st.lists(_token, min_size=1, max_size=4).map(".".join)
_pattern = st.lists(st.sampled_from(["a", "b", "*"]), min_size=1, max_size=4).flatmap(
    lambda toks: st.sampled_from([".".join(toks), ".".join([*toks, ">"])])
)


@given(_pattern, _pattern, _subject)
def test_covers_and_overlaps_agree_with_matches(p: str, q: str, s: str) -> None:
    if covers(p, q) and matches(q, s):
        assert matches(p, s)
    if matches(p, s) and matches(q, s):
        assert overlaps(p, q)
