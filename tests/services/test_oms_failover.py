"""The single-active OMS on a real nats-server and PostgreSQL: three OmsService instances (each with its own
bus connection and store connection) elect one leader in front of a real VenueService (journal on
PostgreSQL, events in the VENUE_EVENTS stream). A crashed leader is replaced under a steady flow of orders
from a retrying NatsClient, and nothing acknowledged is lost or executed twice."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.services.oms_support import ACCOUNTS, COMPLIANCE, INSTRUMENTS, REFERENCE, RISK, until
from tests.support.nats_server import start_nats_server
from tests.support.pg import pg_url  # noqa: F401  (fixture)
from tradesim.bus import Bus, NoRespondersError, RemoteError, open_bus, subjects
from tradesim.bus.natsserver import LocalNatsServer
from tradesim.client.nats import AsyncNatsClient
from tradesim.cluster.election import SingleActive
from tradesim.domain import NewOrder, OrderAccepted, OrderType, Side, TimeInForce
from tradesim.engine import MatchingEngine
from tradesim.services.algos import AlgoWorker, Settings
from tradesim.services.oms import errors as E
from tradesim.services.oms.messages import AlgoParams, GetOrderRequest, OmsError
from tradesim.services.oms.pgstore import PostgresOrderStore, open_oms_stores
from tradesim.services.oms.rpc import RetryPolicy
from tradesim.services.oms.service import OmsService
from tradesim.services.venue.messages import Fenced
from tradesim.services.venue.service import VenueService
from tradesim.store import Journal, open_journal

TTL = 0.5


@pytest.fixture
def nats() -> Iterator[LocalNatsServer]:
    """A server of its own per test: the venue's stream and the leader key start empty."""
    server = start_nats_server()
    try:
        yield server
    finally:
        server.stop()


class Cluster:
    """A venue and `n` OMS instances; `crash(i)` kills one as a process death would (no release)."""

    def __init__(self, url: str, pg: str) -> None:
        self.url, self.pg = url, pg
        self.oms: list[OmsService] = []
        self.buses: list[Bus] = []
        self.stores: list[PostgresOrderStore] = []
        self.crashed: set[int] = set()

    async def start(self, n: int = 3) -> None:
        self.venue_bus = await open_bus(self.url)
        self.journal: Journal = await open_journal(self.pg, linger=0.0)
        self.venue = VenueService(self.venue_bus, self.journal, INSTRUMENTS, event_stream=True)
        await self.venue.start()
        for i in range(n):
            await self.add(f"oms-{i}")

    async def add(self, instance: str) -> OmsService:
        bus = await open_bus(self.url)
        store, parents = await open_oms_stores(self.pg, holder=instance)
        election = SingleActive(bus, "oms", instance, ttl=TTL)
        oms = OmsService(bus, INSTRUMENTS, ACCOUNTS, RISK, COMPLIANCE, store=store, parent_store=parents,
                         reference_prices=REFERENCE, election=election, request_timeout=1.0, stuck_after=1.0)
        await oms.start()
        self.oms.append(oms)
        self.buses.append(bus)
        self.stores.append(store)
        return oms

    def leader(self) -> int | None:
        found = [i for i, o in enumerate(self.oms) if i not in self.crashed and o.serving]
        assert len(found) <= 1, f"two instances serve at once: {found}"
        return found[0] if found else None

    async def wait_leader(self, timeout: float = 10.0) -> int:
        await until(lambda: self.leader() is not None, timeout)
        index = self.leader()
        assert index is not None
        return index

    async def crash(self, i: int) -> None:
        """Stop everything of instance i at once, without a release: the key stays until its TTL runs out."""
        oms = self.oms[i]
        self.crashed.add(i)
        assert oms.election is not None
        tasks = [*oms.election._tasks, *oms._tasks]
        tasks += [t for t in (oms._activation, oms._watchdog, oms._flusher, oms.algos._task) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.buses[i].close()
        await self.stores[i].close()

    async def stop(self) -> None:
        for i, oms in enumerate(self.oms):
            if i not in self.crashed:
                await oms.stop()
                await self.stores[i].close()
                await self.buses[i].close()
        await self.venue.stop()
        await self.journal.close()
        await self.venue_bus.close()

    async def accepted_per_cid(self) -> Counter[tuple[str, str]]:
        """How often the venue accepted each (account, client_order_id), replaying its journal."""
        engine = MatchingEngine()
        counts: Counter[tuple[str, str]] = Counter()
        async for record in self.journal.read(1):
            for event in engine.apply(record.command):
                if isinstance(event, OrderAccepted):
                    counts[(event.account, event.client_order_id)] += 1
        return counts


@pytest.fixture
async def cluster(nats: LocalNatsServer, pg_url: str) -> AsyncIterator[Cluster]:  # noqa: F811
    c = Cluster(nats.url, pg_url)
    await c.start()
    try:
        yield c
    finally:
        await c.stop()


async def test_one_leader_serves_and_a_standby_answers_not_active(cluster: Cluster) -> None:
    leader = await cluster.wait_leader()
    async with AsyncNatsClient(cluster.venue_bus, "alice") as client:
        reply = await client.buy("AAPL.SIM", 5, "99.00", client_order_id="s-1")
        assert reply.order.status.value == "accepted"
    for i, oms in enumerate(cluster.oms):
        if i != leader:
            assert not oms.serving and not oms._subs  # a standby subscribes to no RPC subject
            answer = await oms._guard(oms._get_order)(GetOrderRequest(account="alice", client_order_id="s-1"))
            assert isinstance(answer, OmsError) and answer.error == E.NOT_ACTIVE


async def test_crash_of_the_leader_under_steady_flow_loses_and_repeats_nothing(cluster: Cluster) -> None:
    first = await cluster.wait_leader()
    policy = RetryPolicy(timeout=1.0, deadline=15.0)
    client_bus = await open_bus(cluster.url)
    acked: dict[str, str] = {}  # cid -> status in the acknowledgement
    failures: list[BaseException] = []
    stop = asyncio.Event()

    async def flow(worker: int) -> None:
        client = AsyncNatsClient(client_bus, "alice" if worker % 2 == 0 else "bob", policy=policy)
        n = 0
        while not stop.is_set():
            n += 1
            cid = f"w{worker}-{n}"
            side = Side.BUY if worker % 2 == 0 else Side.SELL
            try:  # buyers rest at 99.00-100.00, sellers cross at 99.50: fills, partial fills, resting orders
                price = "100.00" if side is Side.BUY and n % 3 else "99.50" if side is Side.SELL else "99.00"
                reply = await client.submit("AAPL.SIM", side, 2, price=price, client_order_id=cid)
            except Exception as exc:
                failures.append(exc)
                return
            acked[cid] = reply.order.status.value

    flows = [asyncio.create_task(flow(w)) for w in range(4)]
    await until(lambda: len(acked) >= 40, 20)
    crash_at = time.perf_counter()
    await cluster.crash(first)
    second = await cluster.wait_leader(timeout=10)
    takeover = time.perf_counter() - crash_at
    served = len(acked)
    await until(lambda: len(acked) >= served + 40, 20)
    stop.set()
    await asyncio.gather(*flows)
    assert not failures, failures  # the clients saw only retries
    assert second != first
    assert takeover < 2.0, f"new leader served {takeover:.3f} s after the crash"
    print(f"\ncrash → new leader serving: {takeover * 1000:.0f} ms "
          f"(rebuild {cluster.oms[second].activation_seconds * 1000:.0f} ms), {len(acked)} orders acknowledged")

    by_key: Counter[tuple[str, str]] = Counter()
    for account in ("alice", "bob"):
        async with AsyncNatsClient(client_bus, account, policy=policy) as client:
            by_key.update((o.account, o.client_order_id) for o in (await client.list_orders(limit=1000)).orders)
    accepted = await cluster.accepted_per_cid()
    for cid, status in acked.items():
        key = ("alice" if cid.split("-")[0] in ("w0", "w2") else "bob", cid)
        assert by_key[key] == 1, f"{key} is known {by_key[key]} times to the new leader"
        assert accepted[key] == 1, f"{key} accepted {accepted[key]} times by the venue (status {status})"
    assert max(accepted.values()) == 1  # nothing executed twice, acknowledged or not
    await client_bus.close()


async def test_graceful_stop_hands_over(cluster: Cluster) -> None:
    first = await cluster.wait_leader()
    async with AsyncNatsClient(cluster.venue_bus, "alice") as client:
        await client.buy("AAPL.SIM", 1, "99.00", client_order_id="g-1")
        started = time.perf_counter()
        await cluster.oms[first].stop()
        cluster.crashed.add(first)  # stopped: leave it out of leader() and stop()
        await cluster.buses[first].close()
        await cluster.stores[first].close()
        second = await cluster.wait_leader(timeout=10)
        handover = time.perf_counter() - started
        view = await client.get_order("g-1")
        assert view.status.value == "accepted"
    assert second != first
    assert handover < 5.0  # measured, not a target: see docs/oms.md for the figures
    print(f"\ngraceful hand-over: {handover * 1000:.0f} ms")


async def test_a_former_leaders_venue_command_is_refused(cluster: Cluster) -> None:
    # With a 0.5 s lease a loaded machine can make leadership move on its own: read the token of whoever
    # leads now, and judge by the venue's newest token rather than by which instance leads at the end.
    await until(lambda: (i := cluster.leader()) is not None and cluster.oms[i]._token is not None, 10)
    first = await cluster.wait_leader()
    old_token = cluster.oms[first]._token
    assert old_token is not None
    await cluster.crash(first)
    await cluster.wait_leader(timeout=10)
    async with AsyncNatsClient(cluster.venue_bus, "alice") as client:
        await client.buy("AAPL.SIM", 1, "99.00", client_order_id="n-1")  # the new leader's token reaches the venue
    late = NewOrder(account="alice", client_order_id="late-1", symbol="AAPL.SIM", side=Side.BUY,
                    type=OrderType.LIMIT, tif=TimeInForce.GTC, price=9900, qty=1)
    with pytest.raises(RemoteError) as refused:
        await cluster.venue_bus.request(subjects.rpc("venue", "submit"), Fenced(command=late, token=old_token),
                                        timeout=2)
    assert "Stale" in refused.value.error_type
    assert cluster.venue.engine.order_by_client("alice", "late-1") is None
    assert cluster.venue.newest_token > old_token  # the venue saw the new leadership's token


async def test_no_leader_means_no_responders(cluster: Cluster) -> None:
    for _ in range(len(cluster.oms)):  # each crash hands over to the next, until none is left
        await cluster.crash(await cluster.wait_leader())
    with pytest.raises(NoRespondersError):
        await cluster.venue_bus.request(subjects.rpc("oms", "get_order"),
                                        GetOrderRequest(account="alice", client_order_id="x"), timeout=5)


async def test_algo_parents_survive_failover(cluster: Cluster) -> None:
    first = await cluster.wait_leader()
    worker_bus = await open_bus(cluster.url)
    worker = AlgoWorker(worker_bus, "w1", settings=Settings(lease=3.0, poll=0.05, request_timeout=1.0, ack_wait=5.0))
    await worker.start()
    try:
        async with AsyncNatsClient(cluster.venue_bus, "bob") as seller:
            await seller.sell("AAPL.SIM", 100, "100.00", client_order_id="liquidity")
        async with AsyncNatsClient(cluster.venue_bus, "alice") as client:
            algo = await client.algo_order("AAPL.SIM", Side.BUY, 40, "twap",
                                           AlgoParams(duration_ms=2500, slices=8, limit_price=10000),
                                           client_id="parent-1")
            await asyncio.sleep(0.8)
            await cluster.crash(first)
            await cluster.wait_leader(timeout=10)
            await until(lambda: algo.parent_id in worker.completed, 30)
            done = await client.algo(algo.parent_id, children=True)
        assert done.algo.state.value == "completed"
        assert done.algo.filled_qty == 40
        accepted = await cluster.accepted_per_cid()
        children = [c for c in done.children]
        assert children and all(accepted[("alice", c.client_order_id)] == 1 for c in children)
        assert sum(c.filled_qty for c in children) == 40
        assert max(accepted.values()) == 1
    finally:
        await worker.stop()
        await worker_bus.close()
