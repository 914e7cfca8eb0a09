"""The OMS's record of algo parents: validation, lifecycle, leases, the over-fill guard on children, and
the figures (fills, market volume, tracking error, slippage) derived from the parent's child orders.

Pure like `OrderManager`: no bus, no clock; every entry point takes `ts` (ns). The parent's filled and
open quantities are never stored: they are summed over the child `OrderRecord`s (the OMS is the one
record of child fills), so a worker resuming a parent reads exactly what the venue did.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import msgspec

from tradesim.domain import Event, Instrument, Side, Trade
from tradesim.services.oms import errors as E
from tradesim.services.oms.errors import OmsRequestError
from tradesim.services.oms.manager import OrderManager
from tradesim.services.oms.messages import (
    ALGO_NAMES,
    ALGO_TERMINAL,
    AlgoListRequest,
    AlgoOrder,
    AlgoParams,
    AlgoRequest,
    AlgoState,
    AlgoView,
    OrderRequest,
)
from tradesim.services.oms.records import Key, OrderRecord

MS = 1_000_000
MAX_SLICES = 10_000
MAX_LIST = 1000
TRACKING_SAMPLES = 200
PARENT_PREFIX = "algo-"


class ParentRecord(msgspec.Struct, kw_only=True):
    """One parent. Mutated only by `ParentBook`; `ParentBook.view()` is the wire shape."""

    n: int
    parent_id: str
    client_id: str
    account: str
    symbol: str
    side: Side
    qty: int
    algo: str
    params: AlgoParams
    state: AlgoState = AlgoState.RUNNING
    start_ts: int = 0
    end_ts: int = 0
    created_ts: int = 0
    updated_ts: int = 0
    finished_ts: int = 0
    reason: str = ""
    correlation_id: str = ""
    published: bool = False  # stored on orders.algo.*; until then the OMS republishes on start
    owner: str = ""
    lease_until: int = 0
    market_volume: int = 0
    market_turnover: int = 0
    market_seq: int = 0  # venue seq of the last trade counted: a replayed trade is not counted again
    children: list[str] = []  # child client_order_ids, in creation order
    tracking_error: float | None = None
    slippage_bps: float | None = None

    @property
    def terminal(self) -> bool:
        return self.state in ALGO_TERMINAL

    def order(self) -> AlgoOrder:
        return AlgoOrder(parent_id=self.parent_id, account=self.account, symbol=self.symbol, side=self.side,
                         qty=self.qty, algo=self.algo, params=self.params, start_ts=self.start_ts,
                         end_ts=self.end_ts)


class ChildFigures(msgspec.Struct, frozen=True, kw_only=True):
    filled_qty: int = 0
    open_qty: int = 0
    fill_value: int = 0


def child_n(parent_id: str, cid: str) -> int:
    """The n of child id `{parent_id}-{n}` (0 when the id is not of that shape)."""
    head, _, tail = cid.rpartition("-")
    return int(tail) if head == parent_id and tail.isdigit() else 0


class ParentBook:
    """Every parent of this OMS, indexed by id, by (account, client_id), and child key → parent."""

    def __init__(self, orders: OrderManager) -> None:
        self.orders = orders
        self._parents: dict[str, ParentRecord] = {}
        self._by_client: dict[tuple[str, str], str] = {}
        self._child_parent: dict[Key, str] = {}
        self._next_n = 1
        self._dirty: dict[str, ParentRecord] = {}

    # ---- queries ----------------------------------------------------------------------------------

    def get(self, parent_id: str, account: str | None = None) -> ParentRecord:
        parent = self._parents.get(parent_id)
        if parent is None or (account is not None and parent.account != account):
            raise OmsRequestError(E.UNKNOWN_PARENT, f"no algo parent {parent_id!r}"
                                  + (f" for account {account}" if account else ""))
        return parent

    def all(self) -> list[ParentRecord]:
        return sorted(self._parents.values(), key=lambda p: p.n)

    def find(self, req: AlgoListRequest) -> tuple[list[ParentRecord], int]:
        if req.limit <= 0 or req.limit > MAX_LIST or req.offset < 0:
            raise OmsRequestError(E.BAD_REQUEST, f"limit must be in 1..{MAX_LIST} and offset >= 0")
        found = [p for p in self._parents.values()
                 if (req.account is None or p.account == req.account) and (req.state is None or p.state is req.state)]
        found.sort(key=lambda p: p.n, reverse=True)
        return found[req.offset:req.offset + req.limit], len(found)

    def child_records(self, parent: ParentRecord) -> list[OrderRecord]:
        out = []
        for cid in parent.children:
            record = self.orders.record((parent.account, cid))
            if record is not None:
                out.append(record)
        return out

    def figures(self, parent: ParentRecord) -> ChildFigures:
        filled = open_qty = value = 0
        for r in self.child_records(parent):
            filled += r.filled_qty
            value += r.fill_value
            if not r.terminal:
                open_qty += r.leaves_qty
        return ChildFigures(filled_qty=filled, open_qty=open_qty, fill_value=value)

    def view(self, parent: ParentRecord) -> AlgoView:
        f = self.figures(parent)
        next_child = 1 + max((child_n(parent.parent_id, c) for c in parent.children), default=0)
        return AlgoView(
            parent_id=parent.parent_id, client_id=parent.client_id, account=parent.account, symbol=parent.symbol,
            side=parent.side, qty=parent.qty, algo=parent.algo, params=parent.params, state=parent.state,
            filled_qty=f.filled_qty, open_qty=f.open_qty, fill_value=f.fill_value,
            child_count=len(parent.children), next_child=next_child, start_ts=parent.start_ts,
            end_ts=parent.end_ts, created_ts=parent.created_ts, updated_ts=parent.updated_ts,
            finished_ts=parent.finished_ts, reason=parent.reason, market_volume=parent.market_volume,
            market_turnover=parent.market_turnover, owner=parent.owner, lease_until=parent.lease_until,
            lot=self.orders.instruments[parent.symbol].lot_size,
            tracking_error=parent.tracking_error, slippage_bps=parent.slippage_bps,
            correlation_id=parent.correlation_id,
        )

    def take_dirty(self) -> list[ParentRecord]:
        out = list(self._dirty.values())
        self._dirty.clear()
        return out

    # ---- new parents ------------------------------------------------------------------------------

    def create(self, req: AlgoRequest, ts: int) -> tuple[ParentRecord, bool]:
        """Validate and record a RUNNING parent; returns (parent, existed) — a retry returns the original."""
        self._validate(req)
        if req.client_id:
            known = self._by_client.get((req.account, req.client_id))
            if known is not None:
                parent = self._parents[known]
                if (parent.symbol, parent.side, parent.qty, parent.algo, parent.params) != (
                        req.symbol, req.side, req.qty, req.algo, req.params):
                    raise OmsRequestError(E.DUPLICATE_CLIENT_ORDER_ID,
                                          f"client_id {req.client_id!r} of account {req.account} names another algo")
                return parent, True
        n = self._next_n
        self._next_n += 1
        parent_id = f"{PARENT_PREFIX}{n}"
        p = req.params
        start = p.start_ts if p.start_ts is not None and p.start_ts > ts else ts
        end = start + p.duration_ms * MS if p.duration_ms > 0 else 0
        parent = ParentRecord(
            n=n, parent_id=parent_id, client_id=req.client_id or parent_id, account=req.account,
            symbol=req.symbol, side=req.side, qty=req.qty, algo=req.algo, params=p, start_ts=start,
            end_ts=end, created_ts=ts, updated_ts=ts, correlation_id=req.correlation_id,
        )
        self._parents[parent_id] = parent
        self._by_client[(parent.account, parent.client_id)] = parent_id
        self._touch(parent, ts)
        return parent, False

    def _validate(self, req: AlgoRequest) -> Instrument:
        if req.account not in self.orders.accounts:
            raise OmsRequestError(E.UNKNOWN_ACCOUNT, f"unknown account {req.account!r}")
        instrument = self.orders.instruments.get(req.symbol)
        if instrument is None:
            raise OmsRequestError(E.UNKNOWN_SYMBOL, f"unknown symbol {req.symbol!r}")
        if req.algo not in ALGO_NAMES:
            raise OmsRequestError(E.UNKNOWN_ALGO, f"unknown algo {req.algo!r}: expected one of {', '.join(ALGO_NAMES)}")
        lot = instrument.lot_size
        if isinstance(req.qty, bool) or req.qty <= 0 or req.qty % lot:
            raise OmsRequestError(E.BAD_QTY, f"qty {req.qty} must be a positive multiple of lot size {lot}")
        if len(req.client_id) > 48:
            raise OmsRequestError(E.BAD_REQUEST, "client_id is longer than 48 characters")
        p = req.params

        def bad(message: str) -> OmsRequestError:
            return OmsRequestError(E.BAD_PARAMS, f"{req.algo}: {message}")

        if p.limit_price is not None and p.limit_price <= 0:
            raise bad(f"limit_price {p.limit_price} must be positive")
        if p.duration_ms < 0 or p.slices < 0 or p.grace_ms < 0 or p.min_child_qty < 0 or p.display_qty < 0:
            raise bad("duration_ms, slices, grace_ms, min_child_qty and display_qty must not be negative")
        if p.slices > MAX_SLICES:
            raise bad(f"at most {MAX_SLICES} slices")
        if req.algo in ("twap", "vwap"):
            if p.duration_ms <= 0:
                raise bad("needs duration_ms > 0")
            if p.slices and p.slices * lot > req.qty:
                raise bad(f"{p.slices} slices of at least one lot exceed qty {req.qty}")
            if req.algo == "vwap" and p.profile not in ("u", "bars"):
                raise bad(f"profile {p.profile!r} must be 'u' or 'bars'")
        elif req.algo == "pov":
            if not 0 < p.participation < 1:
                raise bad(f"participation {p.participation} must be in (0, 1)")
            if p.min_child_qty % lot:
                raise bad(f"min_child_qty {p.min_child_qty} must be a multiple of lot size {lot}")
        else:  # iceberg
            if p.limit_price is None:
                raise bad("needs limit_price")
            if p.display_qty <= 0 or p.display_qty > req.qty or p.display_qty % lot:
                raise bad(f"display_qty {p.display_qty} must be a lot multiple in (0, qty]")
        return instrument

    # ---- lifecycle --------------------------------------------------------------------------------

    def published(self, parent: ParentRecord, ts: int) -> None:
        parent.published = True
        self._touch(parent, ts)

    def set_state(self, parent: ParentRecord, target: AlgoState, ts: int, reason: str = "") -> bool:
        """Pause/resume/cancel/finish; False when it changed nothing (same state). A finished parent
        refuses everything but a same-state repeat (idempotent cancel)."""
        if parent.state is target:
            return False
        if parent.terminal:
            raise OmsRequestError(E.ALGO_CLOSED, f"algo {parent.parent_id} is {parent.state.value}")
        if target is AlgoState.RUNNING and parent.state is not AlgoState.PAUSED:
            return False
        parent.state = target
        if reason:
            parent.reason = reason
        if parent.terminal:
            self._finish(parent, ts)
        self._touch(parent, ts)
        return True

    def claim(self, parent: ParentRecord, worker: str, lease_ns: int, ts: int) -> None:
        """Grant or renew the lease when it is free, expired, or already the worker's; else leave it."""
        if parent.terminal:
            return
        if parent.owner in ("", worker) or parent.lease_until <= ts:
            parent.owner, parent.lease_until = worker, ts + lease_ns
            self._touch(parent, ts)

    def _finish(self, parent: ParentRecord, ts: int) -> None:
        parent.finished_ts = ts
        parent.owner, parent.lease_until = "", 0
        children = self.child_records(parent)
        filled = sum(r.filled_qty for r in children)
        value = sum(r.fill_value for r in children)
        if parent.algo == "twap" and parent.end_ts > parent.start_ts:
            fills = sorted((t.ts, t.qty) for r in children for t in r.fills)
            parent.tracking_error = tracking_error(parent.qty, parent.start_ts, parent.end_ts, fills)
        if filled and parent.market_volume:
            avg = Fraction(value, filled)
            vwap = Fraction(parent.market_turnover, parent.market_volume)
            sign = 1 if parent.side is Side.BUY else -1
            parent.slippage_bps = float(sign * (avg - vwap) / vwap * 10_000)

    # ---- children ---------------------------------------------------------------------------------

    def check_child(self, req: OrderRequest) -> None:
        """Refuse a child that names no live parent, does not match it, or would over-fill it. A retry of
        a child the OMS already has is left to `OrderManager.submit` (idempotent or duplicate)."""
        parent = self._parents.get(req.parent_id)
        if parent is None:
            raise OmsRequestError(E.UNKNOWN_PARENT, f"no algo parent {req.parent_id!r}")
        if req.client_order_id and self.orders.record((req.account, req.client_order_id)) is not None:
            return
        if (req.account, req.symbol, req.side) != (parent.account, parent.symbol, parent.side):
            raise OmsRequestError(E.PARENT_MISMATCH, f"child must be {parent.account} {parent.side.value} "
                                                     f"{parent.symbol} like its parent {parent.parent_id}")
        if parent.state is not AlgoState.RUNNING:
            raise OmsRequestError(E.PARENT_NOT_RUNNING, f"algo {parent.parent_id} is {parent.state.value}")
        f = self.figures(parent)
        if f.filled_qty + f.open_qty + req.qty > parent.qty:
            raise OmsRequestError(E.PARENT_OVERFILL, f"child qty {req.qty} with filled {f.filled_qty} and open "
                                                     f"{f.open_qty} exceeds parent qty {parent.qty}")

    def add_child(self, record: OrderRecord, ts: int) -> None:
        parent = self._parents.get(record.parent_id)
        if parent is None or record.key in self._child_parent:
            return
        parent.children.append(record.client_order_id)
        self._child_parent[record.key] = parent.parent_id
        self._touch(parent, ts)
        self._maybe_complete(parent, ts)

    def on_events(self, events: Iterable[Event]) -> None:
        """Applied venue events: market volume of live parents, and completion. A trade at or below a
        parent's `market_seq` is in its figures already (a replay after a restart or failover starts
        at the orders' checkpoint, which may be older than the parent's last write)."""
        touched: dict[str, ParentRecord] = {}
        live = [p for p in self._parents.values() if not p.terminal]
        if not live:
            return
        for e in events:
            if not isinstance(e, Trade):
                continue
            for p in live:
                if p.symbol == e.symbol and e.ts >= p.start_ts and e.seq > p.market_seq:
                    p.market_seq = e.seq
                    p.market_volume += e.qty
                    p.market_turnover += e.price * e.qty
                    touched[p.parent_id] = p
            for key in ((e.maker_account, e.maker_client_order_id), (e.taker_account, e.taker_client_order_id)):
                pid = self._child_parent.get(key)
                if pid is not None and not self._parents[pid].terminal:
                    touched[pid] = self._parents[pid]
        for p in touched.values():
            self._touch(p)
            self._maybe_complete(p, max((e.ts for e in events), default=p.updated_ts))

    def _maybe_complete(self, parent: ParentRecord, ts: int) -> None:
        if not parent.terminal and self.figures(parent).filled_qty >= parent.qty:
            parent.state = AlgoState.COMPLETED
            self._finish(parent, ts)
            self._touch(parent, ts)

    def open_children(self, parent: ParentRecord) -> list[OrderRecord]:
        return [r for r in self.child_records(parent) if not r.terminal]

    # ---- persistence ------------------------------------------------------------------------------

    def restore(self, parents: Iterable[ParentRecord]) -> None:
        """Load stored parents; children are re-indexed from the order records (the OMS's truth)."""
        self._parents, self._by_client, self._child_parent = {}, {}, {}
        for p in sorted(parents, key=lambda p: p.n):
            self._parents[p.parent_id] = p
            self._by_client[(p.account, p.client_id)] = p.parent_id
            self._next_n = max(self._next_n, p.n + 1)
        for record in self.orders.records():
            parent = self._parents.get(record.parent_id) if record.parent_id else None
            if parent is None:
                continue
            self._child_parent[record.key] = parent.parent_id
            if record.client_order_id not in parent.children:
                parent.children.append(record.client_order_id)
        self._dirty.clear()

    def _touch(self, parent: ParentRecord, ts: int | None = None) -> None:
        if ts is not None and ts > parent.updated_ts:
            parent.updated_ts = ts
        self._dirty[parent.parent_id] = parent


def tracking_error(qty: int, start: int, end: int, fills: Sequence[tuple[int, int]]) -> float:
    """Mean |cumulative filled - linear schedule| / qty over evenly spaced instants of [start, end]."""
    total = 0.0
    i = cum = 0
    for k in range(1, TRACKING_SAMPLES + 1):
        t = start + (end - start) * k // TRACKING_SAMPLES
        while i < len(fills) and fills[i][0] <= t:
            cum += fills[i][1]
            i += 1
        total += abs(cum - qty * (t - start) / (end - start))
    return total / TRACKING_SAMPLES / qty


# ---- storage ----------------------------------------------------------------------------------------

class ParentStore(Protocol):
    """Upsert changed parents; load them all back."""

    def save(self, parents: Sequence[ParentRecord]) -> None: ...

    def load(self) -> list[ParentRecord]: ...

    def close(self) -> None: ...


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(ParentRecord)


class MemoryParentStore:
    """Encoded copies, so a restart on it sees what SQLite would."""

    def __init__(self) -> None:
        self._rows: dict[str, bytes] = {}

    def save(self, parents: Sequence[ParentRecord]) -> None:
        for p in parents:
            self._rows[p.parent_id] = _encoder.encode(p)

    def load(self) -> list[ParentRecord]:
        return [_decoder.decode(b) for b in self._rows.values()]

    def close(self) -> None:
        pass


class SqliteParentStore:
    """`oms_parents(parent_id, n, state, data)` next to the order tables (same file, own connection)."""

    def __init__(self, path: str | Path) -> None:
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS oms_parents (parent_id TEXT PRIMARY KEY, n INTEGER NOT NULL, "
                         "state TEXT NOT NULL, data BLOB NOT NULL)")

    def save(self, parents: Sequence[ParentRecord]) -> None:
        if not parents:
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany(
                "INSERT INTO oms_parents (parent_id, n, state, data) VALUES (?, ?, ?, ?) ON CONFLICT (parent_id) "
                "DO UPDATE SET state = excluded.state, data = excluded.data",
                [(p.parent_id, p.n, p.state.value, _encoder.encode(p)) for p in parents])
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def load(self) -> list[ParentRecord]:
        return [_decoder.decode(r[0]) for r in self._db.execute("SELECT data FROM oms_parents ORDER BY n")]

    def close(self) -> None:
        self._db.close()
