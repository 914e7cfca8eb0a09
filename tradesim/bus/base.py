"""The Bus interface every backend implements, and the parts of its behaviour that are backend-free.

The public methods of `Bus` (publish, subscribe, request, serve) live here and do validation,
encoding, decoding and error mapping once; a backend only moves bytes (`_publish`, `_subscribe`,
`_request`, `_subscribe_durable`, `_follow`) and provides `kv()`, `add_stream()`, `stream_info()`
and `_last_raw()`. That is how the memory and NATS backends keep one behaviour.

Handler shape (one for everything): `async def handler(d: Delivery) -> None`, where `d.subject`
is the concrete subject, `d.data` the decoded Struct and, for durable subscriptions, `await d.ack()`
/ `await d.nak()` settle the message (both are no-ops on plain subscriptions). Deliveries read from a
stream (durable subscriptions, `follow`) carry the message's stream sequence in `d.stream_seq`.
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
    PartialPublishError,
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
_MSG_ID_RE: Final = re.compile(r"^[\x21-\x7e]{1,256}$")
DEFAULT_DUPLICATE_WINDOW: Final = 120.0
"""Seconds a stream remembers a message id (NATS JetStream's default `duplicate_window`)."""


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

    __slots__ = ("_acker", "_settled", "_token", "data", "delivery_count", "stream_seq", "subject")

    def __init__(
        self,
        subject: str,
        data: msgspec.Struct,
        delivery_count: int = 1,
        acker: Acker | None = None,
        token: object = None,
        stream_seq: int | None = None,
    ) -> None:
        self.subject = subject
        self.data = data
        self.delivery_count = delivery_count
        self.stream_seq = stream_seq  # the message's sequence in its stream; None for plain subscriptions
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
        seq = "" if self.stream_seq is None else f", stream_seq={self.stream_seq}"
        return f"Delivery({self.subject!r}, {self.data!r}, delivery_count={self.delivery_count}{seq})"


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


class StreamInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A stream's configuration and extent: `last_seq` is 0 for a stream that never stored anything."""

    name: str
    subjects: list[str]
    first_seq: int
    last_seq: int
    messages: int


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


def check_msg_id(msg_id: str) -> str:
    if not isinstance(msg_id, str) or not _MSG_ID_RE.match(msg_id):
        raise ValueError(f"invalid msg_id {msg_id!r}: use 1 to 256 printable ASCII characters, no whitespace")
    return msg_id


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
    async def publish(self, subject: str, msg: msgspec.Struct, *, msg_id: str | None = None) -> None:
        """Send `msg` on `subject`. Returns once sent (and stored, when a stream covers the subject).

        With `msg_id`, a stream covering `subject` stores the message only once however often it is
        published with that id within the stream's duplicate window (NATS `Nats-Msg-Id`): a publisher
        that does not know whether a publish got stored (timeout, reconnect) simply publishes again.
        Live subscribers may see such a repeat; stream readers (`follow`, durables) do not.
        """
        self._check_open()
        validate_subject(subject)
        if msg_id is not None:
            check_msg_id(msg_id)
        await self._publish(subject, self.codec.encode(subject, msg), msg_id)

    async def publish_many(self, messages: Sequence[tuple[str, msgspec.Struct, str | None]]) -> None:
        """Publish `(subject, msg, msg_id)`s in this order; returns once all are sent (and stored).

        Unlike `publish` in a loop, a backend may pipeline them: on NATS the messages into a stream go out
        in one write and their acknowledgements are awaited together, so a batch costs about one round
        trip instead of one per message. They are stored in the order given. On a failure it raises
        PartialPublishError, whose `published` counts the leading messages known stored; the others may
        or may not be (publish them again with the same msg ids)."""
        self._check_open()
        encoded = [(subject, self._encode_checked(subject, msg, msg_id), msg_id) for subject, msg, msg_id in messages]
        await self._publish_many(encoded)

    def _encode_checked(self, subject: str, msg: msgspec.Struct, msg_id: str | None) -> bytes:
        validate_subject(subject)
        if msg_id is not None:
            check_msg_id(msg_id)
        return self.codec.encode(subject, msg)

    async def _publish_many(self, messages: Sequence[tuple[str, bytes, str | None]]) -> None:
        """Backend hook of `publish_many`: by default one `_publish` after the other."""
        for done, (subject, data, msg_id) in enumerate(messages):
            try:
                await self._publish(subject, data, msg_id)
            except Exception as exc:
                raise PartialPublishError(done, exc) from exc

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

    async def follow(self, pattern: str, handler: Handler, *, start_seq: int = 1) -> Subscription:
        """Read the stream covering `pattern` from stream sequence `start_seq` on, then every new message.

        Messages matching `pattern` reach `handler` one at a time in stream order, with `d.stream_seq`
        set; nothing is acked. Every follower is independent and leaves no state behind: on NATS it is
        an ephemeral consumer, deleted by `unsubscribe()` (or by the server a little after its process
        died). It survives a server restart and reconnect by resuming after the last stream sequence it
        delivered: no gap, no duplicate. This is how a service catches up on the history and then
        stays current; remember the last `d.stream_seq` handled to resume later with `start_seq=seq + 1`.
        Raises StreamError if no stream covers `pattern`.
        """
        self._check_open()
        validate_pattern(pattern)
        if isinstance(start_seq, bool) or not isinstance(start_seq, int) or start_seq < 1:
            raise ValueError(f"start_seq must be an int >= 1 (1 = from the beginning), got {start_seq!r}")
        return await self._follow(pattern, handler, start_seq)

    async def last_message(self, stream: str) -> Delivery | None:
        """The newest message stored in `stream` (decoded, with `stream_seq`), or None if it is empty.

        Raises StreamError if there is no such stream, CodecError if the message does not decode.
        """
        self._check_open()
        check_name(stream, "stream")
        raw = await self._last_raw(stream)
        if raw is None:
            return None
        subject, data, seq = raw
        return Delivery(subject, self.codec.decode(subject, data), stream_seq=seq)

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
    async def add_stream(
        self,
        name: str,
        subjects: Sequence[str],
        *,
        max_age: float | None = None,
        duplicate_window: float | None = None,
    ) -> None:
        """Create or update a durable stream storing every message published on `subjects`.

        `duplicate_window` (seconds, default DEFAULT_DUPLICATE_WINDOW) is how long a `msg_id` is
        remembered for deduplication.
        """

    @abstractmethod
    async def stream_info(self, name: str) -> StreamInfo:
        """The stream's subjects and sequences; StreamError if there is no stream `name`."""

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
        stream_seq: int | None = None,
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
            await handler(Delivery(subject, msg, delivery_count, acker, token, stream_seq))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.on_error(subject, exc)

    @staticmethod
    def _stream_error(pattern: str, durable: str) -> StreamError:
        return StreamError(f"durable {durable!r}: no stream covers {pattern!r} (call add_stream(name, [...]) first)")

    @staticmethod
    def _check_add_stream(name: str, subjects: Sequence[str], max_age: float | None,
                          duplicate_window: float | None) -> None:
        check_name(name, "stream")
        if isinstance(subjects, str) or not subjects:
            raise ValueError(f"stream {name!r} needs a list of at least one subject, got {subjects!r}")
        for s in subjects:
            validate_pattern(s)
        if max_age is not None and max_age <= 0:
            raise ValueError(f"stream {name!r}: max_age must be positive, got {max_age}")
        if duplicate_window is not None and duplicate_window <= 0:
            raise ValueError(f"stream {name!r}: duplicate_window must be positive, got {duplicate_window}")
        if duplicate_window is not None and max_age is not None and duplicate_window > max_age:
            raise ValueError(f"stream {name!r}: duplicate_window {duplicate_window}s exceeds max_age {max_age}s")

    @staticmethod
    def _no_stream(pattern: str) -> StreamError:
        return StreamError(f"follow: no stream covers {pattern!r} (call add_stream(name, [...]) first)")

    # ---- backend primitives -------------------------------------------------------------------
    @abstractmethod
    async def _publish(self, subject: str, data: bytes, msg_id: str | None = None) -> None: ...

    @abstractmethod
    async def _follow(self, pattern: str, handler: Handler, start_seq: int) -> Subscription: ...

    @abstractmethod
    async def _last_raw(self, stream: str) -> tuple[str, bytes, int] | None:
        """(subject, data, stream seq) of the stream's newest message, None if empty."""

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
