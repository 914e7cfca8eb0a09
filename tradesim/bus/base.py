"""The Bus interface every backend implements, and the parts of its behaviour that are backend-free.

The public methods of `Bus` (publish, subscribe, request, serve) live here and do validation,
encoding, decoding and error mapping once; a backend only moves bytes (`_publish`, `_subscribe`,
`_request`, `_subscribe_durable`) and provides `kv()` and `add_stream()`. That is how the memory
and NATS backends keep one behaviour.

Handler shape (one for everything): `async def handler(d: Delivery) -> None`, where `d.subject`
is the concrete subject, `d.data` the decoded Struct and, for durable subscriptions, `await d.ack()`
/ `await d.nak()` settle the message (both are no-ops on plain subscriptions).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from types import TracebackType
from typing import Final, Protocol

import msgspec

from tradesim.bus.codec import Codec, RemoteFault, default_codec
from tradesim.bus.errors import (
    BusConnectionError,
    CodecError,
    InvalidKeyError,
    RemoteError,
    StreamError,
)
from tradesim.bus.subjects import validate_pattern, validate_subject

log = logging.getLogger("tradesim.bus")

DEFAULT_ACK_WAIT: Final = 30.0
RPC_GROUP: Final = "rpc"
"""Queue group of RPC servers: several servers of one subject share the requests (one answers)."""

_NAME_RE: Final = re.compile(r"^[A-Za-z0-9_-]+$")
_KEY_RE: Final = re.compile(r"^[-/_=.a-zA-Z0-9]+$")
_WATCH_RE: Final = re.compile(r"^[-/_=.a-zA-Z0-9*>]+$")


class Mode(enum.Enum):
    """BROADCAST: every subscriber gets every message. COMPETE: one member of the group gets each."""

    BROADCAST = "broadcast"
    COMPETE = "compete"


class Acker(Protocol):
    """How a backend settles a durable delivery; `token` is the backend's handle of the message."""

    async def ack(self, token: object) -> None: ...

    async def nak(self, token: object, delay: float | None) -> None: ...

    async def term(self, token: object) -> None: ...


class Delivery:
    """One message handed to a subscription handler."""

    __slots__ = ("_acker", "_settled", "_token", "data", "delivery_count", "subject")

    def __init__(
        self,
        subject: str,
        data: msgspec.Struct,
        delivery_count: int = 1,
        acker: Acker | None = None,
        token: object = None,
    ) -> None:
        self.subject = subject
        self.data = data
        self.delivery_count = delivery_count
        self._acker = acker
        self._token = token
        self._settled = False

    @property
    def durable(self) -> bool:
        """True if this came from a durable subscription and must be acked."""
        return self._acker is not None

    @property
    def redelivered(self) -> bool:
        return self.delivery_count > 1

    async def ack(self) -> None:
        """Mark as processed; a durable message not acked within ack_wait is delivered again."""
        if self._acker is not None and not self._settled:
            self._settled = True
            await self._acker.ack(self._token)

    async def nak(self, delay: float | None = None) -> None:
        """Give the message back for redelivery (after `delay` seconds, default at once)."""
        if self._acker is not None and not self._settled:
            self._settled = True
            await self._acker.nak(self._token, delay)

    def __repr__(self) -> str:
        return f"Delivery({self.subject!r}, {self.data!r}, delivery_count={self.delivery_count})"


Handler = Callable[[Delivery], Awaitable[None]]
RpcHandler = Callable[[msgspec.Struct], Awaitable[msgspec.Struct]]
ErrorHandler = Callable[[str, BaseException], None]
"""Called with (subject, error) for what cannot be raised to a caller: handler and decode errors."""


def log_error(subject: str, exc: BaseException) -> None:
    """Default error handler: log it (never a silent skip)."""
    log.error("bus error on %r: %s", subject, exc, exc_info=exc)


class Subscription(ABC):
    """A live subscription; `unsubscribe()` stops deliveries (a durable keeps its cursor)."""

    def __init__(self, pattern: str, mode: Mode, group: str | None, durable: str | None) -> None:
        self.pattern = pattern
        self.mode = mode
        self.group = group
        self.durable = durable

    @abstractmethod
    async def unsubscribe(self) -> None: ...

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.pattern!r}, mode={self.mode.name}, group={self.group!r}, "
            f"durable={self.durable!r})"
        )


class Entry(msgspec.Struct, frozen=True, kw_only=True):
    """A key's value at a revision; `deleted` entries (value b"") appear only in watches."""

    key: str
    value: bytes
    revision: int
    deleted: bool = False


class Watch(ABC):
    """Async iterator of entries for a key or pattern: current values first, then every change."""

    def __aiter__(self) -> AsyncIterator[Entry]:
        return self

    @abstractmethod
    async def __anext__(self) -> Entry: ...

    @abstractmethod
    async def stop(self) -> None:
        """End the watch; a pending `async for` finishes."""

    async def __aenter__(self) -> Watch:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


class KeyValue(ABC):
    """A bucket of revisioned keys: the primitives of leader election and the service registry.

    Revisions grow per bucket. `create` fails if the key is present (a deleted key may be created
    again), `update`/`delete` with an expected revision are compare-and-set. With a bucket TTL an
    entry disappears `ttl` seconds after its last write (without a delete event in watches).
    """

    def __init__(self, bucket: str) -> None:
        self.bucket = bucket

    @abstractmethod
    async def get(self, key: str) -> Entry | None:
        """The current entry, or None if absent, deleted or expired."""

    @abstractmethod
    async def put(self, key: str, value: bytes) -> int:
        """Write unconditionally; returns the new revision."""

    @abstractmethod
    async def create(self, key: str, value: bytes) -> int:
        """Write only if absent; raises KeyExistsError otherwise. Returns the revision."""

    @abstractmethod
    async def update(self, key: str, value: bytes, expected_revision: int) -> int:
        """Write only if the key's revision is `expected_revision`; raises WrongRevisionError otherwise."""

    @abstractmethod
    async def delete(self, key: str, expected_revision: int | None = None) -> None:
        """Delete (leaving a tombstone watchers see); with `expected_revision`, only at that revision."""

    @abstractmethod
    async def keys(self) -> list[str]:
        """Keys currently present (not deleted, not expired), sorted."""

    @abstractmethod
    async def watch(self, pattern: str = ">", *, include_initial: bool = True) -> Watch:
        """Watch a key or pattern; returns once the watch is live (no change after it is missed)."""


def check_key(key: str) -> str:
    if not isinstance(key, str) or not _KEY_RE.match(key) or key.startswith(".") or key.endswith("."):
        raise InvalidKeyError(f"invalid key {key!r}: use [-/_=.a-zA-Z0-9], not starting or ending with '.'")
    return key


def check_watch_pattern(pattern: str) -> str:
    if not isinstance(pattern, str) or not _WATCH_RE.match(pattern):
        raise InvalidKeyError(f"invalid watch pattern {pattern!r}")
    validate_pattern(pattern)
    return pattern


def check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"invalid {what} name {name!r}: use letters, digits, '_' and '-'")
    return name


RawCallback = Callable[[str, bytes, str | None], Awaitable[None]]
"""Backend → base: (subject, data, reply subject) for plain subscriptions and RPC servers."""


class Bus(ABC):
    """A connection to the event bus (see the module docstring for the handler contract)."""

    def __init__(self, url: str, codec: Codec | None = None, on_error: ErrorHandler | None = None) -> None:
        self.url = url
        self.codec = codec or default_codec
        self.on_error: ErrorHandler = on_error or log_error
        self._closed = False

    # ---- public API ---------------------------------------------------------------------------
    async def publish(self, subject: str, msg: msgspec.Struct) -> None:
        """Send `msg` on `subject`. Returns once sent (and stored, when a stream covers the subject)."""
        self._check_open()
        validate_subject(subject)
        await self._publish(subject, self.codec.encode(subject, msg))

    async def subscribe(
        self,
        pattern: str,
        handler: Handler,
        mode: Mode = Mode.BROADCAST,
        group: str | None = None,
        durable: str | None = None,
        *,
        ack_wait: float = DEFAULT_ACK_WAIT,
    ) -> Subscription:
        """Deliver messages matching `pattern` to `handler`, one at a time, in arrival order.

        COMPETE needs a `group` (or a `durable`). With `durable`, the subscription reads a stream
        (see `add_stream`) through a named cursor that survives restarts; every subscriber using the
        same durable name shares that cursor (each message goes to one of them), so give each
        BROADCAST consumer its own durable name. Durable messages must be acked; an unacked one is
        redelivered after `ack_wait` seconds (a handler that raises leaves it unacked).
        """
        self._check_open()
        validate_pattern(pattern)
        if durable is not None:
            check_name(durable, "durable")
            if group is not None and group != durable:
                raise ValueError(
                    f"durable {durable!r}: members of a durable compete under the durable name; "
                    f"group={group!r} must be None or equal to it"
                )
            if ack_wait <= 0:
                raise ValueError(f"ack_wait must be positive, got {ack_wait}")
            return await self._subscribe_durable(pattern, handler, mode, durable, ack_wait)
        if mode is Mode.COMPETE:
            if not group:
                raise ValueError(f"COMPETE subscription to {pattern!r} needs a group name")
            check_name(group, "group")
        elif group is not None:
            raise ValueError(f"BROADCAST subscription to {pattern!r} takes no group (got {group!r})")

        async def on_raw(subject: str, data: bytes, reply: str | None) -> None:
            await self._dispatch(handler, subject, data)

        return await self._subscribe(pattern, on_raw, mode, group if mode is Mode.COMPETE else None)

    async def request(self, subject: str, msg: msgspec.Struct, timeout: float = 1.0) -> msgspec.Struct:
        """Send an RPC request and return the decoded reply.

        Raises NoRespondersError (nobody serves the subject), RequestTimeoutError (no answer in
        time), RemoteError (the server's handler raised) or CodecError (reply not decodable).
        """
        self._check_open()
        validate_subject(subject)
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        data = await self._request(subject, self.codec.encode(subject, msg), timeout)
        reply = self.codec.decode(subject, data)
        if isinstance(reply, RemoteFault):
            raise RemoteError(subject, reply.error_type, reply.message)
        return reply

    async def serve(self, subject: str, handler: RpcHandler, *, concurrency: int = 1) -> Subscription:
        """Answer requests on `subject` (wildcards allowed) with `handler(request) -> reply`.

        By default requests are handled one at a time per server. With `concurrency=N`, up to N
        handlers run at once (each in its own task, started in arrival order; the N+1st request waits
        for a free slot), so a handler that awaits I/O — e.g. a group commit — does not hold back the
        requests behind it. Replies then go out as handlers finish. Several servers of one subject
        share the load (each request is answered by one). A handler exception goes back as a RemoteError.
        """
        self._check_open()
        validate_pattern(subject)
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be a positive int, got {concurrency!r}")

        async def answer(subj: str, data: bytes, reply: str | None) -> None:
            if reply is None:
                self.on_error(subj, CodecError(f"request on {subj!r} has no reply subject; dropped"))
                return
            try:
                req = self.codec.decode(subj, data)
                out = await handler(req)
                payload = self.codec.encode(subj, out)
            except Exception as exc:
                self.on_error(subj, exc)
                fault = RemoteFault(error_type=type(exc).__name__, message=str(exc))
                payload = self.codec.encode(subj, fault)
            try:
                await self._publish(reply, payload)
            except Exception as exc:
                self.on_error(subj, exc)

        if concurrency == 1:
            return await self._subscribe(subject, answer, Mode.COMPETE, RPC_GROUP)

        slots = asyncio.Semaphore(concurrency)
        running: set[asyncio.Task[None]] = set()  # strong references until each handler is done

        def done(task: asyncio.Task[None]) -> None:
            running.discard(task)
            slots.release()

        async def spawn(subj: str, data: bytes, reply: str | None) -> None:
            await slots.acquire()  # back-pressure: the subscription reads on only when a slot is free
            task = asyncio.create_task(answer(subj, data, reply), name=f"bus-rpc:{subj}")
            running.add(task)
            task.add_done_callback(done)

        return await self._subscribe(subject, spawn, Mode.COMPETE, RPC_GROUP)

    @abstractmethod
    async def kv(self, bucket: str, *, ttl: float | None = None) -> KeyValue:
        """Open (creating if needed) a key-value bucket; `ttl` seconds expires entries after a write."""

    @abstractmethod
    async def add_stream(self, name: str, subjects: Sequence[str], *, max_age: float | None = None) -> None:
        """Create or update a durable stream storing every message published on `subjects`."""

    async def close(self) -> None:
        """Close the connection; subscriptions end, durable cursors stay on the server."""
        if self._closed:
            return
        self._closed = True
        await self._close()

    @property
    def closed(self) -> bool:
        return self._closed

    async def __aenter__(self) -> Bus:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    # ---- shared helpers for backends ----------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise BusConnectionError(f"bus {self.url} is closed")

    async def _dispatch(
        self,
        handler: Handler,
        subject: str,
        data: bytes,
        delivery_count: int = 1,
        acker: Acker | None = None,
        token: object = None,
    ) -> None:
        """Decode and run the handler; errors go to on_error (a poison durable message is dropped)."""
        try:
            msg = self.codec.decode(subject, data)
        except CodecError as exc:
            self.on_error(subject, exc)
            if acker is not None:
                await acker.term(token)
            return
        try:
            await handler(Delivery(subject, msg, delivery_count, acker, token))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.on_error(subject, exc)

    @staticmethod
    def _stream_error(pattern: str, durable: str) -> StreamError:
        return StreamError(f"durable {durable!r}: no stream covers {pattern!r} (call add_stream(name, [...]) first)")

    # ---- backend primitives -------------------------------------------------------------------
    @abstractmethod
    async def _publish(self, subject: str, data: bytes) -> None: ...

    @abstractmethod
    async def _subscribe(self, pattern: str, cb: RawCallback, mode: Mode, group: str | None) -> Subscription: ...

    @abstractmethod
    async def _request(self, subject: str, data: bytes, timeout: float) -> bytes: ...

    @abstractmethod
    async def _subscribe_durable(
        self, pattern: str, handler: Handler, mode: Mode, durable: str, ack_wait: float
    ) -> Subscription: ...

    @abstractmethod
    async def _close(self) -> None: ...
