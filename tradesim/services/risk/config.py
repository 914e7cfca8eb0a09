"""Pre-trade risk limits from TOML: defaults, per-instrument and per-account overrides, resolved per order.

Precedence, most specific last: `[defaults]` < the Instrument's own `price_band` < `[instruments."SYM"]`
< `[accounts.NAME]` < `[accounts.NAME.instruments."SYM"]`. An unset limit (None) is not checked.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from tradesim.domain import Instrument
from tradesim.services.risk.tables import ConfigError, as_table, build_struct, check_keys, child, parse_toml

WHAT = "risk config"

# Limits that apply to one symbol (may appear in any section).
SYMBOL_RULES = frozenset({
    "max_order_qty", "max_order_notional", "price_band", "position_limit", "max_pct_day_volume", "min_day_volume",
})
# Limits that apply to the account as a whole (not allowed under an `instruments` table).
ACCOUNT_RULES = frozenset({
    "max_open_orders", "max_orders_per_day", "max_cancels_per_day", "max_trades_per_day", "duplicate_window_ms",
    "max_order_rate", "rate_window_ms", "loss_limit",
})

DEFAULT_RATE_WINDOW_MS = 1000


class Limits(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Every pre-trade limit; None means "not set" in an override and "not checked" once resolved.

    Money (`max_order_notional`, `loss_limit`) is in the instrument/account currency; `price_band` is a
    fraction (0.1 = 10%); `max_pct_day_volume` a percentage (5 = 5%).
    """

    max_order_qty: int | None = None
    max_order_notional: Decimal | None = None
    price_band: Decimal | None = None
    position_limit: int | None = None
    max_pct_day_volume: Decimal | None = None
    min_day_volume: int | None = None
    max_open_orders: int | None = None
    max_orders_per_day: int | None = None
    max_cancels_per_day: int | None = None
    max_trades_per_day: int | None = None
    duplicate_window_ms: int | None = None
    max_order_rate: int | None = None
    rate_window_ms: int | None = None
    loss_limit: Decimal | None = None

    def over(self, base: Limits) -> Limits:
        """`base` with every limit set here replacing it."""
        changes = {k: v for k, v in msgspec.structs.asdict(self).items() if v is not None}
        return msgspec.structs.replace(base, **changes) if changes else base


class AccountRisk(msgspec.Struct, frozen=True, kw_only=True):
    limits: Limits = Limits()
    instruments: dict[str, Limits] = {}


class RiskConfig(msgspec.Struct, frozen=True, kw_only=True):
    defaults: Limits = Limits()
    instruments: dict[str, Limits] = {}
    accounts: dict[str, AccountRisk] = {}

    def limits_for(self, account: str, instrument: Instrument) -> Limits:
        """The effective limits for one account trading one instrument."""
        limits = self.defaults
        if instrument.price_band is not None:
            limits = Limits(price_band=instrument.price_band).over(limits)
        sym = self.instruments.get(instrument.symbol)
        if sym is not None:
            limits = sym.over(limits)
        acct = self.accounts.get(account)
        if acct is not None:
            limits = acct.limits.over(limits)
            acct_sym = acct.instruments.get(instrument.symbol)
            if acct_sym is not None:
                limits = acct_sym.over(limits)
        return limits

    def account_limits(self, account: str) -> Limits:
        """Account-wide limits only (for checks without a symbol, such as cancels)."""
        acct = self.accounts.get(account)
        return self.defaults if acct is None else acct.limits.over(self.defaults)


def _symbol_tables(value: object, path: str) -> dict[str, Limits]:
    out: dict[str, Limits] = {}
    for symbol, table in as_table(value, WHAT, path).items():
        sub = child(path, symbol)
        table = as_table(table, WHAT, sub)
        for key in table:
            if key in ACCOUNT_RULES:
                raise ConfigError(f"{WHAT}: {child(sub, key)}: {key!r} is an account-wide rule; "
                                  f"set it under [defaults] or [accounts.NAME]")
        out[symbol] = build_struct(Limits, table, WHAT, sub, SYMBOL_RULES)
    return out


def risk_config_from_dict(data: dict[str, Any]) -> RiskConfig:
    """Validates a parsed TOML document; every error names its key."""
    check_keys(data, ("defaults", "instruments", "accounts"), WHAT, "", "section")
    defaults = build_struct(Limits, as_table(data.get("defaults", {}), WHAT, "defaults"), WHAT, "defaults")
    instruments = _symbol_tables(data.get("instruments", {}), "instruments")
    accounts: dict[str, AccountRisk] = {}
    for name, table in as_table(data.get("accounts", {}), WHAT, "accounts").items():
        path = child("accounts", name)
        table = dict(as_table(table, WHAT, path))
        per_symbol = _symbol_tables(table.pop("instruments", {}), child(path, "instruments"))
        check_keys(table, SYMBOL_RULES | ACCOUNT_RULES | {"instruments"}, WHAT, path, "rule")
        accounts[name] = AccountRisk(limits=build_struct(Limits, table, WHAT, path), instruments=per_symbol)
    return RiskConfig(defaults=defaults, instruments=instruments, accounts=accounts)


def parse_risk_config(text: str) -> RiskConfig:
    return risk_config_from_dict(parse_toml(text, WHAT))


def load_risk_config(path: str | Path) -> RiskConfig:
    return risk_config_from_dict(parse_toml(Path(path), WHAT))
