"""Request bodies decoded by hand, so each kind of bad input gets its own 400 code instead of a generic one.

Enum fields are case-insensitive (`"BUY"`, `"Limit"`, `"gtc"` all work); everything else is strict:
unknown fields, wrong types and missing fields are refused before anything reaches a service.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec

from tradesim.api.errors import ApiError

T = TypeVar("T", bound=msgspec.Struct)

_LOWER = ("side", "type", "stp")
_UPPER = ("tif",)
_RULES = (
    (re.compile(r"unknown field"), "unknown_field"),
    (re.compile(r"missing required field"), "missing_field"),
    (re.compile(r"Invalid enum value"), "invalid_enum"),
)


def decode(body: bytes, model: type[T], *, optional: bool = False) -> T:
    """`body` as `model`; an empty body is `{}` when `optional`, else 400 `malformed_json`."""
    if not body.strip():
        if optional:
            return msgspec.convert({}, model)
        raise ApiError(400, "malformed_json", "the request body is empty; send a JSON object")
    try:
        raw: Any = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise ApiError(400, "malformed_json", f"the request body is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ApiError(400, "invalid_type", f"the request body must be a JSON object, not {type(raw).__name__}")
    for key in _LOWER:
        if isinstance(raw.get(key), str):
            raw[key] = raw[key].lower()
    for key in _UPPER:
        if isinstance(raw.get(key), str):
            raw[key] = raw[key].upper()
    try:
        return msgspec.convert(raw, model)
    except msgspec.ValidationError as exc:
        message = str(exc)
        code = next((c for pattern, c in _RULES if pattern.search(message)), "invalid_type")
        raise ApiError(400, code, message) from None
