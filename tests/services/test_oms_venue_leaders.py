"""The OMS re-drives a venue request at once when the venue shard's leadership changes (VenueLeaders).

The OMS's request_timeout here is 60 s and every client call waits at most 20 s: an order is answered in
time only if the leadership change made the OMS send it again — waiting out the timeout fails the test.
"""

from __future__ import annotations

import asyncio

import msgspec

from tests.services.oms_support import ACCOUNTS, COMPLIANCE, INSTRUMENTS, REFERENCE, RISK, Harness, until
from tradesim.bus import open_bus
from tradesim.bus.base import KeyValue
from tradesim.cluster.election import LEADERS_BUCKET, LeaderRecord
from tradesim.domain import OrderStatus, Side
from tradesim.services.oms import OmsService
from tradesim.services.oms.messages import OrderReply, OrderRequest
from tradesim.services.oms.venue_leaders import VenueLeaders

ELECTION = "venue.main"


def leader(instance_id: str, token: int = 0) -> bytes:
    return msgspec.json.encode(LeaderRecord(instance_id=instance_id, ttl=0.75, renewed_at=0.0, token=token))


class LeaderHarness(Harness):
    """The harness's MiniVenue behind a leader key the test moves, and an OMS following that key."""

    def __init__(self) -> None:
        super().__init__(venue="mini", request_timeout=60.0)
        self.revision = 0

    def new_oms(self) -> OmsService:
        return OmsService(self.server_bus, INSTRUMENTS, ACCOUNTS, RISK, COMPLIANCE, store=self.store,
                          reference_prices=REFERENCE, stuck_after=self.stuck_after,
                          request_timeout=self.request_timeout, watch_venue_leaders=True)

    async def __aenter__(self) -> LeaderHarness:
        bus = await open_bus(self.url)
        try:
            kv = await bus.kv(LEADERS_BUCKET)
            self.revision = await kv.create(ELECTION, leader("venue-1"))
        finally:
            await bus.close()
        await super().__aenter__()
        return self

    async def kv(self) -> KeyValue:
        return await self.client.kv(LEADERS_BUCKET)

    async def take_over(self, instance_id: str) -> None:
        """Another instance replaces the (stale) key: a new leadership, as after a crash."""
        self.revision = await (await self.kv()).update(ELECTION, leader(instance_id), expected_revision=self.revision)


def buy(cid: str, qty: int = 10) -> OrderRequest:
    return OrderRequest(account="alice", symbol="AAPL.SIM", side=Side.BUY, qty=qty, price=10000, client_order_id=cid)


async def test_a_request_lost_with_the_leader_is_sent_again_at_the_new_leadership() -> None:
    async with LeaderHarness() as h:
        await h.call("submit", OrderRequest(account="bob", symbol="AAPL.SIM", side=Side.SELL, qty=10,
                                            price=10000, client_order_id="s1"))
        h.venue.swallow = 1  # the leader dies with the request: never executed, never answered
        call = asyncio.create_task(h.call("submit", buy("b1"), timeout=20.0))
        await until(lambda: h.venue.swallow == 0, timeout=10.0)
        await h.take_over("venue-2")
        reply = await call
        assert isinstance(reply, OrderReply), reply
        assert reply.order.status is OrderStatus.FILLED and [t.qty for t in reply.trades] == [10]
        assert h.accepted("b1") == 1 and h.oms.redriven == 1


async def test_a_request_journaled_but_unanswered_is_answered_from_the_original_events() -> None:
    async with LeaderHarness() as h:
        await h.call("submit", OrderRequest(account="bob", symbol="AAPL.SIM", side=Side.SELL, qty=10,
                                            price=10000, client_order_id="s1"))
        h.venue.reply_delay = 3600.0  # executed and its events published, the reply never sent
        call = asyncio.create_task(h.call("submit", buy("b1"), timeout=20.0))
        await until(lambda: any(getattr(c, "client_order_id", "") == "b1" for c in h.venue.commands), timeout=10.0)
        h.venue.reply_delay = 0.0
        await h.take_over("venue-2")
        reply = await call
        assert isinstance(reply, OrderReply), reply
        # the resend was refused as a duplicate; the reply tells the original's fill
        assert reply.order.status is OrderStatus.FILLED and [t.qty for t in reply.trades] == [10]
        assert [getattr(c, "client_order_id", "") for c in h.venue.commands].count("b1") == 2
        assert h.accepted("b1") == 1 and h.oms.redriven == 1
        assert h.oms.manager.ledger.position("alice", "AAPL.SIM").qty == 10


async def test_leader_generations_count_leaderships_not_renewals() -> None:
    async with LeaderHarness() as h:
        kv = await h.kv()
        leaders = VenueLeaders(h.client, {"venue": ELECTION})
        await leaders.start()
        try:
            await until(lambda: leaders.holder("venue") == "venue-1")
            first = leaders.generation("venue")
            # renewals of that leadership (they carry its token) change nothing
            for _ in range(3):
                h.revision = await kv.update(ELECTION, leader("venue-1", token=1), expected_revision=h.revision)
            changed = asyncio.create_task(leaders.wait_changed("venue", first, 10.0))
            await asyncio.sleep(0.2)
            assert not changed.done() and leaders.generation("venue") == first
            # a restarted process under the same instance id taking the stale key over is a new leadership
            await h.take_over("venue-1")
            assert await changed
            second = leaders.generation("venue")
            assert second == first + 1 and leaders.holder("venue") == "venue-1"
            # a release ends it
            await kv.delete(ELECTION, expected_revision=h.revision)
            assert await leaders.wait_changed("venue", second, 10.0)
            assert leaders.holder("venue") is None
            assert not await leaders.wait_changed("venue", leaders.generation("venue"), 0.05)
        finally:
            await leaders.stop()
