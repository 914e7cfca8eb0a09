"""The record of every compliance violation, queryable by account, rule and time range.

Compliance officers need the whole history, not just the rule that refused the order, so every rule
that fails is recorded even when an earlier one already decided the outcome.
"""

from __future__ import annotations

import msgspec


class Violation(msgspec.Struct, frozen=True, kw_only=True):
    ts: int
    account: str
    rule: str
    client_order_id: str
    symbol: str
    message: str
    pack: str = ""


class ViolationLog:
    """Append-only, in `ts` order of recording; the OMS may persist entries as they come."""

    def __init__(self) -> None:
        self._entries: list[Violation] = []

    def __len__(self) -> int:
        return len(self._entries)

    def record(self, violation: Violation) -> None:
        self._entries.append(violation)

    def query(
        self,
        account: str | None = None,
        rule: str | None = None,
        start_ts: int | None = None,
        end_ts: int | None = None,
    ) -> list[Violation]:
        """Violations matching every given filter; the time range is [start_ts, end_ts)."""
        return [
            v for v in self._entries
            if (account is None or v.account == account)
            and (rule is None or v.rule == rule)
            and (start_ts is None or v.ts >= start_ts)
            and (end_ts is None or v.ts < end_ts)
        ]
