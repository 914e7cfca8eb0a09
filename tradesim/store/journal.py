"""The command journal's interface: records, errors, the group-commit writer shared by all backends,
and `open_journal`, which picks the backend from a URL or a data directory.

The journal is the venue's source of truth (DESIGN Principles 2 and 5): `append` returns only once
the command is durable. One writer task per journal assigns sequence numbers in append order, seals
each record into the hash chain and persists a whole group of commands in one transaction, then
releases every caller of that group.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import msgspec

from tradesim.domain import Command
from tradesim.store.chain import (
    GENESIS_HASH,
    ChainChecker,
    RawRecord,
    VerifyReport,
    decode_command,
    encode_command,
    encode_value,
    record_hash,
)

_time_ns = time.time_ns


def _encode(command: Command) -> bytes:
    """The command's bytes, refusing anything a replay could not decode (msgspec does not type-check
    Struct construction, so `qty="ten"` would otherwise poison the journal)."""
    try:
        payload = encode_command(command)
        decode_command(payload)
    except (TypeError, msgspec.EncodeError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InvalidCommandError(f"refusing to journal {type(command).__name__}: {exc}") from exc
    return payload

DEFAULT_MAX_BATCH = 4096
DEFAULT_LINGER = 0.0
DEFAULT_SNAPSHOTS_KEPT = 3
_READ_CHUNK = 2000


class JournalError(Exception):
    """Base of every journal failure; the message is meant for a human."""


class JournalUnavailableError(JournalError):
    """The journal cannot be reached or does not exist (missing directory/table, server down)."""


class JournalClosedError(JournalError):
    """Append after `close()`, or after a failed write left the chain state unknown."""


class SchemaVersionError(JournalError):
    """The store was written by a tradesim with another schema version."""


class InvalidCommandError(JournalError, ValueError):
    """A command that would not decode back as itself (wrong field types): refused, never journaled."""


class CorruptRecordError(JournalError):
    """A stored record that cannot be read back or does not extend the chain; names its seq."""

    def __init__(self, seq: int, message: str) -> None:
        super().__init__(f"journal record seq {seq}: {message}")
        self.seq = seq


class JournalRecord(msgspec.Struct, frozen=True, gc=False):
    """One durable command: its venue sequence, journal time (ns), the command and its chain link."""

    seq: int
    ts: int
    command: Command
    prev_hash: bytes
    hash: bytes


class StoredSnapshot(msgspec.Struct, frozen=True):
    """An engine snapshot taken right after command `seq`, as stored (msgpack `data`)."""

    seq: int
    state_hash: str
    data: bytes


class JournalStats(msgspec.Struct):
    """Group-commit counters: fewer `transactions` than `appends` is the point of group commit."""

    appends: int = 0
    transactions: int = 0
    max_batch: int = 0


class _Pending:
    """One command waiting for the writer; `future` resolves to its JournalRecord."""

    __slots__ = ("command", "future", "payload", "ts")

    def __init__(self, command: Command, payload: bytes, ts: int,
                 future: asyncio.Future[JournalRecord]) -> None:
        self.command = command
        self.payload = payload
        self.ts = ts
        self.future = future


Row = tuple[int, int, bytes, bytes, bytes]


def seal(batch: Sequence[_Pending], last_seq: int, head: bytes) -> tuple[list[Row], list[JournalRecord]]:
    """Assigns consecutive seqs after `last_seq` and chains each record to the one before it.

    Pure: backends call it in their writer (thread or task) and adopt the new head only once the
    rows are committed.
    """
    rows: list[Row] = []
    records: list[JournalRecord] = []
    seq = last_seq
    prev = head
    for item in batch:
        seq += 1
        digest = record_hash(prev, seq, item.ts, item.payload)
        rows.append((seq, item.ts, item.payload, prev, digest))
        records.append(JournalRecord(seq, item.ts, item.command, prev, digest))
        prev = digest
    return rows, records


class Journal(abc.ABC):
    """Append-only, hash-chained command log with one group-commit writer.

    Use `open_journal()` to get one; `async with` closes it. Not shared between processes: one
    writer per journal (a second writer would fail on the primary key, never fork the chain).
    """

    location: str

    def __init__(self, *, max_batch: int = DEFAULT_MAX_BATCH, linger: float = DEFAULT_LINGER,
                 snapshots_kept: int = DEFAULT_SNAPSHOTS_KEPT) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if linger < 0:
            raise ValueError("linger must be >= 0")
        self.max_batch = max_batch
        self.linger = linger
        self.snapshots_kept = snapshots_kept
        self.stats = JournalStats()
        self._last_seq = 0
        self._head = GENESIS_HASH
        self._queue: list[_Pending] = []
        self._wakeup = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self._failure: BaseException | None = None
        self._accepting = True  # not closing and not failed: the one check on append's fast path
        self._loop = asyncio.get_running_loop()  # a journal lives on the loop that opened it

    # -- state ---------------------------------------------------------------------------------
    @property
    def last_seq(self) -> int:
        """Seq of the newest durable record (0 for an empty journal)."""
        return self._last_seq

    @property
    def head_hash(self) -> bytes:
        """Hash of the newest durable record (`GENESIS_HASH` for an empty journal)."""
        return self._head

    def _adopt_head(self, last_seq: int, head: bytes) -> None:
        self._last_seq = last_seq
        self._head = head

    # -- appending -----------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._accepting:
            return
        if self._failure is not None:
            raise JournalClosedError(f"journal {self.location} failed earlier: {self._failure}")
        if self._closing:
            raise JournalClosedError(f"journal {self.location} is closed")

    def _enqueue(self, command: Command, ts: int | None) -> asyncio.Future[JournalRecord]:
        future: asyncio.Future[JournalRecord] = self._loop.create_future()
        self._queue.append(_Pending(command, _encode(command), _time_ns() if ts is None else ts, future))
        return future

    def _start_writer(self) -> None:
        if self._writer is None:
            self._writer = self._loop.create_task(self._write_loop(), name="journal-writer")
        self._wakeup.set()

    @staticmethod
    def encode(command: Command) -> bytes:
        """The bytes `append` would store for `command`, or InvalidCommandError — for a caller (the venue)
        that must know a command is journalable *before* acting on it, and passes the bytes to `append`."""
        return _encode(command)

    async def append(self, command: Command, *, ts: int | None = None, payload: bytes | None = None
                     ) -> JournalRecord:
        """Journals `command` and returns its record once it is durable (InvalidCommandError if ill-typed).

        `ts` is the journal time in ns (default: wall clock now); `payload`, if given, is
        `Journal.encode(command)`, already checked. The seq is assigned by the writer in append order.
        If the caller is cancelled while waiting, the command may still be journaled.
        """
        if not self._accepting:
            self._check_open()
        # the hot path, inlined: one future and one queue entry per command
        future: asyncio.Future[JournalRecord] = self._loop.create_future()
        self._queue.append(_Pending(command, _encode(command) if payload is None else payload,
                                    _time_ns() if ts is None else ts, future))
        if self._writer is None:
            self._start_writer()
        else:
            self._wakeup.set()
        return await future

    async def append_many(self, commands: Sequence[Command], *, ts: int | None = None) -> list[JournalRecord]:
        """Journals `commands` with consecutive seqs (same group when they fit) and waits for all."""
        self._check_open()
        for command in commands:  # all or nothing: validate before queueing any
            _encode(command)
        futures = [self._enqueue(command, ts) for command in commands]
        if not futures:
            return []
        self._start_writer()
        return list(await asyncio.gather(*futures))

    async def _write_loop(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if self.linger and len(self._queue) < self.max_batch:
                await asyncio.sleep(self.linger)
            batch = self._queue[: self.max_batch]
            del self._queue[: self.max_batch]
            try:
                records = await self._write_batch(batch)
            except BaseException as exc:  # the chain state is unknown now: fail everyone, accept nothing
                self._failure = exc
                self._accepting = False
                error = JournalClosedError(f"journal write failed ({type(exc).__name__}: {exc}); "
                                           "the outcome of the last group is unknown, reopen the journal")
                for item in (*batch, *self._queue):
                    if not item.future.done():
                        item.future.set_exception(error)
                self._queue.clear()
                if isinstance(exc, asyncio.CancelledError):
                    raise
                return
            stats = self.stats
            stats.appends += len(batch)
            stats.transactions += 1
            stats.max_batch = max(stats.max_batch, len(batch))
            for item, record in zip(batch, records, strict=True):
                if not item.future.done():
                    item.future.set_result(record)

    @abc.abstractmethod
    async def _write_batch(self, batch: list[_Pending]) -> list[JournalRecord]:
        """Seal (see `seal`) and persist `batch` in one transaction, adopt the new head, return records."""

    # -- reading -------------------------------------------------------------------------------
    @abc.abstractmethod
    async def _fetch_raw(self, from_seq: int, limit: int) -> list[RawRecord]:
        """Up to `limit` stored rows with seq >= `from_seq`, in seq order."""

    async def read_raw(self, from_seq: int = 1) -> AsyncIterator[RawRecord]:
        """Stored rows from `from_seq` on, in seq order, undecoded and unchecked (for audits)."""
        next_seq = from_seq
        while True:
            rows = await self._fetch_raw(next_seq, _READ_CHUNK)
            for row in rows:
                yield row
            if len(rows) < _READ_CHUNK:
                return
            next_seq = rows[-1].seq + 1

    async def read(self, from_seq: int = 1) -> AsyncIterator[JournalRecord]:
        """Durable records from `from_seq` on, in seq order; an undecodable one raises CorruptRecordError."""
        async for row in self.read_raw(from_seq):
            try:
                command = decode_command(row.command)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise CorruptRecordError(row.seq, f"command bytes do not decode ({exc})") from exc
            yield JournalRecord(row.seq, row.ts, command, row.prev_hash, row.hash)

    async def verify(self) -> VerifyReport:
        """Recomputes the whole chain; the report holds the count or the first record that does not match."""
        checker = ChainChecker()
        async for row in self.read_raw(1):
            bad = checker.check(row)
            if bad is not None:
                return checker.report(bad)
        return checker.report()

    # -- snapshots -----------------------------------------------------------------------------
    async def save_snapshot(self, seq: int, snapshot: Any, state_hash: str) -> None:
        """Stores an engine snapshot taken right after command `seq` (keeps the newest `snapshots_kept`).

        `snapshot` is the engine's msgspec Struct; it is encoded now, so the caller may go on
        mutating the engine once this coroutine has been created and awaited.
        """
        self._check_open()
        if not 0 < seq <= self._last_seq:
            raise ValueError(f"snapshot seq {seq} is not a durable journal seq (last is {self._last_seq})")
        await self._store_snapshot(seq, state_hash, encode_value(snapshot))

    async def save_snapshot_bytes(self, seq: int, data: bytes, state_hash: str) -> None:
        """`save_snapshot` of a snapshot already encoded (`MatchingEngine.canonical_bytes()`, the same
        deterministic msgpack as `encode_value`): the venue hashes those bytes anyway, so it encodes once."""
        self._check_open()
        if not 0 < seq <= self._last_seq:
            raise ValueError(f"snapshot seq {seq} is not a durable journal seq (last is {self._last_seq})")
        await self._store_snapshot(seq, state_hash, data)

    @abc.abstractmethod
    async def _store_snapshot(self, seq: int, state_hash: str, data: bytes) -> None:
        """Insert (or replace) the snapshot at `seq` and prune beyond `snapshots_kept`."""

    @abc.abstractmethod
    async def latest_snapshot(self, max_seq: int | None = None) -> StoredSnapshot | None:
        """The newest stored snapshot (with seq <= `max_seq` if given), or None."""

    # -- lifecycle -----------------------------------------------------------------------------
    async def close(self) -> None:
        """Waits for every pending append to be durable, then releases the database."""
        if self._closing and self._writer is None:
            return
        self._closing = True
        self._accepting = False
        if self._writer is not None:
            self._wakeup.set()
            with contextlib.suppress(Exception):
                await self._writer
            self._writer = None
        await self._close()

    @abc.abstractmethod
    async def _close(self) -> None: ...

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.location} last_seq={self._last_seq}>"


def _sqlite_path(target: str) -> Path:
    """`sqlite:///rel/x.db`, `sqlite:////abs/x.db`, or a data directory (→ `<dir>/journal.db`)."""
    if target.startswith("sqlite://"):
        path = Path(target.removeprefix("sqlite://").removeprefix("/"))
        if target.startswith("sqlite:////"):
            path = Path("/" + str(path).lstrip("/"))
        return path / "journal.db" if path.is_dir() else path
    return Path(target) / "journal.db"


async def open_journal(target: str | Path, *, create: bool = True, max_batch: int = DEFAULT_MAX_BATCH,
                       linger: float = DEFAULT_LINGER, synchronous: str = "FULL",
                       snapshots_kept: int = DEFAULT_SNAPSHOTS_KEPT) -> Journal:
    """Opens (or with `create`, creates) the journal at `target` and continues its chain.

    `target`: `postgresql://…` (or `postgres://…`) → PostgreSQL; `nats://host:port?shard=NAME` → the
    shard's JetStream stream; `sqlite:///path/to/file.db` or a data directory → SQLite at
    `<dir>/journal.db`. `synchronous` is SQLite's durability (FULL = fsync on every commit; NORMAL or
    OFF trade durability for speed). `max_batch` caps a group, `linger` (seconds) lets an idle writer
    wait for more commands before committing.
    """
    text = str(target)
    options: dict[str, Any] = {"max_batch": max_batch, "linger": linger, "snapshots_kept": snapshots_kept}
    if text.startswith(("nats://", "tls://")):  # nats://host:port[?shard=NAME&replicas=N], docs/venue-ha.md
        from tradesim.store.jetstream import JetStreamJournal, parse_url

        servers, shard, replicas = parse_url(text)
        return await JetStreamJournal.open(servers, shard=shard, replicas=replicas, create=create, **options)
    if text.startswith(("postgresql://", "postgres://")):
        from tradesim.store.postgres import PostgresJournal

        return await PostgresJournal.open(text, create=create, **options)
    from tradesim.store.sqlite import SqliteJournal

    return await SqliteJournal.open(_sqlite_path(text), create=create, synchronous=synchronous, **options)
