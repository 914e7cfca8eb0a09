"""The venue service (TradingGateway): serves the matching engine over the bus, journal first.

One process owns the engine. A command is stamped with the venue's time, applied to the engine and
queued in the journal in one synchronous stretch (so journal order == engine order, LMAX style),
then the handler awaits durability (group commit batches the many requests in flight). An ordered
outbox, drained by one task, publishes each command's events once it is durable — in venue seq
order, exactly once — and only then releases the reply. See docs/venue.md.

In distributed mode (`event_stream=True`) the events also form the durable stream `VENUE_EVENTS`, the
source other processes catch up from: every stream message carries a msg id derived from its event seq
and subject, a bus outage makes the drainer retry (never fail), and a restart first publishes what the
journal holds but the stream does not. Commands may come wrapped in `Fenced(command, token)`; a token
older than the newest seen is refused before anything is journaled.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import heapq
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Final, Protocol, TypeVar

import msgspec

from tradesim.bus import (
    Bus,
    BusConnectionError,
    BusError,
    CodecError,
    Delivery,
    KeyExistsError,
    PartialPublishError,
    SubjectError,
    Subscription,
    WrongRevisionError,
    register,
    subjects,
)
from tradesim.cluster.election import FencingGuard
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
from tradesim.engine import MatchingEngine
from tradesim.services.venue.messages import (
    VENUE_MESSAGES,
    BookReply,
    BookRequest,
    DepthUpdate,
    EndOfDayRequest,
    Fenced,
    InstrumentsReply,
    InstrumentsRequest,
    OrderStatusReply,
    OrderStatusRequest,
    TradePrint,
    VenueReply,
)
from tradesim.store import InvalidCommandError, Journal
from tradesim.store.recovery import DEFAULT_SNAPSHOT_EVERY, Snapshotter, hash_text, recover, restore_snapshot

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

VENUE_EVENTS: Final = "VENUE_EVENTS"
"""The durable stream of every venue event in distributed mode (`VenueService(event_stream=True)`)."""
VENUE_EVENT_SUBJECTS: Final = (subjects.ORDERS_ALL, subjects.TRADES_ALL)
"""What `VENUE_EVENTS` stores: `orders.*` (not `orders.algo.*`, another stream's) and `trades.*`."""
FENCING_BUCKET: Final = "venue_fencing"
FENCING_KEY: Final = "newest"
"""Where a distributed venue keeps the newest fencing token it admitted, so a restart still refuses older ones."""
RETRY_MAX_DELAY: Final = 2.0
"""Longest pause (s) between two attempts to publish into (or set up) the event stream."""
STOPPING_RETRIES: Final = 8
"""Attempts a stopping venue still makes to publish its last events before leaving them to its restart."""

EMIT_WINDOW: Final = 256
"""Stream messages the drainer publishes pipelined at once (well under nats-py's pending buffer, which
would otherwise flush mid-window)."""

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


class WrongShardError(BadVenueRequestError):
    """A command or query for a symbol this venue shard does not hold: nothing was journaled."""


class VenueStreamMismatchError(VenueError):
    """`VENUE_EVENTS` holds events the journal does not: the stream belongs to another journal."""


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
        self.snapshot: tuple[bytes, str] | None = None  # canonical encoding, state hash
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


def event_messages(event: Event) -> list[tuple[str, msgspec.Struct]]:
    """What one engine event becomes on the bus, in publishing order: (subject, message)."""
    out: list[tuple[str, msgspec.Struct]] = [(EVENT_SUBJECTS[type(event)], event)]
    if isinstance(event, Trade):
        out.append((subjects.TRADES_EXECUTED, trade_print(event)))
    return out


def event_msg_id(seq: int, subject: str, service: str = SERVICE) -> str:
    """The stream msg id of event `seq` on `subject` from the venue (shard) `service`: a re-publication of
    it is never stored twice, and two shards' events of the same seq never pass for each other."""
    return f"{service}.{seq}.{subject}"


def fencing_key(service: str = SERVICE) -> str:
    """The KV key (in `FENCING_BUCKET`) of the newest fencing token the venue (shard) `service` admitted."""
    return FENCING_KEY if service == SERVICE else f"{FENCING_KEY}.{service}"


METHODS: Final = ("submit", "cancel", "modify", "book", "instruments", "order_status", "end_of_day")
"""The RPC methods a venue serves, each on `rpc.{service}.{method}`."""


_Position = tuple[int, int]
"""Where the stream is: (event seq, index in `event_messages`) of its newest venue message."""
_NOTHING: Final[_Position] = (0, -1)


def stream_position(last: Delivery | None) -> _Position:
    """The position of `last`, the newest message of `VENUE_EVENTS` (None: an empty stream)."""
    if last is None:
        return _NOTHING
    seq = getattr(last.data, "seq", None)
    if isinstance(seq, bool) or not isinstance(seq, int):
        raise VenueError(f"{VENUE_EVENTS}: its last message ({type(last.data).__name__} on {last.subject!r}) "
                         "is not a venue event; only the venue may publish on orders.* and trades.*")
    return seq, 1 if last.subject == subjects.TRADES_EXECUTED else 0


class VenueTimings(Protocol):
    """Where the venue reports how long its two costly steps took, for whoever exports metrics."""

    def engine(self, seconds: float) -> None: ...

    def journal(self, seconds: float) -> None: ...


# ---- the service --------------------------------------------------------------------------------
class VenueService:
    """Owns a MatchingEngine recovered from `journal` and serves it on `bus` (see the module docstring).

    `instruments` are listed at start (journaled as AddInstrument) unless the journal already lists
    them. `event_stream=True` is distributed mode: the events also go into the stream `VENUE_EVENTS`
    (created at start), with msg ids, retried through bus outages, re-published after a crash, and
    the newest fencing token is kept in the bus KV bucket `FENCING_BUCKET` (see docs/venue.md).
    `service` names the RPC subjects (`rpc.{service}.*`), the stream msg ids and the fencing key: a symbol
    shard's venue is `venue-<shard>`. `shard_symbols` (a shard among several) are the only symbols it takes
    commands and queries for (others: `WrongShardError`), and how it finds its own newest message in the
    shared `VENUE_EVENTS`; None: the venue holds every symbol and the stream is its alone.
    `active` (an elected venue: its leadership, read on every request) refuses commands and queries at once
    when false — a leader that lost its lease answers nothing from then on, even before it is stopped.
    `clock` gives command time in ns (tests pass a fake one). `snapshot_every` commands an engine
    snapshot is stored; `depth_levels` levels per side go into depth updates, and under sustained load a
    book's depth goes out at least every `depth_max_lag` seconds. `max_in_flight` bounds the requests
    handled at once per RPC; `expiry_interval` (s) caps how long the GTD timer sleeps.
    The bus and the journal belong to the caller: `stop()` closes neither.
    """

    def __init__(self, bus: Bus, journal: Journal, instruments: Iterable[Instrument], *,
                 clock: Callable[[], int] = time.time_ns, snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
                 depth_levels: int = 10, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
                 expiry_interval: float = DEFAULT_EXPIRY_INTERVAL,
                 depth_max_lag: float = DEFAULT_DEPTH_MAX_LAG, event_stream: bool = False,
                 service: str = SERVICE, shard_symbols: Iterable[str] | None = None,
                 active: Callable[[], bool] | None = None, id_base: int = 0) -> None:
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
        self.event_stream = event_stream
        self.service = service
        self.rpc = {method: subjects.rpc(service, method) for method in METHODS}
        self.shard_symbols = frozenset(shard_symbols) if shard_symbols is not None else None
        self._fencing_key = fencing_key(service)
        self._active = active
        self._clock = clock
        self.id_base = id_base  # a shard's id block: an engine replayed from scratch numbers ids from it
        self._engine = MatchingEngine(id_base=id_base)
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
        # Fencing: the newest token admitted; in distributed mode also the newest one recorded in the KV.
        self._fencing = FencingGuard()
        self._token_saved = 0
        self._token_lock = asyncio.Lock()
        # Distributed mode: the newest message known stored in VENUE_EVENTS, and why publishing is stuck.
        self._stream_pos: _Position = _NOTHING
        self._stalled: str | None = None
        self._recent_events: Callable[[int], list[Event]] | None = None

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

    @property
    def newest_token(self) -> int:
        """The newest fencing token admitted (0: none yet)."""
        return self._fencing.newest

    # ---- lifecycle --------------------------------------------------------------------------------
    async def start(self, *, recovered: tuple[MatchingEngine, int] | None = None,
                    recent_events: Callable[[int], list[Event]] | None = None) -> None:
        """Recovers the engine (snapshot + journal tail), lists missing instruments, then serves.

        `recovered` = `(engine, last_seq)` skips the recovery: a promoted warm standby hands over its
        engine, which is the journal's state after `last_seq` (`VenueStandby.promote()`).
        `recent_events(event_seq)` (the standby's `events_after`) gives the events after an event seq
        without a replay, for publishing what the stream lacks; a LookupError falls back to the replay.
        """
        if self._state is not _State.NEW:
            raise RuntimeError(f"venue already {self._state.value}; create a new VenueService to restart")
        register(*VENUE_MESSAGES)
        if self.event_stream:
            await self._until_done("set up the event stream", self._setup_stream)
        engine, last_seq = recovered if recovered is not None else await recover(self.journal)
        if last_seq != self.journal.last_seq:
            raise VenueError(f"the engine handed over is at journal seq {last_seq}, the journal at "
                             f"{self.journal.last_seq}")
        self._recent_events = recent_events
        self._engine = engine
        self._jseq = self._durable = self._published = last_seq
        self._snapshots.last_snapshot_seq = self._captured = last_seq
        if last_seq:
            async for record in self.journal.read(last_seq):  # keep command time monotonic across restarts
                self._last_ts = getattr(record.command, "ts", 0)
        self._load_gtd()
        if self.event_stream:
            await self._until_done("catch the event stream up with the journal", self._catch_up)
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
        handlers = {"submit": self._on_submit, "cancel": self._on_cancel, "modify": self._on_modify,
                    "book": self._on_book, "instruments": self._on_instruments,
                    "order_status": self._on_order_status, "end_of_day": self._on_end_of_day}
        for method, handler in handlers.items():
            self._subs.append(await self.bus.serve(self.rpc[method], handler, concurrency=n))
        self._expirer = asyncio.create_task(self._expiry_loop(), name="venue-expiry")
        log.info("venue %s: serving %d instruments from journal seq %d, event seq %d", self.service,
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

    # ---- distributed mode: the event stream and the fencing token -----------------------------------
    def _bus_down(self, exc: BaseException) -> bool:
        """True for a failure that ends when the bus is back (not for a closed bus or a bad message)."""
        if self.bus.closed or isinstance(exc, CodecError | SubjectError):
            return False
        return isinstance(exc, BusError | TimeoutError)

    async def _until_done(self, what: str, step: Callable[[], Awaitable[None]]) -> None:
        """Runs `step` until it gets through a bus outage (start-up waits for the bus, logging why)."""
        attempt = 0
        while True:
            try:
                await step()
                return
            except Exception as exc:
                if not self._bus_down(exc) or isinstance(exc, VenueError):
                    raise
                attempt += 1
                log.warning("venue: cannot %s yet (%s: %s); attempt %d, retrying", what, type(exc).__name__,
                            exc, attempt)
                await asyncio.sleep(min(0.1 * 2 ** attempt, RETRY_MAX_DELAY))

    async def _setup_stream(self) -> None:
        await self.bus.add_stream(VENUE_EVENTS, list(VENUE_EVENT_SUBJECTS))
        kv = await self.bus.kv(FENCING_BUCKET)
        entry = await kv.get(self._fencing_key)
        if entry is not None:
            token = _token_of(entry.value)
            self._token_saved = max(self._token_saved, token)
            self._fencing.admit(token)

    async def _catch_up(self) -> None:
        """Publishes the events of journaled commands that `VENUE_EVENTS` does not hold yet.

        The stream's newest message says how far it got (event seq, and which of the event's messages);
        the engine is rebuilt from a snapshot taken before that point and the journal tail replayed, and
        every message after it is published, in seq order, with its msg id."""
        last = await self._stream_last()
        pos = stream_position(last)
        top = self._engine.seq
        if pos[0] > top:
            raise VenueStreamMismatchError(
                f"{VENUE_EVENTS} holds event seq {pos[0]} but the journal ends at event seq {top}: the stream "
                "belongs to another journal (delete the stream or point the venue at its own journal)")
        self._stream_pos = max(self._stream_pos, pos)
        complete = last is None or last.subject != subjects.ORDERS_FILLED  # a fill's tape print follows it
        if pos[0] == top and complete:
            return
        published = 0
        recent = None
        if self._recent_events is not None:
            try:
                recent = self._recent_events(max(pos[0] - 1, 0))
            except LookupError as exc:
                log.info("venue: %s; replaying the journal instead", exc)
        if recent is not None:
            published += await self._emit_many([event for event in recent if event.seq >= pos[0]])
        else:
            engine, start = await self._engine_before(max(pos[0] - 1, 0))
            pending: list[Event] = []
            async for record in self.journal.read(start):
                pending.extend(event for event in engine.apply(record.command) if event.seq >= pos[0])
                if len(pending) >= EMIT_WINDOW:
                    published += await self._emit_many(pending)
                    pending = []
            published += await self._emit_many(pending)
        log.warning("venue: published %d event messages the stream %s missed (it ended at event seq %d, the "
                    "journal at %d)", published, VENUE_EVENTS, pos[0], top)

    async def _stream_last(self) -> Delivery | None:
        """The newest message of this venue in `VENUE_EVENTS` (None: it has none there yet).

        A venue that holds every symbol owns the stream: its newest message is the stream's. A shard among
        several shares it, so the stream is read backwards in growing windows until one holds a message
        about one of the shard's symbols (events of a shard only ever name its own symbols)."""
        if self.shard_symbols is None:
            return await self.bus.last_message(VENUE_EVENTS)
        info = await self.bus.stream_info(VENUE_EVENTS)
        last, window = info.last_seq, 256
        while last >= max(info.first_seq, 1):
            first = max(info.first_seq, 1, last - window + 1)
            mine = [d for d in await _read_stream(self.bus, first, last)
                    if getattr(d.data, "symbol", None) in self.shard_symbols]
            if mine:
                return mine[-1]
            last, window = first - 1, window * 4
        return None

    async def _engine_before(self, limit: int) -> tuple[MatchingEngine, int]:
        """An engine at event seq <= `limit` (the newest usable snapshot that old, else an empty engine)
        and the journal seq to replay from."""
        max_seq = self.journal.last_seq
        while True:
            stored = await self.journal.latest_snapshot(max_seq=max_seq)
            if stored is None:
                return MatchingEngine(id_base=self.id_base), 1
            max_seq = stored.seq - 1
            try:
                engine = restore_snapshot(stored)
            except ValueError as exc:
                log.warning("venue: skipping snapshot: %s", exc)
                continue
            if engine.seq <= limit:
                return engine, stored.seq + 1

    async def _emit_many(self, events: list[Event]) -> int:
        """Publishes the messages of `events` that the stream does not hold yet, pipelined in windows of
        EMIT_WINDOW (one write and one wait for all PubAcks each, instead of a round trip per message).

        What a window stores is a prefix of it, in order (`Bus.publish_many`); after a failure the
        position advances past the acknowledged prefix and the rest goes out one by one through `_emit`,
        with its retries and its look-ups of the stream's newest message, as before. Returns how many
        messages it published."""
        todo: list[tuple[_Position, str, msgspec.Struct, str]] = []
        for event in events:
            for part, (subject, msg) in enumerate(event_messages(event)):
                key = (event.seq, part)
                if key > self._stream_pos:
                    todo.append((key, subject, msg, event_msg_id(event.seq, subject, self.service)))
        for start in range(0, len(todo), EMIT_WINDOW):
            window = todo[start:start + EMIT_WINDOW]
            try:
                await self.bus.publish_many([(subject, msg, msg_id) for _, subject, msg, msg_id in window])
            except PartialPublishError as exc:
                if exc.published:
                    self._stream_pos = max(self._stream_pos, window[exc.published - 1][0])
                if not self._bus_down(exc.cause):
                    raise exc.cause from exc
                published = start + exc.published
                for event in events:
                    published += await self._emit(event)
                return published
            self._stream_pos = max(self._stream_pos, window[-1][0])
        return len(todo)

    async def _emit(self, event: Event) -> int:
        """Publishes the messages of `event` that the stream does not hold yet; returns how many.

        A bus failure is retried with backoff (the msg id makes a retry of a stored message harmless,
        and before each retry the stream's newest message is looked up, so nothing is stored twice even
        after the duplicate window). While stuck, new commands are refused (`_stalled`); a stopping or
        failed venue gives up after STOPPING_RETRIES attempts and leaves the rest to its restart."""
        count = 0
        for part, (subject, msg) in enumerate(event_messages(event)):
            key = (event.seq, part)
            attempt = 0
            while key > self._stream_pos:
                try:
                    await self.bus.publish(subject, msg, msg_id=event_msg_id(event.seq, subject, self.service))
                except Exception as exc:
                    if not self._bus_down(exc):
                        raise
                    attempt += 1
                    if self._state is not _State.SERVING and self._state is not _State.NEW \
                            and attempt > STOPPING_RETRIES:
                        raise
                    self._stalled = f"{type(exc).__name__}: {exc}"
                    if attempt == 1 or attempt % 10 == 0:
                        log.warning("venue: cannot publish event seq %d on %s (%s); attempt %d, retrying",
                                    event.seq, subject, self._stalled, attempt)
                    await asyncio.sleep(min(0.05 * 2 ** attempt, RETRY_MAX_DELAY))
                    with contextlib.suppress(Exception):
                        self._stream_pos = max(self._stream_pos, stream_position(await self._stream_last()))
                    continue
                self._stream_pos = key
                count += 1
            if attempt and self._stalled is not None:
                log.warning("venue: publishing resumed at event seq %d after %d attempts", event.seq, attempt)
                self._stalled = None
        return count

    async def _record_token(self, token: int) -> None:
        """Distributed mode: stores a new newest token in the KV before anything it fences is journaled,
        so that after a restart an older token is still refused."""
        if not self.event_stream or token <= self._fencing.newest:
            return
        async with self._token_lock:
            if token <= self._token_saved:
                return
            try:
                kv = await self.bus.kv(FENCING_BUCKET)
                while True:
                    entry = await kv.get(self._fencing_key)
                    value = str(token).encode()
                    try:
                        if entry is None:
                            await kv.create(self._fencing_key, value)
                        elif _token_of(entry.value) < token:
                            await kv.update(self._fencing_key, value, entry.revision)
                        break
                    except (KeyExistsError, WrongRevisionError):
                        continue  # another venue process wrote it meanwhile: look again
            except (BusError, TimeoutError) as exc:
                raise VenueUnavailableError(f"cannot record fencing token {token} ({type(exc).__name__}: "
                                            f"{exc}); nothing was journaled, retry") from exc
            self._token_saved = token

    # ---- the command path -------------------------------------------------------------------------
    def _admit(self, command: Command) -> tuple[Command, bytes, _Entry]:
        """Stamps, applies and queues `command` in the outbox; synchronous, so no other command interleaves."""
        self._check_serving()
        if self._stalled is not None:
            raise VenueUnavailableError(f"venue events cannot be published ({self._stalled}); nothing was "
                                        "journaled, retry once the bus is back")
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
            # one canonical encoding, both stored and hashed (state_hash() is the sha256 of these bytes)
            data = engine.canonical_bytes()
            entry.snapshot = (data, hash_text(hashlib.sha256(data).hexdigest()))
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
        snapshots: list[tuple[int, bytes, str]] = []
        try:
            if self.event_stream:
                await self._emit_many([event for entry in batch for event in entry.events])
            for entry in batch:
                if not self.event_stream:
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
                try:
                    await bus.publish(subjects.market_depth(update.symbol), update)
                except BusConnectionError as exc:
                    if not self.event_stream or bus.closed:
                        raise
                    # depth is conflated: the next update of the book supersedes a lost one
                    log.info("venue: depth of %s not published: %s", update.symbol, exc)
        except Exception as exc:
            error = VenueUnavailableError(f"publishing failed ({type(exc).__name__}: {exc}); the command is "
                                          "journaled but its events may not all have gone out")
            for entry in batch:
                if not entry.published.done():
                    entry.published.set_exception(error)
            raise
        for seq, data, state_hash in snapshots:
            try:
                await self.journal.save_snapshot_bytes(seq, data, state_hash)
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
                        if self._state is not _State.SERVING:
                            return
                        # refused while events cannot be published: try again later
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._gtd_wake.wait(), self.expiry_interval)
                    continue
                delay = min(delay, (due - now) / 1e9)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._gtd_wake.wait(), delay)

    # ---- RPC handlers -----------------------------------------------------------------------------
    async def _on_submit(self, req: msgspec.Struct) -> msgspec.Struct:
        return await self._command(req, NewOrder, self.rpc["submit"])

    async def _on_cancel(self, req: msgspec.Struct) -> msgspec.Struct:
        return await self._command(req, CancelOrder, self.rpc["cancel"])

    async def _on_modify(self, req: msgspec.Struct) -> msgspec.Struct:
        return await self._command(req, ModifyOrder, self.rpc["modify"])

    def _check_shard(self, symbol: str, subject: str) -> None:
        """A shard takes nothing about another shard's symbols (its journal holds only its own)."""
        if self.shard_symbols is not None and symbol not in self.shard_symbols:
            raise WrongShardError(f"{subject}: {symbol!r} is not on venue shard {self.service} (it holds "
                                  f"{', '.join(sorted(self.shard_symbols))}); nothing was journaled")

    async def _command(self, req: msgspec.Struct, tp: type[Command], subject: str) -> VenueReply:
        """A bare command, or a `Fenced` one: refused with StaleTokenError (nothing journaled) if its
        token is older than the newest admitted."""
        if not isinstance(req, Fenced):
            bare = _expect(req, tp, subject)
            self._check_shard(getattr(bare, "symbol", ""), subject)
            return await self._execute(bare)
        command = _expect(req.command, tp, subject)
        self._check_shard(getattr(command, "symbol", ""), subject)
        token = req.token
        if isinstance(token, bool) or token < 1:
            raise BadVenueRequestError(f"{subject}: fencing token must be a positive int, got {token!r}")
        await self._record_token(token)
        self._fencing.check(token)  # no await from here into _admit: no command slips in between
        return await self._execute(command)

    async def _on_end_of_day(self, req: msgspec.Struct) -> msgspec.Struct:
        _expect(req, EndOfDayRequest, self.rpc["end_of_day"])
        return await self._execute(ExpireOrders(ts=0, end_of_day=True))

    async def _on_book(self, req: msgspec.Struct) -> msgspec.Struct:
        subject = self.rpc["book"]
        request = _expect(req, BookRequest, subject)
        if request.depth < 1:
            raise BadVenueRequestError(f"{subject}: depth must be >= 1, got {request.depth}")
        self._check_serving()
        try:
            book = self._engine.book(request.symbol)
        except KeyError:
            raise UnknownSymbolError(f"{subject}: unknown symbol {request.symbol!r}") from None
        bids, asks = book.depth(request.depth)
        return await self._read(BookReply(symbol=request.symbol, seq=self._engine.seq, bids=bids, asks=asks,
                                          last_price=book.last_price))

    async def _on_instruments(self, req: msgspec.Struct) -> msgspec.Struct:
        _expect(req, InstrumentsRequest, self.rpc["instruments"])
        self._check_serving()
        return InstrumentsReply(instruments=list(self._engine.instruments.values()))

    async def _on_order_status(self, req: msgspec.Struct) -> msgspec.Struct:
        request = _expect(req, OrderStatusRequest, self.rpc["order_status"])
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
        if self._active is not None and not self._active():
            raise VenueUnavailableError(f"venue {self.service}: this instance is not the leader any more; retry")


def _expect(req: msgspec.Struct, tp: type[_T], subject: str) -> _T:
    """The request as `tp`, or a BadVenueRequestError naming what came instead (nothing is journaled)."""
    if not isinstance(req, tp):
        raise BadVenueRequestError(f"{subject} takes {tp.__name__}, got {type(req).__name__}")
    return req


def _token_of(value: bytes) -> int:
    try:
        return int(value)
    except ValueError:
        raise VenueError(f"{FENCING_BUCKET}/{FENCING_KEY} holds {value!r}, not a fencing token") from None


def _retrieve(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled():
        fut.exception()


async def _read_stream(bus: Bus, first: int, last: int, timeout: float = 10.0) -> list[Delivery]:
    """The messages of `VENUE_EVENTS` with stream seq in [first, last], in stream order (the stream never
    deletes messages, so that range holds exactly `last - first + 1`)."""
    out: list[Delivery] = []
    done = asyncio.Event()
    want = last - first + 1

    async def collect(d: Delivery) -> None:
        if first <= (d.stream_seq or 0) <= last:
            out.append(d)
            if len(out) >= want:
                done.set()

    subs = [await bus.follow(pattern, collect, start_seq=first) for pattern in VENUE_EVENT_SUBJECTS]
    try:
        await asyncio.wait_for(done.wait(), timeout)
    except TimeoutError:
        raise VenueError(f"{VENUE_EVENTS}: read {len(out)} of the {want} messages from stream seq {first} to "
                         f"{last} within {timeout}s (were messages deleted from the stream?)") from None
    finally:
        for sub in subs:
            with contextlib.suppress(BusError):
                await sub.unsubscribe()
    return sorted(out, key=lambda d: d.stream_seq or 0)
