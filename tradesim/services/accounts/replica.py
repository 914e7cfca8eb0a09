"""A Ledger kept in venue sequence order from bus events: dedup, re-ordering of late trades, marks by seq.

The PositionTracker and the RiskMonitor each hold one. Both only see events (`Trade` on `orders.filled`,
`TradePrint` on `trades.executed`), so this is where "what arrived" becomes "what the venue did":

- A redelivered trade is a no-op (the ledger dedupes `(symbol, trade_id)`).
- A trade that arrives after a later trade of its symbol (lower `seq`) is re-ordered: the ledger is
  rebuilt from a checkpoint plus the trades since it, sorted by seq. The ledger's state depends only on
  the order of trades *within each symbol* (cash moves are exact sums, commutative), so the result is the
  state an in-order delivery would have produced. The checkpoint trails by `window` to `2 * window`
  trades; a trade older than it is applied where it arrives and counted in `late`.
- Marks follow the highest seq seen per symbol, so they too are independent of arrival order.

Symbol sharding: each venue shard numbers its events from 1. Everything here is ordered per symbol (a
symbol lives on one shard) and deduped by `(symbol, trade_id)` (trade ids are unique over shards), so
it holds over any number of shards; `last_seq` is the highest seq of any shard, while `symbol_seq` and
`shard_seqs` tell how far each symbol or shard got.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from enum import StrEnum

import msgspec

from tradesim.domain import Instrument, Trade
from tradesim.services.accounts.ledger import Ledger
from tradesim.services.accounts.views import AccountKind, LedgerSnapshot

AccountSpec = tuple[Decimal | int | str, AccountKind | str, str]
"""(opening cash, kind "cash"|"margin", currency) of one account."""

DEFAULT_WINDOW = 1024


class Applied(StrEnum):
    """What `apply_trade` did with a trade."""

    APPLIED = "applied"  # in order, booked
    REORDERED = "reordered"  # late within the window: the ledger was rebuilt in seq order
    LATE = "late"  # older than the checkpoint: booked where it arrived
    DUPLICATE = "duplicate"  # already booked: nothing changed


class ReplicaSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """The ledger plus the sequence positions that decide how the next events are ordered."""

    ledger: LedgerSnapshot
    last_seq: int
    last_ts: int
    symbol_seqs: dict[str, int]  # highest trade seq booked per symbol
    mark_seqs: dict[str, int]  # seq of the current mark per symbol


def _order_key(trade: Trade) -> tuple[int, str, int]:
    return (trade.seq, trade.symbol, trade.trade_id)


class LedgerReplica:
    """A `Ledger` fed by venue events that may arrive twice or out of order. See the module docstring."""

    def __init__(
        self,
        instruments: Iterable[Instrument],
        accounts: Mapping[str, AccountSpec],
        *,
        window: int = DEFAULT_WINDOW,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        ledger = Ledger(instruments)
        for name, (cash, kind, currency) in sorted(accounts.items()):
            ledger.open_account(name, cash, kind, currency)
        self.window = window
        self._ledger = ledger
        self._base = ledger.snapshot()
        self._base_seqs: dict[str, int] = {}  # per symbol: trades up to this seq are inside the checkpoint
        self._log: list[Trade] = []  # trades since the checkpoint, sorted by _order_key
        self._symbol_seqs: dict[str, int] = {}
        self._marks: dict[str, tuple[int, int]] = {}  # symbol -> (seq, price ticks)
        self.last_seq = 0
        self.last_ts = 0
        self.applied = 0
        self.duplicates = 0
        self.reordered = 0
        self.late = 0

    @property
    def ledger(self) -> Ledger:
        """The live ledger (read it; feed it only through this replica)."""
        return self._ledger

    def apply_trade(self, trade: Trade) -> Applied:
        """Books `trade` in seq order; raises a `LedgerError` (nothing changed) if the ledger refuses it."""
        if self._ledger.has_applied(trade.symbol, trade.trade_id):
            self.duplicates += 1
            return Applied.DUPLICATE
        symbol_seq = self._symbol_seqs.get(trade.symbol, -1)
        if trade.seq >= symbol_seq:
            self._ledger.apply_trade(trade)
            outcome = Applied.APPLIED
            bisect.insort(self._log, trade, key=_order_key)
        elif trade.seq <= self._base_seqs.get(trade.symbol, -1):
            # Older than the checkpoint: booked after the checkpoint's trades, before the log's.
            base = Ledger.restore(self._base)
            base.apply_trade(trade)  # raises before anything is replaced
            previous, self._base = self._base, base.snapshot()
            try:
                self._ledger = self._replay(self._log)
            except Exception:
                self._base = previous
                raise
            outcome = Applied.LATE
            self.late += 1
        else:
            log = list(self._log)
            bisect.insort(log, trade, key=_order_key)
            self._ledger = self._replay(log)  # raises before anything is replaced
            self._log = log
            outcome = Applied.REORDERED
            self.reordered += 1
        self.applied += 1
        self._symbol_seqs[trade.symbol] = max(symbol_seq, trade.seq)
        self._seen(trade.seq, trade.ts)
        if len(self._log) > 2 * self.window:
            self._compact()
        return outcome

    def mark(self, symbol: str, seq: int, price: int, ts: int = 0) -> bool:
        """Marks `symbol` at `price` ticks unless a mark of a later seq is already in; True if it moved."""
        current = self._marks.get(symbol)
        if current is not None and current[0] >= seq:
            return False
        self._ledger.mark(symbol, price)
        self._marks[symbol] = (seq, price)
        self._seen(seq, ts)
        return True

    def symbol_seq(self, symbol: str) -> int:
        """The venue seq of the newest event of `symbol` seen (trade or print; 0: none): the position in
        its shard's sequence, which is what a wait for one of its events must compare with."""
        mark = self._marks.get(symbol)
        return max(self._symbol_seqs.get(symbol, 0), mark[0] if mark is not None else 0)

    def shard_seqs(self, shard_of: Callable[[str], str]) -> dict[str, int]:
        """The newest venue seq seen per shard (`shard_of(symbol)` names a symbol's shard)."""
        out: dict[str, int] = {}
        for symbol in {*self._symbol_seqs, *self._marks}:
            shard = shard_of(symbol)
            out[shard] = max(out.get(shard, 0), self.symbol_seq(symbol))
        return dict(sorted(out.items()))

    def mark_price(self, symbol: str) -> int | None:
        current = self._marks.get(symbol)
        return None if current is None else current[1]

    def snapshot(self) -> ReplicaSnapshot:
        return ReplicaSnapshot(
            ledger=self._ledger.snapshot(),
            last_seq=self.last_seq,
            last_ts=self.last_ts,
            symbol_seqs=dict(sorted(self._symbol_seqs.items())),
            mark_seqs={s: seq for s, (seq, _) in sorted(self._marks.items())},
        )

    def restore(self, snapshot: ReplicaSnapshot) -> None:
        """Replaces the whole state with `snapshot` (the snapshot becomes the re-ordering checkpoint)."""
        ledger = Ledger.restore(snapshot.ledger)
        prices = {m.symbol: m.price for m in snapshot.ledger.marks}
        self._ledger = ledger
        self._base = snapshot.ledger
        self._base_seqs = dict(snapshot.symbol_seqs)
        self._symbol_seqs = dict(snapshot.symbol_seqs)
        self._log = []
        self._marks = {s: (seq, prices[s]) for s, seq in snapshot.mark_seqs.items() if s in prices}
        self.last_seq = snapshot.last_seq
        self.last_ts = snapshot.last_ts

    def state_hash(self) -> str:
        """The ledger's state hash: equal on two replicas fed the same events."""
        return self._ledger.state_hash()

    # --- internals -----------------------------------------------------------------------------

    def _seen(self, seq: int, ts: int) -> None:
        if seq > self.last_seq:
            self.last_seq = seq
            self.last_ts = ts

    def _replay(self, log: list[Trade]) -> Ledger:
        ledger = Ledger.restore(self._base)
        for trade in log:
            ledger.apply_trade(trade)
        for symbol, (_, price) in self._marks.items():
            ledger.mark(symbol, price)
        return ledger

    def _compact(self) -> None:
        """Moves the oldest `window` trades of the log into the checkpoint."""
        older, self._log = self._log[: self.window], self._log[self.window :]
        base = Ledger.restore(self._base)
        for trade in older:
            base.apply_trade(trade)
            self._base_seqs[trade.symbol] = max(self._base_seqs.get(trade.symbol, -1), trade.seq)
        self._base = base.snapshot()
