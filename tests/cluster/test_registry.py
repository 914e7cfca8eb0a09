"""Service registry on both backends, and `tradesim cluster status` (table, JSON, unreachable bus)."""

from __future__ import annotations

import asyncio
import io
import json
import time

import pytest

from tests.bus.conftest import Connect
from tradesim.bus import Bus
from tradesim.cli import main
from tradesim.cli.cluster import EXIT_UNREACHABLE, status
from tradesim.cluster import registry
from tradesim.cluster.election import SingleActive
from tradesim.cluster.registry import Health, Registration, State, list_instances

WAIT = 15.0


async def eventually(pred_coro, timeout: float = WAIT) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not await pred_coro():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


@pytest.fixture(autouse=True)
def private_bucket(uid: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests share one nats-server: each gets its own registry bucket."""
    monkeypatch.setattr(registry, "SERVICES_BUCKET", f"services-{uid}")


async def test_register_refresh_list_and_stop(connect: Connect) -> None:
    a_bus, b_bus, reader = await connect(), await connect(), await connect()
    orders = [0]
    a = Registration(a_bus, "oms", "oms-a", heartbeat=0.1, state=lambda: State.ACTIVE,
                     metrics=lambda: {"orders_per_s": float(orders[0]), "lag": 0})
    b = Registration(b_bus, "oms", "oms-b", heartbeat=0.1, state=lambda: State.STANDBY)
    await a.start()
    await b.start()
    try:
        rows = await list_instances(reader)
        assert [(r.info.instance_id, r.info.state, r.health) for r in rows] == [
            ("oms-a", State.ACTIVE, Health.LIVE), ("oms-b", State.STANDBY, Health.LIVE)]
        assert rows[0].info.role == "oms" and rows[0].info.version
        first_beat = rows[0].info.heartbeat_ts
        orders[0] = 42

        async def refreshed() -> bool:
            r = (await list_instances(reader, service="oms"))[0]
            return r.info.heartbeat_ts > first_beat and r.info.metrics["orders_per_s"] == 42.0

        await eventually(refreshed)
        await b.stop()
        assert [r.info.instance_id for r in await list_instances(reader)] == ["oms-a"]
        assert await list_instances(reader, service="risk") == []
    finally:
        await a.stop()
        await b.stop()


async def test_stale_and_dead_by_heartbeat_age(connect: Connect) -> None:
    bus = await connect()
    r = Registration(bus, "risk", "risk-1", heartbeat=60.0)  # writes once, then silent: a crash
    await r.start()
    try:
        now = time.time()
        assert (await list_instances(bus, now=now + 1))[0].health is Health.LIVE
        assert (await list_instances(bus, now=now + 5, stale_after=3, dead_after=15))[0].health is Health.STALE
        row = (await list_instances(bus, now=now + 20, stale_after=3, dead_after=15))[0]
        assert row.health is Health.DEAD and row.age >= 19
    finally:
        await r.stop()


async def test_registration_follows_the_election(connect: Connect, uid: str) -> None:
    bus = await connect()
    election = SingleActive(bus, "oms", "oms-1", ttl=5.0, bucket=f"leaders-{uid}")
    reg = Registration(bus, "oms", "oms-1", heartbeat=0.1,
                       state=lambda: State.ACTIVE if election.is_active else State.STANDBY)
    election.on_elected = lambda token: None
    await reg.start()
    assert (await list_instances(bus))[0].info.state is State.STANDBY
    await election.start()
    try:
        assert await election.wait_active(WAIT)
        await reg.refresh()
        assert (await list_instances(bus))[0].info.state is State.ACTIVE
    finally:
        await election.stop()
        await reg.stop()


async def test_cluster_status_table_and_json(connect: Connect) -> None:
    bus: Bus = await connect()
    regs = [Registration(bus, "oms", "oms-a", metrics=lambda: {"orders_per_s": 12.5}),
            Registration(bus, "oms", "oms-b", state=lambda: State.STANDBY),
            Registration(bus, "accounts", "acc-1", metrics=lambda: {"positions": 3})]
    for r in regs:
        await r.start()
    try:
        out = io.StringIO()
        assert await status(bus.url, out=out) == 0
        lines = out.getvalue().splitlines()
        assert lines[0].split() == ["SERVICE", "INSTANCE", "ROLE", "STATE", "HEALTH", "HEARTBEAT", "UPTIME",
                                    "VERSION", "METRICS"]
        assert [ln.split()[:5] for ln in lines[1:]] == [
            ["accounts", "acc-1", "accounts", "ACTIVE", "LIVE"],
            ["oms", "oms-a", "oms", "ACTIVE", "LIVE"],
            ["oms", "oms-b", "oms", "STANDBY", "LIVE"]]
        assert "orders_per_s=12.5" in lines[2] and "positions=3" in lines[1]

        out = io.StringIO()
        assert await status(bus.url, as_json=True, service="oms", out=out) == 0
        data = json.loads(out.getvalue())
        assert [(d["info"]["instance_id"], d["info"]["state"], d["health"]) for d in data] == [
            ("oms-a", "ACTIVE", "LIVE"), ("oms-b", "STANDBY", "LIVE")]
        assert data[0]["info"]["metrics"] == {"orders_per_s": 12.5}
    finally:
        for r in regs:
            await r.stop()
    out = io.StringIO()
    assert await status(bus.url, out=out) == 0
    assert out.getvalue() == "no instances registered\n"


async def test_cluster_status_command_against_nats(nats_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    from tradesim.bus import open_bus

    bus = await open_bus(nats_url)
    reg = Registration(bus, "venue", "venue-1")
    await reg.start()
    try:  # the real command, in its own event loop (as from a shell)
        code = await asyncio.to_thread(main, ["cluster", "status", "--bus", nats_url, "--json"])
        assert code == 0
        data = json.loads(capsys.readouterr().out)
        assert [d["info"]["instance_id"] for d in data] == ["venue-1"]
    finally:
        await reg.stop()
        await bus.close()


def test_cluster_status_unreachable_bus(capsys: pytest.CaptureFixture[str]) -> None:
    t0 = time.monotonic()
    code = main(["cluster", "status", "--bus", "nats://127.0.0.1:1"])
    assert code == EXIT_UNREACHABLE
    err = capsys.readouterr().err
    assert "cannot reach the bus at nats://127.0.0.1:1" in err and "Traceback" not in err
    assert time.monotonic() - t0 < 10
