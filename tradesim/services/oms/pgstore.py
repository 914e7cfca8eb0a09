"""The OMS store shared by every OMS instance of a cluster, in PostgreSQL (asyncpg), fenced by the leader's token.

Same rows as the SQLite store (`oms_orders`, `oms_accounts`, `oms_meta('state')`) plus the algo parents
(`oms_parents`) in the same transaction, and `oms_fence(name, token)`: the newest fencing token of the
election `name`. The leader records its token with `fence()` when elected, *then* loads; every write
transaction first reads the fence row `FOR SHARE` and refuses (StaleLeaderError, nothing written) when a
larger token is recorded. A new leader's `fence()` updates that row, so it waits for a former leader's
transaction in progress: that one either committed before (and the new leader's `load()` sees it) or
finds the larger token and fails. A former leader's late flush can never overwrite the new leader's rows.

A write is ONE statement (`_WRITE`: the fence row locked `FOR SHARE` in a CTE, every upsert conditioned on
it, row arrays passed with `unnest`), so it costs one round trip and one implicit transaction instead of
BEGIN, the fence read, an `executemany` per table and COMMIT: the OMS writes before every route, so
this is on the order path. Read committed re-checks the locked row's token after waiting for a fence
in progress, so the semantics are those of the explicit transaction.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Final

import asyncpg
import msgspec

from tradesim.services.oms.manager import OmsSnapshot
from tradesim.services.oms.parents import ParentRecord
from tradesim.services.oms.store import Batch, SharedOrderStore, SharedParentStore, StaleLeaderError, _snapshot

log = logging.getLogger("tradesim.oms.store")

CONNECT_TIMEOUT: Final = 5.0
_SCHEMA_LOCK_KEY: Final = 7_315_624_002  # pg_advisory_xact_lock key: concurrent OMS instances create the schema once
DDL: Final = (
    "CREATE TABLE IF NOT EXISTS oms_orders (account TEXT NOT NULL, client_order_id TEXT NOT NULL, "
    "n BIGINT NOT NULL, status TEXT NOT NULL, data BYTEA NOT NULL, PRIMARY KEY (account, client_order_id))",
    "CREATE TABLE IF NOT EXISTS oms_accounts (account TEXT PRIMARY KEY, data BYTEA NOT NULL)",
    "CREATE TABLE IF NOT EXISTS oms_meta (key TEXT PRIMARY KEY, value BYTEA NOT NULL)",
    "CREATE TABLE IF NOT EXISTS oms_parents (parent_id TEXT PRIMARY KEY, n BIGINT NOT NULL, "
    "state TEXT NOT NULL, data BYTEA NOT NULL)",
    "CREATE TABLE IF NOT EXISTS oms_fence (name TEXT PRIMARY KEY, token BIGINT NOT NULL, holder TEXT NOT NULL, "
    "fenced_ns BIGINT NOT NULL)",
    "ALTER TABLE oms_fence ADD COLUMN IF NOT EXISTS incarnation TEXT NOT NULL DEFAULT ''",
)
_WRITE: Final = (
    "WITH fence AS (SELECT token FROM oms_fence WHERE name = $1 AND token = $2 AND incarnation = $3 FOR SHARE), "
    "o AS (INSERT INTO oms_orders (account, client_order_id, n, status, data) "
    "SELECT * FROM unnest($4::text[], $5::text[], $6::bigint[], $7::text[], $8::bytea[]) "
    "WHERE EXISTS (SELECT 1 FROM fence) "
    "ON CONFLICT (account, client_order_id) DO UPDATE SET status = EXCLUDED.status, data = EXCLUDED.data), "
    "a AS (INSERT INTO oms_accounts (account, data) SELECT * FROM unnest($9::text[], $10::bytea[]) "
    "WHERE EXISTS (SELECT 1 FROM fence) ON CONFLICT (account) DO UPDATE SET data = EXCLUDED.data), "
    "p AS (INSERT INTO oms_parents (parent_id, n, state, data) "
    "SELECT * FROM unnest($11::text[], $12::bigint[], $13::text[], $14::bytea[]) "
    "WHERE EXISTS (SELECT 1 FROM fence) "
    "ON CONFLICT (parent_id) DO UPDATE SET state = EXCLUDED.state, data = EXCLUDED.data), "
    "s AS (INSERT INTO oms_meta (key, value) SELECT 'state', $15::bytea "
    "WHERE $15::bytea IS NOT NULL AND EXISTS (SELECT 1 FROM fence) "
    "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value) "
    "SELECT count(*) FROM fence")
"""A whole fenced batch in one statement (see the module docstring); returns 0 when the fence refused it."""
_WINS: Final = "(EXCLUDED.incarnation <> oms_fence.incarnation OR EXCLUDED.token >= oms_fence.token)"
_FENCE: Final = (
    "INSERT INTO oms_fence (name, token, holder, fenced_ns, incarnation) VALUES ($1, $2, $3, $4, $5) "
    "ON CONFLICT (name) DO UPDATE SET "
    + ", ".join(f"{col} = CASE WHEN {_WINS} THEN EXCLUDED.{col} ELSE oms_fence.{col} END"
                for col in ("holder", "fenced_ns", "token", "incarnation"))
    + " RETURNING token, incarnation")

_parent_decoder = msgspec.msgpack.Decoder(ParentRecord)


class StoreUnavailableError(Exception):
    """PostgreSQL cannot be reached (or the connection broke); the write did not happen."""


def _redact(url: str) -> str:
    head, sep, tail = url.partition("://")
    if "@" in tail:
        creds, _, host = tail.rpartition("@")
        return f"{head}{sep}{creds.split(':', 1)[0]}@{host}"
    return url


class PostgresOrderStore(SharedOrderStore):
    """One connection per OMS instance, used by one operation at a time (writes come from one flusher).

    `name` is the election whose token fences the store (one store per OMS cluster); `holder` names this
    instance in the fence row (for humans). Use `await PostgresOrderStore.open(url)`.
    """

    def __init__(self, url: str, conn: Any, *, name: str = "oms", holder: str = "") -> None:
        self.url = url
        self.location = _redact(url)
        self.name = name
        self.holder = holder
        self._conn: Any = conn
        self._lock = asyncio.Lock()
        self._token: int | None = None
        self._incarnation = ""

    @classmethod
    async def open(cls, url: str, *, name: str = "oms", holder: str = "") -> PostgresOrderStore:
        conn = await _connect(url)
        try:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK_KEY)
                for ddl in DDL:
                    await conn.execute(ddl)
        except BaseException:
            await conn.close()
            raise
        return cls(url, conn, name=name, holder=holder)

    @property
    def token(self) -> int | None:
        """The token this instance fenced the store with (None before `fence`)."""
        return self._token

    async def fence(self, token: int, incarnation: str = "") -> None:
        if isinstance(token, bool) or not isinstance(token, int) or token < 1:
            raise ValueError(f"a fencing token is a positive int, got {token!r}")
        async with self._lock:
            conn = await self._connection()
            row = await conn.fetchrow(_FENCE, self.name, token, self.holder, time.time_ns(), incarnation)
        assert row is not None
        if (row["token"], row["incarnation"]) != (token, incarnation):
            self._token = None
            raise StaleLeaderError(f"store {self.name}: token {token} is older than the recorded {row['token']}")
        self._token, self._incarnation = token, incarnation

    async def recorded_token(self) -> int | None:
        """The newest token recorded in the store (for tools and tests)."""
        async with self._lock:
            conn = await self._connection()
            value = await conn.fetchval("SELECT token FROM oms_fence WHERE name = $1", self.name)
        return int(value) if value is not None else None

    async def write(self, batch: Batch, token: int) -> None:
        if token != self._token:
            raise StaleLeaderError(f"store {self.name}: token {token} is not the one this instance fenced the "
                                   f"store with ({self._token}); call fence(token) first")
        if not batch:
            return
        # One row per key (the later wins, as consecutive upserts would): a statement may not upsert a row twice.
        orders = list({(o[0], o[1]): o for o in batch.orders}.values())
        accounts = list(dict(batch.accounts).items())
        parents = list({p[0]: p for p in batch.parents}.values())
        async with self._lock:
            conn = await self._connection()
            written = await conn.fetchval(
                _WRITE, self.name, token, self._incarnation, *_columns(orders, 5), *_columns(accounts, 2),
                *_columns(parents, 4), batch.checkpoint)
            if not written:
                recorded = await conn.fetchval("SELECT token FROM oms_fence WHERE name = $1", self.name)
                raise StaleLeaderError(f"store {self.name}: write with token {token} refused, "
                                       f"the recorded token is {recorded}")

    async def load(self) -> OmsSnapshot | None:
        async with self._lock:
            conn = await self._connection()
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                state = await conn.fetchval("SELECT value FROM oms_meta WHERE key = 'state'")
                orders = await conn.fetch("SELECT data FROM oms_orders ORDER BY n")
                accounts = await conn.fetch("SELECT data FROM oms_accounts ORDER BY account")
        return _snapshot(bytes(state) if state is not None else None, [bytes(r[0]) for r in orders],
                         [bytes(r[0]) for r in accounts])

    async def load_parents(self) -> list[ParentRecord]:
        async with self._lock:
            conn = await self._connection()
            rows = await conn.fetch("SELECT data FROM oms_parents ORDER BY n")
        return [_parent_decoder.decode(bytes(r[0])) for r in rows]

    async def close(self) -> None:
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is None:
                return
            try:
                await asyncio.wait_for(conn.close(), timeout=CONNECT_TIMEOUT)
            except (TimeoutError, OSError, asyncpg.InterfaceError):
                conn.terminate()

    async def _connection(self) -> Any:
        """The connection, opened again if it broke (a write in the broken one was rolled back)."""
        conn = self._conn
        if conn is None or conn.is_closed():
            if conn is not None:
                log.warning("oms store %s: connection lost, reconnecting", self.location)
            self._conn = conn = await _connect(self.url)
        return conn


def _columns(rows: list[Any], width: int) -> list[list[Any]]:
    """`rows` (tuples of `width` values) as `width` column lists, for `unnest`."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*rows, strict=True)]


async def _connect(url: str) -> Any:
    try:
        return await asyncpg.connect(url, timeout=CONNECT_TIMEOUT)
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise StoreUnavailableError(
            f"cannot connect to PostgreSQL at {_redact(url)}: {type(exc).__name__}: {exc}") from exc


class PostgresParentStore(SharedParentStore):
    """The algo parents of a `PostgresOrderStore`: the same tables and connection, written in the orders'
    transaction (the AlgoDesk hands its changes to the OMS's batch), so they are fenced alike."""

    def __init__(self, orders: PostgresOrderStore) -> None:
        self.orders = orders

    async def load(self) -> list[ParentRecord]:
        return await self.orders.load_parents()


async def open_oms_stores(url: str, *, name: str = "oms", holder: str = "") -> tuple[
        PostgresOrderStore, PostgresParentStore]:
    """The shared order store on `url` (schema created if missing) and its parents' view, for
    `OmsService(store=..., parent_store=...)`."""
    orders = await PostgresOrderStore.open(url, name=name, holder=holder)
    return orders, PostgresParentStore(orders)
