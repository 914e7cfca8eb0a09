"""The NATS backend (nats-py): core NATS for pub/sub and RPC, JetStream for KV and durable streams.

Mapping: BROADCAST = plain subscription, COMPETE = queue group, RPC = request/reply with the
servers in one queue group, kv() = a JetStream KV bucket (history 1), add_stream = a file-backed
JetStream stream, a durable subscription = one shared durable pull consumer (explicit ack,
`ack_wait`, unlimited redeliveries) fetched by every member, `follow` = an ephemeral in-memory pull
consumer (no acks, `inactive_threshold`) that the follower re-creates from its next stream sequence
after a reconnect, a gap or the consumer's loss. Publishing on a subject a known stream covers waits
for JetStream's PubAck, so a returned publish is stored; `msg_id` is the `Nats-Msg-Id` header.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any, Final
from urllib.parse import urlsplit

import msgspec
import nats
import nats.errors
import nats.js.errors
from nats.js import api

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
    BusConnectionError,
    BusError,
    InvalidURLError,
    KeyExistsError,
    NoRespondersError,
    PartialPublishError,
    PublishTimeoutError,
    RequestTimeoutError,
    StreamError,
    WrongRevisionError,
)
from tradesim.bus.subjects import covers, matches

log = logging.getLogger("tradesim.bus.nats")

FETCH_EXPIRY: Final = 1.0
"""Seconds a durable member's pull request waits on the server; short, so a stopped member's
outstanding request expires soon."""

PUBLISH_ACK_TIMEOUT: Final = 5.0
"""Seconds `publish_many` waits for the PubAcks of a batch (nats-py's default for one publish)."""
FOLLOW_BATCH: Final = 256
"""Messages a follower asks for per pull; it still hands them to its handler one at a time."""
FOLLOW_INACTIVE: Final = 30.0
"""Seconds without a pull after which the server deletes a follower's consumer: what a crashed
process leaves behind disappears on its own."""
FOLLOW_CHECK_AFTER: Final = 5
"""Empty pulls in a row after which a follower checks its consumer still exists (a pull on a deleted
consumer just times out, like a pull on an idle one)."""
_CLEANUP_TIMEOUT: Final = 1.0
MSG_ID_HEADER: Final = "Nats-Msg-Id"

_WRONG_LAST_SEQ: Final = (10071, 10164)
_KV_DELETE_OPS: Final = ("DEL", "PURGE")


def _servers(url: str) -> list[tuple[str, str, int]]:
    out = []
    for part in url.split(","):
        part = part.strip()
        u = urlsplit(part)
        if u.scheme not in ("nats", "tls") or not u.hostname:
            raise InvalidURLError(f"invalid NATS URL {part!r}: expected nats://host:port")
        try:
            port = u.port or 4222
        except ValueError as exc:
            raise InvalidURLError(f"invalid NATS URL {part!r}: {exc}") from exc
        out.append((part, u.hostname, port))
    return out


async def _probe(url: str, timeout: float) -> None:
    """Fail fast with a clear error if no server address accepts TCP connections."""
    errors = []
    for part, host, port in _servers(url):
        try:
            _r, w = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        except (OSError, TimeoutError) as exc:
            errors.append(f"{part}: {exc or type(exc).__name__}")
            continue
        w.close()
        try:
            await w.wait_closed()
        except OSError:
            pass
        return
    raise BusConnectionError(f"cannot connect to NATS at {url}: {'; '.join(errors)}")


class _PubAck(msgspec.Struct):
    """JetStream's answer to a publish into a stream (the fields we read)."""

    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: _ApiError | None = None


class _ApiError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


_PUB_ACK: Final = msgspec.json.Decoder(_PubAck)


def _pub_ack_error(subject: str, msg: Any) -> BusError | None:
    """None if `msg` says the publish on `subject` is stored, else the error it amounts to."""
    headers = msg.headers
    if headers and not msg.data:
        status = headers.get("Status", "")
        return BusConnectionError(f"publish on {subject!r}: no JetStream responder (status {status}): stream "
                                  "missing, JetStream down or restarting")
    try:
        ack = _PUB_ACK.decode(msg.data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return StreamError(f"publish on {subject!r}: unreadable PubAck: {exc}")
    if ack.error is not None:
        return StreamError(f"publish on {subject!r} was not stored: {ack.error.description} "
                           f"(code {ack.error.code}/{ack.error.err_code})")
    return None


def _delivery_seqs(msg: Any) -> tuple[int, int, int]:
    """(times delivered, stream seq, consumer seq) of a JetStream delivery, read straight off its reply
    subject `$JS.ACK[.<domain>.<account>].<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.…`.
    nats-py's `msg.metadata` builds dataclasses and parses a timestamp per message: a tenth of a
    follower's CPU under flow."""
    tokens: list[str] = msg.reply.split(".") if msg.reply else []
    base = 4 if len(tokens) == 9 else 6 if len(tokens) >= 11 else 0
    if base and tokens[0] == "$JS" and tokens[1] == "ACK":
        try:
            return int(tokens[base]), int(tokens[base + 1]), int(tokens[base + 2])
        except ValueError:
            pass
    md = msg.metadata  # an unexpected form: let nats-py make sense of it (or raise)
    return md.num_delivered, md.sequence.stream, md.sequence.consumer


class _NatsAcker:
    """Settles JetStream deliveries; the token is the nats-py Msg."""

    async def ack(self, token: object) -> None:
        await token.ack()  # type: ignore[attr-defined]

    async def nak(self, token: object, delay: float | None) -> None:
        await token.nak(delay=delay)  # type: ignore[attr-defined]

    async def term(self, token: object) -> None:
        await token.term()  # type: ignore[attr-defined]


_ACKER: Final = _NatsAcker()


class _CoreSubscription(Subscription):
    def __init__(self, bus: NatsBus, pattern: str, mode: Mode, group: str | None, sub: Any) -> None:
        super().__init__(pattern, mode, group, None)
        self._bus = bus
        self._sub = sub

    async def unsubscribe(self) -> None:
        self._bus._subs.discard(self)
        try:
            await self._sub.unsubscribe()
        except (nats.errors.ConnectionClosedError, nats.errors.BadSubscriptionError):
            pass


class _DurableSubscription(Subscription):
    def __init__(self, bus: NatsBus, pattern: str, mode: Mode, durable: str, psub: Any) -> None:
        super().__init__(pattern, mode, durable if mode is Mode.COMPETE else None, durable)
        self._bus = bus
        self._psub = psub
        self.stopped = False
        self.task: asyncio.Task[None] | None = None

    async def unsubscribe(self) -> None:
        self.stopped = True
        self._bus._subs.discard(self)
        task = self.task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        try:
            await self._psub.unsubscribe()
            await self._bus.barrier()  # acks reach the server before a restart fetches again
        except (nats.errors.ConnectionClosedError, nats.errors.BadSubscriptionError):
            pass


class _Connection:
    """What the connection callbacks tell the bus: how many times it reconnected so far."""

    __slots__ = ("reconnects",)

    def __init__(self) -> None:
        self.reconnects = 0


class _FollowSubscription(Subscription):
    """A follower: an ephemeral pull consumer from `next_seq`, re-created whenever it may be gone.

    The consumer is ack-less and in memory, so a server restart loses it; the follower notices (a
    reconnect, a consumer-sequence gap, or the consumer missing after idle pulls) and creates a new one
    from the stream sequence after the last one it delivered: no gap, and no duplicate either, since
    older sequences are skipped.
    """

    def __init__(self, bus: NatsBus, pattern: str, stream: str, handler: Handler, start_seq: int) -> None:
        super().__init__(pattern, Mode.BROADCAST, None, None)
        self._bus = bus
        self._stream = stream
        self._handler = handler
        self.next_seq = start_seq
        self.consumer: str | None = None
        self._psub: Any = None
        self._reconnects = 0
        self.stopped = False
        self.task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Drops the current consumer (if any) and creates one that starts at `next_seq`."""
        await self._drop()
        bus = self._bus
        self._reconnects = bus._conn.reconnects
        name = f"follow_{bus.nc._nuid.next().decode()}"
        self.consumer = name  # known before it exists: a cancelled open still cleans it up
        cfg = api.ConsumerConfig(
            name=name,
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=self.next_seq,
            ack_policy=api.AckPolicy.NONE,
            filter_subject=self.pattern,
            inactive_threshold=FOLLOW_INACTIVE,
            mem_storage=True,
            num_replicas=1,
        )
        await bus.js.add_consumer(self._stream, config=cfg)
        self._psub = await bus.js.pull_subscribe_bind(consumer=name, stream=self._stream)

    async def run(self) -> None:
        backoff = 0.1
        while not self.stopped:
            try:
                if self._psub is None:
                    await self.open()
                backoff = 0.1
                await self._read()
                if not self.stopped:
                    await self._drop()
            except asyncio.CancelledError:
                raise
            except (nats.errors.ConnectionClosedError, BusConnectionError):
                return
            except Exception as exc:  # server away or restarting: try again from the same seq
                log.info("nats %s: follower of %r at seq %d: %s; retrying", self._bus.url, self.pattern,
                         self.next_seq, exc or type(exc).__name__)
                self._psub = None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _read(self) -> None:
        """Delivers in order until the consumer has to be re-created (returns) or the follower stops."""
        bus = self._bus
        psub = self._psub
        cseq = 0
        idle = 0
        while not self.stopped:
            try:
                msgs = await psub.fetch(FOLLOW_BATCH, timeout=FETCH_EXPIRY)
            except TimeoutError:
                if bus._conn.reconnects != self._reconnects:
                    return  # the server may have restarted: its in-memory consumer is gone
                idle += 1
                if idle >= FOLLOW_CHECK_AFTER:
                    idle = 0
                    try:
                        await bus.js.consumer_info(self._stream, self.consumer)
                    except nats.js.errors.NotFoundError:
                        return
                continue
            idle = 0
            for m in msgs:
                _delivered, sseq, consumer = _delivery_seqs(m)
                if consumer != cseq + 1:
                    log.info("nats %s: follower of %r: consumer seq %d after %d; re-creating from seq %d",
                             bus.url, self.pattern, consumer, cseq, self.next_seq)
                    return
                cseq = consumer
                if sseq < self.next_seq:
                    continue
                self.next_seq = sseq + 1
                await bus._dispatch(self._handler, m.subject, m.data, stream_seq=sseq)
                if self.stopped:
                    return

    async def _drop(self) -> None:
        psub, name = self._psub, self.consumer
        self._psub = self.consumer = None
        if psub is not None:
            with contextlib.suppress(Exception):
                await psub.unsubscribe()
        if name is not None and not self._bus.nc.is_closed:
            with contextlib.suppress(Exception):  # best effort: inactive_threshold removes it otherwise
                await asyncio.wait_for(self._bus.js.delete_consumer(self._stream, name), _CLEANUP_TIMEOUT)

    async def unsubscribe(self) -> None:
        self.stopped = True
        self._bus._subs.discard(self)
        task = self.task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._drop()


class _NatsWatch(Watch):
    def __init__(self, bus: NatsBus, watcher: Any) -> None:
        self._bus = bus
        self._w = watcher
        self._stopped = False

    async def __anext__(self) -> Entry:
        while True:
            e = await self._w.__anext__()
            if e is None:  # nats-py's "initial values done" marker
                continue
            deleted = e.operation in _KV_DELETE_OPS
            return Entry(key=e.key, value=b"" if deleted else (e.value or b""), revision=e.revision, deleted=deleted)

    async def skip_initial(self) -> None:
        while await self._w.updates(timeout=5.0) is not None:
            pass

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._bus._watches.discard(self)
        try:
            await self._w.stop()
        except (nats.errors.ConnectionClosedError, nats.errors.BadSubscriptionError):
            pass


class NatsKeyValue(KeyValue):
    def __init__(self, bus: NatsBus, bucket: str, kv: Any) -> None:
        super().__init__(bucket)
        self._bus = bus
        self._kv = kv
        self._pre = f"$KV.{bucket}."

    def _wrong(self, key: str, expected: int, exc: Exception) -> WrongRevisionError:
        return WrongRevisionError(
            f"key {key!r} in bucket {self.bucket!r}: expected revision {expected}, "
            f"it is at another ({getattr(exc, 'description', exc)})"
        )

    async def get(self, key: str) -> Entry | None:
        self._bus._check_open()
        try:
            e = await self._kv.get(check_key(key))
        except nats.js.errors.KeyNotFoundError:
            return None
        return Entry(key=key, value=e.value or b"", revision=e.revision)

    async def put(self, key: str, value: bytes) -> int:
        self._bus._check_open()
        rev: int = await self._kv.put(check_key(key), bytes(value))
        return rev

    async def create(self, key: str, value: bytes) -> int:
        self._bus._check_open()
        check_key(key)
        for _attempt in range(3):
            try:
                rev: int = await self._kv.create(key, bytes(value))
                return rev
            except nats.js.errors.KeyWrongLastSequenceError:
                raise KeyExistsError(f"key {key!r} already exists in bucket {self.bucket!r}") from None
            except nats.js.errors.KeyNotFoundError:
                continue  # the tombstone vanished (TTL) between two steps of create: try again
        raise KeyExistsError(f"key {key!r} in bucket {self.bucket!r}: create kept racing, giving up")

    async def update(self, key: str, value: bytes, expected_revision: int) -> int:
        self._bus._check_open()
        try:
            rev: int = await self._kv.update(check_key(key), bytes(value), last=expected_revision)
            return rev
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise self._wrong(key, expected_revision, exc) from None

    async def delete(self, key: str, expected_revision: int | None = None) -> None:
        self._bus._check_open()
        hdrs = {"KV-Operation": "DEL"}
        if expected_revision is not None:
            hdrs[api.Header.EXPECTED_LAST_SUBJECT_SEQUENCE] = str(expected_revision)
        try:
            await self._bus.js.publish(self._pre + check_key(key), b"", headers=hdrs)
        except nats.js.errors.APIError as exc:
            if exc.err_code in _WRONG_LAST_SEQ:
                raise self._wrong(key, expected_revision or 0, exc) from None
            raise BusError(f"delete {key!r} in bucket {self.bucket!r}: {exc}") from exc

    async def keys(self) -> list[str]:
        """Two listings, united: nats-py lists a bucket through a consumer that can miss a key rewritten
        meanwhile (its old value is gone before delivery, its new one comes after the listing ends), which
        made a heartbeating registry entry vanish from one listing now and then. A key deleted between the
        two may still be listed; a `get` tells."""
        self._bus._check_open()
        return sorted(set(await self._list()) | set(await self._list()))

    async def _list(self) -> list[str]:
        try:
            keys: list[str] = await self._kv.keys()
        except nats.js.errors.NoKeysError:
            return []
        return keys

    async def watch(self, pattern: str = ">", *, include_initial: bool = True) -> Watch:
        self._bus._check_open()
        w = _NatsWatch(self._bus, await self._kv.watch(check_watch_pattern(pattern)))
        if not include_initial:
            await w.skip_initial()
        self._bus._watches.add(w)
        return w


class NatsBus(Bus):
    """A connection to a NATS server (with JetStream enabled for kv() and streams)."""

    def __init__(self, url: str, nc: Any, codec: Codec | None = None, on_error: ErrorHandler | None = None) -> None:
        super().__init__(url, codec, on_error)
        self.nc = nc
        self.js = nc.jetstream()
        self._subs: set[Subscription] = set()
        self._watches: set[_NatsWatch] = set()
        self._kvs: dict[str, NatsKeyValue] = {}
        self._streams: dict[str, list[str]] = {}
        self._stored: dict[str, bool] = {}
        self._closing = asyncio.Event()
        self._conn = _Connection()
        self._ack_prefix = nc.new_inbox() + "."
        self._ack_sub: Any = None
        self._ack_token = 0
        self._acks: dict[int, asyncio.Future[Any]] = {}

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        codec: Codec | None = None,
        on_error: ErrorHandler | None = None,
        timeout: float = 2.0,
    ) -> NatsBus:
        """Connect, failing within about `timeout` seconds with a BusConnectionError naming the URL."""
        servers = [p for p, _h, _port in _servers(url)]
        await _probe(url, timeout)

        closing = asyncio.Event()  # set by close(): an intended disconnect is not worth a warning
        conn = _Connection()

        async def error_cb(exc: Exception) -> None:
            if not closing.is_set():
                log.warning("nats %s: %s", url, exc)

        async def disconnected_cb() -> None:
            if not closing.is_set():
                log.warning("nats %s: disconnected", url)

        async def reconnected_cb() -> None:
            conn.reconnects += 1
            log.warning("nats %s: reconnected", url)

        try:
            nc = await asyncio.wait_for(
                nats.connect(
                    servers=servers,
                    connect_timeout=timeout,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    error_cb=error_cb,
                    disconnected_cb=disconnected_cb,
                    reconnected_cb=reconnected_cb,
                ),
                timeout * 2,
            )
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            raise BusConnectionError(f"cannot connect to NATS at {url}: {exc or type(exc).__name__}") from exc
        bus = cls(url, nc, codec, on_error)
        bus._closing = closing
        bus._conn = conn
        await bus._refresh_streams()
        return bus

    # ---- core ---------------------------------------------------------------------------------
    async def barrier(self) -> None:
        """Return once the server has processed everything this connection sent so far.

        nats-py's flush() writes its PING straight to the socket, ahead of commands still in the
        client's buffer, so a SUB could reach the server after the PONG; push the buffer out first.
        """
        flush_pending = getattr(self.nc, "_flush_pending", None)
        if flush_pending is not None:
            await flush_pending(force_flush=True)
        await self.nc.flush()

    async def _publish(self, subject: str, data: bytes, msg_id: str | None = None) -> None:
        stored = self._is_stored(subject)
        headers = {MSG_ID_HEADER: msg_id} if msg_id is not None else None
        try:
            if stored:
                await self.js.publish(subject, data, headers=headers)
            else:
                await self.nc.publish(subject, data, headers=headers)
        except nats.errors.ConnectionClosedError as exc:
            raise BusConnectionError(f"bus {self.url} is closed") from exc
        except nats.js.errors.Error as exc:
            raise StreamError(f"publish on {subject!r} was not stored: {exc}") from exc
        except TimeoutError as exc:
            raise PublishTimeoutError(
                f"publish on {subject!r}: no acknowledgement from JetStream at {self.url} in time; it may or "
                "may not be stored (publish again with the same msg_id)") from exc
        except nats.errors.Error as exc:
            raise BusConnectionError(f"publish on {subject!r} at {self.url} failed: {exc}") from exc

    def _is_stored(self, subject: str) -> bool:
        stored = self._stored.get(subject)
        if stored is None:
            if subject.startswith("_INBOX."):
                return False  # a reply: every one is a new subject, not worth remembering
            stored = any(matches(p, subject) for subs in self._streams.values() for p in subs)
            if len(self._stored) > 65536:
                self._stored.clear()
            self._stored[subject] = stored
        return stored

    async def _publish_many(self, messages: Sequence[tuple[str, bytes, str | None]]) -> None:
        """Stream messages pipelined: all written in one synchronous stretch (so nats-py hands them to the
        socket in one write, and a reconnect re-sends all of them or none: what is stored is always a
        prefix, in order), then their PubAcks awaited together on one reply subscription."""
        if len(messages) < 2 or not all(self._is_stored(subject) for subject, _, _ in messages):
            await super()._publish_many(messages)
            return
        acks = await self._ack_inbox()
        loop = asyncio.get_running_loop()
        first = self._ack_token + 1
        futures: list[asyncio.Future[Any]] = []
        try:
            try:
                for subject, data, msg_id in messages:
                    self._ack_token += 1
                    fut = acks[self._ack_token] = loop.create_future()
                    futures.append(fut)
                    headers = {MSG_ID_HEADER: msg_id} if msg_id is not None else None
                    await self.nc.publish(subject, data, reply=f"{self._ack_prefix}{self._ack_token}",
                                          headers=headers)
            except Exception as exc:
                raise PartialPublishError(0, self._publish_failed(messages[0][0], exc)) from exc
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.wait(futures), PUBLISH_ACK_TIMEOUT)
            for done, (fut, (subject, _, _)) in enumerate(zip(futures, messages, strict=True)):
                error: BusError | None
                if not fut.done():
                    error = PublishTimeoutError(
                        f"publish on {subject!r}: no acknowledgement from JetStream at {self.url} in time; it may "
                        "or may not be stored (publish again with the same msg_id)")
                else:
                    error = _pub_ack_error(subject, fut.result())
                if error is not None:
                    raise PartialPublishError(done, error) from error
        finally:
            for token in range(first, first + len(futures)):
                left = acks.pop(token, None)
                if left is not None:
                    left.cancel()

    async def _ack_inbox(self) -> dict[int, asyncio.Future[Any]]:
        """The futures of the pipelined publishes awaiting their PubAck, by reply token (subscribed once)."""
        if self._ack_sub is None:
            acks = self._acks

            async def on_ack(msg: Any) -> None:
                token = msg.subject.rpartition(".")[2]
                fut = acks.pop(int(token), None) if token.isdigit() else None
                if fut is not None and not fut.done():
                    fut.set_result(msg)

            self._ack_sub = await self.nc.subscribe(self._ack_prefix + "*", cb=on_ack)
        return self._acks

    def _publish_failed(self, subject: str, exc: BaseException) -> BusError:
        if isinstance(exc, nats.errors.ConnectionClosedError):
            return BusConnectionError(f"bus {self.url} is closed")
        return BusConnectionError(f"publish on {subject!r} at {self.url} failed: {exc}")

    async def _subscribe(self, pattern: str, cb: RawCallback, mode: Mode, group: str | None) -> Subscription:
        async def on_msg(msg: Any) -> None:
            await cb(msg.subject, msg.data, msg.reply or None)

        sub = await self.nc.subscribe(pattern, queue=group or "", cb=on_msg)
        await self.barrier()  # the server knows the interest before subscribe() returns
        s = _CoreSubscription(self, pattern, mode, group, sub)
        self._subs.add(s)
        return s

    async def _request(self, subject: str, data: bytes, timeout: float) -> bytes:
        try:
            msg = await self.nc.request(subject, data, timeout=timeout)
        except nats.errors.NoRespondersError:
            raise NoRespondersError(f"no responders for {subject!r} on {self.url}") from None
        except nats.errors.TimeoutError:
            raise RequestTimeoutError(f"request on {subject!r} timed out after {timeout}s") from None
        except nats.errors.ConnectionClosedError as exc:
            raise BusConnectionError(f"bus {self.url} is closed") from exc
        body: bytes = msg.data
        return body

    # ---- durable streams ----------------------------------------------------------------------
    async def _refresh_streams(self) -> None:
        try:
            infos = await self.js.streams_info()
        except (nats.js.errors.Error, nats.errors.Error, TimeoutError) as exc:
            log.info("nats %s: cannot list streams (JetStream off?): %s", self.url, exc)
            return
        self._streams = {
            i.config.name: list(i.config.subjects or [])
            for i in infos
            if i.config.name and not i.config.name.startswith("KV_")
        }
        self._stored.clear()

    def _find_stream(self, pattern: str) -> str | None:
        for name, subjects in self._streams.items():
            if any(covers(p, pattern) for p in subjects):
                return name
        return None

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
        cfg = api.StreamConfig(
            name=name,
            subjects=list(subjects),
            storage=api.StorageType.FILE,
            retention=api.RetentionPolicy.LIMITS,
            max_age=max_age,
            duplicate_window=duplicate_window if duplicate_window is not None else DEFAULT_DUPLICATE_WINDOW,
        )
        try:
            try:
                await self.js.stream_info(name)
            except nats.js.errors.NotFoundError:
                await self.js.add_stream(cfg)
            else:
                await self.js.update_stream(cfg)
        except (TimeoutError, nats.errors.Error) as exc:
            raise self._js_failed(f"cannot add stream {name!r} on {list(subjects)}", exc) from exc
        await self._refresh_streams()

    async def _subscribe_durable(
        self, pattern: str, handler: Handler, mode: Mode, durable: str, ack_wait: float
    ) -> Subscription:
        stream = self._find_stream(pattern)
        if stream is None:
            await self._refresh_streams()
            stream = self._find_stream(pattern)
        if stream is None:
            raise self._stream_error(pattern, durable)
        cfg = api.ConsumerConfig(
            durable_name=durable,
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_wait=ack_wait,
            max_deliver=-1,
            filter_subject=pattern,
        )
        try:
            psub = await self.js.pull_subscribe(pattern, durable=durable, stream=stream, config=cfg)
        except nats.js.errors.APIError as exc:
            raise StreamError(f"durable {durable!r} on {pattern!r}: {exc.description or exc}") from exc
        sub = _DurableSubscription(self, pattern, mode, durable, psub)

        async def run() -> None:
            while not sub.stopped:
                try:
                    msgs = await psub.fetch(batch=1, timeout=FETCH_EXPIRY)
                except TimeoutError:
                    continue
                except (nats.errors.ConnectionClosedError, nats.errors.BadSubscriptionError):
                    return
                except Exception as exc:  # keep the consumer alive through transient errors
                    self.on_error(pattern, exc)
                    await asyncio.sleep(0.5)
                    continue
                for m in msgs:
                    delivered, sseq, _consumer = _delivery_seqs(m)
                    await self._dispatch(handler, m.subject, m.data, delivered, _ACKER, m, sseq)

        sub.task = asyncio.create_task(run(), name=f"bus-durable:{durable}")
        self._subs.add(sub)
        return sub

    async def _follow(self, pattern: str, handler: Handler, start_seq: int) -> Subscription:
        stream = self._find_stream(pattern)
        if stream is None:
            await self._refresh_streams()
            stream = self._find_stream(pattern)
        if stream is None:
            raise self._no_stream(pattern)
        sub = _FollowSubscription(self, pattern, stream, handler, start_seq)
        try:
            await sub.open()
        except (TimeoutError, nats.errors.Error) as exc:
            raise self._js_failed(f"follow {pattern!r} on stream {stream!r}", exc) from exc
        sub.task = asyncio.create_task(sub.run(), name=f"bus-follow:{pattern}")
        self._subs.add(sub)
        return sub

    def _js_failed(self, what: str, exc: BaseException) -> BusError:
        """A JetStream API failure as a bus error: BusConnectionError when the server did not answer
        (unreachable, restarting: worth retrying), StreamError when it answered with a refusal."""
        if isinstance(exc, nats.errors.ConnectionClosedError):
            return BusConnectionError(f"bus {self.url} is closed")
        if isinstance(exc, TimeoutError | nats.errors.NoRespondersError | nats.js.errors.NoStreamResponseError
                      | nats.js.errors.ServiceUnavailableError):
            return BusConnectionError(f"{what}: JetStream at {self.url} did not answer (unreachable or restarting?)")
        if isinstance(exc, nats.js.errors.APIError):
            return StreamError(f"{what}: {exc.description or exc}")
        return BusConnectionError(f"{what}: {exc or type(exc).__name__}")

    async def stream_info(self, name: str) -> StreamInfo:
        self._check_open()
        check_name(name, "stream")
        try:
            info = await self.js.stream_info(name)
        except nats.js.errors.NotFoundError:
            raise StreamError(f"no stream named {name!r} on {self.url}") from None
        except (TimeoutError, nats.errors.Error) as exc:
            raise self._js_failed(f"stream_info {name!r}", exc) from exc
        st = info.state
        return StreamInfo(name=name, subjects=list(info.config.subjects or []), first_seq=st.first_seq,
                          last_seq=st.last_seq, messages=st.messages)

    async def _last_raw(self, stream: str) -> tuple[str, bytes, int] | None:
        for _attempt in range(5):
            info = await self.stream_info(stream)
            if info.messages == 0:
                return None
            try:
                raw = await self.js.get_msg(stream, seq=info.last_seq)
            except nats.js.errors.NotFoundError:
                continue  # removed (max_age) between the two calls: look again
            except (TimeoutError, nats.errors.Error) as exc:
                raise self._js_failed(f"last message of {stream!r}", exc) from exc
            return raw.subject or "", raw.data or b"", raw.seq or info.last_seq
        raise StreamError(f"last message of {stream!r}: the stream kept changing under the read")

    # ---- key-value ----------------------------------------------------------------------------
    async def kv(self, bucket: str, *, ttl: float | None = None) -> KeyValue:
        self._check_open()
        check_name(bucket, "bucket")
        kv = self._kvs.get(bucket)
        if kv is not None:
            return kv
        try:
            raw = await self.js.key_value(bucket)
        except nats.js.errors.BucketNotFoundError:
            try:
                raw = await self.js.create_key_value(bucket=bucket, ttl=ttl, history=1)
            except nats.js.errors.APIError:
                raw = await self.js.key_value(bucket)  # another process created it first
        kv = self._kvs[bucket] = NatsKeyValue(self, bucket, raw)
        return kv

    # ---- lifecycle ----------------------------------------------------------------------------
    async def _close(self) -> None:
        self._closing.set()
        for w in list(self._watches):
            await w.stop()
        tasks = []
        for s in list(self._subs):
            if isinstance(s, _FollowSubscription):
                await s.unsubscribe()  # a follower leaves nothing on the server
            elif isinstance(s, _DurableSubscription):
                s.stopped = True  # like a crash: unacked messages come back after ack_wait
                if s.task is not None and s.task is not asyncio.current_task():
                    s.task.cancel()
                    tasks.append(s.task)
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await self.nc.close()
        except nats.errors.Error as exc:
            log.info("nats %s: close: %s", self.url, exc)
