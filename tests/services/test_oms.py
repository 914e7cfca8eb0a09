"""The OMS end to end on the memory bus: compliance → risk → venue → events → replies and queries."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from tests.services.oms_support import Harness, until
from tradesim.domain import OrderAccepted, OrderStatus, OrderType, Side, TimeInForce
from tradesim.services.alerts import AlertKind
from tradesim.services.oms.messages import (
    CancelRequest,
    GetOrderRequest,
    HoldDecision,
    ListOrdersRequest,
    ModifyRequest,
    OmsError,
    OrderReply,
    OrderRequest,
    OrdersReply,
    QuickOrder,
)

S = OrderStatus


def limit(account: str, side: Side, qty: int, price: int, cid: str = "", symbol: str = "AAPL.SIM",
          tif: TimeInForce = TimeInForce.GTC) -> OrderRequest:
    return OrderRequest(account=account, symbol=symbol, side=side, qty=qty, price=price, client_order_id=cid,
                        tif=tif)


async def order(h: Harness, req: OrderRequest) -> OrderReply:
    reply = await h.call("submit", req)
    assert isinstance(reply, OrderReply), reply
    return reply


async def get(h: Harness, account: str, cid: str) -> OrderReply:
    reply = await h.call("get_order", GetOrderRequest(account=account, client_order_id=cid))
    assert isinstance(reply, OrderReply), reply
    return reply


async def test_order_trades_and_reply_carries_the_fills() -> None:
    async with Harness() as h:
        rest = await order(h, limit("bob", Side.SELL, 100, 10000, "s1"))
        assert rest.order.status is S.ACCEPTED and rest.order.order_id == 1 and rest.trades == []
        reply = await order(h, limit("alice", Side.BUY, 100, 10000, "b1"))
        o = reply.order
        assert (o.status, o.filled_qty, o.leaves_qty, o.fill_value) == (S.FILLED, 100, 0, 1_000_000)
        assert [(t.qty, t.price, t.taker_client_order_id) for t in reply.trades] == [(100, 10000, "b1")]
        # the maker learns of its fill from the venue's events
        await until(lambda: h.oms.manager.record(("bob", "s1")).status is S.FILLED)  # type: ignore[union-attr]
        assert (await get(h, "bob", "s1")).order.fill_value == 1_000_000
        ledger = h.oms.manager.ledger
        assert ledger.position("alice", "AAPL.SIM").qty == 100
        assert ledger.account("alice").cash == Decimal(1_000_000 - 10_000)


async def test_quick_buy_and_sell() -> None:
    async with Harness() as h:
        sold = await h.call("sell", QuickOrder(account="bob", symbol="AAPL.SIM", qty=10, price=10000))
        assert isinstance(sold, OrderReply) and sold.order.status is S.ACCEPTED and sold.order.side is Side.SELL
        bought = await h.call("buy", QuickOrder(account="alice", symbol="AAPL.SIM", qty=10))
        assert isinstance(bought, OrderReply)
        assert bought.order.type is OrderType.MARKET and bought.order.status is S.FILLED
        assert bought.order.client_order_id.startswith("oms-")


async def test_compliance_reject_is_kept_and_queryable() -> None:
    async with Harness() as h:
        reply = await order(h, limit("alice", Side.BUY, 10, 5000, "r1", symbol="BANK.SIM"))
        assert reply.order.status is S.REJECTED
        assert (reply.order.reason, reply.order.message) == ("restricted_list", "BANK.SIM is on the restricted list")
        assert (await get(h, "alice", "r1")).order == reply.order
        listed = await h.call("list_orders", ListOrdersRequest(account="alice", status=S.REJECTED))
        assert isinstance(listed, OrdersReply) and [o.client_order_id for o in listed.orders] == ["r1"]
        assert h.engine.seq == 0


async def test_risk_rejects_with_the_rules_numbers() -> None:
    async with Harness() as h:
        big = await order(h, limit("alice", Side.BUY, 10_001, 10000, "q1"))
        assert (big.order.status, big.order.reason) == (S.REJECTED, "max_order_qty")
        assert big.order.message == "order qty exceeds limit: 10001 > 10000"
        band = await order(h, limit("alice", Side.BUY, 1, 11500, "q2"))
        assert band.order.message == "price 115.00 is 15.00% from reference 100.00, band 10%"
        assert h.engine.seq == 0


async def test_working_orders_reserve_buying_power() -> None:
    async with Harness() as h:
        first = await order(h, limit("dave", Side.BUY, 100, 10000, "d1"))  # 10,000 of 15,000 reserved
        assert first.order.status is S.ACCEPTED
        second = await order(h, limit("dave", Side.BUY, 100, 10000, "d2"))
        assert (second.order.status, second.order.reason) == (S.REJECTED, "buying_power")
        assert second.order.message == "buying power exceeded: cash required 10000.00 > available 5000.00"
        canceled = await h.call("cancel", CancelRequest(account="dave", client_order_id="d1"))
        assert isinstance(canceled, OrderReply) and canceled.order.status is S.CANCELED
        third = await order(h, limit("dave", Side.BUY, 100, 10000, "d3"))  # the reservation is released
        assert third.order.status is S.ACCEPTED


async def trade_day_volume(h: Harness, qty: int = 100) -> None:
    await order(h, limit("bob", Side.SELL, qty, 10000, "vol-s"))
    await order(h, limit("alice", Side.BUY, qty, 10000, "vol-b"))


async def test_hold_then_approve_executes() -> None:
    async with Harness() as h:
        await order(h, limit("bob", Side.SELL, 60, 10010, "s2"))  # before any volume: not held
        await trade_day_volume(h)
        held = await order(h, limit("alice", Side.BUY, 60, 10010, "big"))
        assert (held.order.status, held.order.hold_id, held.order.reason) == (S.HELD, "H1", "pct_of_day_volume")
        assert h.accepted("big") == 0
        approved = await h.call("approve", HoldDecision(hold_id="H1", user="risk-officer"))
        assert isinstance(approved, OrderReply)
        assert (approved.order.status, approved.order.filled_qty) == (S.FILLED, 60)
        assert [t.qty for t in approved.trades] == [60]
        again = await h.call("approve", HoldDecision(hold_id="H1", user="risk-officer"))
        assert isinstance(again, OmsError) and again.error == "hold_already_decided"


async def test_hold_then_reject() -> None:
    async with Harness() as h:
        await trade_day_volume(h)
        held = await order(h, limit("alice", Side.BUY, 60, 10000, "big"))
        assert held.order.status is S.HELD
        rejected = await h.call("reject_held", HoldDecision(hold_id="H1", user="cco", reason="too large"))
        assert isinstance(rejected, OrderReply)
        assert (rejected.order.status, rejected.order.reason) == (S.REJECTED, "hold_rejected")
        assert rejected.order.message == "held order rejected by cco: too large"
        unknown = await h.call("approve", HoldDecision(hold_id="H9", user="cco"))
        assert isinstance(unknown, OmsError) and unknown.error == "unknown_hold"
        late = await h.call("approve", HoldDecision(hold_id="H1", user="cco"))
        assert isinstance(late, OmsError) and late.error == "hold_already_decided"
        assert h.accepted("big") == 0


async def test_retry_of_a_known_client_order_id_executes_once() -> None:
    async with Harness() as h:
        await order(h, limit("bob", Side.SELL, 100, 10000, "s1"))
        req = limit("alice", Side.BUY, 30, 10000, "x1")
        replies = await asyncio.gather(*(h.call("submit", req) for _ in range(3)))
        again = await h.call("submit", req)
        assert all(r == replies[0] for r in [*replies, again])
        assert isinstance(again, OrderReply) and again.order.status is S.FILLED and len(again.trades) == 1
        await until(lambda: h.accepted("x1") >= 1)
        assert h.accepted("x1") == 1
        bob = h.engine.order_by_client("bob", "s1")
        assert bob is not None and bob.leaves_qty == 70
        clash = await h.call("submit", limit("alice", Side.BUY, 31, 10000, "x1"))
        assert isinstance(clash, OmsError) and clash.error == "duplicate_client_order_id"


async def test_modify_and_cancel_go_through_pending_states() -> None:
    async with Harness(venue="mini") as h:  # a venue slow to execute: the PENDING states show
        await order(h, limit("alice", Side.BUY, 100, 9900, "m1"))
        h.venue.process_delay = 0.2
        task = asyncio.create_task(h.call("modify", ModifyRequest(account="alice", client_order_id="m1",
                                                                  price=9950, qty=80)))
        await asyncio.sleep(0.02)
        assert (await get(h, "alice", "m1")).order.status is S.PENDING_MODIFY
        modified = await task
        assert isinstance(modified, OrderReply)
        assert (modified.order.status, modified.order.price, modified.order.qty) == (S.ACCEPTED, 9950, 80)
        task = asyncio.create_task(h.call("cancel", CancelRequest(account="alice", client_order_id="m1")))
        await asyncio.sleep(0.02)
        assert (await get(h, "alice", "m1")).order.status is S.PENDING_CANCEL
        canceled = await task
        assert isinstance(canceled, OrderReply)
        assert (canceled.order.status, canceled.order.leaves_qty, canceled.order.reason) == (S.CANCELED, 0, "user")
        h.venue.process_delay = 0
        again = await h.call("cancel", CancelRequest(account="alice", order_id=canceled.order.order_id))
        assert again == canceled  # cancelling a finished order answers its final state
        closed = await h.call("modify", ModifyRequest(account="alice", client_order_id="m1", qty=50))
        assert isinstance(closed, OmsError) and closed.error == "order_closed"


async def test_a_retried_modify_or_cancel_while_the_first_is_at_the_venue_gets_its_answer() -> None:
    """A client that timed out and sends the same change again is answered as the first one (the
    change runs once); a different change meanwhile is still refused as order_pending."""
    async with Harness(venue="mini") as h:
        await order(h, limit("alice", Side.BUY, 100, 9900, "r1"))
        h.venue.process_delay = 0.2
        change = ModifyRequest(account="alice", client_order_id="r1", price=9950, qty=80)
        first = asyncio.create_task(h.call("modify", change))
        await asyncio.sleep(0.02)
        retrying = asyncio.create_task(h.call("modify", change))
        other = await h.call("modify", ModifyRequest(account="alice", client_order_id="r1", price=9960))
        assert isinstance(other, OmsError) and other.error == "order_pending"
        retry = await retrying
        assert retry == await first
        assert isinstance(retry, OrderReply)
        assert (retry.order.status, retry.order.price, retry.order.qty) == (S.ACCEPTED, 9950, 80)
        assert [type(c).__name__ for c in h.venue.commands].count("ModifyOrder") == 1
        cancel = CancelRequest(account="alice", client_order_id="r1")
        first = asyncio.create_task(h.call("cancel", cancel))
        await asyncio.sleep(0.02)
        retried = await h.call("cancel", cancel)
        assert retried == await first
        assert isinstance(retried, OrderReply) and retried.order.status is S.CANCELED
        assert [type(c).__name__ for c in h.venue.commands].count("CancelOrder") == 1


async def test_resting_order_filled_later_by_another_account() -> None:
    async with Harness() as h:
        await order(h, limit("alice", Side.BUY, 100, 10000, "rest"))
        await order(h, limit("bob", Side.SELL, 40, 9990, "hit1"))
        await until(lambda: h.oms.manager.record(("alice", "rest")).filled_qty == 40)  # type: ignore[union-attr]
        partial = (await get(h, "alice", "rest")).order
        assert (partial.status, partial.leaves_qty, partial.fill_value) == (S.PARTIALLY_FILLED, 60, 400_000)
        await order(h, limit("bob", Side.SELL, 60, 10000, "hit2"))
        await until(lambda: h.oms.manager.record(("alice", "rest")).status is S.FILLED)  # type: ignore[union-attr]
        done = (await get(h, "alice", "rest")).order
        assert (done.filled_qty, done.leaves_qty, done.fill_value) == (100, 0, 1_000_000)


async def test_stuck_order_is_reported_and_recovered_when_the_reply_is_late() -> None:
    async with Harness(stuck_after=0.1, request_timeout=2.0, venue="mini") as h:
        h.venue.process_delay = 0.5
        reply = await order(h, limit("alice", Side.BUY, 10, 9900, "slow"))
        assert reply.order.status is S.ACCEPTED
        await until(lambda: [a.alert for a in h.alerts] == [AlertKind.ORDER_STUCK, AlertKind.ORDER_RECOVERED])
        assert {a.client_order_id for a in h.alerts} == {"slow"}
        assert h.alerts[1].figures["status"] == "accepted"
        # a resend during recovery is refused by the venue as a duplicate: executed once
        accepted = [e for e in h.venue.events if isinstance(e, OrderAccepted)]
        assert [e.client_order_id for e in accepted] == ["slow"]
        assert (await get(h, "alice", "slow")).order.status is S.ACCEPTED


async def test_stuck_order_never_answered_is_resent_once_and_recovered() -> None:
    async with Harness(stuck_after=0.3, request_timeout=0.1, venue="mini") as h:
        h.venue.swallow = 1
        reply = await order(h, limit("alice", Side.BUY, 10, 9900, "lost"))
        assert reply.order.status is S.PENDING_NEW  # the venue may or may not have it: kept pending
        await until(lambda: AlertKind.ORDER_RECOVERED in [a.alert for a in h.alerts])
        assert [a.alert for a in h.alerts] == [AlertKind.ORDER_STUCK, AlertKind.ORDER_RECOVERED]
        assert (await get(h, "alice", "lost")).order.status is S.ACCEPTED
        assert [c.client_order_id for c in h.venue.commands] == ["lost"]


async def test_venue_not_listening_rejects_venue_unavailable() -> None:
    async with Harness(venue="none") as h:
        reply = await order(h, limit("alice", Side.BUY, 10, 9900, "nv"))
        assert (reply.order.status, reply.order.reason) == (S.REJECTED, "venue_unavailable")


@pytest.mark.parametrize(
    ("method", "req", "code"),
    [
        ("submit", limit("mallory", Side.BUY, 10, 10000), "unknown_account"),
        ("submit", limit("alice", Side.BUY, 10, 10000, symbol="NOPE.SIM"), "unknown_symbol"),
        ("submit", limit("alice", Side.BUY, 0, 10000), "bad_qty"),
        ("submit", limit("alice", Side.BUY, -5, 10000), "bad_qty"),
        ("submit", OrderRequest(account="alice", symbol="AAPL.SIM", side=Side.BUY, qty=1), "bad_price"),
        ("submit", CancelRequest(account="alice", client_order_id="x"), "bad_request"),
        ("buy", OrderRequest(account="alice", symbol="AAPL.SIM", side=Side.BUY, qty=1), "bad_request"),
        ("cancel", CancelRequest(account="alice", client_order_id="nope"), "unknown_order"),
        ("modify", ModifyRequest(account="alice", client_order_id="nope", qty=1), "unknown_order"),
        ("get_order", GetOrderRequest(account="alice", order_id=42), "unknown_order"),
        ("list_orders", ListOrdersRequest(limit=0), "bad_request"),
    ],
)
async def test_bad_input_is_refused_with_a_code_and_changes_nothing(method: str, req: OrderRequest,
                                                                    code: str) -> None:
    async with Harness() as h:
        before = h.oms.manager.snapshot()
        reply = await h.call(method, req)
        assert isinstance(reply, OmsError) and reply.error == code, reply
        assert h.oms.manager.snapshot() == before
        assert h.engine.seq == 0
