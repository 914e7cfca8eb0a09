"""Venue high availability (issue 8) on a real local cluster: two venue instances of one shard (a leader
and a warm standby following the JetStream journal), an OMS, orders through `NatsClient`; kill -9 the
active venue under load. Select with `pytest -m drill`; `-s` shows the figures.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter

import pytest

from tests.cluster.test_drills import (  # noqa: F401  (cluster_up, pg_db, session: fixtures)
    WAIT,
    Flow,
    SessionUp,
    cluster_up,
    eventually,
    pg_db,
    readiness,
    rest_liquidity,
    say,
    session,
)
from tradesim.bus import Bus, Delivery
from tradesim.cluster.local import LeaderLog, Proc
from tradesim.cluster.registry import State, list_instances
from tradesim.domain import Event, OrderAccepted, OrderStatus, Trade
from tradesim.engine import MatchingEngine
from tradesim.services.venue import VENUE_EVENT_SUBJECTS, VENUE_EVENTS, event_messages
from tradesim.store import JetStreamJournal, open_journal

pytestmark = pytest.mark.drill


async def replay(nats_url: str, shard: str, id_base: int = 0) -> tuple[JetStreamJournal, MatchingEngine, list[Event]]:
    """The shard's journal stream, checked (chain, no gap) and replayed from scratch through a fresh engine
    (numbering ids from the shard's `id_base`, as its venue does)."""
    journal = await JetStreamJournal.open(nats_url, shard=shard, create=False)
    report = await journal.verify()
    assert report.ok, report
    assert report.count == journal.last_seq == await journal.stream_end()  # seqs 1..N, one record each
    engine = MatchingEngine(id_base=id_base)
    events: list[Event] = []
    seqs = []
    async for record in journal.read(1):
        seqs.append(record.seq)
        events.extend(engine.apply(record.command))
    assert seqs == list(range(1, journal.last_seq + 1))
    return journal, engine, events


async def stream_messages(bus: Bus) -> list[Delivery]:
    """Every message of VENUE_EVENTS, in stream order."""
    total = (await bus.stream_info(VENUE_EVENTS)).messages
    got: list[Delivery] = []
    done = asyncio.Event()

    async def collect(d: Delivery) -> None:
        got.append(d)
        if len(got) >= total:
            done.set()

    subs = [await bus.follow(pattern, collect) for pattern in VENUE_EVENT_SUBJECTS]
    try:
        await asyncio.wait_for(done.wait(), WAIT)
    finally:
        for sub in subs:
            await sub.unsubscribe()
    return sorted(got, key=lambda d: d.stream_seq or 0)


def expected_messages(events: list[Event]) -> Counter[tuple[int, str]]:
    return Counter((e.seq, subject) for e in events for subject, _ in event_messages(e))


async def leader_matches(proc: Proc, seq: int, state_hash: str) -> bool:
    detail = (await readiness(proc))["detail"]
    return bool(detail.get("seq") == seq and detail.get("state_hash") == state_hash[:16])


async def test_kill_9_active_venue_under_flow(session: SessionUp) -> None:  # noqa: F811
    """SIGKILL the venue leader while orders flow through the OMS: the standby takes over within 2 s; every
    acknowledged order and trade is in the OMS and the journal once; the journal has no gap and verifies;
    the new leader's books equal a from-scratch replay (state hash); VENUE_EVENTS holds every event of the
    journal exactly once (what the old leader journaled but never published was published by the new one);
    the PostgreSQL mirror holds the same chain."""
    s = await session(venue=2, oms=1)
    cluster, alice = s.cluster, s.client("alice")
    async with LeaderLog(s.bus, "venue.main") as leaders:
        first = await leaders.wait_leader()
        await rest_liquidity(s.client("mm1"), qty=10_000)
        async with Flow(alice, "v9", lanes=6, rate=120.0) as flow:
            await flow.wait_acked(60)
            t_kill = time.monotonic()
            victim = await cluster.kill("venue", active=True, sig=signal.SIGKILL)
            assert victim.name == first.instance_id
            new = await leaders.wait_leader(other_than=victim.name, after=t_kill, timeout=10)
            await flow.wait_acked(len(flow.acked) + 60)
        elected = new.at - t_kill
        served = min(at for at, order in flow.acked.values()
                     if at > t_kill and order.status is OrderStatus.FILLED) - t_kill
        say(f"kill -9 {victim.name}: {new.instance_id} elected after {elected * 1000:.0f} ms, first order filled "
            f"after {served * 1000:.0f} ms; {len(flow.acked)} orders acknowledged")
    assert new.token > first.token
    assert elected < 2.0 and served < 2.0
    assert flow.failures == []

    # The OMS settles every acknowledged order (one in flight at the kill is recovered from the new leader).
    async def settled() -> bool:
        for cid in flow.acked:
            if (await alice.get_order(cid)).status is not OrderStatus.FILLED:
                return False
        return True

    await eventually(settled, "every acknowledged order FILLED in the OMS")

    journal, engine, events = await replay(cluster.nats_url, "main")
    try:
        accepted = Counter((e.account, e.client_order_id) for e in events if isinstance(e, OrderAccepted))
        for cid in flow.acked:
            assert accepted[("alice", cid)] == 1, cid
        assert all(n == 1 for n in accepted.values())
        bought = sum(t.qty for t in events if isinstance(t, Trade) and t.taker_account == "alice")
        assert bought == len(flow.acked) == sum(1 for k in accepted if k[0] == "alice")

        leader = next(p for p in cluster.state.instances("venue") if p.name == new.instance_id)
        await eventually(lambda: leader_matches(leader, journal.last_seq, engine.state_hash()),
                         "the new leader's seq and state hash equal the replay's")

        stream = await stream_messages(s.bus)
        got = Counter((d.data.seq, d.subject) for d in stream)  # type: ignore[attr-defined]
        assert got == expected_messages(events)  # none missing, none twice
        assert max(got.values()) == 1

        mirror = await open_journal(cluster.state.db, create=False)
        try:
            async def mirrored() -> bool:
                return (await mirror.verify()).count == journal.last_seq

            await eventually(mirrored, "the PostgreSQL mirror holds the whole chain")
            assert (await mirror.verify()).ok
        finally:
            await mirror.close()
    finally:
        await journal.close()

    async def registry_shows_it() -> bool:  # refreshed every second
        rows = {r.info.instance_id: r.info for r in await list_instances(s.bus) if r.info.role == "venue"}
        info = rows.get(new.instance_id or "")
        return info is not None and info.state is State.ACTIVE and info.metrics.get("shard") == "main" \
            and info.metrics.get("activations") == 1 and info.metrics.get("lag_records") == 0

    await eventually(registry_shows_it, "the registry lists the new leader ACTIVE, shard main, activated once")


async def test_restarted_instance_rejoins_as_standby(session: SessionUp) -> None:  # noqa: F811
    """A venue instance started after trading restores the newest snapshot, follows the stream, stands by
    with the leader's state hash, and takes over on SIGTERM of the leader (released at once)."""
    s = await session(venue=1, oms=1)
    cluster, alice = s.cluster, s.client("alice")
    await rest_liquidity(s.client("mm1"), qty=1_000)
    async with Flow(alice, "rj", lanes=2, rate=80.0) as flow:
        await flow.wait_acked(40)
    late = cluster.spawn("venue")
    await cluster.wait_live([late])
    leader = await cluster.active_instance("venue")
    assert leader.name != late.name
    journal, engine, _ = await replay(cluster.nats_url, "main")
    try:
        await eventually(lambda: leader_matches(late, journal.last_seq, engine.state_hash()),
                         "the late standby at the journal's end with the replay's state hash")
        detail = (await readiness(late))["detail"]
        assert detail["lag_records"] == 0 and (await readiness(late))["state"] == "STANDBY"
    finally:
        await journal.close()
    async with LeaderLog(s.bus, "venue.main") as leaders:
        await cluster.kill("venue", instance=leader.name, sig=signal.SIGTERM)
        new = await leaders.wait_leader(other_than=leader.name, timeout=10)
        assert new.instance_id == late.name
    reply = await alice.buy("AAPL.SIM", 1, 19_000, client_order_id="after-handover")
    assert reply.order.status is OrderStatus.FILLED
