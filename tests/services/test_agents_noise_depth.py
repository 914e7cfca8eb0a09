"""A noise trader on a SharedFeed takes only its first reference from depth, then stops listening to it.

Depth only ever sets a reference that is not there yet (ticks keep it current), so once there is one
every further depth message is a no-op for the agent: it leaves the feed, and later depth reaches only
the agents that still use it. Ticks still move its reference.
"""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

from tradesim.bus import Delivery, open_bus, subjects
from tradesim.domain import Instrument
from tradesim.services.agents.feed import SharedFeed
from tradesim.services.agents.noise import NoiseTraderAgent
from tradesim.services.marketdata.messages import Tick
from tradesim.services.venue.messages import DepthUpdate

AAPL = Instrument(symbol="AAPL.SIM", tick_size=Decimal("0.01"))


def depth(seq: int, bid: int, ask: int) -> DepthUpdate:
    return DepthUpdate(symbol=AAPL.symbol, seq=seq, ts=0, bids=[(bid, 1, 1)], asks=[(ask, 1, 1)])


async def test_first_depth_sets_the_reference_then_the_agent_leaves_the_depth_feed() -> None:
    bus = await open_bus(f"memory://noise-depth-{uuid.uuid4().hex[:8]}")
    try:
        feed = SharedFeed(bus)
        agent = NoiseTraderAgent(bus, "noise-1", AAPL.symbol, AAPL, clock=lambda: 0, seed=1, feed=feed)
        await agent.start(autorun=False)
        seen: list[tuple[int, int | None]] = []  # (message seq, the agent's reference after it)
        got = {n: asyncio.Event() for n in (2, 3)}

        async def last(d: Delivery) -> None:  # subscribed after the agent: runs after it on each message
            assert isinstance(d.data, DepthUpdate | Tick)
            seen.append((d.data.seq, agent.reference))
            if len(seen) in got:
                got[len(seen)].set()

        await feed.subscribe(subjects.market_depth(AAPL.symbol), last)
        await feed.subscribe(subjects.market_tick(AAPL.symbol), last)
        await bus.publish(subjects.market_depth(AAPL.symbol), depth(1, 100, 104))
        await bus.publish(subjects.market_depth(AAPL.symbol), depth(2, 200, 204))
        await asyncio.wait_for(got[2].wait(), 5)  # depth and ticks have a subscription each: no order between
        await bus.publish(subjects.market_tick(AAPL.symbol), Tick(
            symbol=AAPL.symbol, ts=0, seq=3, bid=None, bid_qty=0, ask=None, ask_qty=0, last=None, last_qty=0,
            volume=0, turnover=0, trades=0, reference=150))
        await asyncio.wait_for(got[3].wait(), 5)
        assert seen == [(1, 102), (2, 102), (3, 150)]  # the mid of the first depth; the tick's reference
        assert len(feed._entries[subjects.market_depth(AAPL.symbol)]) == 1  # only `last` is left
        await agent.stop()
    finally:
        await bus.close()
