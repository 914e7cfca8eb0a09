"""The NATS backend (nats-py): core NATS for pub/sub and RPC, JetStream for KV and durable streams.

Mapping: BROADCAST = plain subscription, COMPETE = queue group, RPC = request/reply with the
servers in one queue group, kv() = a JetStream KV bucket (history 1), add_stream = a file-backed
JetStream stream, a durable subscription = one shared durable pull consumer (explicit ack,
`ack_wait`, unlimited redeliveries) fetched by every member. Publishing on a subject a known stream
covers waits for JetStream's PubAck, so a returned publish is stored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Final
from urllib.parse import urlsplit

import nats
import nats.errors
import nats.js.errors
from nats.js import api

from tradesim.bus.base import (
    Bus,
    Entry,
    ErrorHandler,
    Handler,
    KeyValue,
    Mode,
    RawCallback,
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
    RequestTimeoutError,
    StreamError,
    WrongRevisionError,
)
from tradesim.bus.subjects import covers, matches, validate_pattern

log = logging.getLogger("tradesim.bus.nats")

FETCH_EXPIRY: Final = 1.0
"""Seconds a durable member's pull request waits on the server; short, so a stopped member's
outstanding request expires soon."""

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
        self._bus._check_open()
        try:
            return sorted(await self._kv.keys())
        except nats.js.errors.NoKeysError:
            return []

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

        async def error_cb(exc: Exception) -> None:
            if not closing.is_set():
                log.warning("nats %s: %s", url, exc)

        async def disconnected_cb() -> None:
            if not closing.is_set():
                log.warning("nats %s: disconnected", url)

        async def reconnected_cb() -> None:
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

    async def _publish(self, subject: str, data: bytes) -> None:
        stored = self._stored.get(subject)
        if stored is None:
            stored = not subject.startswith("_INBOX.") and any(
                matches(p, subject) for subs in self._streams.values() for p in subs
            )
            if len(self._stored) > 65536:
                self._stored.clear()
            self._stored[subject] = stored
        try:
            if stored:
                await self.js.publish(subject, data)
            else:
                await self.nc.publish(subject, data)
        except nats.errors.ConnectionClosedError as exc:
            raise BusConnectionError(f"bus {self.url} is closed") from exc
        except nats.js.errors.Error as exc:
            raise StreamError(f"publish on {subject!r} was not stored: {exc}") from exc

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

    async def add_stream(self, name: str, subjects: Sequence[str], *, max_age: float | None = None) -> None:
        self._check_open()
        check_name(name, "stream")
        if not subjects:
            raise ValueError(f"stream {name!r} needs at least one subject")
        for s in subjects:
            validate_pattern(s)
        cfg = api.StreamConfig(
            name=name,
            subjects=list(subjects),
            storage=api.StorageType.FILE,
            retention=api.RetentionPolicy.LIMITS,
            max_age=max_age,
        )
        try:
            try:
                await self.js.stream_info(name)
            except nats.js.errors.NotFoundError:
                await self.js.add_stream(cfg)
            else:
                await self.js.update_stream(cfg)
        except nats.js.errors.APIError as exc:
            raise StreamError(f"cannot add stream {name!r} on {list(subjects)}: {exc.description or exc}") from exc
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
                    await self._dispatch(handler, m.subject, m.data, m.metadata.num_delivered, _ACKER, m)

        sub.task = asyncio.create_task(run(), name=f"bus-durable:{durable}")
        self._subs.add(sub)
        return sub

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
            if isinstance(s, _DurableSubscription):
                s.stopped = True  # like a crash: unacked messages come back after ack_wait
                if s.task is not None and s.task is not asyncio.current_task():
                    s.task.cancel()
                    tasks.append(s.task)
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await self.nc.close()
        except nats.errors.Error as exc:
            log.info("nats %s: close: %s", self.url, exc)
