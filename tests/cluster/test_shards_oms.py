"""The whole stack over two venue shards on a real local cluster (`cluster up --shards 2`, 2 OMS, 2 risk
monitors): orders go through the OMS (NatsClient) on both shards while one shard's venue leader is
killed (-9) — the other shard keeps answering — and then the active OMS is killed (-9): the new leader
rebuilds every shard's sequence. Every acknowledged order is at its shard's venue once, order ids are
unique over shards, the OMS answers each as it was, retries are idempotent, and both risk monitors
hold the same positions, per-shard seqs included. `pytest -m drill`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.test_drills import CLIENT_POLICY, eventually, pg_db, readiness, say  # noqa: F401  (pg_db: a fixture)
from tests.cluster.test_venue_ha import replay
from tradesim.bus import Bus, open_bus
from tradesim.client.errors import ApiError
from tradesim.client.nats import AsyncNatsClient
from tradesim.cluster.local import ClusterError, LeaderLog, LocalCluster, Proc, write_quiet_config
from tradesim.domain import OrderAccepted, OrderRejected, OrderStatus, RejectReason, TimeInForce, Trade
from tradesim.services.oms.messages import OrderView
from tradesim.services.venue.shards import ID_BLOCK

pytestmark = pytest.mark.drill

S1, S2 = "AAPL.SIM", "MSFT.SIM"  # `--shards 2` deals the demo instruments: s1 holds AAPL, s2 MSFT
SHARD = {S1: "s1", S2: "s2"}
PRICES = {S1: 19_000, S2: 42_000}


@pytest.fixture
async def stack(tmp_path: Path, pg_db: str) -> AsyncIterator[tuple[LocalCluster, Bus]]:  # noqa: F811
    cluster = LocalCluster.create(tmp_path / "cluster", db=pg_db, config=write_quiet_config(tmp_path / "quiet.toml"),
                                  api_port=None, progress=say, stop_grace=10.0)
    try:
        await cluster.up({"venue": 2, "oms": 2, "risk": 2}, shards=2, timeout=180)
        bus = await open_bus(cluster.nats_url)
        try:
            yield cluster, bus
        finally:
            await bus.close()
    finally:
        await cluster.down()


class SymbolFlow:
    """Closed-loop IOC buys of 1 through the OMS on one symbol (so one shard), `lanes` at a time; the
    NatsClient retries through failovers, so any error is a failure."""

    def __init__(self, client: AsyncNatsClient, symbol: str, prefix: str, lanes: int = 2) -> None:
        self.client, self.symbol, self.prefix, self.lanes = client, symbol, prefix, lanes
        self.acked: dict[str, tuple[float, OrderView]] = {}
        self.failures: list[str] = []
        self._n = itertools.count()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._lane()) for _ in range(self.lanes)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _lane(self) -> None:
        while not self._stop.is_set():
            cid = f"{self.prefix}-{next(self._n)}"
            try:
                reply = await self.client.buy(self.symbol, 1, PRICES[self.symbol], tif=TimeInForce.IOC,
                                              client_order_id=cid)
            except ApiError as exc:
                self.failures.append(f"{cid}: {type(exc).__name__}: {exc}")
            else:
                self.acked[cid] = (time.monotonic(), reply.order)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 0.03)

    async def more(self, n: int) -> None:
        target = len(self.acked) + n
        await eventually(self._reached(target), f"{n} more orders acknowledged on {self.symbol} "
                                                f"(failures: {self.failures[-3:]})")

    def _reached(self, target: int) -> Any:
        async def check() -> bool:
            return len(self.acked) >= target
        return check


async def test_oms_and_trackers_over_two_shards_through_venue_and_oms_failover(
        stack: tuple[LocalCluster, Bus]) -> None:
    cluster, bus = stack
    alice, mm1 = (AsyncNatsClient(bus, a, policy=CLIENT_POLICY) for a in ("alice", "mm1"))
    for symbol in (S1, S2):  # liquidity on each shard, through the OMS
        reply = await mm1.sell(symbol, 10_000, PRICES[symbol], tif=TimeInForce.GTC, client_order_id=f"liq-{symbol}")
        assert reply.order.status is OrderStatus.ACCEPTED, reply
    liquidity = {s: (await mm1.get_order(f"liq-{s}")).order_id or 0 for s in (S1, S2)}
    assert 0 < liquidity[S1] < ID_BLOCK < liquidity[S2]  # shard s2 numbers its ids from its block

    hit, calm = SymbolFlow(alice, S1, "h"), SymbolFlow(alice, S2, "c")
    hit.start()
    calm.start()
    try:
        await asyncio.gather(hit.more(20), calm.more(20))
        async with LeaderLog(bus, "venue.s1") as leaders:  # one shard's venue leader dies
            victim = await cluster.kill("venue", active=True, service="venue-s1", sig=signal.SIGKILL)
            t_venue = time.monotonic()
            await leaders.wait_leader(other_than=victim.name, after=t_venue - 1, timeout=10)
        await asyncio.gather(hit.more(20), calm.more(20))
        during = [at for at, _ in calm.acked.values() if t_venue <= at <= t_venue + 2.0]
        async with LeaderLog(bus, "oms") as leaders:  # then the active OMS
            first = await leaders.wait_leader()
            oms_victim = await cluster.kill("oms", active=True, sig=signal.SIGKILL)
            assert oms_victim.name == first.instance_id
            t_oms = time.monotonic()
            new = await leaders.wait_leader(other_than=oms_victim.name, after=t_oms, timeout=10)
        await asyncio.gather(hit.more(20), calm.more(20))
    finally:
        await hit.stop()
        await calm.stop()
    say(f"s1 venue killed: s2 acknowledged {len(during)} orders in the 2 s after; OMS {new.instance_id} took over; "
        f"{len(hit.acked)} + {len(calm.acked)} orders acknowledged")
    assert hit.failures == [] and calm.failures == []
    assert len(during) >= 5  # the other shard kept answering while s1 failed over

    # every acknowledged order: filled once at its shard's venue, the new OMS leader answers it as it was
    ids: Counter[int] = Counter()
    for flow in (hit, calm):
        for cid, (_, order) in flow.acked.items():
            assert order.status is OrderStatus.FILLED and order.order_id is not None, (cid, order)
            assert (order.order_id > ID_BLOCK) is (flow.symbol == S2), order
            ids[order.order_id] += 1
            view = await alice.get_order(cid)
            assert (view.order_id, view.status, view.filled_qty) == (order.order_id, OrderStatus.FILLED, 1), cid
    assert ids and all(n == 1 for n in ids.values())  # order ids are unique over both shards
    cid, (_, order) = next(iter(calm.acked.items()))  # an idempotent retry: the same order, not a new one
    again = await alice.buy(S2, 1, PRICES[S2], tif=TimeInForce.IOC, client_order_id=cid)
    assert again.order.order_id == order.order_id and again.order.status is OrderStatus.FILLED

    traded: dict[str, int] = {}
    event_seqs: dict[str, int] = {}
    for symbol, flow in ((S1, hit), (S2, calm)):
        shard = SHARD[symbol]
        journal, engine, events = await replay(cluster.nats_url, shard, id_base=(0 if shard == "s1" else ID_BLOCK))
        try:
            accepted = Counter((e.account, e.client_order_id) for e in events if isinstance(e, OrderAccepted))
            assert all(n == 1 for n in accepted.values())
            dupes = [e for e in events if isinstance(e, OrderRejected)
                     and e.reason is RejectReason.DUPLICATE_CLIENT_ORDER_ID]
            # a duplicate refusal only ever answers a resend of an order the venue took once: the deliberate
            # retry, or a request the OMS re-drove to the shard's new leader after the venue failover
            assert all(accepted[(e.account, e.client_order_id)] == 1 for e in dupes), dupes
            for c in flow.acked:
                assert accepted[("alice", c)] == 1, c
            trades = [e for e in events if isinstance(e, Trade)]
            traded[symbol] = sum(t.qty for t in trades if t.taker_account == "alice")
            assert traded[symbol] == len(flow.acked)
            event_seqs[shard] = engine.seq
        finally:
            await journal.close()

    found: list[Proc] = []

    async def oms_listed_active() -> bool:  # the new leader shows ACTIVE at its next registry heartbeat
        try:
            found.append(await cluster.active_instance("oms"))
        except ClusterError:
            return False
        return True

    await eventually(oms_listed_active, "the new OMS leader listed ACTIVE in the registry")
    oms = found[-1]

    async def oms_caught_up() -> bool:
        detail = (await readiness(oms))["detail"]
        return all(detail.get(f"applied_seq_{s}") == seq for s, seq in event_seqs.items())

    await eventually(oms_caught_up, f"the new OMS leader applied every shard's events {event_seqs}")

    keys = ("trades_applied", "positions", "state_hash", "last_seq_s1", "last_seq_s2")
    monitors = cluster.state.instances("risk")

    async def agree() -> bool:
        seen = [{k: v for k, v in (await readiness(p))["detail"].items() if k in keys} for p in monitors]
        return all(v == seen[0] for v in seen) and seen[0].get("trades_applied") == len(hit.acked) + len(calm.acked)

    await eventually(agree, "both risk monitors booked every trade of both shards, with the same state")
    positions = {p.symbol: p.qty for p in (await alice.risk()).positions}
    assert positions.get(S1) == traded[S1] and positions.get(S2) == traded[S2]
