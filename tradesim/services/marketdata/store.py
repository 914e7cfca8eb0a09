"""Recorded market data: the `md_bars` and `md_ticks` query tables, on SQLite or PostgreSQL.

They are projections (DESIGN, Storage): rebuilt from the venue's trades if lost, so writes are
batched off the hot path — `add_tick`/`add_bar` only queue a row; one writer task writes what is
queued in one transaction. `flush()` waits until everything queued so far is written.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from tradesim.services.marketdata.messages import Bar, Tick
from tradesim.store.threads import run_serialized

log = logging.getLogger("tradesim.services.marketdata.store")

SQLITE_FILE: Final = "marketdata.db"

BAR_COLUMNS: Final = ("symbol", "interval_s", "start_ts", "open", "high", "low", "close", "volume", "turnover",
                      "trades")
TICK_COLUMNS: Final = ("symbol", "ts", "seq", "bid", "bid_qty", "ask", "ask_qty", "last", "last_qty", "volume",
                       "turnover", "trades", "reference")

# turnover (ticks * units) is NUMERIC on PostgreSQL: a busy day's sum may outgrow BIGINT.
_SQLITE_DDL: Final = (
    "CREATE TABLE IF NOT EXISTS md_bars (symbol TEXT NOT NULL, interval_s INTEGER NOT NULL, "
    "start_ts INTEGER NOT NULL, open INTEGER NOT NULL, high INTEGER NOT NULL, low INTEGER NOT NULL, "
    "close INTEGER NOT NULL, volume INTEGER NOT NULL, turnover INTEGER NOT NULL, trades INTEGER NOT NULL, "
    "PRIMARY KEY (symbol, interval_s, start_ts))",
    "CREATE TABLE IF NOT EXISTS md_ticks (symbol TEXT NOT NULL, ts INTEGER NOT NULL, seq INTEGER NOT NULL, "
    "bid INTEGER, bid_qty INTEGER NOT NULL, ask INTEGER, ask_qty INTEGER NOT NULL, last INTEGER, "
    "last_qty INTEGER NOT NULL, volume INTEGER NOT NULL, turnover INTEGER NOT NULL, trades INTEGER NOT NULL, "
    "reference INTEGER)",
    "CREATE INDEX IF NOT EXISTS md_ticks_symbol_ts ON md_ticks (symbol, ts)",
)
_PG_DDL: Final = (
    "CREATE TABLE IF NOT EXISTS md_bars (symbol TEXT NOT NULL, interval_s INTEGER NOT NULL, "
    "start_ts BIGINT NOT NULL, open BIGINT NOT NULL, high BIGINT NOT NULL, low BIGINT NOT NULL, "
    "close BIGINT NOT NULL, volume BIGINT NOT NULL, turnover NUMERIC NOT NULL, trades BIGINT NOT NULL, "
    "PRIMARY KEY (symbol, interval_s, start_ts))",
    "CREATE TABLE IF NOT EXISTS md_ticks (symbol TEXT NOT NULL, ts BIGINT NOT NULL, seq BIGINT NOT NULL, "
    "bid BIGINT, bid_qty BIGINT NOT NULL, ask BIGINT, ask_qty BIGINT NOT NULL, last BIGINT, "
    "last_qty BIGINT NOT NULL, volume BIGINT NOT NULL, turnover NUMERIC NOT NULL, trades BIGINT NOT NULL, "
    "reference BIGINT)",
    "CREATE INDEX IF NOT EXISTS md_ticks_symbol_ts ON md_ticks (symbol, ts)",
)


class MarketDataStoreError(Exception):
    """The store cannot be opened or used."""


def _bar_row(b: Bar) -> tuple[Any, ...]:
    return (b.symbol, b.interval_s, b.start_ts, b.open, b.high, b.low, b.close, b.volume, b.turnover, b.trades)


def _tick_row(t: Tick) -> tuple[Any, ...]:
    return (t.symbol, t.ts, t.seq, t.bid, t.bid_qty, t.ask, t.ask_qty, t.last, t.last_qty, t.volume, t.turnover,
            t.trades, t.reference)


def _bar(row: Sequence[Any]) -> Bar:
    return Bar(symbol=row[0], interval_s=int(row[1]), start_ts=int(row[2]), open=int(row[3]), high=int(row[4]),
               low=int(row[5]), close=int(row[6]), volume=int(row[7]), turnover=int(row[8]), trades=int(row[9]))


def _tick(row: Sequence[Any]) -> Tick:
    def opt(v: Any) -> int | None:
        return None if v is None else int(v)

    return Tick(symbol=row[0], ts=int(row[1]), seq=int(row[2]), bid=opt(row[3]), bid_qty=int(row[4]),
                ask=opt(row[5]), ask_qty=int(row[6]), last=opt(row[7]), last_qty=int(row[8]), volume=int(row[9]),
                turnover=int(row[10]), trades=int(row[11]), reference=opt(row[12]))


class MarketDataStore(ABC):
    """Queue rows without waiting (`add_*`), write them in batches on a background task, query bars/ticks."""

    location: str

    def __init__(self) -> None:
        self._ticks: list[tuple[Any, ...]] = []
        self._bars: dict[tuple[str, int, int], tuple[Any, ...]] = {}  # an upsert: the newest row per key wins
        self._wake = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.written_ticks = 0
        self.written_bars = 0
        self.failed_writes = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._writer(), name=f"marketdata-store:{self.location}")

    def add_tick(self, tick: Tick) -> None:
        self._check_open()
        self._ticks.append(_tick_row(tick))
        self._wake.set()

    def add_bar(self, bar: Bar) -> None:
        self._check_open()
        self._bars[(bar.symbol, bar.interval_s, bar.start_ts)] = _bar_row(bar)
        self._wake.set()

    async def flush(self) -> None:
        """Writes everything queued so far (a failed write is logged, counted and its rows dropped)."""
        async with self._write_lock:
            ticks, bars = self._ticks, list(self._bars.values())
            if not ticks and not bars:
                return
            self._ticks, self._bars = [], {}
            try:
                await self._write(ticks, bars)
            except Exception:
                self.failed_writes += 1
                log.exception("market data store %s: dropped %d ticks and %d bars", self.location, len(ticks),
                              len(bars))
                return
            self.written_ticks += len(ticks)
            self.written_bars += len(bars)

    async def bars(self, symbol: str, interval_s: int = 60, *, start_ts: int | None = None,
                   end_ts: int | None = None, limit: int = 500) -> list[Bar]:
        """Stored bars with start_ts in [start_ts, end_ts), oldest first; without `start_ts`, the newest `limit`."""
        rows = await self._query_bars(symbol, interval_s, start_ts, end_ts, max(0, limit))
        return [_bar(r) for r in rows]

    async def ticks(self, symbol: str, *, start_ts: int | None = None, end_ts: int | None = None,
                    limit: int = 1000) -> list[Tick]:
        """Stored ticks with ts in [start_ts, end_ts), oldest first, at most `limit` (from the start)."""
        rows = await self._query_ticks(symbol, start_ts, end_ts, max(0, limit))
        return [_tick(r) for r in rows]

    async def close(self) -> None:
        """Writes what is queued, then closes."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            # Never cancel the writer mid-batch: its thread would go on using the connection we close next.
            self._wake.set()
            await self._task
        await self.flush()
        await self._close()

    async def _writer(self) -> None:
        while not self._closed:
            await self._wake.wait()
            self._wake.clear()
            await self.flush()

    def _check_open(self) -> None:
        if self._closed:
            raise MarketDataStoreError(f"market data store {self.location} is closed")

    @abstractmethod
    async def _write(self, ticks: list[tuple[Any, ...]], bars: list[tuple[Any, ...]]) -> None: ...

    @abstractmethod
    async def _query_bars(self, symbol: str, interval_s: int, start_ts: int | None, end_ts: int | None,
                          limit: int) -> list[Sequence[Any]]: ...

    @abstractmethod
    async def _query_ticks(self, symbol: str, start_ts: int | None, end_ts: int | None,
                           limit: int) -> list[Sequence[Any]]: ...

    @abstractmethod
    async def _close(self) -> None: ...


def _where(first: int, start_ts: int | None, end_ts: int | None, column: str, mark: str) -> tuple[str, list[Any]]:
    """Extra `AND` clauses for a time range; `mark(n)` placeholders ('?' or '$n') numbered from `first`."""
    sql, args = "", []
    n = first
    for value, op in ((start_ts, ">="), (end_ts, "<")):
        if value is not None:
            sql += f" AND {column} {op} {'?' if mark == '?' else f'${n}'}"
            args.append(value)
            n += 1
    return sql, args


def _range_sql(table: str, columns: Sequence[str], key: str, start_ts: int | None, end_ts: int | None,
               newest: bool, mark: str, fixed: int) -> tuple[str, list[Any]]:
    cond, args = _where(fixed + 1, start_ts, end_ts, key, mark)
    placeholders = ["?"] * fixed if mark == "?" else [f"${i}" for i in range(1, fixed + 1)]
    eq = " AND ".join(f"{c} = {p}" for c, p in zip(("symbol", "interval_s")[:fixed], placeholders, strict=True))
    limit_mark = "?" if mark == "?" else f"${fixed + len(args) + 1}"
    order = "DESC" if newest else "ASC"
    sql = (f"SELECT {', '.join(columns)} FROM {table} WHERE {eq}{cond} ORDER BY {key} {order} "
           f"LIMIT {limit_mark}")
    return sql, args


class SqliteMarketDataStore(MarketDataStore):
    """`<data_dir>/marketdata.db` (WAL, synchronous=NORMAL: a projection need not fsync every batch).

    Calls run in a worker thread on one connection under a lock, so the event loop never blocks on disk.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.location = str(path)
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._conn.execute("PRAGMA busy_timeout = 5000")
        for statement in _SQLITE_DDL:
            self._conn.execute(statement)
        self._lock = asyncio.Lock()

    async def _run(self, fn: Any) -> Any:
        return await run_serialized(self._lock, fn)

    async def _write(self, ticks: list[tuple[Any, ...]], bars: list[tuple[Any, ...]]) -> None:
        conn = self._conn

        def work() -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if ticks:
                    conn.executemany(f"INSERT INTO md_ticks ({', '.join(TICK_COLUMNS)}) VALUES "
                                     f"({', '.join('?' * len(TICK_COLUMNS))})", ticks)
                if bars:
                    conn.executemany(f"INSERT OR REPLACE INTO md_bars ({', '.join(BAR_COLUMNS)}) VALUES "
                                     f"({', '.join('?' * len(BAR_COLUMNS))})", bars)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        await self._run(work)

    async def _query_bars(self, symbol: str, interval_s: int, start_ts: int | None, end_ts: int | None,
                          limit: int) -> list[Sequence[Any]]:
        newest = start_ts is None
        sql, args = _range_sql("md_bars", BAR_COLUMNS, "start_ts", start_ts, end_ts, newest, "?", 2)
        rows: list[Sequence[Any]] = await self._run(
            lambda: self._conn.execute(sql, (symbol, interval_s, *args, limit)).fetchall())
        return rows[::-1] if newest else rows

    async def _query_ticks(self, symbol: str, start_ts: int | None, end_ts: int | None,
                           limit: int) -> list[Sequence[Any]]:
        sql, args = _range_sql("md_ticks", TICK_COLUMNS, "ts", start_ts, end_ts, False, "?", 1)
        rows: list[Sequence[Any]] = await self._run(
            lambda: self._conn.execute(sql, (symbol, *args, limit)).fetchall())
        return rows

    async def _close(self) -> None:
        async with self._lock:
            self._conn.close()


class PostgresMarketDataStore(MarketDataStore):
    """Tables `md_bars` and `md_ticks` in a PostgreSQL database (the journal's, typically); asyncpg pool."""

    def __init__(self, url: str, pool: Any) -> None:
        super().__init__()
        self.location = url.split("@")[-1]
        self._pool = pool

    @classmethod
    async def open(cls, url: str) -> PostgresMarketDataStore:
        import asyncpg

        try:
            pool = await asyncpg.create_pool(url, min_size=1, max_size=4, timeout=10)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise MarketDataStoreError(f"cannot open market data database {url.split('@')[-1]}: {exc}") from exc
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(7315624101)")  # concurrent creators take turns
            for statement in _PG_DDL:
                await conn.execute(statement)
        return cls(url, pool)

    async def _write(self, ticks: list[tuple[Any, ...]], bars: list[tuple[Any, ...]]) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            if ticks:
                await conn.copy_records_to_table("md_ticks", records=ticks, columns=list(TICK_COLUMNS))
            if bars:
                cols = ", ".join(BAR_COLUMNS)
                values = ", ".join(f"${i}" for i in range(1, len(BAR_COLUMNS) + 1))
                updates = ", ".join(f"{c} = excluded.{c}" for c in BAR_COLUMNS[3:])
                await conn.executemany(
                    f"INSERT INTO md_bars ({cols}) VALUES ({values}) "
                    f"ON CONFLICT (symbol, interval_s, start_ts) DO UPDATE SET {updates}", bars)

    async def _query_bars(self, symbol: str, interval_s: int, start_ts: int | None, end_ts: int | None,
                          limit: int) -> list[Sequence[Any]]:
        newest = start_ts is None
        sql, args = _range_sql("md_bars", BAR_COLUMNS, "start_ts", start_ts, end_ts, newest, "$", 2)
        rows: list[Sequence[Any]] = [tuple(r) for r in await self._pool.fetch(sql, symbol, interval_s, *args, limit)]
        return rows[::-1] if newest else rows

    async def _query_ticks(self, symbol: str, start_ts: int | None, end_ts: int | None,
                           limit: int) -> list[Sequence[Any]]:
        sql, args = _range_sql("md_ticks", TICK_COLUMNS, "ts", start_ts, end_ts, False, "$", 1)
        rows: list[Sequence[Any]] = [tuple(r) for r in await self._pool.fetch(sql, symbol, *args, limit)]
        return rows

    async def _close(self) -> None:
        await self._pool.close()


async def open_marketdata_store(target: str | Path) -> MarketDataStore:
    """The store at `target` (as `open_journal`): `postgresql://…`, `sqlite:///file.db` or a data directory.

    Its writer task is running when this returns; `close()` it when done.
    """
    text = str(target)
    store: MarketDataStore
    if text.startswith(("postgresql://", "postgres://")):
        store = await PostgresMarketDataStore.open(text)
    else:
        if text.startswith("sqlite://"):
            path = Path(text.removeprefix("sqlite://"))
            if path.name == "journal.db":  # the journal's URL given: keep market data beside it
                path = path.with_name(SQLITE_FILE)
        else:
            path = Path(text) / SQLITE_FILE
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            store = await asyncio.to_thread(SqliteMarketDataStore, path)
        except (OSError, sqlite3.Error) as exc:
            raise MarketDataStoreError(f"cannot open market data database {path}: {exc}") from exc
    store.start()
    return store
