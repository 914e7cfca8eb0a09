"""Persistence of what only the OMS knows: order records (refused and held orders never reach the venue
journal) and the state next to them (last applied venue seq, Ledger replica, counters, market).

`OrderStore` is the port; `MemoryOrderStore` (tests, embedded runs without a data dir) and
`SqliteOrderStore` implement it. One `save` is one transaction, so the records and the seq they
reflect never disagree after a crash: the runtime re-feeds the venue events after `state.seq`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import msgspec

from tradesim.services.oms.manager import OmsSnapshot, OmsState
from tradesim.services.oms.records import Key, OrderRecord


class OrderStore(Protocol):
    """Upsert changed records (and the state when it changed) atomically; load everything back."""

    def save(self, records: Sequence[OrderRecord], state: OmsState | None) -> None: ...

    def load(self) -> OmsSnapshot | None:
        """The stored snapshot, None when the store is empty."""
        ...

    def close(self) -> None: ...


_record_encoder = msgspec.msgpack.Encoder()
_record_decoder = msgspec.msgpack.Decoder(OrderRecord)
_state_decoder = msgspec.msgpack.Decoder(OmsState)


class MemoryOrderStore:
    """Keeps encoded copies, so a test that restarts an OMS on it sees exactly what SQLite would."""

    def __init__(self) -> None:
        self._records: dict[Key, bytes] = {}
        self._state: bytes | None = None

    def save(self, records: Sequence[OrderRecord], state: OmsState | None) -> None:
        for record in records:
            self._records[record.key] = _record_encoder.encode(record)
        if state is not None:
            self._state = _record_encoder.encode(state)

    def load(self) -> OmsSnapshot | None:
        if self._state is None and not self._records:
            return None
        state = _state_decoder.decode(self._state) if self._state is not None else OmsState()
        return OmsSnapshot(state=state, orders=[_record_decoder.decode(b) for b in self._records.values()])

    def close(self) -> None:
        pass


class SqliteOrderStore:
    """`orders(account, client_order_id, n, data)` upserted per change, `meta('state')` the rest (WAL)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS oms_orders (account TEXT NOT NULL, client_order_id TEXT NOT NULL, "
            "n INTEGER NOT NULL, status TEXT NOT NULL, data BLOB NOT NULL, "
            "PRIMARY KEY (account, client_order_id))"
        )
        self._db.execute("CREATE TABLE IF NOT EXISTS oms_meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)")

    def save(self, records: Sequence[OrderRecord], state: OmsState | None) -> None:
        if not records and state is None:
            return
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                "INSERT INTO oms_orders (account, client_order_id, n, status, data) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (account, client_order_id) DO UPDATE SET status = excluded.status, data = excluded.data",
                [(r.account, r.client_order_id, r.n, r.status.value, _record_encoder.encode(r)) for r in records],
            )
            if state is not None:
                db.execute("INSERT OR REPLACE INTO oms_meta (key, value) VALUES ('state', ?)",
                           (_record_encoder.encode(state),))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def load(self) -> OmsSnapshot | None:
        row = self._db.execute("SELECT value FROM oms_meta WHERE key = 'state'").fetchone()
        rows = self._db.execute("SELECT data FROM oms_orders ORDER BY n").fetchall()
        if row is None and not rows:
            return None
        state = _state_decoder.decode(row[0]) if row is not None else OmsState()
        return OmsSnapshot(state=state, orders=[_record_decoder.decode(r[0]) for r in rows])

    def close(self) -> None:
        self._db.close()
