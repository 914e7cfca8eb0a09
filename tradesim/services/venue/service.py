"""The venue service (TradingGateway): serves the matching engine over the bus, journal first.

One process owns the engine. A command is stamped with the venue's time, applied to the engine and
queued in the journal in one synchronous stretch (so journal order == engine order, LMAX style),
then the handler awaits durability (group commit batches the many requests in flight). An ordered
outbox, drained by one task, publishes each command's events once it is durable — in venue seq
order, exactly once — and only then releases the reply. See docs/venue.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import heapq
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Final, Protocol, TypeVar

import msgspec

from tradesim.bus import Bus, Subscription, register, subjects
from tradesim.domain import (
    AddInstrument,
    CancelOrder,
    Command,
    Event,
    ExpireOrders,
    Instrument,
    ModifyOrder,
    NewOrder,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderModified,
    OrderRejected,
    OrderTriggered,
    TimeInForce,
    Trade,
)
from tradesim.engine import EngineSnapshot, MatchingEngine
from tradesim.services.venue.messages import (
    VENUE_MESSAGES,
    BookReply,
    BookRequest,
    DepthUpdate,
    EndOfDayRequest,
    InstrumentsReply,
    InstrumentsRequest,
    OrderStatusReply,
    OrderStatusRequest,
    TradePrint,
    VenueReply,
)
from tradesim.store import InvalidCommandError, Journal
from tradesim.store.recovery import DEFAULT_SNAPSHOT_EVERY, Snapshotter, hash_text, recover

log = logging.getLogger("tradesim.venue")

# ---- subjects -----------------------------------------------------------------------------------
SERVICE: Final = "venue"
RPC_SUBMIT: Final = subjects.rpc(SERVICE, "submit")
RPC_CANCEL: Final = subjects.rpc(SERVICE, "cancel")
RPC_MODIFY: Final = subjects.rpc(SERVICE, "modify")
RPC_BOOK: Final = subjects.rpc(SERVICE, "book")
RPC_INSTRUMENTS: Final = subjects.rpc(SERVICE, "instruments")
RPC_ORDER_STATUS: Final = subjects.rpc(SERVICE, "order_status")
RPC_END_OF_DAY: Final = subjects.rpc(SERVICE, "end_of_day")

EVENT_SUBJECTS: Final[dict[type[Event], str]] = {
    OrderAccepted: subjects.ORDERS_NEW,
    OrderModified: subjects.ORDERS_MODIFIED,
    OrderTriggered: subjects.ORDERS_TRIGGERED,
    OrderCanceled: subjects.ORDERS_CANCELLED,
    OrderExpired: subjects.ORDERS_CANCELLED,
    OrderRejected: subjects.ORDERS_REJECTED,
    Trade: subjects.ORDERS_FILLED,
}
"""Where each engine event goes. A Trade also goes to `trades.executed` as an anonymous TradePrint."""

DEFAULT_MAX_IN_FLIGHT: Final = 1024
DEFAULT_EXPIRY_INTERVAL: Final = 1.0
DEFAULT_DEPTH_MAX_LAG: Final = 0.1

_GTD: Final = TimeInForce.GTD
_T = TypeVar("_T", bound=msgspec.Struct)


# ---- errors -------------------------------------------------------------------------------------
class VenueError(Exception):
    """Base of the venue's errors; callers see them as `RemoteError(error_type=<class name>)`."""


class BadVenueRequestError(VenueError, ValueError):
    """The request is not what the RPC takes (wrong message type, bad field): nothing was journaled."""


class UnknownSymbolError(VenueError, LookupError):
    """A query named a symbol the venue does not list (orders for one are rejected as events instead)."""

    def __str__(self) -> str:  # LookupError would repr() the message
        return str(self.args[0]) if self.args else ""


class VenueUnavailableError(VenueError):
    """The venue is not serving: not started, stopping, or stopped after a journal or bus failure."""


class _State(enum.Enum):
    NEW = "new"
    SERVING = "serving"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


# ---- the outbox ---------------------------------------------------------------------------------
class _Entry:
    """One command (or read barrier) waiting in the outbox for journal seq `jseq` to be durable."""

    __slots__ = ("depth", "events", "jseq", "published", "seq", "snapshot", "touched", "ts")

    def __init__(self, jseq: int, seq: int, ts: int, events: list[Event], touched: list[str],
                 published: asyncio.Future[None]) -> None:
        self.jseq = jseq
        self.seq = seq  # the venue's event seq right after this command
        self.ts = ts
        self.events = events
        self.touched = touched  # the books this command changed
        self.depth: list[DepthUpdate] = []  # those books right after it, when captured (see _capture_depth)
        self.snapshot: tuple[EngineSnapshot, str] | None = None
        self.published = published


def _discard(fut: asyncio.Future[None]) -> None:
    """Drops a future nobody will await (retrieving its exception, so asyncio does not warn)."""
    if fut.done():
        if not fut.cancelled():
            fut.exception()
    else:
        fut.cancel()


def trade_print(trade: Trade) -> TradePrint:
    """The public tape's view of a trade: no accounts, no order ids."""
    return TradePrint(seq=trade.seq, ts=trade.ts, trade_id=trade.trade_id, symbol=trade.symbol,
                      price=trade.price, qty=trade.qty, aggressor=trade.aggressor)


class VenueTimings(Protocol):
    """Where the venue reports how long its two costly steps took, for whoever exports metrics."""

    def engine(self, seconds: float) -> None: ...

    def journal(self, seconds: float) -> None: ...


# ---- the service --------------------------------------------------------------------------------
class VenueService:
    """Owns a MatchingEngine recovered from `journal` and serves it on `bus` (see the module docstring).

    `instruments` are listed at start (journaled as AddInstrument) unless the journal already lists
    them. `clock` gives command time in ns (tests pass a fake one). `snapshot_every` commands an engine
    snapshot is stored; `depth_levels` levels per side go into depth updates, and under sustained load a
    book's depth goes out at least every `depth_max_lag` seconds. `max_in_flight` bounds the requests
    handled at once per RPC; `expiry_interval` (s) caps how long the GTD timer sleeps.
    The bus and the journal belong to the caller: `stop()` closes neither.
    """

    def __init__(self, bus: Bus, journal: Journal, instruments: Iterable[Instrument], *,
                 clock: Callable[[], int] = time.time_ns, snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
                 depth_levels: int = 10, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
                 expiry_interval: float = DEFAULT_EXPIRY_INTERVAL,
                 depth_max_lag: float = DEFAULT_DEPTH_MAX_LAG) -> None:
        if snapshot_every < 1:
            raise ValueError(f"snapshot_every must be >= 1, got {snapshot_every}")
        if depth_levels < 1:
            raise ValueError(f"depth_levels must be >= 1, got {depth_levels}")
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        if expiry_interval <= 0:
            raise ValueError(f"expiry_interval must be positive, got {expiry_interval}")
        self.bus = bus
        self.journal = journal
        self.instruments = list(instruments)
        self.snapshot_every = snapshot_every
        self.depth_levels = depth_levels
        self.max_in_flight = max_in_flight
        self.expiry_interval = expiry_interval
        self.depth_max_lag = depth_max_lag
        self._clock = clock
        self._engine = MatchingEngine()
        self._state = _State.NEW
        self._failure: BaseException | None = None
        self._last_ts = 0
        self._jseq = 0  # journal seq of the last command queued (we are the journal's only writer)
        self._durable = 0  # highest journal seq known durable
        self._published = 0  # journal seq of the last outbox entry whose events are all out
        self._outbox: deque[_Entry] = deque()
        self._wake = asyncio.Event()  # outbox has work (something became durable, or stopping)
        self._snapshots = Snapshotter(journal, snapshot_every)
        self._captured = 0  # journal seq of the last snapshot captured (saved once durable)
        self._gtd: list[tuple[int, int]] = []  # heap of (expire_ts, order_id) of possibly live GTD orders
        self._gtd_wake = asyncio.Event()
        # Depth: per symbol, the newest command that changed its book and whose depth was not captured
        # (the live book *is* the book right after it), and when its depth last went out or was captured.
        self._dirty: dict[str, _Entry] = {}
        self._depth_at: dict[str, float] = {}
        self._in_flight = 0
        self._idle = asyncio.Event()
        # Set by a metrics exporter; None costs nothing on the command path.
        self.timings: VenueTimings | None = None
        self._idle.set()
        self._subs: list[Subscription] = []
        self._drainer: asyncio.Task[None] | None = None
        self._expirer: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()

    # ---- introspection ----------------------------------------------------------------------------
    @property
    def engine(self) -> MatchingEngine:
        """The live engine (read-only use: it may be ahead of the journal by the commands in flight)."""
        return self._engine

    @property
    def serving(self) -> bool:
        return self._state is _State.SERVING

    @property
    def failure(self) -> BaseException | None:
        """What made the venue fail-stop, if anything."""
        return self._failure

    # ---- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Recovers the engine (snapshot + journal tail), lists missing instruments, then serves."""
        if self._state is not _State.NEW:
            raise RuntimeError(f"venue already {self._state.value}; create a new VenueService to restart")
        register(*VENUE_MESSAGES)
        engine, last_seq = await recover(self.journal)
        self._engine = engine
        self._jseq = self._durable = self._published = last_seq
        self._snapshots.last_snapshot_seq = self._captured = last_seq
        if last_seq:
            async for record in self.journal.read(last_seq):  # keep command time monotonic across restarts
                self._last_ts = getattr(record.command, "ts", 0)
        self._load_gtd()
        self._state = _State.SERVING
        self._drainer = asyncio.create_task(self._drain_loop(), name="venue-outbox")
        for instrument in self.instruments:
            known = engine.instruments.get(instrument.symbol)
            if known is None:
                await self._execute(AddInstrument(instrument=instrument))
            elif known != instrument:
                log.warning("venue: %s is listed as %r in the journal; the configured %r is ignored",
                            instrument.symbol, known, instrument)
        n = self.max_in_flight
        routes = ((RPC_SUBMIT, self._on_submit), (RPC_CANCEL, self._on_cancel), (RPC_MODIFY, self._on_modify),
                  (RPC_BOOK, self._on_book), (RPC_INSTRUMENTS, self._on_instruments),
                  (RPC_ORDER_STATUS, self._on_order_status), (RPC_END_OF_DAY, self._on_end_of_day))
        for subject, handler in routes:
            self._subs.append(await self.bus.serve(subject, handler, concurrency=n))
        self._expirer = asyncio.create_task(self._expiry_loop(), name="venue-expiry")
        log.info("venue: serving %d instruments from journal seq %d, event seq %d",
                 len(engine.instruments), self._jseq, engine.seq)

    async def stop(self) -> None:
        """Stops serving, lets in-flight commands finish and publish, then snapshots (unless failed)."""
        if self._state in (_State.NEW, _State.STOPPED):
            return
        failed = self._state is _State.FAILED
        if not failed:
            self._state = _State.STOPPING
        await self._unsubscribe()
        self._gtd_wake.set()
        if self._expirer is not None:
            await self._expirer
        await self._idle.wait()
        self._wake.set()
        if self._drainer is not None:
            await self._drainer
        for task in list(self._background):
            await task
        if not failed and self._state is _State.STOPPING:
            last = self.journal.last_seq
            if last > self._snapshots.last_snapshot_seq:
                await self._snapshots.save(last, self._engine)
            self._state = _State.STOPPED
        log.info("venue: stopped at journal seq %d, event seq %d", self._jseq, self._engine.seq)

    async def _unsubscribe(self) -> None:
        subs, self._subs = self._subs, []
        for sub in subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    def _fail(self, exc: BaseException) -> None:
        """Fail-stop: stop taking requests; the journal holds the truth, a restart recovers from it."""
        if self._state is _State.FAILED:
            return
        self._failure = exc
        self._state = _State.FAILED
        log.error("venue: fail-stop after %s: %s", type(exc).__name__, exc)
        task = asyncio.create_task(self._unsubscribe(), name="venue-unsubscribe")
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        self._wake.set()
        self._gtd_wake.set()

    def _unavailable(self) -> VenueUnavailableError:
        if self._failure is not None:
            return VenueUnavailableError(
                f"venue stopped after {type(self._failure).__name__}: {self._failure}; restart it to recover "
                "from the journal (a command in flight may or may not have been journaled: query order_status)")
        return VenueUnavailableError(f"venue is {self._state.value}, not serving")

    # ---- the command path -------------------------------------------------------------------------
    def _admit(self, command: Command) -> tuple[Command, bytes, _Entry]:
        """Stamps, applies and queues `command` in the outbox; synchronous, so no other command interleaves."""
        if self._state is not _State.SERVING:
            raise self._unavailable()
        ts = self._clock()
        if ts < self._last_ts:  # never let venue time run backwards (GTD expiry depends on it)
            ts = self._last_ts
        self._last_ts = ts
        command = msgspec.structs.replace(command, ts=ts)
        try:  # refused before the engine sees it: no half-applied command
            payload = self.journal.encode(command)
        except InvalidCommandError as exc:
            raise BadVenueRequestError(f"malformed {type(command).__name__}: {exc}") from exc
        symbol = getattr(command, "symbol", None)
        if symbol is not None:
            self._capture_depth(symbol)
        engine = self._engine
        timings = self.timings
        started = time.perf_counter() if timings is not None else 0.0
        try:
            events = engine.apply(command)
        except Exception as exc:  # an engine bug: its state is unknown, only a replay can be trusted
            self._fail(exc)
            raise self._unavailable() from exc
        if timings is not None:
            timings.engine(time.perf_counter() - started)
        self._jseq += 1
        jseq = self._jseq
        touched: dict[str, None] = {}
        if isinstance(command, AddInstrument):
            touched[command.instrument.symbol] = None
        for event in events:
            if not isinstance(event, OrderRejected):
                touched[event.symbol] = None
        entry = _Entry(jseq, engine.seq, ts, events, list(touched), asyncio.get_running_loop().create_future())
        for sym in touched:
            self._dirty[sym] = entry
        if jseq - self._captured >= self.snapshot_every:
            entry.snapshot = (engine.snapshot(), hash_text(engine.state_hash()))
            self._captured = jseq
        if isinstance(command, NewOrder) and command.tif is _GTD and command.expire_ts is not None:
            for event in events:
                if isinstance(event, OrderAccepted):
                    heapq.heappush(self._gtd, (command.expire_ts, event.order_id))
                    self._gtd_wake.set()
                    break
        self._outbox.append(entry)
        return command, payload, entry

    def _depth_of(self, symbol: str, entry: _Entry) -> DepthUpdate:
        """The live book of `symbol`, labelled as the state right after `entry` (its newest changer)."""
        book = self._engine.book(symbol)
        bids, asks = book.depth(self.depth_levels)
        return DepthUpdate(symbol=symbol, seq=entry.seq, ts=entry.ts, bids=bids, asks=asks,
                           last_price=book.last_price)

    def _capture_depth(self, symbol: str) -> None:
        """Called before a command that may change `symbol`'s book: keeps the book as its previous changer
        left it, but only if no depth went out for `depth_max_lag` seconds — otherwise that state is
        simply conflated away. This bounds the staleness of depth under sustained load while costing
        one `depth()` per lag period, not per command."""
        entry = self._dirty.get(symbol)
        if entry is None:
            return
        now = time.monotonic()
        if now - self._depth_at.get(symbol, 0.0) < self.depth_max_lag:
            return
        entry.depth.append(self._depth_of(symbol, entry))
        self._depth_at[symbol] = now
        del self._dirty[symbol]

    async def _execute(self, command: Command) -> VenueReply:
        """Runs one command: apply + enqueue (one synchronous stretch), await durability, then publication."""
        self._enter()
        try:
            command, payload, entry = self._admit(command)
            queued = time.perf_counter()
            try:
                # No await between _admit and here: journal.append queues the command before it suspends.
                record = await self.journal.append(command, ts=command.ts, payload=payload)
                if self.timings is not None:
                    self.timings.journal(time.perf_counter() - queued)
            except asyncio.CancelledError:
                self._wake.set()  # it may still be journaled: the drainer publishes it if so
                raise
            except Exception as exc:
                _discard(entry.published)
                self._fail(exc)
                raise self._unavailable() from exc
            if record.seq != entry.jseq:
                exc2 = RuntimeError(f"journal seq {record.seq} != venue's {entry.jseq}: another writer?")
                self._fail(exc2)
                raise self._unavailable() from exc2
            if record.seq > self._durable:
                self._durable = record.seq
                self._wake.set()
            await entry.published
            return VenueReply(events=entry.events, seq=entry.seq, journal_seq=record.seq)
        finally:
            self._leave()

    async def _read(self, answer: msgspec.Struct) -> msgspec.Struct:
        """Releases a query's answer (computed now) only once every command before it is durable and
        published, so a reader never sees state that a crash could take back."""
        if not self._outbox and self._published >= self._jseq:
            return answer
        entry = _Entry(self._jseq, self._engine.seq, 0, [], [], asyncio.get_running_loop().create_future())
        self._outbox.append(entry)
        self._wake.set()
        await entry.published
        return answer

    def _enter(self) -> None:
        self._in_flight += 1
        self._idle.clear()

    def _leave(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()

    # ---- the outbox drainer -----------------------------------------------------------------------
    async def _drain_loop(self) -> None:
        """The one publisher: everything durable in the outbox, in order, each event exactly once."""
        while True:
            if self._state is _State.STOPPING:  # a cancelled caller's command may still become durable
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 0.05)
            else:
                await self._wake.wait()
            self._wake.clear()
            try:
                await self._drain_once()
            except Exception as exc:
                self._fail(exc)
            if self._state is _State.FAILED:
                with contextlib.suppress(Exception):  # what became durable before the failure still goes out
                    await self._drain_once()
                self._abandon()
                return
            if self._state is _State.STOPPING and not self._outbox and self._in_flight == 0:
                return

    async def _drain_once(self) -> None:
        durable = max(self._durable, self.journal.last_seq)
        outbox = self._outbox
        batch: list[_Entry] = []
        while outbox and outbox[0].jseq <= durable:
            batch.append(outbox.popleft())
        if not batch:
            return
        bus = self.bus
        depth: dict[str, DepthUpdate] = {}
        touched: dict[str, None] = {}
        snapshots: list[tuple[int, EngineSnapshot, str]] = []
        try:
            for entry in batch:
                for event in entry.events:
                    await bus.publish(EVENT_SUBJECTS[type(event)], event)
                    if isinstance(event, Trade):
                        await bus.publish(subjects.TRADES_EXECUTED, trade_print(event))
                for update in entry.depth:
                    depth[update.symbol] = update
                for sym in entry.touched:
                    touched[sym] = None
                if entry.snapshot is not None:
                    snapshots.append((entry.jseq, *entry.snapshot))
                self._published = entry.jseq
                if not entry.published.done():
                    entry.published.set_result(None)
            last = batch[-1].jseq
            for sym in touched:
                changer = self._dirty.get(sym)
                if changer is not None and changer.jseq <= last:
                    # nothing changed the book since a now-durable command: the live book is publishable
                    depth[sym] = self._depth_of(sym, changer)
                    del self._dirty[sym]
                    self._depth_at[sym] = time.monotonic()
            for update in depth.values():
                await bus.publish(subjects.market_depth(update.symbol), update)
        except Exception as exc:
            error = VenueUnavailableError(f"publishing failed ({type(exc).__name__}: {exc}); the command is "
                                          "journaled but its events may not all have gone out")
            for entry in batch:
                if not entry.published.done():
                    entry.published.set_exception(error)
            raise
        for seq, snapshot, state_hash in snapshots:
            try:
                await self.journal.save_snapshot(seq, snapshot, state_hash)
                self._snapshots.last_snapshot_seq = seq
            except Exception as exc:  # a snapshot only shortens recovery; the journal is the truth
                log.warning("venue: snapshot at journal seq %d not saved: %s", seq, exc)

    def _abandon(self) -> None:
        """After a failure: wake every waiter on what cannot be published any more."""
        error = self._unavailable()
        while self._outbox:
            fut = self._outbox.popleft().published
            if not fut.done():
                fut.set_exception(error)
                fut.add_done_callback(_retrieve)

    # ---- GTD expiry -------------------------------------------------------------------------------
    def _load_gtd(self) -> None:
        """The live GTD orders after recovery (the engine exposes no 'next expiry', so we track our own)."""
        self._gtd = [(o.command.expire_ts, o.order_id) for o in self._engine.snapshot().orders
                     if o.leaves_qty and o.command.tif is _GTD and o.command.expire_ts is not None]
        heapq.heapify(self._gtd)

    def _next_due(self) -> int | None:
        heap = self._gtd
        engine = self._engine
        while heap:
            order = engine.order(heap[0][1])
            if order is not None and order.leaves_qty:
                return heap[0][0]
            heapq.heappop(heap)  # finished (filled, canceled, expired by an earlier command)
        return None

    async def _expiry_loop(self) -> None:
        """Journals `ExpireOrders(ts=now)` when a GTD order falls due, so it expires without other traffic."""
        while self._state is _State.SERVING:
            self._gtd_wake.clear()
            delay = self.expiry_interval
            due = self._next_due()
            if due is not None:
                now = self._clock()
                if due <= now:
                    try:
                        await self._execute(ExpireOrders(ts=now))
                    except VenueError:
                        return
                    continue
                delay = min(delay, (due - now) / 1e9)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._gtd_wake.wait(), delay)

    # ---- RPC handlers -----------------------------------------------------------------------------
    async def _on_submit(self, req: msgspec.Struct) -> msgspec.Struct:
        return await self._execute(_expect(req, NewOrder, RPC_SUBMIT))

    async def _on_cancel(self, req: msgspec.Struct) -> msgspec.Struct:
        return await self._execute(_expect(req, CancelOrder, RPC_CANCEL))

    async def _on_modify(self, req: msgspec.Struct) -> msgspec.Struct:
        return await self._execute(_expect(req, ModifyOrder, RPC_MODIFY))

    async def _on_end_of_day(self, req: msgspec.Struct) -> msgspec.Struct:
        _expect(req, EndOfDayRequest, RPC_END_OF_DAY)
        return await self._execute(ExpireOrders(ts=0, end_of_day=True))

    async def _on_book(self, req: msgspec.Struct) -> msgspec.Struct:
        request = _expect(req, BookRequest, RPC_BOOK)
        if request.depth < 1:
            raise BadVenueRequestError(f"{RPC_BOOK}: depth must be >= 1, got {request.depth}")
        self._check_serving()
        try:
            book = self._engine.book(request.symbol)
        except KeyError:
            raise UnknownSymbolError(f"{RPC_BOOK}: unknown symbol {request.symbol!r}") from None
        bids, asks = book.depth(request.depth)
        return await self._read(BookReply(symbol=request.symbol, seq=self._engine.seq, bids=bids, asks=asks,
                                          last_price=book.last_price))

    async def _on_instruments(self, req: msgspec.Struct) -> msgspec.Struct:
        _expect(req, InstrumentsRequest, RPC_INSTRUMENTS)
        self._check_serving()
        return InstrumentsReply(instruments=list(self._engine.instruments.values()))

    async def _on_order_status(self, req: msgspec.Struct) -> msgspec.Struct:
        request = _expect(req, OrderStatusRequest, RPC_ORDER_STATUS)
        self._check_serving()
        engine = self._engine
        order = engine.order_by_client(request.account, request.client_order_id)
        if order is None:
            answer = OrderStatusReply(found=False, seq=engine.seq)
        else:
            answer = OrderStatusReply(found=True, seq=engine.seq, order_id=order.order_id, status=order.status,
                                      price=order.price, qty=order.qty, filled_qty=order.filled_qty,
                                      leaves_qty=order.leaves_qty)
        return await self._read(answer)

    def _check_serving(self) -> None:
        if self._state is not _State.SERVING:
            raise self._unavailable()


def _expect(req: msgspec.Struct, tp: type[_T], subject: str) -> _T:
    """The request as `tp`, or a BadVenueRequestError naming what came instead (nothing is journaled)."""
    if not isinstance(req, tp):
        raise BadVenueRequestError(f"{subject} takes {tp.__name__}, got {type(req).__name__}")
    return req


def _retrieve(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled():
        fut.exception()
