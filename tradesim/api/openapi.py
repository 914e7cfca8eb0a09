"""OpenAPI declarations for the bodies the handlers decode by hand (tradesim.api.bodies), so the served schema
shows them although Litestar never sees a `data` parameter: parsing and its error codes stay as they are.

`request_body(Model)` is a handler's `operation_class`: the operation it builds also declares a JSON request body
with `Model`'s JSON schema (msgspec's, inlined: no component names to clash with Litestar's own).
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar.openapi.spec import Operation

JSON = "application/json"
INT64 = {"format": "int64", "minimum": -(2**63), "maximum": 2**63 - 1}


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """`node` with every `{"$ref": "#/$defs/X", ...}` replaced by X's schema (merged with the siblings)."""
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _inline(value, defs) for key, value in node.items()
           if key not in ("$ref", "$defs") and not (key == "required" and value == [])}
    if out.get("type") == "integer":  # the bus carries 64-bit ints: a larger one is not served (a 503 today)
        out = {**INT64, **out}
    ref = node.get("$ref")
    if isinstance(ref, str):
        return {**_inline(defs[ref.rsplit("/", 1)[-1]], defs), **out}
    return out


def body_schema(model: type[msgspec.Struct]) -> dict[str, Any]:
    """`model`'s JSON schema, self-contained (the models here are not recursive)."""
    schema: dict[str, Any] = msgspec.json.schema(model)
    return dict(_inline(schema, schema.get("$defs", {})))


def request_body(model: type[msgspec.Struct], *, required: bool = True,
                 description: str | None = None) -> type[Operation]:
    """An `Operation` class for `@post(..., operation_class=request_body(Model))`: the operation Litestar builds,
    plus a JSON request body declared as `model`."""
    body: dict[str, Any] = {"required": required, "content": {JSON: {"schema": body_schema(model)}}}
    if description or model.__doc__:
        body["description"] = description or (model.__doc__ or "").strip()

    class _WithBody(Operation):
        def to_schema(self) -> dict[str, Any]:
            out = super().to_schema()
            out["requestBody"] = body
            return out

    _WithBody.__name__ = _WithBody.__qualname__ = f"{model.__name__}Operation"
    return _WithBody
