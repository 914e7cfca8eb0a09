"""The outcome of a pre-trade check: ACCEPT, REJECT or HOLD, with a stable reason code and a message.

The code is the API's `error` field (`{"error": code, "message": message}`), so it is stable snake_case;
the message carries the numbers a trader needs to see why.
"""

from __future__ import annotations

from enum import StrEnum

import msgspec


class Verdict(StrEnum):
    ACCEPT = "accept"
    REJECT = "reject"
    HOLD = "hold"


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    """One rule engine's answer for one order; `code` and `message` are empty on ACCEPT."""

    verdict: Verdict
    code: str = ""
    message: str = ""

    @property
    def accepted(self) -> bool:
        return self.verdict is Verdict.ACCEPT

    @property
    def rejected(self) -> bool:
        return self.verdict is Verdict.REJECT

    @property
    def held(self) -> bool:
        return self.verdict is Verdict.HOLD

    def to_error(self) -> dict[str, str]:
        """The API error body for a refused order (DESIGN.md: `{"error": code, "message": text}`)."""
        return {"error": self.code, "message": self.message}


ACCEPT = Decision(verdict=Verdict.ACCEPT)


def reject(code: str, message: str) -> Decision:
    return Decision(verdict=Verdict.REJECT, code=code, message=message)


def hold(code: str, message: str) -> Decision:
    return Decision(verdict=Verdict.HOLD, code=code, message=message)
