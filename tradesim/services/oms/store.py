"""Persistence of what only the OMS knows: order records (refused and held orders never reach the venue
journal), the per-account request counts next to them, and a rare checkpoint of the derived state.

Writes are incremental: a `Batch` holds the records changed since the last one (upserted by
(account, client_order_id)), the accounts whose daily order/cancel counts or day-start P&L changed,
and — only now and then — a checkpoint (`OmsState`: the last applied venue seq, the Ledger replica,
market view and counters as of that seq). Each record carries the venue seq of the last event applied
to it, so a replay of the venue journal can skip what a record already has while the derived state is
rebuilt from the events after the checkpoint. One batch is one transaction.

`encode_batch` runs on the event loop (records are live, mutable objects); `write` may run in a thread.
Two kinds of store: `OrderStore` (synchronous, one OMS: memory, SQLite) and `SharedOrderStore` (async,
shared by every OMS instance of a cluster, fenced by the leader's token: PostgreSQL, in `pgstore`).
"""

from __future__ import annotations

import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import msgspec

from tradesim.services.oms.manager import AccountCounts, OmsSnapshot, OmsState
from tradesim.services.oms.parents import ParentRecord
from tradesim.services.oms.records import Key, OrderRecord


@dataclass(slots=True)
class Batch:
    """One transaction's worth of encoded changes."""

    orders: list[tuple[str, str, int, str, bytes]] = field(default_factory=list)  # account, cid, n, status, data
    accounts: list[tuple[str, bytes]] = field(default_factory=list)
    checkpoint: bytes | None = None
    # algo parents (parent_id, n, state, data): only a SharedOrderStore takes them in the orders' transaction
    parents: list[tuple[str, int, str, bytes]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.orders or self.accounts or self.checkpoint is not None or self.parents)

    def merged(self, later: Batch) -> Batch:
        """This (unwritten) batch followed by `later`, one row per key, the later row winning: what is
        written again after a failed write, so that no change taken from the manager is dropped."""
        orders = {(o[0], o[1]): o for o in (*self.orders, *later.orders)}
        accounts = dict((*self.accounts, *later.accounts))
        parents = {p[0]: p for p in (*self.parents, *later.parents)}
        return Batch(orders=list(orders.values()), accounts=list(accounts.items()),
                     checkpoint=later.checkpoint if later.checkpoint is not None else self.checkpoint,
                     parents=list(parents.values()))


_encoder = msgspec.msgpack.Encoder()
_record_decoder = msgspec.msgpack.Decoder(OrderRecord)
_state_decoder = msgspec.msgpack.Decoder(OmsState)
_account_decoder = msgspec.msgpack.Decoder(AccountCounts)


def encode_batch(records: Sequence[OrderRecord], accounts: Sequence[AccountCounts] = (),
                 checkpoint: OmsState | None = None, parents: Sequence[ParentRecord] = ()) -> Batch:
    """Freezes the changes into bytes (call on the loop: the records keep changing after it)."""
    encode = _encoder.encode
    return Batch(
        orders=[(r.account, r.client_order_id, r.n, r.status.value, encode(r)) for r in records],
        accounts=[(a.account, encode(a)) for a in accounts],
        checkpoint=encode(checkpoint) if checkpoint is not None else None,
        parents=[(p.parent_id, p.n, p.state.value, encode(p)) for p in parents],
    )


def _snapshot(state: bytes | None, orders: Sequence[bytes], accounts: Sequence[bytes]) -> OmsSnapshot | None:
    if state is None and not orders and not accounts:
        return None
    return OmsSnapshot(
        state=_state_decoder.decode(state) if state is not None else OmsState(),
        orders=[_record_decoder.decode(b) for b in orders],
        accounts=[_account_decoder.decode(b) for b in accounts],
    )


class OrderStore(Protocol):
    """Writes a batch atomically; loads everything back. `threaded`: writes may block (run them in a thread)."""

    threaded: bool

    def write(self, batch: Batch) -> None: ...

    def load(self) -> OmsSnapshot | None:
        """The stored snapshot, None when the store is empty."""
        ...

    def close(self) -> None: ...


class StaleLeaderError(Exception):
    """A shared store refused a write (or a fence) because a larger fencing token is recorded: a newer
    leader owns the store, and this instance's view of it is out of date."""


class SharedOrderStore(ABC):
    """The store every OMS instance of a cluster shares (orders, account counts, checkpoint, parents).

    The leader calls `fence(token)` once elected, before `load()`; from then on every `write` checks, in
    its own transaction and under a row lock, that no larger token has been recorded since, so a former
    leader's late flush fails (StaleLeaderError) instead of overwriting the new leader's rows.
    """

    @abstractmethod
    async def fence(self, token: int, incarnation: str = "") -> None:
        """Record `token` as the owner (raises StaleLeaderError if a larger one is recorded).

        `incarnation` is the election bucket's (`SingleActive.incarnation()`): tokens are compared only
        within one; a token from a new incarnation (the NATS store was wiped) replaces the recorded one."""

    @abstractmethod
    async def write(self, batch: Batch, token: int) -> None:
        """Write `batch` atomically if `token` (the one the batch was taken under) is still the recorded one;
        else StaleLeaderError and nothing is written."""

    @abstractmethod
    async def load(self) -> OmsSnapshot | None:
        """The stored snapshot, None when the store is empty."""

    @abstractmethod
    async def load_parents(self) -> list[ParentRecord]: ...

    @abstractmethod
    async def close(self) -> None: ...


class SharedParentStore(ABC):
    """The algo parents of a SharedOrderStore: written in the orders' transactions (fenced alike)."""

    orders: SharedOrderStore

    @abstractmethod
    async def load(self) -> list[ParentRecord]: ...


def save(store: OrderStore, records: Sequence[OrderRecord], accounts: Sequence[AccountCounts] = (),
         checkpoint: OmsState | None = None) -> None:
    """Encode and write in one go (tests, tools)."""
    store.write(encode_batch(records, accounts, checkpoint))


class MemoryOrderStore:
    """Keeps encoded copies, so a test that restarts an OMS on it sees exactly what SQLite would."""

    threaded = False

    def __init__(self) -> None:
        self._records: dict[Key, bytes] = {}
        self._accounts: dict[str, bytes] = {}
        self._state: bytes | None = None

    def write(self, batch: Batch) -> None:
        _no_parents(batch)
        for account, cid, _, _, data in batch.orders:
            self._records[(account, cid)] = data
        self._accounts.update(batch.accounts)
        if batch.checkpoint is not None:
            self._state = batch.checkpoint

    def load(self) -> OmsSnapshot | None:
        return _snapshot(self._state, list(self._records.values()), list(self._accounts.values()))

    def close(self) -> None:
        pass


class SqliteOrderStore:
    """`oms_orders` upserted per change, `oms_accounts` per account, `oms_meta('state')` the checkpoint (WAL)."""

    threaded = True

    def __init__(self, path: str | Path, *, synchronous: str = "NORMAL") -> None:
        """`synchronous`: SQLite's durability; NORMAL (WAL: a commit survives a process crash, the last
        ones may not survive a power cut), FULL, or OFF for simulations that can be run again."""
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, got {synchronous!r}")
        self.path = str(path)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS oms_orders (account TEXT NOT NULL, client_order_id TEXT NOT NULL, "
            "n INTEGER NOT NULL, status TEXT NOT NULL, data BLOB NOT NULL, "
            "PRIMARY KEY (account, client_order_id))"
        )
        self._db.execute("CREATE TABLE IF NOT EXISTS oms_accounts (account TEXT PRIMARY KEY, data BLOB NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS oms_meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)")

    def write(self, batch: Batch) -> None:
        _no_parents(batch)
        if not batch:
            return
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            if batch.orders:
                db.executemany(
                    "INSERT INTO oms_orders (account, client_order_id, n, status, data) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (account, client_order_id) DO UPDATE SET status = excluded.status, "
                    "data = excluded.data",
                    batch.orders,
                )
            if batch.accounts:
                db.executemany("INSERT OR REPLACE INTO oms_accounts (account, data) VALUES (?, ?)", batch.accounts)
            if batch.checkpoint is not None:
                db.execute("INSERT OR REPLACE INTO oms_meta (key, value) VALUES ('state', ?)", (batch.checkpoint,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def load(self) -> OmsSnapshot | None:
        row = self._db.execute("SELECT value FROM oms_meta WHERE key = 'state'").fetchone()
        orders = [r[0] for r in self._db.execute("SELECT data FROM oms_orders ORDER BY n")]
        accounts = [r[0] for r in self._db.execute("SELECT data FROM oms_accounts ORDER BY account")]
        return _snapshot(row[0] if row is not None else None, orders, accounts)

    def close(self) -> None:
        self._db.close()


def _no_parents(batch: Batch) -> None:
    """Parents go to a ParentStore of their own beside a one-instance store; never drop them silently."""
    if batch.parents:
        raise ValueError("this order store does not keep algo parents (use a ParentStore beside it)")
