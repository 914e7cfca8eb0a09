"""/api/v1/algos through the real OMS (no worker runs, so parents stay where the API puts them): create,
fetch, list, pause/resume/cancel, roles, isolation and bad input."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.conftest import Stack

ALGOS = "/api/v1/algos"


def twap(**extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"symbol": "AAPL.SIM", "side": "buy", "qty": 100, "algo": "twap",
                            "params": {"duration_ms": 60_000, "slices": 10, "limit_price": "190.50"}}
    body.update(extra)
    return body


async def test_create_get_list_pause_resume_cancel(client: httpx.AsyncClient, stack: Stack) -> None:
    alice = stack.auth("alice")
    r = await client.post(ALGOS, headers=alice, json=twap(client_id="t1"))
    assert r.status_code == 201, r.text
    made = r.json()
    assert {k: made[k] for k in ("client_id", "account", "symbol", "side", "qty", "algo", "state", "filled_qty",
                                 "avg_price")} == {
        "client_id": "t1", "account": "alice", "symbol": "AAPL.SIM", "side": "buy", "qty": 100, "algo": "twap",
        "state": "running", "filled_qty": 0, "avg_price": None}
    assert made["params"]["limit_price"] == "190.50" and made["params"]["slices"] == 10
    aid = made["algo_id"]
    again = await client.post(ALGOS, headers=alice, json=twap(client_id="t1"))  # a retry: the same parent
    assert (again.status_code, again.json()["algo_id"]) == (201, aid)

    r = await client.get(f"{ALGOS}/{aid}", headers=alice, params={"children": "true"})
    assert r.status_code == 200 and r.json()["algo_id"] == aid and r.json()["children"] == []
    assert (await client.get(f"{ALGOS}/{aid}", headers=alice)).json()["children"] is None

    r = await client.post(f"{ALGOS}/{aid}/pause", headers=alice)
    assert (r.status_code, r.json()["state"]) == (200, "paused"), r.text
    r = await client.get(ALGOS, headers=alice, params={"state": "paused"})
    assert (r.json()["total"], r.json()["algos"][0]["algo_id"]) == (1, aid)
    r = await client.post(f"{ALGOS}/{aid}/resume", headers=alice)
    assert (r.status_code, r.json()["state"]) == (200, "running")
    r = await client.delete(f"{ALGOS}/{aid}", headers=alice)
    assert (r.status_code, r.json()["state"]) == (200, "canceled")
    r = await client.delete(f"{ALGOS}/{aid}", headers=alice)  # idempotent
    assert (r.status_code, r.json()["state"]) == (200, "canceled")
    r = await client.post(f"{ALGOS}/{aid}/resume", headers=alice)
    assert (r.status_code, r.json()["error"]) == (409, "algo_closed")


async def test_roles_and_isolation(client: httpx.AsyncClient, stack: Stack) -> None:
    aid = (await client.post(ALGOS, headers=stack.auth("alice"), json=twap())).json()["algo_id"]
    bid = (await client.post(ALGOS, headers=stack.auth("bob"), json=twap(side="sell"))).json()["algo_id"]
    bob = stack.auth("bob")
    for method, path in (("GET", f"{ALGOS}/{aid}"), ("DELETE", f"{ALGOS}/{aid}"), ("POST", f"{ALGOS}/{aid}/pause")):
        r = await client.request(method, path, headers=bob)
        assert (r.status_code, r.json()["error"]) == (404, "unknown_parent"), (method, path, r.text)
    assert [a["algo_id"] for a in (await client.get(ALGOS, headers=bob)).json()["algos"]] == [bid]
    r = await client.get(ALGOS, headers=bob, params={"account": "alice"})
    assert (r.status_code, r.json()["error"]) == (403, "forbidden")
    # viewer of alice: reads hers, writes nothing
    vic = stack.auth("vic")
    assert (await client.get(f"{ALGOS}/{aid}", headers=vic)).status_code == 200
    for method, path in (("POST", ALGOS), ("DELETE", f"{ALGOS}/{aid}"), ("POST", f"{ALGOS}/{aid}/pause")):
        r = await client.request(method, path, headers=vic, json=twap() if path == ALGOS else None)
        assert (r.status_code, r.json()["error"]) == (403, "forbidden"), (method, path)
    # compliance reads every account, controls none; admin does both
    cora, root = stack.auth("cora"), stack.auth("root")
    assert (await client.get(ALGOS, headers=cora)).json()["total"] == 2
    assert (await client.delete(f"{ALGOS}/{bid}", headers=cora)).status_code == 403
    r = await client.delete(f"{ALGOS}/{bid}", headers=root)
    assert (r.status_code, r.json()["state"]) == (200, "canceled")
    r = await client.post(ALGOS, headers=root, json=twap(account="bob"))
    assert (r.status_code, r.json()["account"]) == (201, "bob")
    r = await client.post(ALGOS, headers=stack.auth("alice"), json=twap(account="bob"))
    assert (r.status_code, r.json()["error"]) == (403, "forbidden")
    assert (await client.get(ALGOS)).status_code == 401


@pytest.mark.parametrize(("body", "status", "error"), [
    (twap(algo="magic"), 400, "unknown_algo"),
    (twap(qty=0), 400, "bad_qty"),
    (twap(symbol="NOPE.SIM"), 404, "unknown_symbol"),
    (twap(side="up"), 400, "invalid_enum"),
    (twap(params={"slices": 3}), 400, "bad_params"),  # duration_ms missing
    (twap(params={"duration_ms": 1000, "limit_price": "190.005"}), 400, "off_tick"),
    (twap(params={"duration_ms": 1000, "limit_price": "abc"}), 400, "bad_price"),
    (twap(params={"duration_ms": 1000, "colour": "red"}), 400, "unknown_field"),
    (twap(params={"duration_ms": "long"}), 400, "invalid_type"),
    ({"symbol": "AAPL.SIM"}, 400, "missing_field"),
])
async def test_bad_input(client: httpx.AsyncClient, stack: Stack, body: dict[str, Any], status: int,
                         error: str) -> None:
    r = await client.post(ALGOS, headers=stack.auth("alice"), json=body)
    assert (r.status_code, r.json()["error"]) == (status, error), r.text


async def test_bad_queries(client: httpx.AsyncClient, stack: Stack) -> None:
    alice = stack.auth("alice")
    for params, error in (({"state": "sleepy"}, "invalid_enum"), ({"limit": 0}, "bad_page"),
                          ({"offset": -1}, "bad_page")):
        r = await client.get(ALGOS, headers=alice, params=params)
        assert (r.status_code, r.json()["error"]) == (400, error), r.text
    r = await client.get(f"{ALGOS}/algo-999", headers=alice)
    assert (r.status_code, r.json()["error"]) == (404, "unknown_parent")
    r = await client.post(ALGOS, headers=alice, content=b"{oops")
    assert (r.status_code, r.json()["error"]) == (400, "malformed_json")
