"""Compliance rule packs from TOML and which accounts they apply to.

A pack bundles the rules a regime imposes (a restricted list, a short-sale restriction, the Sharia
profile, a concentration limit, an order-to-trade ratio); an account gets the union of its packs,
or `default_packs` when it is not listed.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from tradesim.services.risk.tables import (
    ConfigError,
    as_table,
    build_struct,
    check_keys,
    child,
    convert_value,
    parse_toml,
)

WHAT = "compliance config"


class CompliancePack(msgspec.Struct, frozen=True, kw_only=True):
    """One named set of compliance rules; an unset rule is not checked."""

    name: str = ""
    restricted: frozenset[str] = frozenset()
    short_sale_restriction: bool = False
    sharia: bool = False
    max_concentration_pct: Decimal | None = None
    max_order_to_trade: Decimal | None = None
    order_to_trade_min_orders: int = 0


PACK_RULES = frozenset(f.name for f in msgspec.structs.fields(CompliancePack)) - {"name"}


class ComplianceConfig(msgspec.Struct, frozen=True, kw_only=True):
    packs: dict[str, CompliancePack] = {}
    accounts: dict[str, tuple[str, ...]] = {}
    default_packs: tuple[str, ...] = ()

    def packs_for(self, account: str) -> tuple[CompliancePack, ...]:
        names = self.accounts.get(account, self.default_packs)
        return tuple(self.packs[n] for n in names)


def _pack_names(value: object, path: str, packs: dict[str, CompliancePack]) -> tuple[str, ...]:
    names: tuple[str, ...] = convert_value(value, tuple[str, ...], WHAT, path)
    for name in names:
        if name not in packs:
            raise ConfigError(f"{WHAT}: {path}: unknown pack {name!r} (known: {', '.join(sorted(packs))})")
    return names


def compliance_config_from_dict(data: dict[str, Any]) -> ComplianceConfig:
    """Validates a parsed TOML document; every error names its key."""
    check_keys(data, ("packs", "accounts", "default_packs"), WHAT, "", "section")
    packs: dict[str, CompliancePack] = {}
    for name, table in as_table(data.get("packs", {}), WHAT, "packs").items():
        path = child("packs", name)
        pack = build_struct(CompliancePack, as_table(table, WHAT, path), WHAT, path, PACK_RULES)
        packs[name] = msgspec.structs.replace(pack, name=name)
    accounts = {
        account: _pack_names(names, child("accounts", account), packs)
        for account, names in as_table(data.get("accounts", {}), WHAT, "accounts").items()
    }
    default = _pack_names(data.get("default_packs", []), "default_packs", packs)
    return ComplianceConfig(packs=packs, accounts=accounts, default_packs=default)


def parse_compliance_config(text: str) -> ComplianceConfig:
    return compliance_config_from_dict(parse_toml(text, WHAT))


def load_compliance_config(path: str | Path) -> ComplianceConfig:
    return compliance_config_from_dict(parse_toml(Path(path), WHAT))
