"""The in-process asyncio backend: the same behaviour as NATS, without a server.

Every `open_bus("memory://")` in a process joins the same default broker, and `memory://NAME` the
broker NAME (use a unique name for an isolated bus, e.g. per test), so several Bus objects behave
like several connections to one server (groups, redelivery after a consumer dies, durable resume).
Messages are still encoded, so codec errors and message isolation are the same as over the network.
Stream contents, durable cursors and message-id windows live in the broker's memory and last as long
as the process.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Sequence
from typing import Final, NamedTuple, cast

from tradesim.bus.base import (
    DEFAULT_DUPLICATE_WINDOW,
    Bus,
    Entry,
    ErrorHandler,
    Handler,
    KeyValue,
    Mode,
    RawCallback,
    StreamInfo,
    Subscription,
    Watch,
    check_key,
    check_name,
    check_watch_pattern,
)
from tradesim.bus.codec import Codec
from tradesim.bus.errors import (
    KeyExistsError,
    NoRespondersError,
    RequestTimeoutError,
    StreamError,
    WrongRevisionError,
)
from tradesim.bus.subjects import covers, matches

INBOX_PREFIX: Final = "_INBOX."


# ---- core pub/sub ------------------------------------------------------------------------------
class _CoreSub:
    """A subscription's queue and the task that feeds its handler one message at a time."""

    __slots__ = ("bus", "cb", "group", "pattern", "queue", "stopped", "task")

    def __init__(self, bus: MemoryBus, pattern: str, group: str | None, cb: RawCallback) -> None:
        self.bus = bus
        self.pattern = pattern
        self.group = group
        self.cb = cb
        self.queue: asyncio.Queue[tuple[str, bytes, str | None]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        self.stopped = False

    async def run(self) -> None:
        q = self.queue
        cb = self.cb
        while not self.stopped:
            subject, data, reply = await q.get()
            await cb(subject, data, reply)


class _Route(NamedTuple):
    plain: tuple[_CoreSub, ...]
    groups: tuple[tuple[tuple[str, str], tuple[_CoreSub, ...]], ...]


class _Stored(NamedTuple):
    subject: str
    data: bytes
    at: float


class _Stream:
    """Stored messages of a stream, numbered from 1, with its durable consumers and followers.

    `ids` remembers each message id for `duplicate_window` seconds (insertion order is time order),
    as JetStream does with `Nats-Msg-Id`.
    """

    def __init__(self, name: str, subjects: Sequence[str], max_age: float | None,
                 duplicate_window: float | None) -> None:
        self.name = name
        self.subjects = list(subjects)
        self.max_age = max_age
        self.duplicate_window = duplicate_window or DEFAULT_DUPLICATE_WINDOW
        self.first_seq = 1
        self.last_seq = 0
        self.msgs: deque[_Stored] = deque()
        self.consumers: dict[str, _Consumer] = {}
        self.followers: set[asyncio.Event] = set()
        self.ids: dict[str, float] = {}

    def covers(self, subject: str) -> bool:
        return any(matches(p, subject) for p in self.subjects)

    def append(self, subject: str, data: bytes, msg_id: str | None = None) -> bool:
        """Stores the message unless `msg_id` was stored within the duplicate window."""
        now = time.monotonic()
        self._prune(now)
        if msg_id is not None:
            ids = self.ids
            horizon = now - self.duplicate_window
            while ids:
                oldest = next(iter(ids))
                if ids[oldest] >= horizon:
                    break
                del ids[oldest]
            if msg_id in ids:
                return False
            ids[msg_id] = now
        self.last_seq += 1
        self.msgs.append(_Stored(subject, data, now))
        for c in self.consumers.values():
            if matches(c.filter, subject):
                c.wake()
        for wake in self.followers:
            wake.set()
        return True

    def _prune(self, now: float) -> None:
        if self.max_age is None:
            return
        while self.msgs and now - self.msgs[0].at > self.max_age:
            self.msgs.popleft()
            self.first_seq += 1

    def get(self, seq: int) -> _Stored | None:
        i = seq - self.first_seq
        return self.msgs[i] if 0 <= i < len(self.msgs) else None


class _Consumer:
    """A durable cursor: next new message, delivered-but-unacked ones, and the redelivery queue."""

    def __init__(self, stream: _Stream, name: str, filter: str, ack_wait: float) -> None:
        self.stream = stream
        self.name = name
        self.filter = filter
        self.ack_wait = ack_wait
        self.next_seq = 1
        self.counts: dict[int, int] = {}  # seq -> deliveries so far (until acked)
        self.pending: dict[int, int] = {}  # seq -> the outstanding delivery number
        self.timers: dict[int, asyncio.TimerHandle] = {}
        self.redeliver: deque[int] = deque()
        self.waiters: deque[asyncio.Future[None]] = deque()

    def wake(self) -> None:
        while self.waiters:
            f = self.waiters.popleft()
            if not f.done():
                f.set_result(None)
                return

    def _take(self) -> tuple[int, int] | None:
        while self.redeliver:
            seq = self.redeliver.popleft()
            if seq in self.counts and seq not in self.pending:
                return self._deliver(seq)
        st = self.stream
        if self.next_seq < st.first_seq:
            self.next_seq = st.first_seq
        while self.next_seq <= st.last_seq:
            seq = self.next_seq
            self.next_seq += 1
            rec = st.get(seq)
            if rec is not None and matches(self.filter, rec.subject):
                return self._deliver(seq)
        return None

    def _deliver(self, seq: int) -> tuple[int, int]:
        n = self.counts.get(seq, 0) + 1
        self.counts[seq] = n
        self.pending[seq] = n
        loop = asyncio.get_running_loop()
        self.timers[seq] = loop.call_later(self.ack_wait, self._expire, seq, n)
        return seq, n

    def _expire(self, seq: int, n: int) -> None:
        if self.pending.get(seq) == n:
            del self.pending[seq]
            self.timers.pop(seq, None)
            self.redeliver.append(seq)
            self.wake()

    async def pull(self) -> tuple[int, int]:
        while True:
            got = self._take()
            if got is not None:
                return got
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.waiters.append(fut)
            try:
                await fut
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():
                    self.wake()  # pass the wake-up on to another member
                raise

    def ack(self, seq: int) -> None:
        self.counts.pop(seq, None)
        self.pending.pop(seq, None)
        t = self.timers.pop(seq, None)
        if t is not None:
            t.cancel()

    def nak(self, seq: int, n: int, delay: float | None) -> None:
        if self.pending.get(seq) != n:
            return
        del self.pending[seq]
        t = self.timers.pop(seq, None)
        if t is not None:
            t.cancel()
        if delay:
            self.pending[seq] = n
            self.timers[seq] = asyncio.get_running_loop().call_later(delay, self._expire, seq, n)
        else:
            self.redeliver.append(seq)
            self.wake()


class _MemoryAcker:
    """Settles memory durable deliveries; the token is (consumer, seq, delivery number)."""

    async def ack(self, token: object) -> None:
        c, seq, _n = _token(token)
        c.ack(seq)

    async def nak(self, token: object, delay: float | None) -> None:
        c, seq, n = _token(token)
        c.nak(seq, n, delay)

    async def term(self, token: object) -> None:
        await self.ack(token)


def _token(token: object) -> tuple[_Consumer, int, int]:
    assert isinstance(token, tuple)
    return cast("tuple[_Consumer, int, int]", token)


_ACKER: Final = _MemoryAcker()


# ---- key-value ---------------------------------------------------------------------------------
class _Rec(NamedTuple):
    value: bytes
    revision: int
    deleted: bool
    at: float


class _Bucket:
    def __init__(self, name: str, ttl: float | None) -> None:
        self.name = name
        self.ttl = ttl
        self.rev = 0
        self.recs: dict[str, _Rec] = {}
        self.watchers: list[_MemoryWatch] = []

    def live(self, key: str) -> _Rec | None:
        rec = self.recs.get(key)
        if rec is not None and self.ttl is not None and time.monotonic() - rec.at >= self.ttl:
            del self.recs[key]
            return None
        return rec

    def write(self, key: str, value: bytes, deleted: bool) -> int:
        self.rev += 1
        self.recs[key] = _Rec(value, self.rev, deleted, time.monotonic())
        entry = Entry(key=key, value=value, revision=self.rev, deleted=deleted)
        for w in self.watchers:
            if matches(w.pattern, key):
                w.queue.put_nowait(entry)
        return self.rev


class _MemoryWatch(Watch):
    def __init__(self, bucket: _Bucket, pattern: str) -> None:
        self.bucket = bucket
        self.pattern = pattern
        self.queue: asyncio.Queue[Entry | None] = asyncio.Queue()
        self._stopped = False

    async def __anext__(self) -> Entry:
        if self._stopped and self.queue.empty():
            raise StopAsyncIteration
        e = await self.queue.get()
        if e is None:
            raise StopAsyncIteration
        return e

    async def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            if self in self.bucket.watchers:
                self.bucket.watchers.remove(self)
            self.queue.put_nowait(None)


class MemoryKeyValue(KeyValue):
    def __init__(self, bus: MemoryBus, bucket: _Bucket) -> None:
        super().__init__(bucket.name)
        self._bus = bus
        self._b = bucket

    async def get(self, key: str) -> Entry | None:
        self._bus._check_open()
        rec = self._b.live(check_key(key))
        if rec is None or rec.deleted:
            return None
        return Entry(key=key, value=rec.value, revision=rec.revision)

    async def put(self, key: str, value: bytes) -> int:
        self._bus._check_open()
        return self._b.write(check_key(key), bytes(value), False)

    async def create(self, key: str, value: bytes) -> int:
        self._bus._check_open()
        rec = self._b.live(check_key(key))
        if rec is not None and not rec.deleted:
            raise KeyExistsError(f"key {key!r} already exists in bucket {self.bucket!r}")
        return self._b.write(key, bytes(value), False)

    def _check_rev(self, key: str, expected: int) -> None:
        rec = self._b.live(key)
        current = rec.revision if rec is not None else 0
        if current != expected:
            raise WrongRevisionError(
                f"key {key!r} in bucket {self.bucket!r}: expected revision {expected}, it is at {current}"
            )

    async def update(self, key: str, value: bytes, expected_revision: int) -> int:
        self._bus._check_open()
        self._check_rev(check_key(key), expected_revision)
        return self._b.write(key, bytes(value), False)

    async def delete(self, key: str, expected_revision: int | None = None) -> None:
        self._bus._check_open()
        check_key(key)
        if expected_revision is not None:
            self._check_rev(key, expected_revision)
        self._b.write(key, b"", True)

    async def keys(self) -> list[str]:
        self._bus._check_open()
        out = []
        for k in list(self._b.recs):
            rec = self._b.live(k)
            if rec is not None and not rec.deleted:
                out.append(k)
        return sorted(out)

    async def watch(self, pattern: str = ">", *, include_initial: bool = True) -> Watch:
        self._bus._check_open()
        check_watch_pattern(pattern)
        w = _MemoryWatch(self._b, pattern)
        if include_initial:
            current: list[tuple[int, str, _Rec]] = []
            for k in list(self._b.recs):
                rec = self._b.live(k)
                if rec is not None and matches(pattern, k):
                    current.append((rec.revision, k, rec))
            for _rev, k, rec in sorted(current):
                w.queue.put_nowait(Entry(key=k, value=rec.value, revision=rec.revision, deleted=rec.deleted))
        self._b.watchers.append(w)
        self._bus._watches.append(w)
        return w


# ---- the broker and the bus --------------------------------------------------------------------
class Broker:
    """The in-process 'server': subscriptions, routing, RPC inboxes, streams and buckets."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.subs: list[_CoreSub] = []
        self._routes: dict[str, _Route] = {}
        self._rr: dict[tuple[str, str], int] = {}
        self.replies: dict[str, asyncio.Future[bytes]] = {}
        self.streams: dict[str, _Stream] = {}
        self._stream_routes: dict[str, tuple[_Stream, ...]] = {}
        self.buckets: dict[str, _Bucket] = {}
        self._inbox = itertools.count(1)

    def add(self, sub: _CoreSub) -> None:
        self.subs.append(sub)
        self._routes.clear()

    def remove(self, sub: _CoreSub) -> None:
        if sub in self.subs:
            self.subs.remove(sub)
            self._routes.clear()

    def _route(self, subject: str) -> _Route:
        plain: list[_CoreSub] = []
        groups: dict[tuple[str, str], list[_CoreSub]] = {}
        for s in self.subs:
            if matches(s.pattern, subject):
                if s.group is None:
                    plain.append(s)
                else:
                    groups.setdefault((s.pattern, s.group), []).append(s)
        route = _Route(tuple(plain), tuple((k, tuple(v)) for k, v in groups.items()))
        if len(self._routes) > 65536:
            self._routes.clear()
        self._routes[subject] = route
        return route

    def new_inbox(self) -> str:
        return f"{INBOX_PREFIX}{next(self._inbox)}"

    def publish(self, subject: str, data: bytes, reply: str | None = None, msg_id: str | None = None) -> int:
        """Route a message; returns how many subscriptions it reached."""
        if subject.startswith(INBOX_PREFIX):
            fut = self.replies.pop(subject, None)
            if fut is not None and not fut.done():
                fut.set_result(data)
            return 1
        route = self._routes.get(subject) or self._route(subject)
        item = (subject, data, reply)
        for s in route.plain:
            s.queue.put_nowait(item)
        for key, members in route.groups:
            i = self._rr.get(key, 0)
            self._rr[key] = i + 1
            members[i % len(members)].queue.put_nowait(item)
        streams = self._stream_routes.get(subject)
        if streams is None:
            streams = tuple(st for st in self.streams.values() if st.covers(subject))
            if len(self._stream_routes) > 65536:
                self._stream_routes.clear()
            self._stream_routes[subject] = streams
        for st in streams:
            st.append(subject, data, msg_id)
        return len(route.plain) + len(route.groups)

    def add_stream(self, name: str, subjects: Sequence[str], max_age: float | None,
                   duplicate_window: float | None) -> None:
        """Creates or updates a stream; like JetStream, refuses subjects another stream already covers."""
        for other in self.streams.values():
            if other.name == name:
                continue
            for mine in subjects:
                for theirs in other.subjects:
                    if _overlap(mine, theirs):
                        raise StreamError(f"cannot add stream {name!r} on {list(subjects)}: subject {mine!r} "
                                          f"overlaps {theirs!r} of stream {other.name!r}")
        st = self.streams.get(name)
        if st is None:
            self.streams[name] = _Stream(name, subjects, max_age, duplicate_window)
        else:
            st.subjects = list(subjects)
            st.max_age = max_age
            st.duplicate_window = duplicate_window or DEFAULT_DUPLICATE_WINDOW
        self._stream_routes.clear()

    def find_stream(self, pattern: str) -> _Stream | None:
        for st in self.streams.values():
            if any(covers(p, pattern) for p in st.subjects):
                return st
        return None


def _overlap(a: str, b: str) -> bool:
    """True if some subject matches both patterns (NATS rejects streams whose subjects overlap)."""
    ta, tb = a.split("."), b.split(".")
    for i in range(max(len(ta), len(tb))):
        x = ta[i] if i < len(ta) else None
        y = tb[i] if i < len(tb) else None
        if x == ">" or y == ">":
            return x is not None and y is not None
        if x is None or y is None:
            return False
        if x != y and x != "*" and y != "*":
            return False
    return True


_BROKERS: dict[str, Broker] = {}


def _broker_for(url: str) -> Broker:
    name = url[len("memory://") :].strip("/")
    b = _BROKERS.get(name)
    if b is None or b.loop is not asyncio.get_running_loop() or b.loop.is_closed():
        b = _BROKERS[name] = Broker()
    return b


class _MemorySubscription(Subscription):
    def __init__(
        self,
        bus: MemoryBus,
        pattern: str,
        mode: Mode,
        group: str | None,
        durable: str | None,
        core: _CoreSub | None,
    ) -> None:
        super().__init__(pattern, mode, group, durable)
        self._bus = bus
        self._core = core
        self.task: asyncio.Task[None] | None = None
        self.stopped = False

    async def unsubscribe(self) -> None:
        self.stopped = True
        if self._core is not None:
            self._core.stopped = True
            self._bus.broker.remove(self._core)
        if self in self._bus._subs:
            self._bus._subs.remove(self)
        task = self.task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        # called from its own handler: the loop sees `stopped` and ends after the handler returns


class MemoryBus(Bus):
    """A connection to an in-process Broker."""

    def __init__(self, url: str, codec: Codec | None = None, on_error: ErrorHandler | None = None) -> None:
        super().__init__(url, codec, on_error)
        self.broker = _broker_for(url)
        self._subs: list[_MemorySubscription] = []
        self._watches: list[_MemoryWatch] = []
        self._kvs: dict[str, MemoryKeyValue] = {}

    async def _publish(self, subject: str, data: bytes, msg_id: str | None = None) -> None:
        self.broker.publish(subject, data, None, msg_id)

    async def _subscribe(self, pattern: str, cb: RawCallback, mode: Mode, group: str | None) -> Subscription:
        core = _CoreSub(self, pattern, group, cb)
        core.task = asyncio.create_task(core.run(), name=f"bus-sub:{pattern}")
        self.broker.add(core)
        sub = _MemorySubscription(self, pattern, mode, group, None, core)
        sub.task = core.task
        self._subs.append(sub)
        return sub

    async def _request(self, subject: str, data: bytes, timeout: float) -> bytes:
        b = self.broker
        inbox = b.new_inbox()
        fut: asyncio.Future[bytes] = b.loop.create_future()
        b.replies[inbox] = fut
        try:
            if b.publish(subject, data, inbox) == 0:
                raise NoRespondersError(f"no responders for {subject!r} on {self.url}")
            try:
                async with asyncio.timeout(timeout):
                    return await fut
            except TimeoutError:
                raise RequestTimeoutError(f"request on {subject!r} timed out after {timeout}s") from None
        finally:
            b.replies.pop(inbox, None)

    async def _subscribe_durable(
        self, pattern: str, handler: Handler, mode: Mode, durable: str, ack_wait: float
    ) -> Subscription:
        st = self.broker.find_stream(pattern)
        if st is None:
            raise self._stream_error(pattern, durable)
        c = st.consumers.get(durable)
        if c is None:
            c = st.consumers[durable] = _Consumer(st, durable, pattern, ack_wait)

        sub = _MemorySubscription(self, pattern, mode, durable if mode is Mode.COMPETE else None, durable, None)

        async def run() -> None:
            while not sub.stopped:
                seq, n = await c.pull()
                rec = st.get(seq)
                if rec is None:  # aged out of the stream
                    c.ack(seq)
                    continue
                await self._dispatch(handler, rec.subject, rec.data, n, _ACKER, (c, seq, n), seq)

        sub.task = asyncio.create_task(run(), name=f"bus-durable:{durable}")
        self._subs.append(sub)
        return sub

    async def _follow(self, pattern: str, handler: Handler, start_seq: int) -> Subscription:
        st = self.broker.find_stream(pattern)
        if st is None:
            raise self._no_stream(pattern)
        sub = _MemorySubscription(self, pattern, Mode.BROADCAST, None, None, None)
        wake = asyncio.Event()
        st.followers.add(wake)

        async def run() -> None:
            seq = start_seq
            try:
                while not sub.stopped:
                    seq = max(seq, st.first_seq)  # what aged out of the stream is gone
                    if seq > st.last_seq:
                        wake.clear()
                        await wake.wait()
                        continue
                    rec = st.get(seq)
                    seq += 1
                    if rec is not None and matches(pattern, rec.subject):
                        await self._dispatch(handler, rec.subject, rec.data, stream_seq=seq - 1)
            finally:
                st.followers.discard(wake)

        sub.task = asyncio.create_task(run(), name=f"bus-follow:{pattern}")
        self._subs.append(sub)
        return sub

    async def _last_raw(self, stream: str) -> tuple[str, bytes, int] | None:
        st = self._stream(stream)
        st._prune(time.monotonic())
        if not st.msgs:
            return None
        rec = st.msgs[-1]
        return rec.subject, rec.data, st.last_seq

    async def stream_info(self, name: str) -> StreamInfo:
        self._check_open()
        st = self._stream(check_name(name, "stream"))
        st._prune(time.monotonic())
        return StreamInfo(name=name, subjects=list(st.subjects), first_seq=st.first_seq, last_seq=st.last_seq,
                          messages=len(st.msgs))

    def _stream(self, name: str) -> _Stream:
        st = self.broker.streams.get(name)
        if st is None:
            raise StreamError(f"no stream named {name!r} on {self.url}")
        return st

    async def kv(self, bucket: str, *, ttl: float | None = None) -> KeyValue:
        self._check_open()
        check_name(bucket, "bucket")
        kv = self._kvs.get(bucket)
        if kv is None:
            b = self.broker.buckets.get(bucket)
            if b is None:
                b = self.broker.buckets[bucket] = _Bucket(bucket, ttl)
            kv = self._kvs[bucket] = MemoryKeyValue(self, b)
        return kv

    async def add_stream(
        self,
        name: str,
        subjects: Sequence[str],
        *,
        max_age: float | None = None,
        duplicate_window: float | None = None,
    ) -> None:
        self._check_open()
        self._check_add_stream(name, subjects, max_age, duplicate_window)
        self.broker.add_stream(name, subjects, max_age, duplicate_window)

    async def _close(self) -> None:
        for sub in list(self._subs):
            await sub.unsubscribe()
        for w in list(self._watches):
            await w.stop()
