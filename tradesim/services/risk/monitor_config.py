"""The RiskMonitor's configuration and its position-limit states (pure: classification is exact arithmetic)."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from fractions import Fraction

import msgspec

ANY_ACCOUNT = "*"


class LimitState(StrEnum):
    """How close |position| is to its limit: the seed's Normal → Warning → Critical → OverLimit."""

    NORMAL = "normal"
    WARNING = "warning"  # |qty| >= warning_fraction * limit
    CRITICAL = "critical"  # |qty| >= critical_fraction * limit (still within the limit)
    OVER_LIMIT = "over_limit"  # |qty| > limit


class MonitorConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Post-trade limits. Fractions are exact decimals; money is in the account currency."""

    # account -> symbol -> max |position| in units; account "*" applies to accounts without their own entry.
    position_limits: dict[str, dict[str, int]] = {}
    warning_fraction: Decimal = Decimal("0.8")
    critical_fraction: Decimal = Decimal("0.95")
    # MARGIN_WARNING when margin used / equity >= this (or equity <= 0 with margin in use).
    margin_warning: Decimal = Decimal("0.8")
    var_confidences: tuple[Decimal, ...] = (Decimal("0.95"), Decimal("0.99"))
    var_window: int = 250  # most recent returns per symbol
    var_min_observations: int = 20  # fewer scenarios: VaR not computed
    var_limit: Decimal | None = None  # VAR_BREACH when VaR at var_limit_confidence exceeds it
    var_limits: dict[str, Decimal] = {}  # per-account override of var_limit
    var_limit_confidence: Decimal = Decimal("0.99")
    liquidation_enabled: bool = False
    # An OverLimit position is reduced to |qty| <= floor(liquidation_target * limit).
    liquidation_target: Decimal = Decimal(1)
    liquidation_timeout: float = 2.0  # seconds per rpc.oms.submit attempt
    liquidation_attempts: int = 3  # same client_order_id on every attempt: a retry is idempotent

    def __post_init__(self) -> None:
        if not 0 < self.warning_fraction <= self.critical_fraction <= 1:
            raise ValueError("need 0 < warning_fraction <= critical_fraction <= 1")
        if self.margin_warning <= 0:
            raise ValueError("margin_warning must be positive")
        if not self.var_confidences or any(not 0 < c < 1 for c in self.var_confidences):
            raise ValueError("var_confidences must be fractions in (0, 1)")
        if self.var_limit_confidence not in self.var_confidences:
            raise ValueError("var_limit_confidence must be one of var_confidences")
        if self.var_window < 1 or self.var_min_observations < 1:
            raise ValueError("var_window and var_min_observations must be >= 1")
        if not 0 < self.liquidation_target <= 1:
            raise ValueError("liquidation_target must be in (0, 1]")
        if self.liquidation_timeout <= 0 or self.liquidation_attempts < 1:
            raise ValueError("liquidation_timeout must be positive and liquidation_attempts >= 1")
        for account, limits in self.position_limits.items():
            for symbol, limit in limits.items():
                if limit <= 0:
                    raise ValueError(f"position limit of {account}/{symbol} must be positive, got {limit}")

    def limit(self, account: str, symbol: str) -> int | None:
        """The |position| limit of (account, symbol), or None when unlimited."""
        own = self.position_limits.get(account)
        if own is not None and symbol in own:
            return own[symbol]
        return self.position_limits.get(ANY_ACCOUNT, {}).get(symbol)

    def account_var_limit(self, account: str) -> Decimal | None:
        return self.var_limits.get(account, self.var_limit)

    def liquidation_floor(self, limit: int) -> int:
        """The |position| a liquidation reduces to."""
        return int(Fraction(self.liquidation_target) * limit)

    def classify(self, qty: int, limit: int) -> LimitState:
        """The state of a position of `qty` (signed) against `limit`, by exact comparison of |qty| / limit."""
        size = abs(qty)
        if size > limit:
            return LimitState.OVER_LIMIT
        if size >= self.critical_fraction * limit:
            return LimitState.CRITICAL
        if size >= self.warning_fraction * limit:
            return LimitState.WARNING
        return LimitState.NORMAL
