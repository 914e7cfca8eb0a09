"""`call_oms` (retry across failover) and the NATS client (async and blocking) against a real OMS and venue on
a private nats-server."""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import AsyncIterator

import msgspec
import pytest

from tests.services.oms_support import ACCOUNTS, COMPLIANCE, INSTRUMENTS, REFERENCE, RISK
from tests.support.nats_server import nats_server, nats_url  # noqa: F401  (fixtures)
from tradesim.bus import Bus, open_bus, subjects
from tradesim.client import AsyncNatsClient, Conflict, NatsClient, NotFound, Rejected, TransportError
from tradesim.domain import OrderStatus, Side
from tradesim.services.oms import errors as E
from tradesim.services.oms.messages import AlgoParams, OmsError, OrderReply, OrderRequest, QuickOrder
from tradesim.services.oms.rpc import OmsUnavailableError, RetryPolicy, call_oms
from tradesim.services.oms.service import OmsService
from tradesim.services.venue.service import VenueService
from tradesim.store import open_journal

FAST = RetryPolicy(timeout=0.3, deadline=1.0, backoff=0.01, max_backoff=0.05)


async def test_call_oms_retries_not_active_and_no_responders_with_one_client_order_id() -> None:
    bus = await open_bus(f"memory://rpc-{uuid.uuid4().hex}")
    seen: list[msgspec.Struct] = []

    async def flaky(req: msgspec.Struct) -> msgspec.Struct:
        seen.append(req)
        if len(seen) < 3:
            return OmsError(error=E.NOT_ACTIVE, message="standby")
        return OmsError(error=E.UNKNOWN_SYMBOL, message="no such symbol")  # a real answer: returned as is

    async def serve_later() -> None:
        await asyncio.sleep(0.1)  # no responders until then
        await bus.serve(subjects.rpc("oms", "buy"), flaky)

    task = asyncio.create_task(serve_later())
    reply = await call_oms(bus, "buy", QuickOrder(account="a", symbol="X", qty=1), policy=FAST)
    await task
    assert isinstance(reply, OmsError) and reply.error == E.UNKNOWN_SYMBOL
    assert len(seen) == 3
    cids = {getattr(r, "client_order_id", None) for r in seen}
    assert len(cids) == 1 and "" not in cids  # generated once, before the first attempt
    await bus.close()


async def test_call_oms_gives_up_at_the_deadline() -> None:
    bus = await open_bus(f"memory://rpc-{uuid.uuid4().hex}")
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(OmsUnavailableError, match=r"failed after \d+ attempt\(s\): NoRespondersError") as err:
        await call_oms(bus, "submit", OrderRequest(account="a", symbol="X", side=Side.BUY, qty=1), policy=FAST)
    assert err.value.attempts >= 3
    assert loop.time() - started < FAST.deadline + 0.5
    with pytest.raises(ValueError, match="retry policy"):
        RetryPolicy(timeout=0)
    await bus.close()


class Stack:
    """A venue and one (embedded-mode) OMS on the nats-server, under a unique OMS/venue name."""

    async def start(self, url: str) -> None:
        self.dir = tempfile.TemporaryDirectory()
        self.bus: Bus = await open_bus(url)
        self.journal = await open_journal(self.dir.name, synchronous="OFF", linger=0.0)
        self.venue = VenueService(self.bus, self.journal, INSTRUMENTS)
        await self.venue.start()
        self.oms = OmsService(self.bus, INSTRUMENTS, ACCOUNTS, RISK, COMPLIANCE, reference_prices=REFERENCE)
        await self.oms.start()

    async def stop(self) -> None:
        await self.oms.stop()
        await self.venue.stop()
        await self.journal.close()
        await self.bus.close()
        self.dir.cleanup()


@pytest.fixture
async def stack(nats_url: str) -> AsyncIterator[Stack]:  # noqa: F811
    s = Stack()
    await s.start(nats_url)
    try:
        yield s
    finally:
        await s.stop()


async def test_async_client_orders_algos_and_errors(stack: Stack, nats_url: str) -> None:  # noqa: F811
    async with await AsyncNatsClient.connect(nats_url, account="alice") as alice:
        rest = await alice.buy("AAPL.SIM", 5, "99.00")
        assert isinstance(rest, OrderReply) and rest.order.status is OrderStatus.ACCEPTED
        assert rest.order.price == 9900 and rest.order.client_order_id  # generated, so a retry is safe
        again = await alice.submit("AAPL.SIM", "buy", 5, price=9900, client_order_id=rest.order.client_order_id)
        assert again.order.order_id == rest.order.order_id  # the retry is answered from the record
        assert (await alice.get_order(rest.order.client_order_id)).status is OrderStatus.ACCEPTED
        modified = await alice.modify(rest.order.client_order_id, price="98.50", symbol="AAPL.SIM")
        assert modified.order.price == 9850
        page = await alice.list_orders(open_only=True)
        assert page.total == 1
        canceled = await alice.cancel(rest.order.client_order_id)
        assert canceled.order.status is OrderStatus.CANCELED
        with pytest.raises(Rejected) as refused:  # compliance: BANK.SIM is restricted
            await alice.buy("BANK.SIM", 1, "50.00")
        assert refused.value.error and refused.value.status == 422
        with pytest.raises(NotFound):
            await alice.get_order("never-sent")
        with pytest.raises(Conflict):  # same id, another order
            await alice.buy("AAPL.SIM", 7, "99.00", client_order_id=rest.order.client_order_id)
        with pytest.raises(TypeError):
            await alice.buy("AAPL.SIM", 1, 99.0)  # type: ignore[arg-type]
        algo = await alice.algo_order("AAPL.SIM", Side.BUY, 10, "iceberg",
                                      AlgoParams(display_qty=5, limit_price=9000))
        assert (await alice.pause_algo(algo.parent_id)).state.value == "paused"
        assert (await alice.cancel_algo(algo.parent_id)).state.value == "canceled"
        assert (await alice.algos()).total == 1
    nobody = await AsyncNatsClient.connect(nats_url, account="alice", policy=FAST)
    try:
        with pytest.raises(TransportError, match="no OMS leader answered"):
            await nobody._call("oms-nobody", "get_order", QuickOrder(account="a", symbol="X", qty=1))
    finally:
        await nobody.aclose()


async def test_blocking_client(stack: Stack, nats_url: str) -> None:  # noqa: F811
    def script() -> None:  # a plain script in another thread, while this loop runs the OMS and the venue
        with NatsClient(nats_url, account="bob") as bob:
            reply = bob.sell("AAPL.SIM", 3, "101.00", client_order_id="b-1")
            assert reply.order.status is OrderStatus.ACCEPTED
            assert bob.get_order("b-1").price == 10100
            assert "AAPL.SIM" in bob.instruments()
            assert bob.cancel("b-1").order.status is OrderStatus.CANCELED

    await asyncio.to_thread(script)
