"""SQLite journal backend: WAL mode, one dedicated writer thread, fsync on commit by default.

All blocking SQLite work runs off the event loop: group commits and snapshot writes on a
single writer thread (so they are serialized), reads on a separate read connection in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, Self, TypeVar

from tradesim.store.chain import GENESIS_HASH, RawRecord
from tradesim.store.journal import (
    Journal,
    JournalRecord,
    JournalUnavailableError,
    Row,
    SchemaVersionError,
    StoredSnapshot,
    _Pending,
    seal,
)
from tradesim.store.schema import JOURNAL_TABLE, META_TABLE, SCHEMA_VERSION, SNAPSHOT_TABLE, SQLITE_DDL

_SYNC_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")
_INSERT = f"INSERT INTO {JOURNAL_TABLE} (seq, ts, command, prev_hash, hash) VALUES "
_ROWS_PER_STATEMENT = 1000  # 5 parameters each, well under SQLITE_MAX_VARIABLE_NUMBER (32766)
_T = TypeVar("_T")


@functools.lru_cache(maxsize=64)
def _insert_sql(rows: int) -> str:
    """One multi-row INSERT: a single sqlite3_step per chunk, so the writer thread takes the GIL back
    once per chunk instead of once per row (executemany), which matters while the event loop is busy."""
    return _INSERT + ", ".join(["(?, ?, ?, ?, ?)"] * rows)


def _connect(path: Path, *, create: bool, synchronous: str) -> sqlite3.Connection:
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    else:
        if not path.is_file():
            raise JournalUnavailableError(f"no journal at {path} (file does not exist)")
        conn = sqlite3.connect(path.absolute().as_uri() + "?mode=rw", uri=True, isolation_level=None,
                               check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    return conn


def _prepare(conn: sqlite3.Connection, path: Path, create: bool) -> None:
    """Creates the schema (if allowed) and checks the schema version."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if JOURNAL_TABLE not in tables or META_TABLE not in tables:
        if not create:
            raise JournalUnavailableError(f"no journal at {path} (the database has no journal table)")
        conn.execute("BEGIN IMMEDIATE")
        for ddl in SQLITE_DDL:
            conn.execute(ddl)
        conn.execute(f"INSERT OR IGNORE INTO {META_TABLE} (key, value) VALUES ('schema_version', ?)",
                     (str(SCHEMA_VERSION),))
        conn.execute("COMMIT")
    row = conn.execute(f"SELECT value FROM {META_TABLE} WHERE key = 'schema_version'").fetchone()
    if row is None or row[0] != str(SCHEMA_VERSION):
        found = None if row is None else row[0]
        raise SchemaVersionError(f"journal at {path} has schema version {found}, expected {SCHEMA_VERSION}")


def _head(conn: sqlite3.Connection) -> tuple[int, bytes]:
    row = conn.execute(f"SELECT seq, hash FROM {JOURNAL_TABLE} ORDER BY seq DESC LIMIT 1").fetchone()
    return (0, GENESIS_HASH) if row is None else (int(row[0]), bytes(row[1]))


class SqliteJournal(Journal):
    """Journal in `<data_dir>/journal.db`; `synchronous=FULL` makes every group commit fsync the WAL."""

    def __init__(self, path: Path, writer: sqlite3.Connection, reader: sqlite3.Connection,
                 executor: ThreadPoolExecutor, **options: Any) -> None:
        super().__init__(**options)
        self.path = path
        self.location = str(path)
        self._conn = writer
        self._reader = reader
        self._reader_lock = threading.Lock()
        self._executor = executor
        self._checkpointer = _Checkpointer(path)

    @classmethod
    async def open(cls, path: Path, *, create: bool = True, synchronous: str = "FULL",
                   **options: Any) -> Self:
        sync = synchronous.upper()
        if sync not in _SYNC_MODES:
            raise ValueError(f"synchronous must be one of {', '.join(_SYNC_MODES)}, got {synchronous!r}")
        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal-sqlite-writer")

        def setup() -> tuple[sqlite3.Connection, sqlite3.Connection, int, bytes]:
            writer = _connect(path, create=create, synchronous=sync)
            try:
                _prepare(writer, path, create)
                reader = _connect(path, create=False, synchronous=sync)
                last_seq, head = _head(writer)
            except BaseException:
                writer.close()
                raise
            return writer, reader, last_seq, head

        try:
            writer, reader, last_seq, head = await loop.run_in_executor(executor, setup)
        except sqlite3.Error as exc:
            executor.shutdown(wait=False)
            raise JournalUnavailableError(f"cannot open SQLite journal at {path}: {exc}") from exc
        except BaseException:
            executor.shutdown(wait=False)
            raise
        journal = cls(path, writer, reader, executor, **options)
        journal._adopt_head(last_seq, head)
        return journal

    async def _on_writer(self, fn: partial[_T]) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def _commit(self, statements: list[tuple[str, Any]], rows: list[Row] | None = None) -> None:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for start in range(0, len(rows) if rows else 0, _ROWS_PER_STATEMENT):
                assert rows is not None
                chunk = rows[start:start + _ROWS_PER_STATEMENT]
                conn.execute(_insert_sql(len(chunk)), list(itertools.chain.from_iterable(chunk)))
            for sql, params in statements:
                conn.execute(sql, params)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _write_sync(self, batch: list[_Pending], last_seq: int, head: bytes) -> list[JournalRecord]:
        rows, records = seal(batch, last_seq, head)
        self._commit([], rows)
        self._checkpointer.poke()
        return records

    async def _write_batch(self, batch: list[_Pending]) -> list[JournalRecord]:
        records = await self._on_writer(partial(self._write_sync, batch, self._last_seq, self._head))
        self._adopt_head(records[-1].seq, records[-1].hash)
        return records

    def _read_sync(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        with self._reader_lock:
            return self._reader.execute(sql, params).fetchall()

    async def _fetch_raw(self, from_seq: int, limit: int) -> list[RawRecord]:
        rows = await asyncio.to_thread(
            self._read_sync,
            f"SELECT seq, ts, command, prev_hash, hash FROM {JOURNAL_TABLE} "
            "WHERE seq >= ? ORDER BY seq LIMIT ?",
            (from_seq, limit))
        return [RawRecord(int(r[0]), int(r[1]), _as_bytes(r[2]), _as_bytes(r[3]), _as_bytes(r[4]))
                for r in rows]

    async def _store_snapshot(self, seq: int, state_hash: str, data: bytes) -> None:
        statements: list[tuple[str, Any]] = [
            (f"INSERT OR REPLACE INTO {SNAPSHOT_TABLE} (seq, state_hash, data, created_ns) "
             "VALUES (?, ?, ?, ?)",
             (seq, state_hash, data, time.time_ns())),
            (f"DELETE FROM {SNAPSHOT_TABLE} WHERE seq NOT IN "
             f"(SELECT seq FROM {SNAPSHOT_TABLE} ORDER BY seq DESC LIMIT ?)", (max(self.snapshots_kept, 1),)),
        ]
        await self._on_writer(partial(self._commit, statements))

    async def latest_snapshot(self, max_seq: int | None = None) -> StoredSnapshot | None:
        rows = await asyncio.to_thread(
            self._read_sync,
            f"SELECT seq, state_hash, data FROM {SNAPSHOT_TABLE} WHERE seq <= ? ORDER BY seq DESC LIMIT 1",
            (max_seq if max_seq is not None else 2**63 - 1,))
        if not rows:
            return None
        seq, state_hash, data = rows[0]
        return StoredSnapshot(int(seq), str(state_hash), _as_bytes(data))

    async def _close(self) -> None:
        def shut() -> None:
            self._conn.close()
            with self._reader_lock:
                self._reader.close()

        self._checkpointer.stop()
        await self._on_writer(partial(shut))
        self._executor.shutdown(wait=True)


class _Checkpointer:
    """Copies WAL frames into the database on its own thread and connection, between group commits.

    SQLite's auto-checkpoint runs inside the commit that crosses the threshold, which stalled that
    group for tens of ms. With this thread keeping up (PASSIVE, never blocks the writer), the
    auto-checkpoint left in the commit path only has the last few frames to copy, so the WAL still
    restarts from its beginning (no growth) while the commit tail latency stays low.
    """

    MIN_INTERVAL = 0.01

    def __init__(self, path: Path) -> None:
        self._path = path
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="journal-sqlite-checkpointer", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error:
            return  # only an optimisation: the commit path checkpoints anyway
        try:
            conn.execute("PRAGMA busy_timeout = 0")
            while True:
                self._wake.wait()
                if self._stopping:
                    return
                self._wake.clear()
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                time.sleep(self.MIN_INTERVAL)
        finally:
            conn.close()


def _as_bytes(value: object) -> bytes:
    """Rows tampered with by hand may hold TEXT or numbers where BLOBs belong; keep their bytes."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if value is None:
        return b""
    return str(value).encode()
