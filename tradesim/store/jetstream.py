"""The venue journal as a JetStream stream (distributed mode), and its PostgreSQL mirror.

One stream per venue shard: stream `JOURNAL_<shard>` on subject `journal.<shard>`, file storage,
`replicas` copies, one message per record (msgpack `[seq, ts, command, prev_hash, hash]`, the same
hash chain as on SQLite and PostgreSQL, `tradesim.store.chain`). The stream sequence IS the journal
seq. A group's publishes are pipelined; a command is acknowledged only once the stream's PubAck for
its record came back (stored on `replicas` servers).

Single writer, enforced by the server. Each record's `Nats-Msg-Id` is `<seq>-<hash>`. A record whose
predecessor is known stored (acknowledged, or the head adopted at open) is published with
`Nats-Expected-Last-Sequence: seq-1`: exact, since that stream seq holds our predecessor. A record
pipelined behind one still in flight is published with `Nats-Expected-Last-Msg-Id: <seq-1>-<prev_hash>`,
so the server stores it only right after *our* predecessor — a count alone would let it through after
a rival's record, forking the chain. So a second or stale writer (a former venue leader) has its
append refused and its journal fails-stop with `JournalFencedError`. A publish retried after a lost
PubAck is stored once (JetStream answers `duplicate`, the msg id naming the record's hash), and a
different record for the same seq can never pass as a duplicate. Snapshots go to the JetStream object store bucket
`journal_snapshots_<shard>`, where a standby or a new leader finds them.

`JournalFollower` delivers a shard's records live (ordered push consumer, transport gaps refilled
by a pull read); `JournalMirror` uses it to copy the records into the PostgreSQL journal tables of
`tradesim.store.postgres` so `tradesim audit verify --db postgresql://…` checks the same chain.
See docs/venue-ha.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import logging
import re
import secrets
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, Self
from urllib.parse import parse_qs

import msgspec
import nats.errors
import nats.js.errors
from nats.js import api

from tradesim.store.chain import GENESIS_HASH, BadRecord, ChainChecker, RawRecord, VerifyReport
from tradesim.store.journal import (
    CorruptRecordError,
    Journal,
    JournalError,
    JournalRecord,
    JournalUnavailableError,
    StoredSnapshot,
    _Pending,
    seal,
)
from tradesim.store.schema import JOURNAL_COLUMNS, JOURNAL_TABLE

if TYPE_CHECKING:
    from tradesim.bus.nats import NatsBus

log = logging.getLogger("tradesim.store.jetstream")

DEFAULT_SHARD: Final = "main"
DEFAULT_ACK_TIMEOUT: Final = 2.0
"""Seconds to wait for a group's PubAcks before republishing the unacknowledged records."""
DEFAULT_WRITE_TIMEOUT: Final = 15.0
"""Seconds a group may keep retrying (server restart, stream leader election) before the journal fails."""
DEFAULT_VERIFY_TAIL: Final = 1000
"""Records at the end of the stream whose chain `open` checks before adopting the head."""
DEFAULT_READ_TIMEOUT: Final = 5.0
_PULL_BATCH: Final = 2000
_WRONG_LAST_SEQUENCE: Final = 10071
_WRONG_LAST_MSG_ID: Final = 10070
_SHARD_RE: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class JournalFencedError(JournalError):
    """Another writer appended to the stream: this one is fenced off (nothing of its group from the
    refused seq on was stored). A former venue leader gets this; it must stop and follow instead."""


class InvalidJournalURLError(JournalError, ValueError):
    """A `nats://…` journal URL that cannot be used (bad scheme, shard name or parameter)."""


class MirrorDivergedError(JournalError):
    """The PostgreSQL mirror holds a record that differs from the stream's: it is not a copy of it."""


# ---- names and URLs -----------------------------------------------------------------------------
def check_shard(shard: str) -> str:
    """`shard` if it can name a stream, a subject token and a bucket, else ValueError."""
    if not _SHARD_RE.match(shard):
        raise ValueError(f"invalid journal shard {shard!r}: use 1-64 letters, digits, '_' or '-'")
    return shard


def stream_name(shard: str) -> str:
    return f"JOURNAL_{check_shard(shard)}"


def stream_subject(shard: str) -> str:
    return f"journal.{check_shard(shard)}"


def snapshot_bucket(shard: str) -> str:
    return f"journal_snapshots_{check_shard(shard)}"


def parse_url(url: str) -> tuple[str, str, int]:
    """`nats://host:port[,nats://host2:port][?shard=NAME&replicas=N]` → (servers, shard, replicas)."""
    servers, _, query = url.partition("?")
    if not servers.startswith(("nats://", "tls://")):
        raise InvalidJournalURLError(f"invalid journal URL {url!r}: expected nats://host:port[?shard=NAME&replicas=N]")
    params = parse_qs(query, keep_blank_values=True, strict_parsing=False)
    unknown = set(params) - {"shard", "replicas"}
    if unknown:
        raise InvalidJournalURLError(f"invalid journal URL {url!r}: unknown parameter(s) {sorted(unknown)}; "
                         "only shard and replicas are understood")
    try:
        shard = check_shard(params.get("shard", [DEFAULT_SHARD])[-1])
    except ValueError as exc:
        raise InvalidJournalURLError(f"invalid journal URL {url!r}: {exc}") from None
    text = params.get("replicas", ["1"])[-1]
    if not text.isdigit() or not 1 <= int(text) <= 5:
        raise InvalidJournalURLError(f"invalid journal URL {url!r}: replicas must be 1 to 5, got {text!r}")
    return servers, shard, int(text)


# ---- wire formats ---------------------------------------------------------------------------------
class _WireRecord(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """One stream message: the journal row, as msgpack `[seq, ts, command, prev_hash, hash]`."""

    seq: int
    ts: int
    command: bytes
    prev_hash: bytes
    hash: bytes


class _ApiError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class _PubAck(msgspec.Struct):
    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: _ApiError | None = None


_WIRE_ENCODER: Final = msgspec.msgpack.Encoder()
_WIRE_DECODER: Final = msgspec.msgpack.Decoder(_WireRecord)
_ACK_DECODER: Final = msgspec.json.Decoder(_PubAck)
_SNAPSHOT_DECODER: Final = msgspec.msgpack.Decoder(StoredSnapshot)


def encode_record(seq: int, ts: int, command: bytes, prev_hash: bytes, digest: bytes) -> bytes:
    """The stream message body of one journal record."""
    return _WIRE_ENCODER.encode(_WireRecord(seq, ts, command, prev_hash, digest))


def decode_record(data: bytes, stream_seq: int) -> RawRecord:
    """The record a stream message holds. A message that is no journal record becomes a row with empty
    hashes at its stream seq, which every chain check reports as undecodable (never silently skipped)."""
    try:
        wire = _WIRE_DECODER.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return RawRecord(stream_seq, 0, bytes(data), b"", b"")
    return RawRecord(wire.seq, wire.ts, wire.command, wire.prev_hash, wire.hash)


def delivery_meta(reply: str) -> tuple[int, int, int]:
    """(stream seq, stored ns, messages pending after it) from a JetStream delivery's reply subject.

    Both forms: `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ns>.<pending>` and the
    domain form with two more tokens after `ACK` (and a trailing random token)."""
    tokens = reply.split(".")
    if len(tokens) == 9:
        base = 2
    elif len(tokens) >= 11:
        base = 4
    else:
        raise ValueError(f"not a JetStream delivery subject: {reply!r}")
    return int(tokens[base + 3]), int(tokens[base + 5]), int(tokens[base + 6])


def _status(msg: Any) -> str | None:
    headers = msg.headers
    if headers and not msg.data:
        status: str | None = headers.get("Status")
        return status
    return None


class Delivery(msgspec.Struct, frozen=True, gc=False):
    """A record as it came off the stream: where it is stored, when, and how many followed it then."""

    record: RawRecord
    stream_seq: int
    stored_ns: int
    pending: int


# ---- the group's acknowledgements ------------------------------------------------------------------
class _Acks:
    """PubAcks of one group (records `first`…`first+n-1`): resolves once all came back or one is fatal."""

    __slots__ = ("acked", "done", "fatal", "first", "missing", "retry", "stream")

    def __init__(self, first: int, n: int, stream: str) -> None:
        self.first = first
        self.stream = stream
        self.acked = bytearray(n)
        self.missing = n
        self.fatal: JournalError | None = None
        self.retry: str | None = None  # a transient refusal: republish after a pause
        self.done = asyncio.Event()

    def on_reply(self, seq: int, msg: Any) -> None:
        index = seq - self.first
        if not 0 <= index < len(self.acked) or self.acked[index]:
            return  # a late answer to an earlier attempt
        status = _status(msg)
        if status is not None:
            self.retry = (f"no JetStream responder for the journal (status {status}): "
                          "stream missing, JetStream down or electing a leader")
            self.done.set()
            return
        try:
            ack = _ACK_DECODER.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self.fatal = JournalUnavailableError(f"unreadable PubAck for seq {seq}: {exc}")
            self.done.set()
            return
        if ack.error is not None:
            err = ack.error
            if err.err_code == _WRONG_LAST_MSG_ID or (err.err_code == _WRONG_LAST_SEQUENCE
                                                      and not all(self.acked[:index])):
                # our predecessor is not (known to be) the stream's last: refused or lost on the way, or
                # the server restarted and forgot the last msg id. Republishing from the first record
                # not acknowledged decides: its predecessor is stored, so its sequence check is exact.
                self.retry = f"seq {seq} refused: {err.description}"
            elif err.err_code == _WRONG_LAST_SEQUENCE:
                self.fatal = JournalFencedError(
                    f"stream {self.stream} refused seq {seq}: another writer appended to it "
                    f"({err.description}; this writer expected it to end at seq {seq - 1}). This journal "
                    "is fenced off: nothing of it from that seq on was stored; follow the stream instead")
            elif err.code == 503:
                self.retry = f"stream {self.stream} unavailable: {err.description}"
            else:
                self.fatal = JournalUnavailableError(
                    f"stream {self.stream} refused seq {seq}: {err.description} (code {err.code}/{err.err_code})")
            self.done.set()
            return
        if ack.seq != seq or ack.stream != self.stream:
            self.fatal = CorruptRecordError(
                seq, f"stored as {ack.stream} seq {ack.seq}: the stream's sequence is not the journal's "
                "(something else publishes on the journal subject)")
            self.done.set()
            return
        self.acked[index] = 1
        self.missing -= 1
        if self.missing == 0:
            self.done.set()


# ---- the journal ------------------------------------------------------------------------------------
class JetStreamJournal(Journal):
    """Journal in JetStream stream `JOURNAL_<shard>` (see the module docstring).

    Open with `JetStreamJournal.open(url_or_bus, shard=…)` or `open_journal("nats://…?shard=…")`.
    """

    def __init__(self, bus: NatsBus, owns_bus: bool, shard: str, replicas: int, *, ack_timeout: float,
                 write_timeout: float, read_timeout: float, **options: Any) -> None:
        super().__init__(**options)
        self.bus = bus
        self.shard = shard
        self.replicas = replicas
        self.stream = stream_name(shard)
        self.subject = stream_subject(shard)
        self.bucket = snapshot_bucket(shard)
        self.location = f"{bus.url} stream {self.stream}"
        self.ack_timeout = ack_timeout
        self.write_timeout = write_timeout
        self.read_timeout = read_timeout
        self._owns_bus = owns_bus
        self._nc = bus.nc
        self._js = bus.js
        self._inbox = self._nc.new_inbox() + "."
        self._ack_sub: Any = None
        self._acks: _Acks | None = None
        self._obs: Any = None
        self._snapshot_lock = asyncio.Lock()

    @classmethod
    async def open(cls, target: str | NatsBus, *, shard: str = DEFAULT_SHARD, replicas: int = 1,
                   create: bool = True, verify_tail: int = DEFAULT_VERIFY_TAIL, deny_delete: bool = True,
                   ack_timeout: float = DEFAULT_ACK_TIMEOUT, write_timeout: float = DEFAULT_WRITE_TIMEOUT,
                   read_timeout: float = DEFAULT_READ_TIMEOUT, **options: Any) -> Self:
        """Opens (with `create`, creates) the shard's stream and continues its chain.

        `target` is a NATS URL (the journal then owns its connection) or a connected `NatsBus` (borrowed,
        not closed). A new stream gets `replicas` copies and, with `deny_delete`, refuses message deletes
        and purges. The last `verify_tail` records must chain, else CorruptRecordError.
        """
        from tradesim.bus.errors import BusError
        from tradesim.bus.nats import NatsBus

        check_shard(shard)
        if not 1 <= replicas <= 5:
            raise ValueError(f"replicas must be 1 to 5, got {replicas}")
        owns = isinstance(target, str)
        try:
            bus = await NatsBus.connect(target) if isinstance(target, str) else target
        except BusError as exc:
            raise JournalUnavailableError(f"journal stream {stream_name(shard)}: {exc}") from exc
        journal = cls(bus, owns, shard, replicas, ack_timeout=ack_timeout, write_timeout=write_timeout,
                      read_timeout=read_timeout, **options)
        try:
            await journal._prepare(create, deny_delete)
            last_seq, head = await journal._verified_end(verify_tail)
            journal._adopt_head(last_seq, head)
            journal._ack_sub = await journal._nc.subscribe(journal._inbox + "*", cb=journal._on_ack)
        except BaseException:
            await journal._release()
            raise
        return journal

    async def _prepare(self, create: bool, deny_delete: bool) -> None:
        try:
            info = await self._js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            if not create:
                raise JournalUnavailableError(f"no journal stream {self.stream} on {self.bus.url}") from None
            config = api.StreamConfig(
                name=self.stream, subjects=[self.subject], storage=api.StorageType.FILE,
                retention=api.RetentionPolicy.LIMITS, num_replicas=self.replicas,
                deny_delete=deny_delete, deny_purge=deny_delete, allow_rollup_hdrs=False,
                description=f"tradesim venue journal, shard {self.shard}")
            try:
                info = await self._js.add_stream(config)
            except nats.js.errors.APIError as exc:
                try:  # created by another process at the same moment?
                    info = await self._js.stream_info(self.stream)
                except nats.js.errors.NotFoundError:
                    raise JournalUnavailableError(
                        f"cannot create journal stream {self.stream} on {self.bus.url}: "
                        f"{exc.description or exc}") from exc
        except (nats.errors.Error, TimeoutError) as exc:
            raise JournalUnavailableError(
                f"journal stream {self.stream} on {self.bus.url}: JetStream does not answer "
                f"({type(exc).__name__}: {exc}); is the server running with -js?") from exc
        subjects = list(info.config.subjects or [])
        if self.subject not in subjects:
            raise JournalUnavailableError(
                f"stream {self.stream} exists on {self.bus.url} but does not hold subject {self.subject} "
                f"(it holds {subjects})")
        if info.config.num_replicas and info.config.num_replicas != self.replicas:
            log.warning("journal %s has %d replicas; %d were asked for (the stream keeps its own)",
                        self.stream, info.config.num_replicas, self.replicas)
            self.replicas = info.config.num_replicas

    async def stream_end(self) -> int:
        """The stream's last sequence now (== the last journal seq in a healthy journal)."""
        try:
            info = await self._js.stream_info(self.stream)
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
            raise JournalUnavailableError(f"journal stream {self.stream}: {type(exc).__name__}: {exc}") from exc
        last: int = info.state.last_seq
        return last

    async def _verified_end(self, verify_tail: int) -> tuple[int, bytes]:
        """(last seq, head hash) of the stream, after checking the chain of its last records."""
        end = await self.stream_end()
        if end == 0:
            return 0, GENESIS_HASH
        start = max(1, end - max(verify_tail, 1) + 1)
        rows = [d.record for d in await self.fetch(start, end - start + 1)]
        if not rows:
            raise CorruptRecordError(end, f"the stream ends at seq {end} but holds no record from seq {start} on")
        checker = ChainChecker(rows[0].seq, rows[0].prev_hash)
        for row in rows:
            bad = checker.check(row)
            if bad is not None:
                raise CorruptRecordError(bad.seq, f"{bad.problem.replace('_', ' ')}: {bad.detail}")
        if rows[-1].seq != end:
            raise CorruptRecordError(end, f"the stream ends at seq {end} but its last record is seq {rows[-1].seq}")
        return end, rows[-1].hash

    # -- writing ----------------------------------------------------------------------------------------
    async def _on_ack(self, msg: Any) -> None:
        acks = self._acks
        if acks is None:
            return
        token = msg.subject.rpartition(".")[2]
        if token.isdigit():
            acks.on_reply(int(token), msg)

    def _publish_args(self, row: tuple[int, int, bytes, bytes, bytes], after_stored: bool = True
                      ) -> tuple[bytes, str, dict[str, str]]:
        """Body, reply subject and headers of one record; `after_stored`: its predecessor is known stored."""
        seq, ts, command, prev, digest = row
        headers = {"Nats-Msg-Id": f"{seq}-{digest.hex()}"}
        if after_stored:
            headers["Nats-Expected-Last-Sequence"] = str(seq - 1)
        else:
            headers["Nats-Expected-Last-Msg-Id"] = f"{seq - 1}-{prev.hex()}"
        return encode_record(seq, ts, command, prev, digest), f"{self._inbox}{seq}", headers

    async def _write_batch(self, batch: list[_Pending]) -> list[JournalRecord]:
        rows, records = seal(batch, self._last_seq, self._head)
        await self._store_rows(rows)
        self._adopt_head(records[-1].seq, records[-1].hash)
        return records

    async def _store_rows(self, rows: list[tuple[int, int, bytes, bytes, bytes]]) -> None:
        """Publishes `rows` pipelined and returns once every one is stored; republishes what lacks a PubAck
        (same msg id, so never twice) until `write_timeout`; a refusal by seq fences this writer."""
        acks = _Acks(rows[0][0], len(rows), self.stream)
        self._acks = acks
        deadline = time.monotonic() + self.write_timeout
        publish = self._nc.publish
        subject = self.subject
        todo: Sequence[int] = range(len(rows))
        pause = 0.05
        try:
            while True:
                acks.retry = None
                acks.done.clear()
                try:
                    acked = acks.acked
                    for i in todo:
                        data, reply, headers = self._publish_args(rows[i], i == 0 or acked[i - 1] == 1)
                        await publish(subject, data, reply=reply, headers=headers)
                except nats.errors.ConnectionClosedError as exc:
                    raise JournalUnavailableError(f"journal {self.location}: connection closed") from exc
                except nats.errors.OutboundBufferLimitError:
                    acks.retry = "disconnected from NATS and the client's buffer is full"
                if acks.retry is None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(acks.done.wait(), max(0.0, min(self.ack_timeout,
                                                                           deadline - time.monotonic())))
                if acks.fatal is not None:
                    raise acks.fatal
                if acks.missing == 0:
                    return
                first_missing = rows[acks.acked.index(0)][0]
                reason = acks.retry or f"no PubAck within {self.ack_timeout}s"
                if time.monotonic() >= deadline:
                    raise JournalUnavailableError(
                        f"journal {self.location}: records from seq {first_missing} not confirmed stored within "
                        f"{self.write_timeout}s ({reason})")
                log.warning("journal %s: republishing from seq %d (%s)", self.stream, first_missing, reason)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.5)
                todo = [i for i, done in enumerate(acks.acked) if not done]
        finally:
            self._acks = None

    def take_over(self, last_seq: int, head_hash: bytes) -> None:
        """Continues the chain after (`last_seq`, `head_hash`), as verified by a caught-up standby: the next
        append expects the stream to end exactly there, so if anyone appended since, it is refused."""
        self._check_open()
        if self._queue or self._acks is not None:
            raise JournalError(f"journal {self.location}: cannot take over while appends are in flight")
        self._adopt_head(last_seq, head_hash)

    @property
    def failure(self) -> BaseException | None:
        """What made this journal fail-stop (e.g. JournalFencedError), if anything."""
        return self._failure

    # -- reading ----------------------------------------------------------------------------------------
    async def fetch(self, from_seq: int, limit: int) -> list[Delivery]:
        """Up to `limit` stored messages with stream seq >= `from_seq`, in order (one ephemeral pull
        consumer, no acks); deleted messages are simply absent."""
        if limit < 1:
            return []
        js, nc = self._js, self._nc
        name = "read-" + secrets.token_hex(8)
        config = api.ConsumerConfig(
            name=name, deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=max(1, from_seq),
            ack_policy=api.AckPolicy.NONE, filter_subject=self.subject, mem_storage=True, num_replicas=1,
            inactive_threshold=30.0)
        queue: asyncio.Queue[Any] = asyncio.Queue()

        async def put(msg: Any) -> None:
            queue.put_nowait(msg)

        out: list[Delivery] = []
        try:
            await js.add_consumer(self.stream, config=config)
            inbox = nc.new_inbox()
            sub = await nc.subscribe(inbox, cb=put)
            try:
                while len(out) < limit:
                    want = min(_PULL_BATCH, limit - len(out))
                    await nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{name}",
                                     msgspec.json.encode({"batch": want, "no_wait": True}), reply=inbox)
                    got = 0
                    while got < want:
                        msg = await asyncio.wait_for(queue.get(), self.read_timeout)
                        status = _status(msg)
                        if status is not None:
                            if status in ("404", "408"):
                                break
                            raise JournalUnavailableError(
                                f"journal {self.location}: read refused (status {status}: "
                                f"{msg.headers.get('Description', '')})")
                        sseq, stored, pending = delivery_meta(msg.reply)
                        out.append(Delivery(decode_record(msg.data, sseq), sseq, stored, pending))
                        got += 1
                    if got < want:
                        break
            finally:
                with contextlib.suppress(nats.errors.Error):
                    await sub.unsubscribe()
                with contextlib.suppress(nats.errors.Error, nats.js.errors.Error, TimeoutError):
                    await js.delete_consumer(self.stream, name)
        except TimeoutError as exc:
            raise JournalUnavailableError(
                f"journal {self.location}: no answer reading from seq {from_seq} within {self.read_timeout}s") from exc
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            raise JournalUnavailableError(f"journal {self.location}: read failed: {type(exc).__name__}: {exc}") from exc
        return out

    async def _fetch_raw(self, from_seq: int, limit: int) -> list[RawRecord]:
        return [d.record for d in await self.fetch(from_seq, limit)]

    async def read_raw(self, from_seq: int = 1) -> AsyncIterator[RawRecord]:
        """Stored records from stream seq `from_seq` on, in order, undecoded and unchecked."""
        next_seq = max(1, from_seq)
        while True:
            chunk = await self.fetch(next_seq, _PULL_BATCH)
            for delivery in chunk:
                yield delivery.record
            if len(chunk) < _PULL_BATCH:
                return
            next_seq = chunk[-1].stream_seq + 1

    async def record_at(self, seq: int) -> RawRecord | None:
        """The record stored at stream seq `seq`, or None if there is none (never written, or deleted)."""
        if seq < 1:
            return None
        try:
            msg = await self._js.get_msg(self.stream, seq)
        except nats.js.errors.NotFoundError:
            return None
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
            raise JournalUnavailableError(f"journal {self.location}: get seq {seq}: {exc}") from exc
        return decode_record(msg.data or b"", seq)

    async def verify(self) -> VerifyReport:
        """The whole chain; besides the records' own links, the last record must be the stream's last."""
        report = await super().verify()
        if report.ok:
            end = await self.stream_end()
            if report.count != end:
                return VerifyReport(report.count, report.head_hash, BadRecord(
                    report.count + 1, "sequence_gap",
                    f"the stream ends at seq {end} but its records end at seq {report.count}"))
        return report

    def follow(self, from_seq: int, handler: Callable[[Delivery], Awaitable[None] | None]) -> JournalFollower:
        """A follower delivering records from stream seq `from_seq` on to `handler` (call `start()`)."""
        return JournalFollower(self, from_seq, handler)

    # -- snapshots ------------------------------------------------------------------------------------
    async def _snapshots(self, create: bool) -> Any:
        if self._obs is None:
            try:
                self._obs = await self._js.object_store(self.bucket)
            except nats.js.errors.BucketNotFoundError:
                if not create:
                    return None
                self._obs = await self._js.create_object_store(
                    self.bucket, config=api.ObjectStoreConfig(
                        description=f"tradesim venue snapshots, shard {self.shard}",
                        storage=api.StorageType.FILE, replicas=self.replicas))
        return self._obs

    async def _snapshot_names(self, obs: Any) -> list[tuple[int, str]]:
        try:
            infos = await obs.list(ignore_deletes=True)
        except nats.js.errors.NotFoundError:
            return []
        found = []
        for info in infos:
            name = info.name or ""
            if name.isdigit() and not info.deleted:
                found.append((int(name), name))
        return sorted(found)

    async def _store_snapshot(self, seq: int, state_hash: str, data: bytes) -> None:
        from nats.js.object_store import OBJ_META_PRE_TEMPLATE

        body = msgspec.msgpack.encode(StoredSnapshot(seq, state_hash, data))
        async with self._snapshot_lock:
            try:
                obs = await self._snapshots(create=True)
                await obs.put(f"{seq:020d}", body)
                names = await self._snapshot_names(obs)
                for _seq, name in names[: max(0, len(names) - max(self.snapshots_kept, 1))]:
                    await obs.delete(name)
                    # drop the tombstone too, so listing stays as short as the snapshots kept
                    meta = OBJ_META_PRE_TEMPLATE.format(
                        bucket=self.bucket, obj=base64.urlsafe_b64encode(name.encode()).decode())
                    await self._js.purge_stream(f"OBJ_{self.bucket}", subject=meta)
            except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
                raise JournalUnavailableError(
                    f"journal {self.location}: snapshot at seq {seq} not stored: {type(exc).__name__}: {exc}") from exc

    async def latest_snapshot(self, max_seq: int | None = None) -> StoredSnapshot | None:
        try:
            obs = await self._snapshots(create=False)
            if obs is None:
                return None
            names = await self._snapshot_names(obs)
            for seq, name in reversed(names):
                if max_seq is not None and seq > max_seq:
                    continue
                try:
                    result = await obs.get(name)
                    stored = _SNAPSHOT_DECODER.decode(result.data)
                except (nats.js.errors.Error, msgspec.DecodeError, msgspec.ValidationError) as exc:
                    log.warning("journal %s: skipping snapshot %s: %s", self.stream, name, exc)
                    continue
                if stored.seq != seq:
                    log.warning("journal %s: skipping snapshot %s: it holds seq %d", self.stream, name, stored.seq)
                    continue
                return stored
        except (nats.errors.Error, TimeoutError) as exc:
            raise JournalUnavailableError(f"journal {self.location}: snapshots: {type(exc).__name__}: {exc}") from exc
        return None

    # -- lifecycle ------------------------------------------------------------------------------------
    async def _close(self) -> None:
        await self._release()

    async def _release(self) -> None:
        if self._ack_sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._ack_sub.unsubscribe()
            self._ack_sub = None
        if self._owns_bus:
            self._owns_bus = False
            await self.bus.close()


# ---- following ------------------------------------------------------------------------------------
class JournalFollower:
    """Delivers a journal stream's records to `handler`, in stream order, live, each once.

    An ordered push consumer (flow control, heartbeats, recreated by nats-py when it stalls) carries
    them; a delivery that skips stream seqs (a message dropped on the way, or a record deleted from the
    stream) is preceded by a pull read of the skipped range, so `handler` sees every stored record and
    a real hole shows as a gap in the records' own seqs. If `handler` raises, following stops and
    `failure` holds the exception.
    """

    def __init__(self, journal: JetStreamJournal, from_seq: int,
                 handler: Callable[[Delivery], Awaitable[None] | None], *, heartbeat: float = 1.0) -> None:
        self.journal = journal
        self.next_seq = max(1, from_seq)
        self.handler = handler
        self.heartbeat = heartbeat
        self.failure: BaseException | None = None
        self.stream_end_seen = 0
        """The stream's end as the newest delivery reported it (its seq + the messages pending after it)."""
        self._sub: Any = None
        self._stopped = False
        self._lock = asyncio.Lock()

    @property
    def running(self) -> bool:
        return self._sub is not None and not self._stopped

    async def start(self) -> None:
        j = self.journal
        try:
            self._sub = await j._js.subscribe(
                j.subject, stream=j.stream, ordered_consumer=True, idle_heartbeat=self.heartbeat,
                deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                config=api.ConsumerConfig(opt_start_seq=self.next_seq), cb=self._on_msg)
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
            raise JournalUnavailableError(f"cannot follow journal {j.location}: {type(exc).__name__}: {exc}") from exc

    async def _on_msg(self, msg: Any) -> None:
        if self._stopped:
            return
        try:
            sseq, stored, pending = delivery_meta(msg.reply)
            async with self._lock:
                if self._stopped or sseq < self.next_seq:
                    return  # already delivered (a pull read got there first)
                if sseq > self.next_seq:
                    await self._fill(sseq - 1)
                    if self._stopped or sseq < self.next_seq:
                        return
                await self._deliver(Delivery(decode_record(msg.data, sseq), sseq, stored, pending))
        except Exception as exc:
            self._fail(exc)

    async def _deliver(self, delivery: Delivery) -> None:
        self.next_seq = delivery.stream_seq + 1
        self.stream_end_seen = max(self.stream_end_seen, delivery.stream_seq + delivery.pending)
        result = self.handler(delivery)
        if result is not None:
            await result

    async def _fill(self, last: int) -> None:
        """Delivers the stored records with stream seq in [next_seq, last] (pull read)."""
        while self.next_seq <= last and not self._stopped:
            chunk = [d for d in await self.journal.fetch(self.next_seq, min(_PULL_BATCH, last - self.next_seq + 1))
                     if d.stream_seq <= last]
            if not chunk:
                return
            for delivery in chunk:
                if self._stopped:
                    return
                await self._deliver(delivery)

    async def pull_to(self, last: int) -> None:
        """Delivers everything up to stream seq `last` now (pull reads), whatever the push side is doing."""
        async with self._lock:
            try:
                await self._fill(last)
            except Exception as exc:
                self._fail(exc)
                raise

    def _fail(self, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = exc
        self._stopped = True
        task = asyncio.get_running_loop().create_task(self._unsubscribe())
        _background.add(task)
        task.add_done_callback(_background.discard)

    async def _unsubscribe(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(nats.errors.Error, nats.js.errors.Error, TimeoutError):
                await sub.unsubscribe()

    async def stop(self) -> None:
        """Stops following; once this returns `handler` is not called again."""
        self._stopped = True
        async with self._lock:
            await self._unsubscribe()


_background: set[asyncio.Task[None]] = set()


# ---- the PostgreSQL mirror ------------------------------------------------------------------------
_MIRROR_INSERT: Final = (
    f"INSERT INTO {JOURNAL_TABLE} (seq, ts, command, prev_hash, hash) "
    "SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bytea[], $4::bytea[], $5::bytea[])")
_COPY_FROM: Final = 64


class MirrorLag(msgspec.Struct, frozen=True):
    """How far the mirror is behind: records in the stream not yet copied, and how long after being
    stored in the stream the newest copied record reached PostgreSQL."""

    records: int
    delay_ms: float


class JournalMirror:
    """Copies a shard's journal stream, in order, into the PostgreSQL journal tables at `pg_url`.

    Same schema as `PostgresJournal`, so `tradesim audit verify --db postgresql://…` verifies the same
    chain. Every record is checked to extend the chain before it is inserted; a group is one statement.
    It resumes after the newest mirrored seq (whose hash must equal the stream's record), so restarts
    copy nothing twice. Any number may run (in the venue leader, in standbys, standalone): a PostgreSQL
    advisory lock lets exactly one copy at a time, the others wait to take over. Transient failures
    (PostgreSQL or NATS down) are retried; a chain that does not verify or a diverged mirror stops it
    (`failure`).
    """

    def __init__(self, source: JetStreamJournal, pg_url: str, *, batch: int = 2000, retry_delay: float = 1.0) -> None:
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self.source = source
        self.pg_url = pg_url
        self.batch = batch
        self.retry_delay = retry_delay
        self.mirrored_seq = 0
        self.failure: BaseException | None = None
        self.active = False
        """True while this instance holds the mirror lock (it is the one copying)."""
        self.lock_key = int.from_bytes(hashlib.sha256(f"tradesim-mirror:{source.stream}".encode()).digest()[:8],
                                       "big", signed=True)
        self._delay_ms = 0.0
        self._end_seen = 0
        self._pending: list[Delivery] = []
        self._arrived = asyncio.Event()
        self._progress = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def lag(self) -> MirrorLag:
        """Records behind the stream's end (as last seen by this mirror) and the newest record's delay."""
        end = max(self._end_seen, self.mirrored_seq)
        return MirrorLag(end - self.mirrored_seq, self._delay_ms)

    async def start(self) -> None:
        """Starts mirroring in the background (returns at once; see `sync`)."""
        if self._task is not None:
            raise RuntimeError("mirror already started")
        from tradesim.store.postgres import PostgresJournal

        journal = await PostgresJournal.open(self.pg_url, create=True)  # the schema, as the audit expects it
        self.mirrored_seq = journal.last_seq
        await journal.close()
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"journal-mirror:{self.source.stream}")

    async def sync(self, timeout: float = 30.0) -> int:
        """Waits until everything the stream holds now is mirrored; returns the mirrored seq."""
        target = await self.source.stream_end()
        deadline = time.monotonic() + timeout
        while self.mirrored_seq < target:
            if self.failure is not None:
                raise JournalError(f"mirror of {self.source.stream} failed: {self.failure}") from self.failure
            if self._task is None or self._task.done():
                raise JournalError(f"mirror of {self.source.stream} is not running")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"mirror of {self.source.stream} at seq {self.mirrored_seq}, stream at {target} "
                                   f"after {timeout}s (active={self.active})")
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), min(left, 0.5))
        return self.mirrored_seq

    async def stop(self) -> None:
        """Stops copying (what is committed stays; the next start resumes after it)."""
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self._mirror()
                return
            except asyncio.CancelledError:
                raise
            except (CorruptRecordError, MirrorDivergedError) as exc:
                self.failure = exc
                log.error("mirror %s stopped: %s", self.source.stream, exc)
                self._progress.set()
                return
            except Exception as exc:
                log.warning("mirror %s: %s: %s; retrying in %.1fs", self.source.stream, type(exc).__name__,
                            exc, self.retry_delay)
                self.active = False
                await asyncio.sleep(self.retry_delay)

    async def _mirror(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.pg_url, timeout=5.0)
        follower: JournalFollower | None = None
        try:
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", self.lock_key):
                await asyncio.sleep(self.retry_delay)
            self.active = True
            row = await conn.fetchrow(f"SELECT seq, hash FROM {JOURNAL_TABLE} ORDER BY seq DESC LIMIT 1")
            last, head = (int(row["seq"]), bytes(row["hash"])) if row is not None else (0, GENESIS_HASH)
            if last:
                theirs = await self.source.record_at(last)
                if theirs is None or theirs.hash != head:
                    raise MirrorDivergedError(
                        f"PostgreSQL mirror of {self.source.stream} ends at seq {last} with hash {head.hex()[:16]}…, "
                        f"the stream's record seq {last} is "
                        f"{'missing' if theirs is None else theirs.hash.hex()[:16] + '…'}")
            self.mirrored_seq = last
            checker = ChainChecker(last + 1, head)
            self._pending.clear()
            follower = self.source.follow(last + 1, self._on_delivery)
            await follower.start()
            while True:
                if follower.failure is not None:
                    raise follower.failure
                if not self._pending:
                    self._arrived.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._arrived.wait(), 1.0)
                    continue
                group = self._pending[: self.batch]
                del self._pending[: self.batch]
                rows = []
                for delivery in group:
                    bad = checker.check(delivery.record)
                    if bad is not None:
                        problem = bad.problem.replace("_", " ")
                        raise CorruptRecordError(bad.seq, f"not mirrored: {problem}: {bad.detail}")
                    r = delivery.record
                    rows.append((r.seq, r.ts, r.command, r.prev_hash, r.hash))
                if len(rows) < _COPY_FROM:
                    await conn.execute(_MIRROR_INSERT, *zip(*rows, strict=True))
                else:
                    await conn.copy_records_to_table(JOURNAL_TABLE, records=rows, columns=JOURNAL_COLUMNS)
                self.mirrored_seq = rows[-1][0]
                self._end_seen = max(self._end_seen, follower.stream_end_seen)
                self._delay_ms = (time.time_ns() - group[-1].stored_ns) / 1e6
                self._progress.set()
        finally:
            self.active = False
            if follower is not None:
                await follower.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 5.0)

    def _on_delivery(self, delivery: Delivery) -> None:
        self._pending.append(delivery)
        self._arrived.set()


# ---- standalone mirror: python -m tradesim.store.jetstream -------------------------------------
async def _mirror_main(args: argparse.Namespace) -> int:
    servers, shard, replicas = parse_url(args.nats)
    if args.shard:
        shard = check_shard(args.shard)
    journal = await JetStreamJournal.open(servers, shard=shard, replicas=replicas, create=False)
    mirror = JournalMirror(journal, args.db)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await mirror.start()
        while not stop.is_set() and mirror.failure is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.report_every)
            lag = mirror.lag
            log.info("mirror %s: seq %d, %d behind, last delay %.1f ms%s", journal.stream, mirror.mirrored_seq,
                     lag.records, lag.delay_ms, "" if mirror.active else " (standby: another mirror holds the lock)")
    finally:
        await mirror.stop()
        await journal.close()
    if mirror.failure is not None:
        log.error("%s", mirror.failure)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone mirror: copies a shard's journal stream into PostgreSQL until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m tradesim.store.jetstream",
                                     description="Mirror a venue journal stream into PostgreSQL.")
    parser.add_argument("--nats", required=True, help="nats://host:port[?shard=NAME]")
    parser.add_argument("--shard", help=f"venue shard (default from the URL, else {DEFAULT_SHARD})")
    parser.add_argument("--db", required=True, help="postgresql://… database holding the mirror")
    parser.add_argument("--report-every", type=float, default=10.0, help="seconds between lag reports")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return asyncio.run(_mirror_main(args))


if __name__ == "__main__":
    raise SystemExit(main())
