"""Every subject name of tradesim, plus NATS-style subject validation and wildcard matching.

Subjects are dot-separated tokens. Symbols look like `CODE.VENUE`, so a symbol is two tokens:
`market.tick.AAPL.SIM`; subscribe to all ticks with `market.tick.>` (not `market.tick.*`).
Wildcards follow NATS: `*` matches exactly one token, `>` (last token only) one or more tokens.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Final, Literal

from tradesim.bus.errors import SubjectError

# ---- event subjects ---------------------------------------------------------------------------
ORDERS_NEW: Final = "orders.new"
ORDERS_FILLED: Final = "orders.filled"
ORDERS_CANCELLED: Final = "orders.cancelled"
ORDERS_REJECTED: Final = "orders.rejected"
ORDERS_MODIFIED: Final = "orders.modified"
ORDERS_TRIGGERED: Final = "orders.triggered"
TRADES_EXECUTED: Final = "trades.executed"
SIGNALS_NORMALIZED: Final = "signals.normalized"
DECISIONS_ORDER_INTENT: Final = "decisions.order_intent"
RISK_ALERTS: Final = "risk.alerts"
AUDIT_EVENT: Final = "audit.event"

# ---- patterns ---------------------------------------------------------------------------------
MARKET_TICK_ALL: Final = "market.tick.>"
MARKET_DEPTH_ALL: Final = "market.depth.>"
ORDERS_ALL: Final = "orders.*"
TRADES_ALL: Final = "trades.*"
ORDERS_ALGO_ALL: Final = "orders.algo.*"
RPC_ALL: Final = "rpc.>"

Algo = Literal["twap", "vwap", "pov", "iceberg"]
ALGOS: Final[tuple[Algo, ...]] = ("twap", "vwap", "pov", "iceberg")

_BAD_CHARS: Final = frozenset(" \t\r\n\x00")


def market_tick(symbol: str) -> str:
    """`market.tick.{symbol}`; the symbol's own dot makes it two tokens (`market.tick.AAPL.SIM`)."""
    return validate_subject(f"market.tick.{symbol}")


def market_depth(symbol: str) -> str:
    """`market.depth.{symbol}`."""
    return validate_subject(f"market.depth.{symbol}")


def orders_algo(algo: Algo) -> str:
    """`orders.algo.{twap|vwap|pov|iceberg}`; an unknown algo is a SubjectError, not a new subject."""
    if algo not in ALGOS:
        raise SubjectError(f"unknown algo {algo!r}: expected one of {', '.join(ALGOS)}")
    return f"orders.algo.{algo}"


def rpc(service: str, method: str) -> str:
    """`rpc.{service}.{method}`; each part must be a single token."""
    for part, what in ((service, "service"), (method, "method")):
        if not part or "." in part:
            raise SubjectError(f"invalid rpc {what} {part!r}: must be one non-empty token without dots")
    return validate_subject(f"rpc.{service}.{method}")


def _check(text: str, *, wildcards: bool) -> str:
    what = "pattern" if wildcards else "subject"
    if not isinstance(text, str) or not text:
        raise SubjectError(f"invalid {what} {text!r}: empty")
    tokens = text.split(".")
    last = len(tokens) - 1
    for i, tok in enumerate(tokens):
        if not tok:
            raise SubjectError(f"invalid {what} {text!r}: empty token at position {i + 1}")
        if _BAD_CHARS.intersection(tok):
            raise SubjectError(f"invalid {what} {text!r}: whitespace or NUL in token {tok!r}")
        if tok in ("*", ">"):
            if not wildcards:
                raise SubjectError(f"invalid subject {text!r}: wildcard {tok!r} is only allowed in patterns")
            if tok == ">" and i != last:
                raise SubjectError(f"invalid pattern {text!r}: '>' must be the last token")
        elif "*" in tok or ">" in tok:
            raise SubjectError(f"invalid {what} {text!r}: wildcard inside token {tok!r}")
    return text


@lru_cache(maxsize=8192)
def validate_subject(subject: str) -> str:
    """A concrete subject (no wildcards) to publish on; returns it, or raises SubjectError."""
    return _check(subject, wildcards=False)


@lru_cache(maxsize=4096)
def validate_pattern(pattern: str) -> str:
    """A subscription pattern (wildcards allowed); returns it, or raises SubjectError."""
    return _check(pattern, wildcards=True)


@lru_cache(maxsize=65536)
def matches(pattern: str, subject: str) -> bool:
    """NATS matching: `*` is one token, a final `>` one or more tokens; otherwise tokens are equal."""
    p = pattern.split(".")
    s = subject.split(".")
    for i, tok in enumerate(p):
        if tok == ">":
            return len(s) > i
        if i >= len(s):
            return False
        if tok != "*" and tok != s[i]:
            return False
    return len(p) == len(s)


def overlaps(a: str, b: str) -> bool:
    """True if some concrete subject matches both patterns (used to find the stream for a durable)."""
    pa, pb = a.split("."), b.split(".")
    for i in range(max(len(pa), len(pb))):
        ta = pa[i] if i < len(pa) else None
        tb = pb[i] if i < len(pb) else None
        if ta == ">" or tb == ">":
            return (ta is not None) and (tb is not None)
        if ta is None or tb is None:
            return False
        if ta != "*" and tb != "*" and ta != tb:
            return False
    return True


def covers(outer: str, inner: str) -> bool:
    """True if every subject matching `inner` also matches `outer`."""
    po, pi = outer.split("."), inner.split(".")
    for i, to in enumerate(po):
        if to == ">":
            return len(pi) > i
        if i >= len(pi):
            return False
        ti = pi[i]
        if ti == ">":
            return False
        if to == "*":
            continue
        if ti == "*" or ti != to:
            return False
    return len(po) == len(pi)
