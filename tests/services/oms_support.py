"""OMS test support: a harness on a private memory bus with the real VenueService (journal in a temp dir)
or `MiniVenue`, a minimal venue whose knobs delay or swallow requests (stuck orders, timeouts).

MiniVenue runs a real MatchingEngine behind `rpc.venue.*`, publishes each command's events on the venue's
subjects in seq order, then replies with a `VenueReply`.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import Iterable
from decimal import Decimal
from typing import Literal

import msgspec

from tradesim.bus import Bus, Delivery, Subscription, open_bus, register, subjects
from tradesim.domain import (
    CancelOrder,
    Event,
    Instrument,
    ModifyOrder,
    NewOrder,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderModified,
    OrderRejected,
    OrderStatus,
    OrderTriggered,
    Trade,
)
from tradesim.engine import MatchingEngine
from tradesim.services.alerts import RiskAlert
from tradesim.services.compliance import parse_compliance_config
from tradesim.services.oms import OmsService, OrderStore
from tradesim.services.oms.service import EVENT_TYPES
from tradesim.services.risk import parse_risk_config
from tradesim.services.venue.messages import VENUE_MESSAGES, OrderStatusReply, OrderStatusRequest, VenueReply
from tradesim.services.venue.service import VenueService
from tradesim.store import Journal, open_journal

register(*VENUE_MESSAGES, RiskAlert)

AAPL = Instrument(symbol="AAPL.SIM", tick_size=Decimal("0.01"), flags=frozenset({"shortable"}))
BANK = Instrument(symbol="BANK.SIM", tick_size=Decimal("0.01"))
INSTRUMENTS = [AAPL, BANK]
ACCOUNTS = {
    "alice": (Decimal(1_000_000), "cash", "USD"),
    "bob": (Decimal(1_000_000), "cash", "USD"),
    "dave": (Decimal(15_000), "cash", "USD"),
}
RISK = parse_risk_config("""
[defaults]
max_order_qty = 10_000
price_band = 0.10
max_pct_day_volume = 50
min_day_volume = 100
""")
COMPLIANCE = parse_compliance_config("""
default_packs = ["standard"]
[packs.standard]
restricted = ["BANK.SIM"]
""")
REFERENCE = {"AAPL.SIM": 10000, "BANK.SIM": 5000}

_SUBJECT = {
    OrderAccepted: subjects.ORDERS_NEW, OrderModified: "orders.modified", OrderTriggered: "orders.triggered",
    OrderCanceled: subjects.ORDERS_CANCELLED, OrderExpired: subjects.ORDERS_CANCELLED,
    OrderRejected: subjects.ORDERS_REJECTED, Trade: subjects.ORDERS_FILLED,
}


class MiniVenue:
    """`rpc.venue.submit|cancel|modify|order_status` over one engine; one request at a time per server."""

    def __init__(self, bus: Bus, instruments: Iterable[Instrument]) -> None:
        self.bus = bus
        self.engine = MatchingEngine(instruments)
        self.commands: list[NewOrder | CancelOrder | ModifyOrder] = []
        self.events: list[Event] = []
        self.process_delay = 0.0  # seconds before a command is executed
        self.reply_delay = 0.0  # seconds between publishing the events and replying
        self.swallow = 0  # the next N commands are neither executed nor answered
        self._subs: list[Subscription] = []
        self._lock = asyncio.Lock()

    async def start(self, servers: int = 4) -> None:
        for method in ("submit", "cancel", "modify"):
            for _ in range(servers):
                self._subs.append(await self.bus.serve(subjects.rpc("venue", method), self._command))
        self._subs.append(await self.bus.serve(subjects.rpc("venue", "order_status"), self._status))

    async def stop(self) -> None:
        for sub in self._subs:
            await sub.unsubscribe()
        self._subs.clear()

    async def _command(self, req: msgspec.Struct) -> msgspec.Struct:
        assert isinstance(req, NewOrder | CancelOrder | ModifyOrder)
        if self.swallow:
            self.swallow -= 1
            await asyncio.sleep(3600)
        if self.process_delay:
            await asyncio.sleep(self.process_delay)
        async with self._lock:
            self.commands.append(req)
            events = self.engine.apply(req)
            self.events.extend(events)
            for event in events:
                await self.bus.publish(_SUBJECT[type(event)], event)
            reply = VenueReply(events=events, seq=self.engine.seq, journal_seq=len(self.commands))
        if self.reply_delay:
            await asyncio.sleep(self.reply_delay)
        return reply

    async def _status(self, req: msgspec.Struct) -> msgspec.Struct:
        assert isinstance(req, OrderStatusRequest)
        order = self.engine.order_by_client(req.account, req.client_order_id)
        if order is None:
            return OrderStatusReply(found=False, seq=self.engine.seq)
        return OrderStatusReply(found=True, seq=self.engine.seq, order_id=order.order_id,
                                status=OrderStatus(order.status.value), price=order.price, qty=order.qty,
                                filled_qty=order.filled_qty, leaves_qty=order.leaves_qty)


class Harness:
    """A private memory bus with a MiniVenue, an OmsService and a client connection."""

    def __init__(self, *, stuck_after: float = 5.0, request_timeout: float = 2.0,
                 store: OrderStore | None = None, venue: Literal["real", "mini", "none"] = "real") -> None:
        self.url = f"memory://oms-{uuid.uuid4().hex}"
        self.stuck_after, self.request_timeout, self.store, self.venue_kind = (
            stuck_after, request_timeout, store, venue)
        self.alerts: list[RiskAlert] = []
        self.events: list[Event] = []
        self.real: VenueService | None = None
        self._journal: Journal | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def engine(self) -> MatchingEngine:
        """The engine of whichever venue runs (to check what reached it)."""
        return self.real.engine if self.real is not None else self.venue.engine

    def accepted(self, cid: str) -> int:
        """How many times the venue accepted an order named `cid` (seen on the bus)."""
        return sum(1 for e in self.events if isinstance(e, OrderAccepted) and e.client_order_id == cid)

    async def __aenter__(self) -> Harness:
        self.server_bus = await open_bus(self.url)
        self.client = await open_bus(self.url)
        self.venue = MiniVenue(self.server_bus, INSTRUMENTS)
        if self.venue_kind == "mini":
            await self.venue.start()
        elif self.venue_kind == "real":
            self._dir = tempfile.TemporaryDirectory()
            self._journal = await open_journal(self._dir.name, synchronous="OFF", linger=0.0)
            self.real = VenueService(self.server_bus, self._journal, INSTRUMENTS)
            await self.real.start()

        async def on_event(d: Delivery) -> None:
            if isinstance(d.data, EVENT_TYPES):
                self.events.append(d.data)

        await self.client.subscribe(subjects.ORDERS_ALL, on_event)

        async def on_alert(d: object) -> None:
            data = getattr(d, "data", None)
            if isinstance(data, RiskAlert):
                self.alerts.append(data)

        await self.client.subscribe(subjects.RISK_ALERTS, on_alert)
        self.oms = self.new_oms()
        await self.oms.start()
        return self

    def new_oms(self) -> OmsService:
        return OmsService(self.server_bus, INSTRUMENTS, ACCOUNTS, RISK, COMPLIANCE, store=self.store,
                          reference_prices=REFERENCE, stuck_after=self.stuck_after,
                          request_timeout=self.request_timeout)

    async def __aexit__(self, *exc: object) -> None:
        await self.oms.stop()
        await self.venue.stop()
        if self.real is not None:
            await self.real.stop()
        if self._journal is not None:
            await self._journal.close()
        if self._dir is not None:
            self._dir.cleanup()
        await self.client.close()
        await self.server_bus.close()

    async def call(self, method: str, req: msgspec.Struct, timeout: float = 5.0) -> msgspec.Struct:
        return await self.client.request(subjects.rpc("oms", method), req, timeout=timeout)


async def until(predicate: object, timeout: float = 3.0) -> None:
    """Polls `predicate()` (sync) until true; fails the test on timeout."""
    assert callable(predicate)
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.01)

