"""POST /webhook/signal end to end: HMAC checks, schema, idempotency, and the decision agent placing the order."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import PASSWORD, USERS, Stack, http, make_config, start_stack
from tradesim.bus import Delivery, subjects
from tradesim.domain import Side
from tradesim.services.oms.messages import GetOrderRequest, ListOrdersRequest, OrderReply, OrdersReply
from tradesim.services.signals import AuditEvent, DecisionAgent, OrderIntent, Signal
from tradesim.services.signals.decision import client_order_id
from tradesim.services.signals.verify import sign

HOOK = "/webhook/signal"
KEY = "webhook-test-key-0123456789"
OLD_KEY = "webhook-old-key-abcdefghij"
SIGNALS_TOML = f"""
[signals]
secret = "{KEY}"
extra_secrets = ["{OLD_KEY}"]
account = "alice"
base_qty = 100
max_position = 1000
limit_offset_ticks = 5
"""


class Recorder:
    def __init__(self) -> None:
        self.signals: list[Signal] = []
        self.intents: list[OrderIntent] = []
        self.audit: list[AuditEvent] = []

    async def on(self, d: Delivery) -> None:
        for kind, seen in ((Signal, self.signals), (OrderIntent, self.intents), (AuditEvent, self.audit)):
            if isinstance(d.data, kind):
                seen.append(d.data)  # type: ignore[attr-defined]

    def audit_of(self, cid: str) -> list[str]:
        return [a.event_type for a in self.audit if a.correlation_id == cid]


@pytest.fixture
async def wstack(tmp_path: Path) -> AsyncIterator[Stack]:
    async for s in start_stack(tmp_path, make_config(tmp_path, SIGNALS_TOML)):
        yield s


@pytest.fixture
async def agent(wstack: Stack) -> AsyncIterator[DecisionAgent]:
    a = DecisionAgent(wstack.bus, wstack.config.signals, wstack.config.instruments,
                      reference_prices=wstack.config.reference_prices)
    await a.start()
    yield a
    await a.stop()


@pytest.fixture
async def rec(wstack: Stack) -> Recorder:
    r = Recorder()
    for subject in (subjects.SIGNALS_NORMALIZED, subjects.DECISIONS_ORDER_INTENT, subjects.AUDIT_EVENT):
        await wstack.bus.subscribe(subject, r.on)
    return r


@pytest.fixture
async def wclient(wstack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with http(wstack.app()) as c:
        for name in USERS:
            r = await c.post("/api/v1/auth/token", json={"username": name, "password": PASSWORD})
            wstack.tokens[name] = r.json()["access_token"]
        yield c


def signal(cid: str, **extra: Any) -> dict[str, Any]:
    return {"correlation_id": cid, "source": "tv", "symbol": "AAPL.SIM", "side": "buy", "strength": 0.5, **extra}


def signed(body: bytes, *, key: str = KEY, ts: float | None = None, nonce: str | None = None) -> dict[str, str]:
    stamp = str(int(time.time() if ts is None else ts))
    nonce = nonce or uuid.uuid4().hex
    return {"X-Timestamp": stamp, "X-Nonce": nonce, "X-Signature": sign(key, stamp, nonce, body),
            "Content-Type": "application/json"}


async def post(client: httpx.AsyncClient, payload: dict[str, Any], **kw: Any) -> httpx.Response:
    body = json.dumps(payload).encode()
    return await client.post(HOOK, content=body, headers=signed(body, **kw))


async def until(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_signed_signal_is_executed_once_with_its_correlation_id(
        wclient: httpx.AsyncClient, wstack: Stack, agent: DecisionAgent, rec: Recorder) -> None:
    maker = {"symbol": "AAPL.SIM", "side": "sell", "type": "limit", "tif": "GTC", "price": "190.00", "qty": 80}
    r = await wclient.post("/api/v1/orders", headers=wstack.auth("bob"), json=maker)
    assert r.status_code == 201, r.text

    r = await post(wclient, signal("corr-1"))
    assert r.status_code == 202, r.text
    assert r.json() == {"status": "accepted", "correlation_id": "corr-1", "symbol": "AAPL.SIM", "side": "buy",
                        "strength": 0.5, "unknown_fields": [], "duplicate": False}
    await until(lambda: "order_result" in rec.audit_of("corr-1"))
    assert rec.audit_of("corr-1") == ["signal_received", "order_intent", "order_result"]
    (intent,) = rec.intents
    # strength 0.5 x base 100; far touch 190.00 + 5 ticks
    assert (intent.qty, intent.price, intent.tif.value, intent.account) == (50, 19005, "IOC", "alice")
    assert intent.risk.reference == "book" and intent.client_order_id == "sig-corr-1"
    result = next(a for a in rec.audit if a.event_type == "order_result")
    assert result.data["status"] == "filled" and result.data["filled_qty"] == 50
    assert len(result.data["trades"]) == 1 and result.data["trades"][0]["price"] == 19000

    reply = await wstack.bus.request(subjects.rpc("oms", "get_order"),
                                     GetOrderRequest(account="alice", client_order_id="sig-corr-1"), timeout=2)
    assert isinstance(reply, OrderReply)
    assert (reply.order.correlation_id, reply.order.filled_qty) == ("corr-1", 50)

    # the same correlation id again (a new nonce, so a legitimate retry): the first answer, nothing executed
    r = await post(wclient, signal("corr-1", strength=0.9))
    assert r.status_code == 200 and r.json()["duplicate"] is True and r.json()["strength"] == 0.5
    await asyncio.sleep(0.1)
    assert len(rec.signals) == 1 and len(rec.intents) == 1
    orders = (await wclient.get("/api/v1/orders", headers=wstack.auth("alice"))).json()
    assert orders["total"] == 1


async def test_agent_executes_a_signal_at_most_once_even_if_redelivered(
        wstack: Stack, agent: DecisionAgent, rec: Recorder) -> None:
    sig = Signal(correlation_id="again", source="t", symbol="AAPL.SIM", side=Side.BUY,
                 strength=1.0, price=18000, qty=10)
    await wstack.bus.publish(subjects.SIGNALS_NORMALIZED, sig)
    await wstack.bus.publish(subjects.SIGNALS_NORMALIZED, sig)
    await until(lambda: "again" in agent.outcomes and agent.duplicates == 1)
    assert agent.outcomes["again"].result == "executed" and agent.outcomes["again"].status == "canceled"
    assert len(rec.intents) == 1
    # a second agent (or a restart) that never saw it: the OMS knows the client_order_id, nothing new is routed
    other = DecisionAgent(wstack.bus, wstack.config.signals, wstack.config.instruments)
    outcome = await other.handle(sig)
    assert outcome.order_id == agent.outcomes["again"].order_id
    reply = await wstack.bus.request(subjects.rpc("oms", "list_orders"),
                                     ListOrdersRequest(account="alice"), timeout=2)
    assert isinstance(reply, OrdersReply) and reply.total == 1
    assert client_order_id("again") == "sig-again"


async def test_bad_signature_stale_and_replayed_are_401(wclient: httpx.AsyncClient, wstack: Stack,
                                                       rec: Recorder) -> None:
    body = json.dumps(signal("c-auth")).encode()
    headers = signed(body)
    forged = {**headers, "X-Signature": sign("not-the-key", headers["X-Timestamp"], headers["X-Nonce"], body)}
    r = await wclient.post(HOOK, content=body, headers=forged)
    assert (r.status_code, r.json()["error"]) == (401, "bad_signature")
    tampered = json.dumps(signal("c-auth", strength=1.0)).encode()
    r = await wclient.post(HOOK, content=tampered, headers=headers)
    assert (r.status_code, r.json()["error"]) == (401, "bad_signature")
    r = await post(wclient, signal("c-stale"), ts=time.time() - 301)
    assert (r.status_code, r.json()["error"]) == (401, "stale_timestamp")
    r = await post(wclient, signal("c-future"), ts=time.time() + 400)
    assert (r.status_code, r.json()["error"]) == (401, "stale_timestamp")
    r = await wclient.post(HOOK, content=body, headers={"Content-Type": "application/json"})
    assert (r.status_code, r.json()["error"]) == (401, "missing_signature")

    r = await wclient.post(HOOK, content=body, headers=headers)
    assert r.status_code == 202, r.text
    r = await wclient.post(HOOK, content=body, headers=headers)  # the very same request again
    assert (r.status_code, r.json()["error"]) == (401, "replayed_nonce")
    r = await post(wclient, signal("c-old-key"), key=OLD_KEY)  # a rotated-out key still listed
    assert r.status_code == 202, r.text
    await asyncio.sleep(0.05)
    assert [s.correlation_id for s in rec.signals] == ["c-auth", "c-old-key"]
    assert [s.key_id for s in rec.signals] == ["0", "1"]


async def test_schema_errors_are_400_and_unknown_fields_counted(wclient: httpx.AsyncClient, wstack: Stack,
                                                              rec: Recorder) -> None:
    body = signal("c-schema")
    del body["strength"]
    r = await post(wclient, {**body, "colour": "red"})
    assert (r.status_code, r.json()["error"]) == (400, "missing_field") and r.json()["unknown_fields"] == ["colour"]
    r = await post(wclient, signal("c-schema", strength=1.5))
    assert (r.status_code, r.json()["error"]) == (400, "invalid_signal")
    r = await post(wclient, signal("c-schema", side="hold"))
    assert (r.status_code, r.json()["error"]) == (400, "invalid_signal")
    r = await post(wclient, signal("c-schema", symbol="NOPE.SIM"))
    assert (r.status_code, r.json()["error"]) == (400, "unknown_symbol")
    r = await post(wclient, signal("bad id with spaces"))
    assert (r.status_code, r.json()["error"]) == (400, "invalid_signal")
    body_bytes = b"{not json"
    r = await wclient.post(HOOK, content=body_bytes, headers=signed(body_bytes))
    assert (r.status_code, r.json()["error"]) == (400, "malformed_json")

    r = await post(wclient, signal("c-extra", instrument="AAPL", note="x", price="190.004"))
    assert r.status_code == 202 and r.json()["unknown_fields"] == ["instrument", "note"]
    await until(lambda: len(rec.signals) == 1)
    assert rec.signals[0].unknown_fields == ["instrument", "note"] and rec.signals[0].price == 19000
    text = (await wclient.get("/metrics")).text
    assert "tradesim_webhook_unknown_fields_total 3" in text
    assert 'tradesim_webhook_signals_total{result="missing_field"} 1' in text
