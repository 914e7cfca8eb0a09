"""The OMS on the bus: serves `rpc.oms.*`, routes to `rpc.venue.*`, follows the venue's event subjects,
persists through an `OrderStore`, and surfaces (then recovers) requests the venue leaves unanswered.

All decisions live in `OrderManager` (pure); this shell only does I/O around it. Up to `concurrency`
requests per RPC run at once (the bus's `serve(concurrency=)`), all on one event loop: the manager is
only touched between awaits, so no locks are needed.

Persistence is a group commit off the hot path: changes accumulate in the manager, one flusher task
takes them as a batch (encoded on the loop), writes it in one transaction (in a thread for SQLite), and
wakes the requests that wait for durability — a new order is routed, and a refusal or hold answered,
only once its record is committed. Event-driven changes are written too but nobody waits for them:
the venue journal has them, and a replay restores them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Final, TypeVar

import msgspec

from tradesim.bus import Bus, BusError, Delivery, NoRespondersError, Subscription, register, subjects
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
    OrderTriggered,
    Side,
    Trade,
)
from tradesim.services.alerts import AlertKind, RiskAlert, Severity
from tradesim.services.compliance import ComplianceConfig
from tradesim.services.oms import errors as E
from tradesim.services.oms.algo_desk import AlgoDesk
from tradesim.services.oms.errors import OmsRequestError
from tradesim.services.oms.manager import AccountConfig, AccountCounts, Dirty, OmsState, OrderManager, Outcome
from tradesim.services.oms.messages import (
    OMS_MESSAGES,
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
from tradesim.services.oms.parents import ParentStore
from tradesim.services.oms.records import Key, OrderRecord
from tradesim.services.oms.store import Batch, MemoryOrderStore, OrderStore, encode_batch
from tradesim.services.risk import RiskConfig
from tradesim.services.venue.messages import VENUE_MESSAGES, OrderStatusReply, OrderStatusRequest, VenueReply

log = logging.getLogger("tradesim.oms")

register(*OMS_MESSAGES, *VENUE_MESSAGES, RiskAlert)

EVENT_TYPES: Final = (OrderAccepted, OrderRejected, Trade, OrderCanceled, OrderModified, OrderTriggered,
                      OrderExpired)
VENUE_EVENTS: Final = subjects.ORDERS_ALL
"""`orders.*`: new, modified, triggered, cancelled, rejected, filled — every order event in venue order."""

Reply = OrderReply | OrdersReply | OmsError
_T = TypeVar("_T", bound=msgspec.Struct)


class OmsService:
    """OrderManagementService: `start()` loads the store and serves; `stop()` flushes and leaves."""

    def __init__(
        self,
        bus: Bus,
        instruments: Iterable[Instrument],
        accounts: Mapping[str, AccountConfig],
        risk: RiskConfig,
        compliance: ComplianceConfig,
        *,
        clock: Callable[[], int] = time.time_ns,
        request_timeout: float = 2.0,
        stuck_after: float = 5.0,
        store: OrderStore | None = None,
        reference_prices: Mapping[str, int] | None = None,
        concurrency: int = 16,
        venue: str = "venue",
        parent_store: ParentStore | None = None,
        flush_linger: float = 0.005,
    ) -> None:
        if request_timeout <= 0 or stuck_after <= 0 or concurrency < 1:
            raise ValueError("request_timeout and stuck_after must be positive, concurrency at least 1")
        self.bus = bus
        self.manager = OrderManager(instruments, accounts, risk, compliance, reference_prices=reference_prices)
        self.clock = clock
        self.request_timeout = request_timeout
        self.stuck_after = stuck_after
        self.store: OrderStore = store if store is not None else MemoryOrderStore()
        self.concurrency = concurrency
        self._venue = venue
        self._subs: list[Subscription] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._recovering: set[Key] = set()
        self._inflight: dict[Key, asyncio.Future[OrderReply]] = {}
        self._seq_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._watchdog: asyncio.Task[None] | None = None
        # Group commit: batches taken / written so far, and the requests waiting for a batch number.
        self._taken = 0
        self._written = 0
        self._durable_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._writing = False  # a batch is being written (in the thread): requests join the next one
        self._kick: asyncio.TimerHandle | None = None
        self.flush_linger = flush_linger  # event-driven changes wait this long to share a transaction
        self._executor: ThreadPoolExecutor | None = None
        self.algos = AlgoDesk(self, parent_store)  # algo parents: docs/algos.md

    # ---- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the store, follow the venue's events, serve the RPCs, watch for stuck requests."""
        snapshot = self.store.load()
        if snapshot is not None:
            self.manager.restore(snapshot)
        self._subs.append(await self.bus.subscribe(VENUE_EVENTS, self._on_event))
        methods: dict[str, Callable[[msgspec.Struct], Awaitable[Reply]]] = {
            "submit": self._submit, "buy": self._buy, "sell": self._sell, "cancel": self._cancel,
            "modify": self._modify, "get_order": self._get_order, "list_orders": self._list_orders,
            "approve": self._approve, "reject_held": self._reject_held,
        }
        for method, handler in methods.items():
            self._subs.append(await self.bus.serve(subjects.rpc("oms", method), self._guard(handler),
                                                   concurrency=self.concurrency))
        self._subs.extend(await self.algos.start())
        self._watchdog = asyncio.create_task(self._watch(), name="oms-watchdog")

    async def stop(self) -> None:
        for sub in self._subs:
            with contextlib.suppress(BusError):
                await sub.unsubscribe()
        self._subs.clear()
        tasks = [*self._tasks, *([self._watchdog] if self._watchdog else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._watchdog = None
        await self.algos.stop()
        if self._kick is not None:
            self._kick.cancel()
            self._kick = None
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        self.store.write(encode_batch(*_parts(self.manager.take_dirty(checkpoint=True))))  # a checkpoint
        self._taken += 1
        self._wake_durable(self._taken, None)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def feed(self, events: Iterable[Event]) -> None:
        """The runtime's way in for venue events the OMS missed while down (any order, duplicates fine)."""
        self._offer(events)

    # ---- RPC handlers -----------------------------------------------------------------------------

    def _guard(self, handler: Callable[[msgspec.Struct], Awaitable[Reply]]) -> Callable[
            [msgspec.Struct], Awaitable[msgspec.Struct]]:
        """Refusals become OmsError with their code; a bug becomes `internal`, never a silent drop."""
        async def serve(req: msgspec.Struct) -> msgspec.Struct:
            try:
                return await handler(req)
            except OmsRequestError as exc:
                self._flush()
                return OmsError(error=exc.code, message=exc.message)
            except Exception as exc:
                log.exception("oms request failed: %r", req)
                return OmsError(error=E.INTERNAL, message=f"{type(exc).__name__}: {exc}")
        return serve

    async def _submit(self, req: msgspec.Struct) -> Reply:
        order = _expect(req, OrderRequest)
        if order.parent_id:  # an algo child: the parent's over-fill guard first
            return await self._new(order, lambda r: self.algos.decide_child(r, self.clock()))
        return await self._new(order, lambda r: self.manager.submit(r, self.clock()))

    async def _buy(self, req: msgspec.Struct) -> Reply:
        return await self._new(_expect(req, QuickOrder), lambda r: self.manager.quick(r, Side.BUY, self.clock()))

    async def _sell(self, req: msgspec.Struct) -> Reply:
        return await self._new(_expect(req, QuickOrder), lambda r: self.manager.quick(r, Side.SELL, self.clock()))

    async def _approve(self, req: msgspec.Struct) -> Reply:
        return await self._new(_expect(req, HoldDecision), lambda r: self.manager.approve(r, self.clock()))

    async def _reject_held(self, req: msgspec.Struct) -> Reply:
        outcome = self.manager.reject_held(_expect(req, HoldDecision), self.clock())
        await self._durable()
        return OrderReply(order=outcome.record.view())

    async def _new(self, req: _T, decide: Callable[[_T], Outcome]) -> Reply:
        """Decide, persist, route, and answer once the venue answered and the state reflects it."""
        outcome = decide(req)
        record = outcome.record
        if outcome.existing:
            inflight = self._inflight.get(record.key)
            if inflight is not None:
                return await asyncio.shield(inflight)
            return OrderReply(order=record.view(), trades=list(record.fills))
        if outcome.route is None:
            await self._durable()  # a refused or held order survives a restart once answered
            return OrderReply(order=record.view())
        future: asyncio.Future[OrderReply] = asyncio.get_running_loop().create_future()
        self._inflight[record.key] = future
        try:
            trades, _ = await self._route(record, outcome.route)
            reply = OrderReply(order=record.view(), trades=trades)
            future.set_result(reply)
            return reply
        finally:
            if not future.done():
                future.cancel()
            self._inflight.pop(record.key, None)

    async def _cancel(self, req: msgspec.Struct) -> Reply:
        return await self._change(self.manager.cancel(_expect(req, CancelRequest), self.clock()))

    async def _modify(self, req: msgspec.Struct) -> Reply:
        return await self._change(self.manager.modify(_expect(req, ModifyRequest), self.clock()))

    async def _change(self, outcome: Outcome) -> Reply:
        record = outcome.record
        if outcome.route is None:
            await self._durable()  # a refused or held order survives a restart once answered
            return OrderReply(order=record.view())
        trades, delivered = await self._route(record, outcome.route)
        if not delivered:
            return OmsError(error=E.VENUE_UNAVAILABLE, message=f"the venue could not be reached; order "
                                                               f"{record.client_order_id} is unchanged")
        return OrderReply(order=record.view(), trades=trades)

    async def _get_order(self, req: msgspec.Struct) -> Reply:
        return OrderReply(order=self.manager.get(_expect(req, GetOrderRequest)).view())

    async def _list_orders(self, req: msgspec.Struct) -> Reply:
        records, total = self.manager.list_orders(_expect(req, ListOrdersRequest))
        return OrdersReply(orders=[r.view() for r in records], total=total)

    # ---- the venue --------------------------------------------------------------------------------

    def _subject(self, command: NewOrder | CancelOrder | ModifyOrder) -> str:
        method = "submit" if isinstance(command, NewOrder) else "cancel" if isinstance(command, CancelOrder) \
            else "modify"
        return subjects.rpc(self._venue, method)

    async def _route(self, record: OrderRecord, command: NewOrder | CancelOrder | ModifyOrder) -> tuple[
            list[Trade], bool]:
        """Send `command` (after persisting the record); returns the trades it made for this order and
        False only when the venue provably never got it. A timeout leaves the request pending: the
        watchdog recovers it."""
        await self._durable()  # the venue never holds an order the OMS could forget
        try:
            reply = await self.bus.request(self._subject(command), command, timeout=self.request_timeout)
        except NoRespondersError:
            self.manager.not_delivered(record.key, self.clock())
            await self._durable()
            return [], False
        except (BusError, TimeoutError) as exc:
            log.warning("venue did not answer %s for %s: %s; left pending", type(command).__name__,
                        record.key, exc)
            return [], True
        if not isinstance(reply, VenueReply):
            log.error("venue answered %s with %r; left pending", type(command).__name__, reply)
            return [], True
        self._offer(reply.events)
        await self._wait_seq(reply.seq)
        return [e for e in reply.events if isinstance(e, Trade) and _touches(e, record.key)], True

    async def _on_event(self, d: Delivery) -> None:
        if isinstance(d.data, EVENT_TYPES):
            self._offer([d.data])

    def _offer(self, events: Iterable[Event]) -> None:
        due = self.manager.on_events(events)
        if not due:
            return
        self.algos.book.on_events(due)
        self._flush()
        applied = self.manager.applied_seq
        still = []
        for seq, fut in self._seq_waiters:
            if seq <= applied:
                if not fut.done():
                    fut.set_result(None)
            else:
                still.append((seq, fut))
        self._seq_waiters = still

    async def _wait_seq(self, seq: int) -> bool:
        """Until the events up to `seq` are applied (they may still be on their way on the subjects)."""
        if self.manager.applied_seq >= seq:
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._seq_waiters.append((seq, fut))
        try:
            await asyncio.wait_for(fut, self.request_timeout)
            return True
        except TimeoutError:
            log.warning("venue events up to seq %d not seen (applied %d, gap %s)", seq,
                        self.manager.applied_seq, self.manager.sequencer.gap)
            return False

    def _flush(self) -> None:
        """Have the changes written within `flush_linger` (nobody waits for them, so they may gather
        into one transaction); the parents' own store is written now."""
        self.algos.flush()
        if self.manager.dirty and self._kick is None and not self._writing:
            self._kick = asyncio.get_running_loop().call_later(self.flush_linger, self._start_flusher)

    def _start_flusher(self) -> None:
        self._kick = None
        if self.manager.dirty and not self._writing and (self._flusher is None or self._flusher.done()):
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop(), name="oms-flush")

    async def _durable(self) -> None:
        """Until every change made so far is committed (the batch being written, or the next one)."""
        target = self._taken + (1 if self.manager.dirty else 0)
        if self._written >= target:
            return
        if not self._writing:
            # Nothing being written: write now, inline (a hop to the thread would only add latency).
            # Under load a batch is usually in flight, and the request joins the next one instead.
            self.algos.flush()
            self._write_batch(self.store.write)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._durable_waiters.append((target, fut))
        self._flush()
        await fut

    async def _flush_loop(self) -> None:
        """Group commit: one batch at a time, each with everything that changed while the last was written."""
        loop = asyncio.get_running_loop()
        while self.manager.dirty:
            batch = encode_batch(*_parts(self.manager.take_dirty()))
            self._taken += 1
            gen = self._taken
            error: BaseException | None = None
            self._writing = True
            try:
                if self.store.threaded:
                    if self._executor is None:
                        self._executor = ThreadPoolExecutor(1, thread_name_prefix="oms-store")
                    await loop.run_in_executor(self._executor, self.store.write, batch)
                else:
                    self.store.write(batch)
            except Exception as exc:
                log.exception("oms store write failed")
                error = exc
            finally:
                self._writing = False
            self._wake_durable(gen, error)
            self.algos.flush()

    def _write_batch(self, write: Callable[[Batch], None]) -> None:
        """Take and write a batch on the loop's thread (the flusher must be idle)."""
        batch = encode_batch(*_parts(self.manager.take_dirty()))
        self._taken += 1
        try:
            write(batch)
        except Exception as exc:
            log.exception("oms store write failed")
            self._wake_durable(self._taken, exc)
            raise
        self._wake_durable(self._taken, None)

    def _wake_durable(self, gen: int, error: BaseException | None) -> None:
        self._written = max(self._written, gen)
        still = []
        for target, fut in self._durable_waiters:
            if target <= gen:
                if not fut.done():
                    if error is None:
                        fut.set_result(None)
                    else:
                        fut.set_exception(error)
            else:
                still.append((target, fut))
        self._durable_waiters = still

    # ---- stuck requests ---------------------------------------------------------------------------

    async def _watch(self) -> None:
        interval = max(self.stuck_after / 4, 0.005)
        after_ns = int(self.stuck_after * 1e9)
        while True:
            await asyncio.sleep(interval)
            try:
                for record in self.manager.stuck(self.clock(), after_ns):
                    await self._alert(AlertKind.ORDER_STUCK, Severity.WARNING, record,
                                      f"order {record.client_order_id} {record.status.value} for more than "
                                      f"{self.stuck_after:g} s: asking the venue")
                    self._spawn_recovery(record.key)
                for record in self.manager.pending_records():
                    if record.stuck and record.key not in self._recovering:
                        self._spawn_recovery(record.key)
                self._flush()
            except Exception:
                log.exception("oms watchdog")

    def _spawn_recovery(self, key: Key) -> None:
        if key in self._recovering:
            return
        self._recovering.add(key)
        task = asyncio.create_task(self._recover(key), name=f"oms-recover-{key[0]}-{key[1]}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _recover(self, key: Key) -> None:
        """Ask the venue what it has, catch up on its events, and resend the unanswered request if it is
        still unanswered (the venue refuses a duplicate client_order_id, so a resend never executes twice)."""
        try:
            while not self.manager.recovered(key):
                status = await self._ask_status(key)
                if status is not None and await self._wait_seq(status.seq) and self.manager.recovered(key):
                    break
                command = self.manager.pending_command(key, self.clock())
                if command is None:
                    continue
                try:
                    reply = await self.bus.request(self._subject(command), command, timeout=self.request_timeout)
                except (BusError, TimeoutError) as exc:
                    log.warning("recovery of %s: resend failed: %s", key, exc)
                    await asyncio.sleep(self.stuck_after)
                    continue
                if isinstance(reply, VenueReply):
                    self._offer(reply.events)
                    await self._wait_seq(reply.seq)
            record = self.manager.record(key)
            self._flush()
            if record is not None:
                await self._alert(AlertKind.ORDER_RECOVERED, Severity.INFO, record,
                                  f"order {record.client_order_id} recovered: {record.status.value}")
        finally:
            self._recovering.discard(key)

    async def _ask_status(self, key: Key) -> OrderStatusReply | None:
        try:
            reply = await self.bus.request(subjects.rpc(self._venue, "order_status"),
                                           OrderStatusRequest(account=key[0], client_order_id=key[1]),
                                           timeout=self.request_timeout)
        except (BusError, TimeoutError) as exc:
            log.warning("recovery of %s: order_status failed: %s", key, exc)
            return None
        return reply if isinstance(reply, OrderStatusReply) else None

    async def _alert(self, kind: AlertKind, severity: Severity, record: OrderRecord, message: str) -> None:
        alert = RiskAlert(
            ts=self.clock(), alert=kind, severity=severity, account=record.account, message=message,
            symbol=record.symbol, client_order_id=record.client_order_id,
            figures={"status": record.status.value, "filled_qty": str(record.filled_qty),
                     "leaves_qty": str(record.leaves_qty)},
        )
        try:
            await self.bus.publish(subjects.RISK_ALERTS, alert)
        except BusError:
            log.exception("could not publish %s", kind)


def _expect(req: msgspec.Struct, tp: type[_T]) -> _T:
    if not isinstance(req, tp):
        raise OmsRequestError(E.BAD_REQUEST, f"expected {tp.__name__}, got {type(req).__name__}")
    return req


def _parts(d: Dirty) -> tuple[list[OrderRecord], list[AccountCounts], OmsState | None]:
    return d.records, d.accounts, d.checkpoint


def _touches(trade: Trade, key: Key) -> bool:
    return key in ((trade.maker_account, trade.maker_client_order_id),
                   (trade.taker_account, trade.taker_client_order_id))
