"""SharedFeed: one bus subscription per subject; account subscribers get only their own trades and events."""

from __future__ import annotations

import asyncio
import uuid

from tradesim.bus import Delivery, open_bus, subjects
from tradesim.domain import CancelReason, OrderCanceled, Side, Trade
from tradesim.services.agents.feed import Handler, SharedFeed


def trade(seq: int, maker: str, taker: str) -> Trade:
    return Trade(seq=seq, ts=0, trade_id=seq, symbol="AAPL.SIM", price=100, qty=1, aggressor=Side.BUY,
                 maker_order_id=1, maker_account=maker, maker_client_order_id="m", maker_cum_qty=1,
                 maker_leaves_qty=0, taker_order_id=2, taker_account=taker, taker_client_order_id="t",
                 taker_cum_qty=1, taker_leaves_qty=0)


async def test_account_subscribers_see_only_their_messages_in_registration_order() -> None:
    bus = await open_bus(f"memory://feed-{uuid.uuid4().hex[:8]}")
    try:
        feed = SharedFeed(bus)
        calls: list[tuple[str, int]] = []
        reached = {("c", 2): asyncio.Event(), ("a", 3): asyncio.Event()}  # each trade's last handler

        def recorder(name: str) -> Handler:
            async def handler(d: Delivery) -> None:
                assert isinstance(d.data, Trade)
                calls.append((name, d.data.seq))
                if (name, d.data.seq) in reached:
                    reached[name, d.data.seq].set()
            return handler

        sub_b = await feed.subscribe_account(subjects.ORDERS_FILLED, "b", recorder("b"))
        await feed.subscribe(subjects.ORDERS_FILLED, recorder("all"))
        await feed.subscribe_account(subjects.ORDERS_FILLED, "a", recorder("a"))
        await feed.subscribe_account(subjects.ORDERS_FILLED, "c", recorder("c"))
        await bus.publish(subjects.ORDERS_FILLED, trade(1, "a", "b"))
        await bus.publish(subjects.ORDERS_FILLED, trade(2, "c", "c"))
        await asyncio.wait_for(reached["c", 2].wait(), 5)
        await sub_b.unsubscribe()
        await bus.publish(subjects.ORDERS_FILLED, trade(3, "b", "a"))
        await asyncio.wait_for(reached["a", 3].wait(), 5)
        assert calls == [("b", 1), ("all", 1), ("a", 1), ("all", 2), ("c", 2), ("all", 3), ("a", 3)]
        assert feed.last_trade_seq[subjects.ORDERS_FILLED] == 3

        gone: list[str] = []
        seen = asyncio.Event()

        async def on_gone(d: Delivery) -> None:
            assert isinstance(d.data, OrderCanceled)
            gone.append(d.data.client_order_id)
            seen.set()

        await feed.subscribe_account(subjects.ORDERS_CANCELLED, "a", on_gone)
        for account, cid in (("b", "x"), ("a", "y")):
            await bus.publish(subjects.ORDERS_CANCELLED, OrderCanceled(
                seq=9, ts=0, order_id=1, account=account, client_order_id=cid, symbol="AAPL.SIM",
                reason=CancelReason.USER, canceled_qty=1))
        await asyncio.wait_for(seen.wait(), 5)
        assert gone == ["y"]
    finally:
        await bus.close()
