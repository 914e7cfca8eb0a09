"""SingleActive on both backends: one leader, fast hand-over, takeover after a crash, self-fencing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.bus.conftest import Connect
from tradesim.bus import Bus, Entry, KeyValue, Watch
from tradesim.cluster.election import FencingGuard, SingleActive, StaleTokenError

WAIT = 15.0  # generous: the machine is shared


class Recorder:
    """Collects election events with their monotonic time, and lets a test await the next one."""

    def __init__(self) -> None:
        self.events: list[tuple[float, str, str, object]] = []
        self.changed = asyncio.Event()

    def callbacks(self, who: str) -> dict[str, Callable[[Any], None]]:
        def elected(token: int) -> None:
            self.events.append((time.monotonic(), who, "elected", token))
            self.changed.set()

        def demoted(reason: str) -> None:
            self.events.append((time.monotonic(), who, "demoted", reason))
            self.changed.set()

        return {"on_elected": elected, "on_demoted": demoted}

    async def wait_for(self, pred: Callable[[], bool], timeout: float = WAIT) -> None:
        async def loop() -> None:
            while not pred():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(loop(), timeout)

    def elected(self, exclude: str | None = None) -> list[tuple[float, str, str, object]]:
        return [e for e in self.events if e[2] == "elected" and e[1] != exclude]


async def contenders(connect: Connect, uid: str, rec: Recorder, n: int = 3, **kw: Any) -> list[SingleActive]:
    out = []
    for i in range(n):
        bus = await connect()
        out.append(SingleActive(bus, "oms", f"oms-{i}", bucket=f"leaders-{uid}", **rec.callbacks(f"oms-{i}"), **kw))
    for c in out:
        await c.start()
    return out


async def stop_all(cs: list[SingleActive]) -> None:
    for c in cs:
        await c.stop()


async def test_exactly_one_leader_among_three(connect: Connect, uid: str) -> None:
    rec = Recorder()
    cs = await contenders(connect, uid, rec, ttl=5.0)
    try:
        await rec.wait_for(lambda: len(rec.elected()) >= 1)
        for _ in range(20):  # several rounds of renewals and standby retries
            assert sum(c.is_active for c in cs) == 1
            await asyncio.sleep(0.05)
        assert sum(c.elections for c in cs) == 1
        leader = next(c for c in cs if c.is_active)
        assert leader.fencing_token is not None and leader.fencing_token > 0
        assert all(c.fencing_token is None for c in cs if c is not leader)
    finally:
        await stop_all(cs)


async def test_graceful_release_hands_over_fast_woken_by_watch(connect: Connect, uid: str) -> None:
    rec = Recorder()
    # standbys retry only every 30 s: a fast takeover can only come from the watch waking them
    cs = await contenders(connect, uid, rec, ttl=5.0, retry=(30.0, 30.0))
    try:
        await rec.wait_for(lambda: len(rec.elected()) >= 1)
        leader = next(c for c in cs if c.is_active)
        old_token = leader.fencing_token
        assert old_token is not None
        t0 = time.monotonic()
        await leader.release()
        await rec.wait_for(lambda: len(rec.elected(exclude=leader.instance_id)) >= 1)
        took = rec.elected(exclude=leader.instance_id)[0][0] - t0
        assert took < 1.0, f"hand-over took {took:.3f} s"
        assert not leader.is_active
        new = next(c for c in cs if c.is_active)
        assert new is not leader and new.fencing_token is not None and new.fencing_token > old_token
        assert ("released" in [e[3] for e in rec.events if e[1] == leader.instance_id])
    finally:
        await stop_all(cs)


async def test_crashed_leader_is_replaced_after_ttl(connect: Connect, uid: str) -> None:
    rec = Recorder()
    ttl, heartbeat = 1.0, 0.2
    cs = await contenders(connect, uid, rec, ttl=ttl, heartbeat=heartbeat)
    try:
        await rec.wait_for(lambda: len(rec.elected()) >= 1)
        leader = next(c for c in cs if c.is_active)
        old_token = leader.fencing_token
        assert old_token is not None
        t0 = time.monotonic()
        await leader.bus.close()  # type: ignore[attr-defined]  # the process dies: no renewals, no release
        await rec.wait_for(lambda: len(rec.elected(exclude=leader.instance_id)) >= 1)
        took = rec.elected(exclude=leader.instance_id)[0][0] - t0
        # never before the dead leader's lease could have run out, and not much after it
        assert ttl - heartbeat - 0.01 <= took < ttl + 5.0, f"takeover after {took:.3f} s"
        new = next(c for c in cs if c.is_active)
        assert new.fencing_token is not None and new.fencing_token > old_token
        assert not leader.is_active
    finally:
        await stop_all(cs)


class FreezableKV(KeyValue):
    """Delegates to a real bucket; while frozen every call hangs (a paused process / partitioned host)."""

    def __init__(self, inner: KeyValue) -> None:
        super().__init__(inner.bucket)
        self.inner = inner
        self.frozen = False

    async def _gate(self) -> None:
        if self.frozen:
            await asyncio.Event().wait()

    async def get(self, key: str) -> Entry | None:
        await self._gate()
        return await self.inner.get(key)

    async def put(self, key: str, value: bytes) -> int:
        await self._gate()
        return await self.inner.put(key, value)

    async def create(self, key: str, value: bytes) -> int:
        await self._gate()
        return await self.inner.create(key, value)

    async def update(self, key: str, value: bytes, expected_revision: int) -> int:
        await self._gate()
        return await self.inner.update(key, value, expected_revision)

    async def delete(self, key: str, expected_revision: int | None = None) -> None:
        await self._gate()
        await self.inner.delete(key, expected_revision)

    async def keys(self) -> list[str]:
        await self._gate()
        return await self.inner.keys()

    async def watch(self, pattern: str = ">", *, include_initial: bool = True) -> Watch:
        return await self.inner.watch(pattern, include_initial=include_initial)


class FreezableBus:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.kvs: list[FreezableKV] = []

    async def kv(self, bucket: str, *, ttl: float | None = None) -> KeyValue:
        kv = FreezableKV(await self.bus.kv(bucket, ttl=ttl))
        self.kvs.append(kv)
        return kv

    def freeze(self) -> None:
        for kv in self.kvs:
            kv.frozen = True


async def test_paused_leader_fences_itself_before_takeover(connect: Connect, uid: str) -> None:
    rec = Recorder()
    ttl = 1.0
    fbus = FreezableBus(await connect())
    leader = SingleActive(fbus, "venue", "venue-a", ttl=ttl, margin=0.5, bucket=f"leaders-{uid}",  # slack under load
                          **rec.callbacks("a"))
    await leader.start()
    assert await leader.wait_active(WAIT)
    standby = SingleActive(await connect(), "venue", "venue-b", ttl=ttl, bucket=f"leaders-{uid}",
                           **rec.callbacks("b"))
    await standby.start()
    guard = FencingGuard()
    old_token = leader.fencing_token
    assert old_token is not None
    guard.check(old_token)
    try:
        fbus.freeze()  # its renewals now hang
        await rec.wait_for(lambda: len(rec.elected(exclude="a")) >= 1)
        fenced = [e[0] for e in rec.events if e[1:] == ("a", "demoted", "fenced")]
        elected_b = rec.elected(exclude="a")[0][0]
        assert fenced and fenced[0] < elected_b, rec.events  # stopped acting before the other started
        assert not leader.is_active and leader.fencing_token is None
        new_token = standby.fencing_token
        assert new_token is not None and new_token > old_token
        guard.check(new_token)
        assert not guard.admit(old_token)
        with pytest.raises(StaleTokenError):
            guard.check(old_token)
    finally:
        await standby.stop()
        for kv in fbus.kvs:
            kv.frozen = False
        await leader.stop()


async def test_frozen_loop_is_inactive_the_moment_the_clock_says_so(connect: Connect, uid: str) -> None:
    """SIGSTOP in miniature: the monotonic clock jumps past ttl - margin while the loop did nothing."""
    offset = [0.0]
    leader = SingleActive(await connect(), "oms", "oms-x", ttl=5.0, bucket=f"leaders-{uid}",
                          clock=lambda: time.monotonic() + offset[0])
    await leader.start()
    try:
        assert await leader.wait_active(WAIT)
        assert leader.is_active and leader.fencing_token is not None
        offset[0] = 5.0 - leader.margin
        assert not leader.is_active and leader.fencing_token is None
    finally:
        await leader.stop()


def test_fencing_guard_orders_tokens() -> None:
    g = FencingGuard()
    assert g.admit(3) and g.admit(3) and g.admit(7)
    assert not g.admit(5)
    assert g.newest == 7


@pytest.mark.parametrize("kw", [{"ttl": 1.0, "margin": 1.0}, {"ttl": 1.0, "heartbeat": 0.9}, {"retry": (0.2, 0.1)}])
def test_rejects_unsafe_timing(kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SingleActive(object(), "oms", "i", **kw)  # type: ignore[arg-type]


async def test_every_participant_reads_the_same_bucket_incarnation(connect: Connect, uid: str) -> None:
    rec = Recorder()
    cs = await contenders(connect, uid, rec, ttl=5.0)
    try:
        ids = {await c.incarnation() for c in cs}
        assert len(ids) == 1 and len(ids.pop()) == 32
    finally:
        await stop_all(cs)


def test_the_incarnation_key_is_not_an_election_name() -> None:
    with pytest.raises(ValueError, match="reserved"):
        SingleActive(object(), "_incarnation", "i")  # type: ignore[arg-type]
