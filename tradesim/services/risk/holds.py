"""Orders parked by a HOLD decision until a person approves or rejects them (the pure registry).

The OMS keeps the order in status HELD, exposes approve/reject as RPCs and routes or rejects the order
with the result; this module only keeps the records and refuses impossible decisions. An approved order
is routed as is (it is not checked again: it would only be held again).
"""

from __future__ import annotations

from enum import StrEnum

import msgspec

from tradesim.domain import NewOrder
from tradesim.services.risk.decision import Decision


class HoldStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


class HeldOrder(msgspec.Struct, frozen=True, kw_only=True):
    hold_id: str
    order: NewOrder
    decision: Decision
    held_ts: int
    status: HoldStatus = HoldStatus.PENDING
    decided_by: str | None = None
    decided_ts: int | None = None
    reason: str = ""


class HoldError(ValueError):
    """A decision the registry cannot apply; `code` is the API error code."""

    code = "hold_error"


class UnknownHoldError(HoldError):
    code = "unknown_hold"


class HoldAlreadyDecidedError(HoldError):
    code = "hold_already_decided"


class HeldOrders:
    """Held orders by id ("H1", "H2", … in hold order, so replays assign the same ids)."""

    def __init__(self) -> None:
        self._held: dict[str, HeldOrder] = {}
        self._next = 1

    def hold(self, order: NewOrder, decision: Decision, ts: int) -> str:
        if not decision.held:
            raise ValueError(f"only a HOLD decision can be held, got {decision.verdict}")
        hold_id = f"H{self._next}"
        self._next += 1
        self._held[hold_id] = HeldOrder(hold_id=hold_id, order=order, decision=decision, held_ts=ts)
        return hold_id

    def get(self, hold_id: str) -> HeldOrder:
        try:
            return self._held[hold_id]
        except KeyError:
            raise UnknownHoldError(f"unknown hold id {hold_id!r}") from None

    def pending(self, account: str | None = None) -> list[HeldOrder]:
        return [h for h in self._held.values()
                if h.status is HoldStatus.PENDING and (account is None or h.order.account == account)]

    def approve(self, hold_id: str, user: str, ts: int = 0) -> HeldOrder:
        """Marks the order approved and returns it for routing."""
        return self._decide(hold_id, HoldStatus.APPROVED, user, "", ts)

    def reject(self, hold_id: str, user: str, reason: str, ts: int = 0) -> HeldOrder:
        return self._decide(hold_id, HoldStatus.REJECTED, user, reason, ts)

    def _decide(self, hold_id: str, status: HoldStatus, user: str, reason: str, ts: int) -> HeldOrder:
        held = self.get(hold_id)
        if held.status is not HoldStatus.PENDING:
            raise HoldAlreadyDecidedError(f"hold {hold_id} was already {held.status} by {held.decided_by}")
        decided = msgspec.structs.replace(held, status=status, decided_by=user, decided_ts=ts, reason=reason)
        self._held[hold_id] = decided
        return decided
