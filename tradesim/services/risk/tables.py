"""Turning parsed TOML tables into typed Structs, with errors that name the offending key.

Shared by the risk and compliance config loaders: a typo in a rule name or a value of the wrong type
must fail at load time with the full dotted key (`accounts.alice.max_order_qty`), never later.
"""

from __future__ import annotations

import tomllib
import types
import typing
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import msgspec

S = TypeVar("S", bound=msgspec.Struct)


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file kind and the key."""


def parse_toml(source: str | Path, what: str) -> dict[str, Any]:
    """TOML text (or a path to a file) → dict; syntax errors become ConfigError."""
    try:
        if isinstance(source, Path):
            with source.open("rb") as fh:
                return tomllib.load(fh)
        return tomllib.loads(source)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what}: invalid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {source}: {exc}") from exc


def child(path: str, key: str) -> str:
    """`path` + `key` as written in TOML; a key with dots or spaces is quoted (`instruments."AAPL.SIM"`)."""
    bare = key if key.replace("_", "").replace("-", "").isalnum() else f'"{key}"'
    return f"{path}.{bare}" if path else bare


def as_table(value: object, what: str, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{what}: {path}: expected a table, got {type(value).__name__} ({value!r})")
    return value


def check_keys(table: dict[str, Any], allowed: typing.Iterable[str], what: str, path: str, kind: str) -> None:
    """Refuses keys outside `allowed`, listing the ones that are known."""
    known = sorted(allowed)
    for key in table:
        if key not in known:
            raise ConfigError(f"{what}: {child(path, key)}: unknown {kind} {key!r} "
                              f"(known: {', '.join(known)})")


def _bare(tp: Any) -> Any:
    """`int | None` → `int`: TOML has no null, so the None arm only confuses error messages."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def convert_value(value: Any, tp: Any, what: str, path: str) -> Any:
    """One leaf value, strictly typed (a string is not an int, a bool is not a number), numbers >= 0."""
    try:
        out = msgspec.convert(value, _bare(tp), strict=True)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{what}: {path}: {str(exc).replace(' - at `$`', '')} (got {value!r})") from exc
    if isinstance(out, Decimal) and not out.is_finite():
        raise ConfigError(f"{what}: {path}: expected a finite number (got {value!r})")
    if isinstance(out, int | Decimal) and not isinstance(out, bool) and out < 0:
        raise ConfigError(f"{what}: {path}: must be >= 0 (got {value!r})")
    return out


def build_struct(
    cls: type[S], table: dict[str, Any], what: str, path: str, allowed: typing.Iterable[str] | None = None,
    kind: str = "rule",
) -> S:
    """A Struct from a table whose keys are a subset of the Struct's fields (or of `allowed`)."""
    fields = {f.name: f.type for f in msgspec.structs.fields(cls)}
    check_keys(table, fields if allowed is None else allowed, what, path, kind)
    kwargs = {k: convert_value(v, fields[k], what, child(path, k)) for k, v in table.items()}
    return cls(**kwargs)
