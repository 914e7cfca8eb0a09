"""`[signals]`: the webhook's secrets and window, the decision agent's account and sizing rules."""

from __future__ import annotations

from decimal import Decimal

import msgspec

from tradesim.domain import TimeInForce


class SymbolRules(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How a signal on one symbol becomes an order; unset fields fall back to `[signals]`."""

    base_qty: int | None = None
    max_position: int | None = None
    limit_offset_ticks: int | None = None


class SignalsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Every key is documented in default.toml and docs/signals.md."""

    enabled: bool = True  # run the decision agent in `tradesim run`
    # HMAC keys: `secret` signs; `extra_secrets` are also accepted (rotation). "" = random, generated once
    # and kept in <data_dir>/webhook.secret.
    secret: str = ""
    extra_secrets: list[str] = []
    window: int = 300  # seconds a signed request is valid either side of X-Timestamp
    max_nonces: int = 100_000  # nonces remembered (each until its timestamp leaves the window)
    max_correlation_ids: int = 100_000  # webhook answers remembered for idempotency
    max_body: int = 16_384  # bytes
    # The account decision orders trade for; created with `cash` if no [[accounts]] entry names it.
    account: str = "signals"
    cash: Decimal = Decimal(1_000_000)
    kind: str = "margin"
    currency: str = "USD"
    agent_id: str = "signals-v1"
    min_strength: float = 0.1  # weaker signals are recorded and skipped
    base_qty: int = 100  # units at strength 1.0 (rounded down to the lot size)
    max_position: int = 1_000  # |position| the agent's orders may reach per symbol
    limit_offset_ticks: int = 5  # buy limit = reference + offset, sell = reference - offset
    tif: TimeInForce = TimeInForce.IOC
    stop_loss_bps: int = 200  # carried on the intent as a risk parameter
    symbols: dict[str, SymbolRules] = {}

    def __post_init__(self) -> None:
        if self.window <= 0:
            raise ValueError(f"window must be positive, got {self.window}")
        if self.max_nonces < 1 or self.max_correlation_ids < 1 or self.max_body < 1:
            raise ValueError("max_nonces, max_correlation_ids and max_body must be at least 1")
        if not 0.0 <= self.min_strength <= 1.0:
            raise ValueError(f"min_strength must be in [0, 1], got {self.min_strength}")
        if self.kind not in ("cash", "margin"):
            raise ValueError(f"kind must be 'cash' or 'margin', not {self.kind!r}")
        for name, rules in [("", self), *self.symbols.items()]:
            where = f"symbols.{name}." if name else ""
            for key in ("base_qty", "max_position", "limit_offset_ticks"):
                value = getattr(rules, key)
                if value is not None and value < 0:
                    raise ValueError(f"{where}{key} must not be negative, got {value}")

    def rules(self, symbol: str) -> tuple[int, int, int]:
        """(base_qty, max_position, limit_offset_ticks) for `symbol`."""
        own = self.symbols.get(symbol, SymbolRules())
        return (self.base_qty if own.base_qty is None else own.base_qty,
                self.max_position if own.max_position is None else own.max_position,
                self.limit_offset_ticks if own.limit_offset_ticks is None else own.limit_offset_ticks)
