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

Distributed mode (`election=`, a `SingleActive`, with a `SharedOrderStore`): only the leader serves.
A standby subscribes to no RPC subject (with no leader, callers get no-responders and retry). Once
elected, the instance fences the store with its token, rebuilds its state from the store (orders,
idempotency keys, holds, parents) and from the venue's event stream (`follow`, from the checkpoint's
stream position up to the stream's end, bounded by `catchup_timeout`), and only then serves; it resends
what the former leader routed but never saw answered (the venue refuses a duplicate client_order_id),
and sends every venue command as `Fenced(command, token)`. A request it takes while not (or no longer)
active is answered `OmsError(not_active)`; on demotion it stops serving at once. See docs/oms.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Final, TypeVar

import msgspec

from tradesim.bus import (
    Bus,
    BusError,
    Delivery,
    NoRespondersError,
    RemoteError,
    StreamError,
    Subscription,
    register,
    subjects,
)
from tradesim.cluster.election import SingleActive
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
    RejectReason,
    Side,
    Trade,
)
from tradesim.services.alerts import AlertKind, RiskAlert, Severity
from tradesim.services.compliance import ComplianceConfig
from tradesim.services.oms import errors as E
from tradesim.services.oms.algo_desk import AlgoDesk
from tradesim.services.oms.errors import OmsRequestError
from tradesim.services.oms.manager import AccountConfig, OrderManager, Outcome
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
from tradesim.services.oms.store import (
    Batch,
    MemoryOrderStore,
    OrderStore,
    SharedOrderStore,
    SharedParentStore,
    StaleLeaderError,
    encode_batch,
)
from tradesim.services.oms.venue_leaders import VenueLeaders
from tradesim.services.risk import RiskConfig
from tradesim.services.venue.messages import (
    VENUE_MESSAGES,
    Fenced,
    OrderStatusReply,
    OrderStatusRequest,
    VenueReply,
)
from tradesim.services.venue.shards import ShardMap

log = logging.getLogger("tradesim.oms")

register(*OMS_MESSAGES, *VENUE_MESSAGES, RiskAlert)

EVENT_TYPES: Final = (OrderAccepted, OrderRejected, Trade, OrderCanceled, OrderModified, OrderTriggered,
                      OrderExpired)
VENUE_EVENTS: Final = subjects.ORDERS_ALL
"""`orders.*`: new, modified, triggered, cancelled, rejected, filled — every order event in venue order."""
VENUE_STREAM: Final = "VENUE_EVENTS"
"""The venue's durable event stream (`orders.*`, `trades.*`; VenueService(event_stream=True)): what a new
leader catches up from."""

Reply = OrderReply | OrdersReply | OmsError
_T = TypeVar("_T", bound=msgspec.Struct)
_R = TypeVar("_R", bound=msgspec.Struct)


class NotActiveError(OmsRequestError):
    """This instance is not (or no longer) the OMS leader: the caller retries, the leader serves."""

    def __init__(self, message: str = "this OMS instance is not the active one: retry, the leader serves") -> None:
        super().__init__(E.NOT_ACTIVE, message)


class OmsService:
    """OrderManagementService: `start()` loads the store and serves (or, with an `election`, contends and
    serves while leader); `stop()` flushes and leaves (a leader hands over)."""

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
        store: OrderStore | SharedOrderStore | None = None,
        reference_prices: Mapping[str, int] | None = None,
        concurrency: int = 16,
        venue: str = "venue",
        parent_store: ParentStore | SharedParentStore | None = None,
        flush_linger: float = 0.005,
        election: SingleActive | None = None,
        catchup_timeout: float = 5.0,
        venue_stream: str = VENUE_STREAM,
        shards: ShardMap | None = None,
        venue_failover_wait: float = 0.0,
        watch_venue_leaders: bool = False,
    ) -> None:
        if request_timeout <= 0 or stuck_after <= 0 or concurrency < 1 or catchup_timeout <= 0:
            raise ValueError("request_timeout, stuck_after and catchup_timeout must be positive, "
                             "concurrency at least 1")
        if election is not None and not isinstance(store, SharedOrderStore):
            raise ValueError("an elected OMS needs a SharedOrderStore (PostgresOrderStore) that all its "
                             "instances share: the next leader starts from what the last one committed")
        self.bus = bus
        self._manager_args = (list(instruments), dict(accounts), risk, compliance,
                              dict(reference_prices) if reference_prices is not None else None)
        # Symbol sharding: each command goes to the venue shard holding its symbol, and each shard's
        # events are sequenced on their own (docs/venue-ha.md).
        self._shards = shards if shards is not None and shards.sharded else None
        self.manager = self._new_manager()
        self.clock = clock
        self.request_timeout = request_timeout
        self.stuck_after = stuck_after
        self.store: OrderStore | SharedOrderStore = store if store is not None else MemoryOrderStore()
        self.concurrency = concurrency
        self.catchup_timeout = catchup_timeout
        self.venue_stream = venue_stream
        self._venue = venue
        # How long a command keeps being offered to a venue nobody serves (a shard failing over) before
        # the order is answered venue_unavailable: no responders means it provably never got there.
        self.venue_failover_wait = venue_failover_wait
        # Distributed venue: follow each shard's election key, so a request in flight to a leader that
        # died is re-driven at its successor's election instead of waiting out request_timeout.
        self.venue_leaders: VenueLeaders | None = None
        if watch_venue_leaders:
            shard_map = shards if shards is not None else ShardMap.single(i.symbol for i in self._manager_args[0])
            self.venue_leaders = VenueLeaders(bus, {s.service: s.election for s in shard_map.shards})
        self.redriven = 0  # venue requests re-sent because the shard's leadership changed (metrics, tests)
        self._subs: list[Subscription] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._recovering: dict[Key, asyncio.Task[None]] = {}
        self._inflight: dict[Key, asyncio.Future[Reply]] = {}  # new orders, cancels, modifies
        self._seq_waiters: list[tuple[str, int, asyncio.Future[None]]] = []  # (venue shard, seq, applied)
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
        self._unwritten: Batch | None = None  # shared store: a batch whose write failed, written with the next
        self.algos = AlgoDesk(self, parent_store)  # algo parents: docs/algos.md
        # distributed mode
        self.election = election
        self._serving = election is None  # embedded: serving once started; elected: while leader and rebuilt
        self._token: int | None = None  # the fencing token of the current leadership
        self._activation: asyncio.Task[None] | None = None
        self._follower: Subscription | None = None
        self._followed = 0  # stream seq of the last event stream message handled
        # (venue seq per shard, reached) while rebuilding
        self._catchup: tuple[dict[str, int], asyncio.Future[None]] | None = None
        self._handlers = 0  # RPC handlers running (a graceful stop lets them finish)
        self._idle = asyncio.Event()
        self._idle.set()
        self.activations = 0  # leaderships served (tests, metrics)
        self.activation_seconds = 0.0  # how long the last rebuild took, election → serving
        if election is not None:
            self._chain(election)

    def _new_manager(self) -> OrderManager:
        instruments, accounts, risk, compliance, reference = self._manager_args
        shards = self._shards
        manager = OrderManager(instruments, accounts, risk, compliance, reference_prices=reference,
                               shards=(shards.names, shards.shard_of) if shards is not None else None)
        old = getattr(self, "manager", None)
        if old is not None:
            manager.checkpoint_every = old.checkpoint_every
        return manager

    @property
    def serving(self) -> bool:
        """True while this instance answers `rpc.oms.*` (always in embedded mode once started)."""
        return self._serving and (self.election is None or self.election.is_active)

    # ---- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Embedded: load the store, follow the venue's events, serve, watch for stuck requests.
        Elected: join the election (returns at once; the leader serves once it has rebuilt its state)."""
        if self.venue_leaders is not None:
            await self.venue_leaders.start()
        if self.election is not None:
            await self.election.start()
            return
        assert not isinstance(self.store, SharedOrderStore)
        snapshot = self.store.load()
        if snapshot is not None:
            self.manager.restore(snapshot)
        self._subs.append(await self.bus.subscribe(VENUE_EVENTS, self._on_event))
        self._subs.extend(await self._serve())
        self._subs.extend(await self.algos.start())
        self._watchdog = asyncio.create_task(self._watch(), name="oms-watchdog")

    async def _serve(self) -> list[Subscription]:
        methods: dict[str, Callable[[msgspec.Struct], Awaitable[Reply]]] = {
            "submit": self._submit, "buy": self._buy, "sell": self._sell, "cancel": self._cancel,
            "modify": self._modify, "get_order": self._get_order, "list_orders": self._list_orders,
            "approve": self._approve, "reject_held": self._reject_held,
        }
        subs = []
        for method, handler in methods.items():
            subs.append(await self.bus.serve(subjects.rpc("oms", method), self._guard(handler),
                                             concurrency=self.concurrency))
        return subs

    async def stop(self) -> None:
        try:
            await self._stop()
        finally:
            if self.venue_leaders is not None:
                await self.venue_leaders.stop()

    async def _stop(self) -> None:
        if self.election is not None:
            await self._stop_elected()
            return
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
        assert not isinstance(self.store, SharedOrderStore)
        self.store.write(self._take_batch(checkpoint=True))  # a checkpoint
        self._taken += 1
        self._wake_durable(self._taken, None)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def _stop_elected(self) -> None:
        """Graceful hand-over: stop taking requests, let the running ones finish, write a checkpoint under
        the still-valid token, then release the leadership (a standby takes over at once)."""
        assert self.election is not None
        if self.serving:
            self._serving = False
            await self._unsubscribe()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), self.request_timeout)
            await self._quiesce()
            token = self._token
            if token is not None and self.election.is_active:
                try:
                    await self._write_shared(self._take_batch(checkpoint=True), token)
                except Exception:
                    log.exception("oms: final checkpoint not written (the next leader replays the events)")
        await self.election.stop()
        await self._deactivate("stopped")

    async def feed(self, events: Iterable[Event]) -> None:
        """The runtime's way in for venue events the OMS missed while down (any order, duplicates fine)."""
        self._offer(events)

    # ---- leadership -------------------------------------------------------------------------------

    def _chain(self, election: SingleActive) -> None:
        """Run our transitions first, then whatever the election's owner asked to be told."""
        elected, demoted = election.on_elected, election.on_demoted

        async def on_elected(token: int) -> None:
            self._on_elected(token)
            if elected is not None:
                result = elected(token)
                if inspect.isawaitable(result):
                    await result

        async def on_demoted(reason: str) -> None:
            await self._deactivate(reason)
            if demoted is not None:
                result = demoted(reason)
                if inspect.isawaitable(result):
                    await result

        election.on_elected, election.on_demoted = on_elected, on_demoted

    def _on_elected(self, token: int) -> None:
        """Runs in the election loop: start the rebuild as a task (serving is gated on it)."""
        self._token = token
        self._activation = asyncio.create_task(self._activate(token), name=f"oms-activate-{token}")

    async def _activate(self, token: int) -> None:
        """Rebuild, then serve; retried while still leader if the store or the bus fails meanwhile."""
        assert self.election is not None and isinstance(self.store, SharedOrderStore)
        started = time.perf_counter()
        pause = 0.05
        while self._token == token and self.election.is_active:
            try:
                await self._rebuild(token)
                if self._token != token or not self.election.is_active:
                    self._give_up(token)
                    return
                self._subs.extend(await self._serve())
                self._subs.extend(await self.algos.serve())
                if self._token != token or not self.election.is_active:
                    self._give_up(token)
                    return
                self._serving = True
                break
            except StaleLeaderError as exc:
                log.warning("oms: elected with token %d but the store knows a newer leader: %s", token, exc)
                self._give_up(token)
                return
            except Exception:
                log.exception("oms: rebuild as leader (token %d) failed; retrying in %.2f s", token, pause)
                await self._quiesce()
                await self._unsubscribe()
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)
        else:
            self._give_up(token)
            return
        self._watchdog = asyncio.create_task(self._watch(), name="oms-watchdog")
        for record in self.manager.pending_records():  # routed by the former leader, never seen answered
            self._spawn_recovery(record.key)
        await self.algos.start_republisher()
        self.activations += 1
        self.activation_seconds = time.perf_counter() - started
        log.info("oms: active with token %d after %.3f s: %d orders, venue seq %d", token,
                 self.activation_seconds, len(self.manager.records()), self.manager.applied_seq)

    def _give_up(self, token: int) -> None:
        """The activation for `token` stops without serving: if that leadership is still ours (no demotion
        came), resign it, or this instance would hold the lease, renewing it, while never serving — and no
        standby could take over. A demotion that already came is left alone."""
        assert self.election is not None
        if self._token == token:
            log.warning("oms: activation with token %d gave up while still holding the leadership: resigning",
                        token)
            self.election.resign(token)

    async def _rebuild(self, token: int) -> None:
        """Fence the store, load it into a fresh manager and parent book, and catch up on the venue's
        events up to the end of its stream (bounded by catchup_timeout)."""
        store = self.store
        assert isinstance(store, SharedOrderStore)
        assert self.election is not None
        await store.fence(token, await self.election.incarnation())
        self.manager = self._new_manager()
        snapshot = await store.load()
        if snapshot is not None:
            self.manager.restore(snapshot)
        self._reset_io()
        await self.algos.reset(await store.load_parents())
        end = 0
        targets: dict[str, int] = {}
        try:
            last = await self.bus.last_message(self.venue_stream)
            if last is not None:
                end = last.stream_seq or 0
                # The stream also holds trade prints (trades.*), which the follower (orders.*) never sees:
                # caught up means the venue seq of the stream's last message is applied, not its stream seq.
                symbol = getattr(last.data, "symbol", None)
                shard = self.manager.shard_of(symbol) if isinstance(symbol, str) else self.manager.shard_names[0]
                targets[shard] = int(getattr(last.data, "seq", 0) or 0)
        except StreamError:
            log.error("oms: no venue event stream %r (run the venue with event_stream=True): events from "
                      "while no OMS was leader cannot be caught up", self.venue_stream)
        if end and self._shards is not None:
            # The stream's last message names one shard's position; each shard's venue tells its own.
            for shard, seq in (await self._shard_seqs()).items():
                targets[shard] = max(targets.get(shard, 0), seq)
        start = self.manager.stream_seq + 1
        self._followed = start - 1
        if end:
            self._follower = await self.bus.follow(VENUE_EVENTS, self._on_stream, start_seq=start)
        else:
            self._follower = await self.bus.subscribe(VENUE_EVENTS, self._on_event)
        if not self._reached(targets):
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._catchup = (targets, fut)
            try:
                await asyncio.wait_for(fut, self.catchup_timeout)
            except TimeoutError:
                log.warning("oms: caught up to venue seqs %s of %s (stream seq %d of %d) within %.1f s; serving "
                            "anyway (the rest follows)", self.manager.sequencer.applied_seqs, targets,
                            self._followed, end, self.catchup_timeout)
            finally:
                self._catchup = None

    def _reached(self, targets: Mapping[str, int]) -> bool:
        return all(self.manager.applied(shard) >= seq for shard, seq in targets.items())

    async def _shard_seqs(self) -> dict[str, int]:
        """Each venue shard's event seq now (`order_status` of no order answers with it); a shard that does
        not answer (failing over) is left out: its events still follow, only the wait skips it."""
        assert self._shards is not None
        probe = OrderStatusRequest(account="", client_order_id="")
        timeout = min(self.request_timeout, self.catchup_timeout)

        async def ask(service: str) -> int | None:
            try:
                reply = await self.bus.request(subjects.rpc(service, "order_status"), probe, timeout=timeout)
            except (BusError, TimeoutError) as exc:
                log.warning("oms: venue shard %s did not tell its seq (%s): not waiting for its events", service, exc)
                return None
            return reply.seq if isinstance(reply, OrderStatusReply) else None

        shards = self._shards.shards
        seqs = await asyncio.gather(*(ask(s.service) for s in shards))
        return {s.name: seq for s, seq in zip(shards, seqs, strict=True) if seq is not None}

    def _reset_io(self) -> None:
        self._taken = self._written = 0
        self._durable_waiters = []
        self._seq_waiters = []
        self._inflight = {}
        self._unwritten = None

    async def _deactivate(self, reason: str) -> None:
        """Stop serving at once; stop following, recovering and writing. The state is dropped at the next
        election (a fresh rebuild from the store)."""
        self._serving = False
        self._token = None
        activation = self._activation
        self._activation = None
        if activation is not None and activation is not asyncio.current_task() and not activation.done():
            activation.cancel()
            await asyncio.gather(activation, return_exceptions=True)
        await self._unsubscribe()
        await self._quiesce()
        for _, _, fut in self._seq_waiters:
            if not fut.done():
                fut.set_exception(NotActiveError())
                fut.add_done_callback(_retrieve)
        self._seq_waiters = []
        if reason != "stopped":
            log.info("oms: no longer active (%s)", reason)

    async def _unsubscribe(self) -> None:
        subs = self._subs + ([self._follower] if self._follower is not None else [])
        self._subs, self._follower = [], None
        for sub in subs:
            with contextlib.suppress(BusError):
                await sub.unsubscribe()

    async def _quiesce(self) -> None:
        """Stop the background work of a leadership: watchdog, recoveries, republisher, pending flush."""
        tasks = [*self._tasks, *([self._watchdog] if self._watchdog else [])]
        self._watchdog = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._recovering.clear()
        await self.algos.stop_republisher()
        if self._kick is not None:
            self._kick.cancel()
            self._kick = None
        if self._flusher is not None and not self._flusher.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._flusher), self.request_timeout)
            except TimeoutError:
                self._flusher.cancel()
                await asyncio.gather(self._flusher, return_exceptions=True)

    async def _on_stream(self, d: Delivery) -> None:
        if d.stream_seq is not None:
            self._followed = d.stream_seq
        if isinstance(d.data, EVENT_TYPES):
            if d.stream_seq is not None:  # also moves the checkpoint's resume position (manager.stream_seq)
                self._applied(self.manager.on_stream_event(d.data, d.stream_seq))
            else:
                self._offer([d.data])
        catchup = self._catchup
        if catchup is not None and self._reached(catchup[0]) and not catchup[1].done():
            catchup[1].set_result(None)

    def _fenced(self, command: NewOrder | CancelOrder | ModifyOrder) -> msgspec.Struct:
        """The command as sent to the venue: wrapped with the leader's token in distributed mode."""
        if self.election is None:
            return command
        token = self._token
        if token is None or not self.election.is_active:
            raise NotActiveError("this OMS instance stopped being the leader before routing: retry")
        return Fenced(command=command, token=token)

    # ---- RPC handlers -----------------------------------------------------------------------------

    def _guard(self, handler: Callable[[msgspec.Struct], Awaitable[_R]]) -> Callable[
            [msgspec.Struct], Awaitable[msgspec.Struct]]:
        """Refusals become OmsError with their code; a bug becomes `internal`, never a silent drop. In
        distributed mode an instance that is not (or stopped being) the serving leader answers not_active."""
        election = self.election

        async def serve(req: msgspec.Struct) -> msgspec.Struct:
            if election is not None and not self.serving:
                return OmsError(error=E.NOT_ACTIVE, message=NotActiveError().message)
            self._handlers += 1
            self._idle.clear()
            try:
                return await handler(req)
            except OmsRequestError as exc:
                self._flush()
                return OmsError(error=exc.code, message=exc.message)
            except StaleLeaderError as exc:
                return OmsError(error=E.NOT_ACTIVE, message=f"a newer OMS leader owns the store: {exc}")
            except Exception as exc:
                if election is not None and not self.serving:
                    return OmsError(error=E.NOT_ACTIVE, message=f"stopped being the leader mid-request ({exc})")
                log.exception("oms request failed: %r", req)
                return OmsError(error=E.INTERNAL, message=f"{type(exc).__name__}: {exc}")
            finally:
                self._handlers -= 1
                if not self._handlers:
                    self._idle.set()
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
        return await self._answer(decide(req), change=False)

    async def _answer(self, outcome: Outcome, change: bool) -> Reply:
        """The answer to a new order (`change` False) or a cancel/modify of one: a retry gets the first
        request's, a refused or held request is answered once durable, the rest once routed."""
        record = outcome.record
        if outcome.existing:
            return await self._retried(record, trades=not change)
        if outcome.route is None:
            await self._durable()  # a refused or held order survives a restart once answered
            return OrderReply(order=record.view())
        return await self._inflight_route(record, outcome.route, change)

    async def _retried(self, record: OrderRecord, trades: bool) -> Reply:
        """A retry of a request already taken: the first one's answer once it has one (in flight here,
        or routed by a former leader and being resolved), else the record as it stands."""
        inflight = self._inflight.get(record.key)
        if inflight is not None:
            return await asyncio.shield(inflight)
        recovery = self._recovering.get(record.key)
        if recovery is not None and record.pending:  # routed by a former leader: answer once resolved
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(recovery), self.request_timeout)
        if not trades:
            await self._durable()
        return OrderReply(order=record.view(), trades=list(record.fills) if trades else [])

    async def _inflight_route(self, record: OrderRecord, command: NewOrder | CancelOrder | ModifyOrder,
                              change: bool) -> Reply:
        """Route `command`; a retry arriving meanwhile (`_retried`) gets the same answer."""
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._inflight[record.key] = future
        try:
            trades, delivered = await self._route(record, command)
            reply: Reply = OrderReply(order=record.view(), trades=trades)
            if change and not delivered:
                reply = OmsError(error=E.VENUE_UNAVAILABLE, message=f"the venue could not be reached; order "
                                                                    f"{record.client_order_id} is unchanged")
            future.set_result(reply)
            return reply
        finally:
            if not future.done():
                future.cancel()
            self._inflight.pop(record.key, None)

    async def _cancel(self, req: msgspec.Struct) -> Reply:
        return await self._answer(self.manager.cancel(_expect(req, CancelRequest), self.clock()), change=True)

    async def _modify(self, req: msgspec.Struct) -> Reply:
        return await self._answer(self.manager.modify(_expect(req, ModifyRequest), self.clock()), change=True)

    async def _get_order(self, req: msgspec.Struct) -> Reply:
        return OrderReply(order=self.manager.get(_expect(req, GetOrderRequest)).view())

    async def _list_orders(self, req: msgspec.Struct) -> Reply:
        records, total = self.manager.list_orders(_expect(req, ListOrdersRequest))
        return OrdersReply(orders=[r.view() for r in records], total=total)

    # ---- the venue --------------------------------------------------------------------------------

    def _venue_service(self, symbol: str) -> str:
        """The venue (shard) service that holds `symbol`."""
        return self._venue if self._shards is None else self._shards.service_for(symbol)

    def _subject(self, command: NewOrder | CancelOrder | ModifyOrder) -> str:
        method = "submit" if isinstance(command, NewOrder) else "cancel" if isinstance(command, CancelOrder) \
            else "modify"
        return subjects.rpc(self._venue_service(command.symbol), method)

    async def _request_venue(self, subject: str, message: msgspec.Struct, service: str) -> msgspec.Struct:
        """One venue request; while nobody serves the subject (a venue shard failing over) it is offered
        again for up to `venue_failover_wait` seconds — safe, since no responder means nobody got it.

        With `venue_leaders`, a request still unanswered when the shard's leadership changes is sent again
        at once (for up to request_timeout + venue_failover_wait in all): the leader it went to may have
        died with it. Safe too: the venue refuses a client_order_id it already has (the original's events
        tell the order's story, `_route`), a repeated cancel or modify of a closed order is refused."""
        leaders = self.venue_leaders
        start = time.monotonic()
        deadline = start + self.venue_failover_wait
        redrive_until = deadline + self.request_timeout
        pause = 0.02
        while True:
            generation = leaders.generation(service) if leaders is not None else 0
            try:
                if leaders is None or time.monotonic() >= redrive_until:
                    return await self.bus.request(subject, message, timeout=self.request_timeout)
                reply = await self._request_unless_changed(subject, message, service, generation)
                if reply is not None:
                    return reply
                self.redriven += 1
                command = message.command if isinstance(message, Fenced) else message
                log.info("venue %s: leadership changed (now %s) with %s %s unanswered: sending it again", service,
                         leaders.holder(service) or "released", type(command).__name__,
                         getattr(command, "client_order_id", ""))
                pause = 0.005  # the new leader subscribes a few ms after its election
                continue
            except NoRespondersError:
                if time.monotonic() + pause > deadline:
                    raise
            if leaders is not None and await leaders.wait_changed(service, generation, pause):
                pause = 0.005
            else:
                if leaders is None:
                    await asyncio.sleep(pause)
                pause = min(pause * 2, 0.2)

    async def _request_unless_changed(self, subject: str, message: msgspec.Struct, service: str,
                                      generation: int) -> msgspec.Struct | None:
        """The reply, or None if the shard's leadership changed first (the request is abandoned)."""
        assert self.venue_leaders is not None
        request = asyncio.ensure_future(self.bus.request(subject, message, timeout=self.request_timeout))
        changed = asyncio.ensure_future(self.venue_leaders.wait_changed(service, generation, None))
        try:
            await asyncio.wait((request, changed), return_when=asyncio.FIRST_COMPLETED)
        finally:
            changed.cancel()
            abandon = not request.done()
            if abandon:
                request.cancel()
            # Let both finish (a cancelled task is done only once it ran its cancellation).
            await asyncio.gather(request, changed, return_exceptions=True)
        if abandon and request.cancelled():
            return None
        return request.result()  # the reply, or its error (no responders, timeout, remote)

    async def _route(self, record: OrderRecord, command: NewOrder | CancelOrder | ModifyOrder) -> tuple[
            list[Trade], bool]:
        """Send `command` (after persisting the record); returns the trades it made for this order and
        False only when the venue provably never got it. A timeout leaves the request pending: the
        watchdog recovers it."""
        await self._durable()  # the venue never holds an order the OMS could forget
        message = self._fenced(command)
        try:
            reply = await self._request_venue(self._subject(command), message, self._venue_service(command.symbol))
        except NoRespondersError:
            self.manager.not_delivered(record.key, self.clock())
            await self._durable()
            return [], False
        except RemoteError as exc:
            if self.election is not None and _is_stale_token(exc):
                raise NotActiveError(f"the venue refused this instance's fencing token: {exc.message}") from exc
            log.warning("venue refused %s for %s: %s; left pending", type(command).__name__, record.key, exc)
            return [], True
        except (BusError, TimeoutError) as exc:
            log.warning("venue did not answer %s for %s: %s; left pending", type(command).__name__,
                        record.key, exc)
            return [], True
        if not isinstance(reply, VenueReply):
            log.error("venue answered %s with %r; left pending", type(command).__name__, reply)
            return [], True
        self._offer(reply.events)
        await self._wait_seq(reply.seq, command.symbol)
        if any(isinstance(e, OrderRejected) and e.reason is RejectReason.DUPLICATE_CLIENT_ORDER_ID
               and (e.account, e.client_order_id) == record.key for e in reply.events):
            # A resend (re-driven across a venue failover) of an order the venue already had: its trades
            # came with the original's events, all applied now (they precede reply.seq).
            return list(record.fills), True
        return [e for e in reply.events if isinstance(e, Trade) and _touches(e, record.key)], True

    async def _on_event(self, d: Delivery) -> None:
        if isinstance(d.data, EVENT_TYPES):
            self._offer([d.data])

    def _offer(self, events: Iterable[Event]) -> None:
        self._applied(self.manager.on_events(events))

    def _applied(self, due: list[Event]) -> None:
        """Events just applied: on to the parent book, the store, and whoever waits for their seqs."""
        if not due:
            return
        self.algos.book.on_events(due)
        self._flush()
        manager = self.manager
        still = []
        for shard, seq, fut in self._seq_waiters:
            if seq <= manager.applied(shard):
                if not fut.done():
                    fut.set_result(None)
            else:
                still.append((shard, seq, fut))
        self._seq_waiters = still

    async def _wait_seq(self, seq: int, symbol: str) -> bool:
        """Until the events up to `seq` of `symbol`'s venue shard are applied (they may still be on their
        way on the subjects). Each shard numbers its own events."""
        shard = self.manager.shard_of(symbol)
        if self.manager.applied(shard) >= seq:
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._seq_waiters.append((shard, seq, fut))
        try:
            await asyncio.wait_for(fut, self.request_timeout)
            return True
        except TimeoutError:
            log.warning("venue shard %s: events up to seq %d not seen (applied %d, gaps %s)", shard, seq,
                        self.manager.applied(shard), self.manager.sequencer.gap)
            return False

    def _has_dirty(self) -> bool:
        return self.manager.dirty or self.algos.pending or self._unwritten is not None

    def _take_batch(self, checkpoint: bool = False) -> Batch:
        """The changes since the last batch, encoded (parents too, beside a shared store)."""
        d = self.manager.take_dirty(checkpoint=checkpoint)
        batch = encode_batch(d.records, d.accounts, d.checkpoint, self.algos.take_pending())
        if self._unwritten is not None:
            batch, self._unwritten = self._unwritten.merged(batch), None
        return batch

    def _flush(self) -> None:
        """Have the changes written within `flush_linger` (nobody waits for them, so they may gather
        into one transaction); the parents' own store is written now."""
        self.algos.flush()
        if self._has_dirty() and self._kick is None and not self._writing:
            self._kick = asyncio.get_running_loop().call_later(self.flush_linger, self._start_flusher)

    def _start_flusher(self) -> None:
        self._kick = None
        if self._has_dirty() and not self._writing and (self._flusher is None or self._flusher.done()):
            store = self.store
            if not isinstance(store, SharedOrderStore) and not store.threaded:
                self._flush_inline(store)  # a write that never blocks needs no task (a simulation's store)
                return
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop(), name="oms-flush")

    def _flush_inline(self, store: OrderStore) -> None:
        """`_flush_loop` for a store whose writes never block, run now instead of in a task of its own."""
        while self._has_dirty():
            try:
                self._write_batch(store.write)  # logs and fails the waiters of the batch on an error
            except Exception:
                return  # as the loop: what was taken is gone; the next change triggers the next write
            finally:
                self.algos.flush()

    async def _durable(self) -> None:
        """Until every change made so far is committed (the batch being written, or the next one)."""
        self.algos.flush()
        target = self._taken + (1 if self._has_dirty() else 0)
        if self._written >= target:
            return
        store = self.store
        shared = isinstance(store, SharedOrderStore)
        if not self._writing and not isinstance(store, SharedOrderStore):
            # Nothing being written: write now, inline (a hop to the thread would only add latency).
            # Under load a batch is usually in flight, and the request joins the next one instead.
            self._write_batch(store.write)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._durable_waiters.append((target, fut))
        if shared:
            if self._kick is not None:
                self._kick.cancel()
            self._start_flusher()
        else:
            self._flush()
        await fut

    async def _write_shared(self, batch: Batch, token: int) -> None:
        """One fenced transaction; on failure the batch is kept and merged into the next (nothing taken
        from the manager is dropped), unless a newer leader owns the store."""
        assert isinstance(self.store, SharedOrderStore)
        try:
            await self.store.write(batch, token)
        except StaleLeaderError:
            raise
        except BaseException:
            self._unwritten = batch if self._unwritten is None else batch.merged(self._unwritten)
            raise

    async def _flush_loop(self) -> None:
        """Group commit: one batch at a time, each with everything that changed while the last was written."""
        loop = asyncio.get_running_loop()
        store = self.store
        while self._has_dirty():
            token = self._token
            if isinstance(store, SharedOrderStore) and token is None:
                self._wake_durable(self._taken + 1, NotActiveError())
                return
            batch = self._take_batch()
            self._taken += 1
            gen = self._taken
            error: BaseException | None = None
            self._writing = True
            try:
                if isinstance(store, SharedOrderStore):
                    assert token is not None
                    await self._write_shared(batch, token)
                elif store.threaded:
                    if self._executor is None:
                        self._executor = ThreadPoolExecutor(1, thread_name_prefix="oms-store")
                    await loop.run_in_executor(self._executor, store.write, batch)
                else:
                    store.write(batch)
            except Exception as exc:
                if not isinstance(exc, StaleLeaderError):
                    log.exception("oms store write failed")
                error = exc
            finally:
                self._writing = False
            self._wake_durable(gen, error)
            self.algos.flush()
            if error is not None and isinstance(store, SharedOrderStore):
                return  # kept for the next write (the next change or request triggers it), no busy retry

    def _write_batch(self, write: Callable[[Batch], None]) -> None:
        """Take and write a batch on the loop's thread (the flusher must be idle)."""
        batch = self._take_batch()
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
        task = asyncio.create_task(self._recover(key), name=f"oms-recover-{key[0]}-{key[1]}")
        self._recovering[key] = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _recover(self, key: Key) -> None:
        """Ask the venue what it has, catch up on its events, and resend the unanswered request if it is
        still unanswered (the venue refuses a duplicate client_order_id, so a resend never executes twice)."""
        try:
            while not self.manager.recovered(key):
                status = await self._ask_status(key)
                record = self.manager.record(key)
                if (status is not None and record is not None and await self._wait_seq(status.seq, record.symbol)
                        and self.manager.recovered(key)):
                    break
                command = self.manager.pending_command(key, self.clock())
                if command is None:
                    continue
                try:
                    reply = await self.bus.request(self._subject(command), self._fenced(command),
                                                   timeout=self.request_timeout)
                except RemoteError as exc:
                    if self.election is not None and _is_stale_token(exc):
                        log.warning("recovery of %s: the venue refused our fencing token; a newer leader "
                                    "recovers it", key)
                        return
                    log.warning("recovery of %s: resend refused: %s", key, exc)
                    await asyncio.sleep(self.stuck_after)
                    continue
                except (BusError, TimeoutError) as exc:
                    log.warning("recovery of %s: resend failed: %s", key, exc)
                    await asyncio.sleep(self.stuck_after)
                    continue
                if isinstance(reply, VenueReply):
                    self._offer(reply.events)
                    await self._wait_seq(reply.seq, command.symbol)
            record = self.manager.record(key)
            self._flush()
            if record is not None:
                await self._alert(AlertKind.ORDER_RECOVERED, Severity.INFO, record,
                                  f"order {record.client_order_id} recovered: {record.status.value}")
        except NotActiveError:
            return  # demoted: the next leader recovers it
        finally:
            if self._recovering.get(key) is asyncio.current_task():
                del self._recovering[key]

    async def _ask_status(self, key: Key) -> OrderStatusReply | None:
        try:
            record = self.manager.record(key)
            service = self._venue if record is None else self._venue_service(record.symbol)
            reply = await self.bus.request(subjects.rpc(service, "order_status"),
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


def _is_stale_token(exc: RemoteError) -> bool:
    """The venue's refusal of a fencing token older than the newest it has seen."""
    return "Stale" in exc.error_type or "Fenc" in exc.error_type


def _retrieve(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled():
        fut.exception()


def _touches(trade: Trade, key: Key) -> bool:
    return key in ((trade.maker_account, trade.maker_client_order_id),
                   (trade.taker_account, trade.taker_client_order_id))
