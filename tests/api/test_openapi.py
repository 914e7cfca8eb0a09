"""The served OpenAPI schema declares the bodies the handlers decode by hand, and the real success responses."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

BODIES = {  # (path, method): the request body's schema title
    ("/api/v1/orders", "post"): "OrderIn",
    ("/api/v1/orders/{order_id}", "patch"): "OrderPatch",
    ("/api/v1/algos", "post"): "AlgoIn",
    ("/api/v1/auth/token", "post"): "TokenIn",
    ("/webhook/signal", "post"): "SignalIn",
}


@pytest.fixture
async def schema(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.get("/schema/openapi.json")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def json_body(schema: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    request_body = schema["paths"][path][method]["requestBody"]
    assert request_body["required"] is True
    body: dict[str, Any] = request_body["content"]["application/json"]["schema"]
    return body


async def test_order_body_is_declared(schema: dict[str, Any]) -> None:
    body = json_body(schema, "/api/v1/orders", "post")
    assert body["type"] == "object"
    assert {"symbol", "side", "type", "qty"} <= set(body["properties"])
    assert set(body["required"]) == {"symbol", "side", "qty"}
    assert body["properties"]["side"]["enum"] == ["buy", "sell"]
    assert "limit" in body["properties"]["type"]["enum"]
    assert body["properties"]["qty"]["type"] == "integer"
    assert body["additionalProperties"] is False  # unknown fields are 400 unknown_field
    assert "$ref" not in str(body)  # self-contained


@pytest.mark.parametrize(("path", "method"), list(BODIES))
async def test_hand_parsed_bodies_are_declared(schema: dict[str, Any], path: str, method: str) -> None:
    assert json_body(schema, path, method)["title"] == BODIES[path, method]


async def test_success_responses_are_the_real_models(schema: dict[str, Any]) -> None:
    def ref(path: str, method: str, status: str) -> str:
        ref_: str = schema["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]["$ref"]
        return ref_.rsplit("/", 1)[-1]

    assert ref("/api/v1/orders", "post", "201") == "OrderOut"
    assert ref("/api/v1/orders", "post", "202") == "OrderOut"
    assert ref("/api/v1/orders", "post", "422") == "ErrorOut"
    assert ref("/api/v1/orders/{order_id}", "patch", "200") == "OrderOut"
    assert ref("/api/v1/algos", "post", "201") == "AlgoOut"
    assert ref("/api/v1/auth/token", "post", "200") == "TokenOut"
    assert ref("/webhook/signal", "post", "202") == "SignalOut"
    assert ref("/webhook/signal", "post", "200") == "SignalOut"
    components = schema["components"]["schemas"]
    assert {"OrderOut", "AlgoOut", "TokenOut", "SignalOut", "ErrorOut"} <= set(components)
    assert set(components["SignalOut"]["required"]) >= {"status", "correlation_id", "duplicate"}
