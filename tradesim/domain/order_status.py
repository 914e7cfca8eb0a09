"""The order lifecycle as an explicit transition table: an invalid transition raises, never applies.

The venue uses NEW → ACCEPTED → PARTIALLY_FILLED → FILLED plus CANCELED, REJECTED, EXPIRED and
TRIGGERED (a stop that has entered the book); the OMS adds PENDING_NEW, PENDING_CANCEL,
PENDING_MODIFY and HELD around it.
"""

from __future__ import annotations

from tradesim.domain.enums import OrderStatus as S


class InvalidTransitionError(Exception):
    def __init__(self, current: S, target: S) -> None:
        super().__init__(f"invalid order status transition {current.value} -> {target.value}")
        self.current = current
        self.target = target


_LIVE_VENUE = {S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.EXPIRED}

TRANSITIONS: dict[S, frozenset[S]] = {
    S.PENDING_NEW: frozenset({S.NEW, S.ACCEPTED, S.REJECTED, S.HELD, S.CANCELED, S.PARTIALLY_FILLED,
                              S.FILLED, S.EXPIRED}),
    S.HELD: frozenset({S.PENDING_NEW, S.REJECTED, S.CANCELED}),
    S.NEW: frozenset({S.ACCEPTED, S.REJECTED}),
    S.ACCEPTED: frozenset({*_LIVE_VENUE, S.TRIGGERED, S.PENDING_CANCEL, S.PENDING_MODIFY, S.ACCEPTED}),
    S.TRIGGERED: frozenset({*_LIVE_VENUE, S.ACCEPTED, S.PENDING_CANCEL, S.PENDING_MODIFY}),
    S.PARTIALLY_FILLED: frozenset({*_LIVE_VENUE, S.PENDING_CANCEL, S.PENDING_MODIFY}),
    S.PENDING_CANCEL: frozenset({*_LIVE_VENUE, S.ACCEPTED, S.TRIGGERED}),
    S.PENDING_MODIFY: frozenset({*_LIVE_VENUE, S.ACCEPTED, S.TRIGGERED}),
    S.FILLED: frozenset(),
    S.CANCELED: frozenset(),
    S.REJECTED: frozenset(),
    S.EXPIRED: frozenset(),
}

TERMINAL: frozenset[S] = frozenset(s for s, targets in TRANSITIONS.items() if not targets)


def transition(current: S, target: S) -> S:
    """Returns `target` if the lifecycle allows current → target, raises InvalidTransitionError otherwise."""
    if target not in TRANSITIONS[current]:
        raise InvalidTransitionError(current, target)
    return target
