"""Instruments and the one place where decimal prices and quantities become integer ticks and units."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

import msgspec


class OffTickError(ValueError):
    """A price that is not a whole number of ticks (or not a number at all)."""


class BadQuantityError(ValueError):
    """A quantity that is not a positive whole multiple of the lot size."""


class Instrument(msgspec.Struct, frozen=True, kw_only=True):
    """A tradable contract. Prices inside the system are ticks of `tick_size`; quantities are units."""

    symbol: str
    tick_size: Decimal
    lot_size: int = 1
    multiplier: Decimal = Decimal(1)
    currency: str = "USD"
    margin_rate: Decimal = Decimal(0)
    # Maximum distance from the reference price as a fraction (0.1 = 10%); None = no band.
    price_band: Decimal | None = None
    # Free-form flags, e.g. "sharia_compliant", "shortable".
    flags: frozenset[str] = frozenset()
    maker_fee_bps: Decimal = Decimal(0)
    taker_fee_bps: Decimal = Decimal(0)

    def __post_init__(self) -> None:
        if "." not in self.symbol or self.symbol.startswith(".") or self.symbol.endswith("."):
            raise ValueError(f"symbol {self.symbol!r} must look like CODE.VENUE")
        if self.tick_size <= 0:
            raise ValueError(f"tick_size must be positive, got {self.tick_size}")
        if self.lot_size <= 0:
            raise ValueError(f"lot_size must be positive, got {self.lot_size}")

    def to_ticks(self, price: Decimal | str | int) -> int:
        """Price → integer ticks; refuses a price that is not an exact multiple of the tick."""
        try:
            value = Decimal(price) if not isinstance(price, Decimal) else price
        except (InvalidOperation, ValueError, TypeError) as exc:
            raise OffTickError(f"price {price!r} is not a number") from exc
        if not value.is_finite():
            raise OffTickError(f"price {price!r} is not a finite number")
        ticks, remainder = divmod(value, self.tick_size)
        if remainder != 0:
            raise OffTickError(f"price {value} is not a multiple of tick {self.tick_size}")
        return int(ticks)

    def from_ticks(self, ticks: int) -> Decimal:
        return ticks * self.tick_size

    def check_qty(self, qty: int) -> int:
        """Returns `qty` if it is a positive multiple of the lot size, raises otherwise."""
        if isinstance(qty, bool) or not isinstance(qty, int):
            raise BadQuantityError(f"qty {qty!r} is not an integer")
        if qty <= 0:
            raise BadQuantityError(f"qty {qty} must be positive")
        if qty % self.lot_size:
            raise BadQuantityError(f"qty {qty} is not a multiple of lot size {self.lot_size}")
        return qty

    @property
    def sharia_compliant(self) -> bool:
        return "sharia_compliant" in self.flags
