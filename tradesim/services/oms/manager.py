"""The pure core of the OMS: order records, compliance → risk → route decisions, holds, and the
application of venue events (exactly once, in venue seq order) to the orders and the Ledger replica.

No bus, no clock, no I/O: every entry point takes `ts` (ns) and returns what the shell must do (the
command to route, if any). The shell persists `take_dirty()` records before it routes anything, so the
venue never holds an order the OMS could forget.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

import msgspec

from tradesim.domain import (
    TERMINAL,
    CancelOrder,
    Event,
    Instrument,
    InvalidTransitionError,
    ModifyOrder,
    NewOrder,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderModified,
    OrderRejected,
    OrderStatus,
    OrderTriggered,
    OrderType,
    RejectReason,
    Side,
    TimeInForce,
    Trade,
    transition,
)
from tradesim.services.accounts import AccountFigures, AccountKind, Ledger, LedgerSnapshot
from tradesim.services.compliance import ComplianceConfig, ComplianceEngine
from tradesim.services.oms import errors as E
from tradesim.services.oms.errors import OmsRequestError
from tradesim.services.oms.exposure import AccountExposure, Reserved, Share, exposure_of, share
from tradesim.services.oms.market import MarketView, SymbolMarket
from tradesim.services.oms.messages import (
    CancelRequest,
    GetOrderRequest,
    HoldDecision,
    ListOrdersRequest,
    ModifyRequest,
    OrderRequest,
    QuickOrder,
)
from tradesim.services.oms.records import (
    PENDING_CANCEL_OP,
    PENDING_MODIFY_OP,
    PENDING_NEW_OP,
    Key,
    OrderRecord,
)
from tradesim.services.oms.sequencer import ShardSequencer
from tradesim.services.risk import (
    DayCounts,
    Decision,
    HeldOrders,
    HoldError,
    PreTradeRisk,
    RiskConfig,
    Verdict,
)
from tradesim.services.risk.pricing import check_price

log = logging.getLogger("tradesim.oms")

S = OrderStatus
AccountConfig = tuple[Decimal | int | str, str, str]
"""(opening cash, kind "cash" | "margin", currency)."""

VENUE_UNAVAILABLE_REASON = "venue_unavailable"
HOLD_REJECTED_REASON = "hold_rejected"
MAX_LIST = 1000
_VENUE_LIVE = (S.ACCEPTED, S.TRIGGERED, S.PARTIALLY_FILLED)


class DayPnl(msgspec.Struct, kw_only=True):
    """Total P&L of an account at the start of `day`: pnl_today = total now - base."""

    account: str
    day: int
    base: Decimal


class CounterState(msgspec.Struct, kw_only=True):
    account: str
    counts: DayCounts


class AccountCounts(msgspec.Struct, kw_only=True):
    """What requests (not venue events) change per account: risk's daily order and cancel counts and the
    day-start P&L. Saved with every batch that changed it; trades are counted from the events."""

    account: str
    day: int = 0
    orders: int = 0
    cancels: int = 0
    pnl: DayPnl | None = None


class OmsState(msgspec.Struct, kw_only=True, tag="oms.state", tag_field="kind"):
    """The checkpoint: everything derived from venue events up to `seq` (written now and then, not per
    change; a restart rebuilds the rest from the events after `seq`).

    With several venue shards each numbers its events from 1: `seqs` holds the applied seq of every
    shard by name, and `seq` stays the first shard's (a checkpoint written before sharding has only
    `seq`, which is then the first shard's)."""

    seq: int = 0
    next_n: int = 1
    # distributed mode: a position in the venue's event stream that holds no event after `seq` (a new leader
    # follows the stream from the next one); 0 = from the beginning
    stream_seq: int = 0
    ledger: LedgerSnapshot | None = None
    market: list[SymbolMarket] = []
    counters: list[CounterState] = []
    day_pnl: list[DayPnl] = []
    seqs: dict[str, int] = {}


class OmsSnapshot(msgspec.Struct, kw_only=True, tag="oms.snapshot", tag_field="kind"):
    state: OmsState
    orders: list[OrderRecord]
    accounts: list[AccountCounts] = []


@dataclass(slots=True)
class Dirty:
    """What changed since the last `take_dirty()`: records, account counts, and a checkpoint when due."""

    records: list[OrderRecord]
    accounts: list[AccountCounts]
    checkpoint: OmsState | None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a request did: the record after it, the command to send to the venue (None: nothing to send),
    and whether the request named an order that already existed (an idempotent retry)."""

    record: OrderRecord
    route: NewOrder | CancelOrder | ModifyOrder | None = None
    existing: bool = False


def as_order_request(req: QuickOrder, side: Side) -> OrderRequest:
    """Seed 01's buy/sell: a limit order with a price, a market order without."""
    return OrderRequest(
        account=req.account, symbol=req.symbol, side=side, qty=req.qty,
        type=OrderType.LIMIT if req.price is not None else OrderType.MARKET, tif=req.tif, price=req.price,
        client_order_id=req.client_order_id, correlation_id=req.correlation_id,
    )


class OrderManager:
    """All orders of the accounts this OMS serves, and the state the pre-trade checks read."""

    def __init__(
        self,
        instruments: Iterable[Instrument],
        accounts: Mapping[str, AccountConfig],
        risk: RiskConfig,
        compliance: ComplianceConfig,
        *,
        reference_prices: Mapping[str, int] | None = None,
        day_offset_ns: int = 0,
        checkpoint_every: int = 20_000,
        shards: tuple[list[str], Callable[[str], str]] | None = None,
    ) -> None:
        """`shards`: the venue shards' names and the shard of a symbol (`ShardMap.names`,
        `ShardMap.shard_of`); None: one venue."""
        self.instruments: dict[str, Instrument] = {i.symbol: i for i in instruments}
        self.shard_names, self.shard_of = shards if shards is not None else (["main"], _one_shard)
        self.accounts = dict(accounts)
        self.risk = PreTradeRisk(risk)
        self.compliance = ComplianceEngine(compliance)
        self.held = HeldOrders()
        self.market = MarketView(reference_prices, day_offset_ns)
        self.sequencer = ShardSequencer(self.shard_names, self.shard_of)
        self.ledger = self._fresh_ledger()
        self._day_offset = day_offset_ns
        self._orders: dict[Key, OrderRecord] = {}
        self._by_id: dict[int, Key] = {}
        self._by_hold: dict[str, Key] = {}
        self._working: dict[str, dict[Key, OrderRecord]] = {a: {} for a in self.accounts}
        self._reserved: dict[str, Reserved] = {a: Reserved() for a in self.accounts}
        self._shares: dict[Key, Share] = {}
        self._views: dict[str, AccountFigures] = {}  # ledger figures, dropped when a trade may change them
        self._holders: dict[str, set[str]] = {}  # symbol -> accounts whose cached view holds it
        self._day_pnl: dict[str, DayPnl] = {}
        self._next_n = 1
        self._dirty: dict[Key, OrderRecord] = {}
        self._dirty_accounts: set[str] = set()
        self.checkpoint_every = checkpoint_every
        self._checkpoint_seq = 0
        self._checkpoint_due = False
        self.stream_seq = 0  # set by the shell as it follows the venue's stream (see OmsState.stream_seq)

    def _fresh_ledger(self) -> Ledger:
        ledger = Ledger(self.instruments.values())
        for account, (cash, kind, currency) in self.accounts.items():
            ledger.open_account(account, Decimal(cash), kind=AccountKind(kind), currency=currency)
        return ledger

    # ---- queries ----------------------------------------------------------------------------------

    @property
    def applied_seq(self) -> int:
        """Events applied over all venue shards (with one venue: its seq)."""
        return self.sequencer.total

    def applied(self, shard: str) -> int:
        """The applied seq of one venue shard."""
        return self.sequencer.applied(shard)

    def record(self, key: Key) -> OrderRecord | None:
        return self._orders.get(key)

    def records(self) -> list[OrderRecord]:
        return sorted(self._orders.values(), key=lambda r: r.n)

    def get(self, req: GetOrderRequest) -> OrderRecord:
        return self._find(req.account, req.order_id, req.client_order_id)

    def list_orders(self, req: ListOrdersRequest) -> tuple[list[OrderRecord], int]:
        """Matching records newest first, paged, and the number that matched."""
        if req.limit <= 0 or req.limit > MAX_LIST or req.offset < 0:
            raise OmsRequestError(E.BAD_REQUEST, f"limit must be in 1..{MAX_LIST} and offset >= 0")
        if req.account is not None and req.account not in self.accounts:
            raise OmsRequestError(E.UNKNOWN_ACCOUNT, f"unknown account {req.account!r}")
        found = [
            r for r in self._orders.values()
            if (req.account is None or r.account == req.account)
            and (req.status is None or r.status is req.status)
            and (req.symbol is None or r.symbol == req.symbol)
            and (not req.open_only or not r.terminal)
        ]
        found.sort(key=lambda r: r.n, reverse=True)
        return found[req.offset:req.offset + req.limit], len(found)

    def account_state(self, account: str, ts: int) -> AccountExposure:
        """The risk's AccountState for `account` at `ts` (ledger net of working orders' reservations).

        O(1) per check: the ledger view is cached until a trade may change it, and the reservations are
        running totals (`Reserved`) kept by `_touch`."""
        view = self._view(account)
        return exposure_of(view, self._reserved[account], self._pnl_today(account, ts, view))

    def _view(self, account: str) -> AccountFigures:
        view = self._views.get(account)
        if view is None:
            view = self._views[account] = self.ledger.figures(account)
            for symbol in view.positions:
                self._holders.setdefault(symbol, set()).add(account)
        return view

    def _pnl_today(self, account: str, ts: int, view: AccountFigures) -> Decimal:
        total = view.equity - view.net_deposits
        day = (ts + self._day_offset) // 86_400_000_000_000
        base = self._day_pnl.get(account)
        if base is None or day > base.day:
            base = DayPnl(account=account, day=day, base=total)
            self._day_pnl[account] = base
            self._dirty_accounts.add(account)
        return total - base.base

    @property
    def dirty(self) -> bool:
        """Anything for the store (changed records or counts, or a checkpoint that is due)."""
        return bool(self._dirty or self._dirty_accounts or self._checkpoint_due
                    or self.sequencer.total - self._checkpoint_seq >= self.checkpoint_every)

    def take_dirty(self, checkpoint: bool = False) -> Dirty:
        """Records and account counts changed since the last call, and the checkpoint when it is due
        (every `checkpoint_every` applied events) or asked for."""
        records = list(self._dirty.values())
        self._dirty.clear()
        accounts = [self._account_counts(a) for a in sorted(self._dirty_accounts)]
        self._dirty_accounts.clear()
        state = None
        if checkpoint or self._checkpoint_due or self.sequencer.total - self._checkpoint_seq >= self.checkpoint_every:
            state = self.state()
            self._checkpoint_seq, self._checkpoint_due = self.sequencer.total, False
        return Dirty(records, accounts, state)

    def _account_counts(self, account: str) -> AccountCounts:
        counts = self.risk.counters.get(account, 0)
        pnl = self._day_pnl.get(account)
        return AccountCounts(account=account, day=counts.day, orders=counts.orders, cancels=counts.cancels,
                             pnl=msgspec.structs.replace(pnl) if pnl is not None else None)

    # ---- new orders -------------------------------------------------------------------------------

    def submit(self, req: OrderRequest, ts: int) -> Outcome:
        """Validate, then (for a new client_order_id) compliance → risk → route, reject or hold.

        Raises OmsRequestError before anything exists; a known (account, client_order_id) with the
        same fields is a retry and returns the existing order (nothing is routed twice).
        """
        instrument = self._validate_new(req)
        cid = req.client_order_id or self._generated_cid(req.account)
        existing = self._orders.get((req.account, cid))
        if existing is not None:
            if not _same_order(existing, req):
                raise OmsRequestError(
                    E.DUPLICATE_CLIENT_ORDER_ID,
                    f"client_order_id {cid!r} of account {req.account} names a different order",
                )
            return Outcome(existing, existing=True)
        record = OrderRecord(
            n=self._take_n(), account=req.account, client_order_id=cid, symbol=req.symbol, side=req.side,
            type=req.type, tif=req.tif, price=req.price, stop_price=req.stop_price, qty=req.qty,
            leaves_qty=req.qty, orig_price=req.price, orig_qty=req.qty,
            display_qty=req.display_qty, post_only=req.post_only, stp=req.stp,
            expire_ts=req.expire_ts, correlation_id=req.correlation_id, parent_id=req.parent_id,
            created_ts=ts, updated_ts=ts,
        )
        self._orders[record.key] = record
        order = self._command(record, ts)
        limits = self.risk.config.limits_for(req.account, instrument)
        record.reserve_price = check_price(order, self.market, limits.price_band)
        account = self.account_state(req.account, ts)
        activity = self.risk.counters.get(req.account, ts)
        self._dirty_accounts.add(req.account)  # risk counts the order (accepted or held)
        decision = self.compliance.check(order, instrument, account, self.market, activity, ts)
        if decision.accepted:
            decision = self.risk.check(order, instrument, account, self.market, ts)
        if not decision.rejected:  # working from now on: later checks see its reservation
            self._working[record.account][record.key] = record
        if decision.rejected:
            self._set_status(record, S.REJECTED, ts)
            record.reason, record.message = decision.code, decision.message
            return Outcome(record)
        if decision.held:
            self._hold(record, order, decision, ts)
            return Outcome(record)
        self._begin(record, PENDING_NEW_OP, ts)
        return Outcome(record, route=order)

    def quick(self, req: QuickOrder, side: Side, ts: int) -> Outcome:
        return self.submit(as_order_request(req, side), ts)

    def _validate_new(self, req: OrderRequest) -> Instrument:
        if req.account not in self.accounts:
            raise OmsRequestError(E.UNKNOWN_ACCOUNT, f"unknown account {req.account!r}")
        instrument = self.instruments.get(req.symbol)
        if instrument is None:
            raise OmsRequestError(E.UNKNOWN_SYMBOL, f"unknown symbol {req.symbol!r}")
        if isinstance(req.qty, bool) or req.qty <= 0 or req.qty % instrument.lot_size:
            raise OmsRequestError(E.BAD_QTY, f"qty {req.qty} must be a positive multiple of lot size "
                                             f"{instrument.lot_size}")
        has_limit = req.type in (OrderType.LIMIT, OrderType.STOP_LIMIT)
        if has_limit and (req.price is None or req.price <= 0):
            raise OmsRequestError(E.BAD_PRICE, f"{req.type.value} order needs a positive price, got {req.price}")
        if not has_limit and req.price is not None:
            raise OmsRequestError(E.BAD_PRICE, f"{req.type.value} order takes no price, got {req.price}")
        if req.type in (OrderType.STOP, OrderType.STOP_LIMIT) and (req.stop_price is None or req.stop_price <= 0):
            raise OmsRequestError(E.MISSING_STOP_PRICE, f"{req.type.value} order needs a positive stop_price")
        if req.tif is TimeInForce.GTD and req.expire_ts is None:
            raise OmsRequestError(E.BAD_REQUEST, "GTD order needs expire_ts")
        if req.display_qty is not None and (req.display_qty <= 0 or req.display_qty > req.qty):
            raise OmsRequestError(E.BAD_QTY, f"display_qty {req.display_qty} must be in (0, qty]")
        if len(req.client_order_id) > 64:
            raise OmsRequestError(E.BAD_REQUEST, "client_order_id is longer than 64 characters")
        return instrument

    def _generated_cid(self, account: str) -> str:
        return f"oms-{self._next_n}"

    def _take_n(self) -> int:
        n = self._next_n
        self._next_n += 1
        return n

    def _command(self, record: OrderRecord, ts: int) -> NewOrder:
        return NewOrder(
            account=record.account, client_order_id=record.client_order_id, symbol=record.symbol,
            side=record.side, type=record.type, tif=record.tif, price=record.price, qty=record.qty, ts=ts,
            stop_price=record.stop_price, display_qty=record.display_qty, post_only=record.post_only,
            stp=record.stp, expire_ts=record.expire_ts,
        )

    # ---- holds ------------------------------------------------------------------------------------

    def _hold(self, record: OrderRecord, order: NewOrder, decision: Decision, ts: int) -> None:
        hold_id = self.held.hold(order, decision, ts)
        record.hold_id, record.hold_code, record.hold_message = hold_id, decision.code, decision.message
        record.hold_state = "pending"
        record.reason, record.message = decision.code, decision.message
        self._by_hold[hold_id] = record.key
        self._set_status(record, S.HELD, ts)

    def approve(self, req: HoldDecision, ts: int) -> Outcome:
        """Route a held order as it is (no second check: it would only be held again)."""
        record = self._held_record(req.hold_id)
        try:
            self.held.approve(req.hold_id, req.user, ts=ts)
        except HoldError as exc:
            raise OmsRequestError(exc.code, str(exc)) from None
        record.hold_state, record.decided_by = "approved", req.user
        record.reason = record.message = ""
        self._set_status(record, S.PENDING_NEW, ts)
        self._begin(record, PENDING_NEW_OP, ts)
        return Outcome(record, route=self._command(record, ts))

    def reject_held(self, req: HoldDecision, ts: int) -> Outcome:
        record = self._held_record(req.hold_id)
        try:
            self.held.reject(req.hold_id, req.user, req.reason, ts=ts)
        except HoldError as exc:
            raise OmsRequestError(exc.code, str(exc)) from None
        record.hold_state, record.decided_by = "rejected", req.user
        record.reason = HOLD_REJECTED_REASON
        record.message = f"held order rejected by {req.user}" + (f": {req.reason}" if req.reason else "")
        self._set_status(record, S.REJECTED, ts)
        return Outcome(record)

    def _held_record(self, hold_id: str) -> OrderRecord:
        key = self._by_hold.get(hold_id)
        if key is None:
            raise OmsRequestError(E.UNKNOWN_HOLD, f"unknown hold id {hold_id!r}")
        return self._orders[key]

    # ---- cancel / modify --------------------------------------------------------------------------

    def cancel(self, req: CancelRequest, ts: int) -> Outcome:
        """Route a cancel; a held order is canceled here, a finished one is returned as it is."""
        record = self._find(req.account, req.order_id, req.client_order_id)
        if record.terminal or record.status is S.PENDING_CANCEL:
            return Outcome(record, existing=True)
        if record.status is S.HELD:
            self.held.reject(record.hold_id, req.account, "canceled by the owner", ts=ts)
            record.hold_state, record.decided_by = "rejected", req.account
            record.reason, record.message = "user", "canceled while held"
            self._set_status(record, S.CANCELED, ts)
            return Outcome(record)
        if record.pending:
            raise OmsRequestError(E.ORDER_PENDING, f"order {record.client_order_id} is {record.status.value}: "
                                                   "wait for the venue's answer")
        self._dirty_accounts.add(record.account)  # risk counts the cancel
        decision = self.risk.check_cancel(record.account, ts)
        if decision.rejected:
            raise OmsRequestError(decision.code, decision.message)
        self._set_status(record, S.PENDING_CANCEL, ts)
        self._begin(record, PENDING_CANCEL_OP, ts)
        return Outcome(record, route=CancelOrder(account=record.account, client_order_id=record.client_order_id,
                                                 symbol=record.symbol, ts=ts))

    def modify(self, req: ModifyRequest, ts: int) -> Outcome:
        """Route a cancel/replace (`qty` is the new total quantity)."""
        record = self._find(req.account, req.order_id, req.client_order_id)
        if req.price is None and req.qty is None:
            raise OmsRequestError(E.BAD_REQUEST, "modify changes neither price nor qty")
        instrument = self.instruments[record.symbol]
        if req.qty is not None and (req.qty <= record.filled_qty or req.qty % instrument.lot_size):
            raise OmsRequestError(E.BAD_QTY, f"qty {req.qty} must be a multiple of lot size {instrument.lot_size} "
                                             f"above the filled qty {record.filled_qty}")
        if req.price is not None and req.price <= 0:
            raise OmsRequestError(E.BAD_PRICE, f"price {req.price} must be positive")
        if req.price is not None and record.type in (OrderType.MARKET, OrderType.STOP):
            raise OmsRequestError(E.BAD_PRICE, f"a {record.type.value} order has no price to modify")
        if record.terminal:
            raise OmsRequestError(E.ORDER_CLOSED, f"order {record.client_order_id} is {record.status.value}")
        if record.status is S.PENDING_MODIFY and (req.price, req.qty) == (record.pending_price, record.pending_qty):
            return Outcome(record, existing=True)  # a retry of the modify at the venue: answered as that one
        if record.pending or record.status is S.HELD:
            raise OmsRequestError(E.ORDER_PENDING, f"order {record.client_order_id} is {record.status.value}")
        self._set_status(record, S.PENDING_MODIFY, ts)
        self._begin(record, PENDING_MODIFY_OP, ts)
        record.pending_price, record.pending_qty = req.price, req.qty
        return Outcome(record, route=self._modify_command(record, ts))

    def _modify_command(self, record: OrderRecord, ts: int) -> ModifyOrder:
        return ModifyOrder(account=record.account, client_order_id=record.client_order_id, symbol=record.symbol,
                           price=record.pending_price, qty=record.pending_qty, ts=ts)

    def _find(self, account: str | None, order_id: int | None, cid: str) -> OrderRecord:
        if account is not None and account not in self.accounts:
            raise OmsRequestError(E.UNKNOWN_ACCOUNT, f"unknown account {account!r}")
        record: OrderRecord | None = None
        if order_id is not None:
            key = self._by_id.get(order_id)
            record = self._orders[key] if key is not None else None
        elif cid:
            if account is not None:
                record = self._orders.get((account, cid))
            else:
                record = next((r for r in self._orders.values() if r.client_order_id == cid), None)
        else:
            raise OmsRequestError(E.BAD_REQUEST, "name the order by order_id or client_order_id")
        if record is None or (account is not None and record.account != account):
            raise OmsRequestError(E.UNKNOWN_ORDER, f"no order {order_id if order_id is not None else cid!r}"
                                                   + (f" for account {account}" if account else ""))
        return record

    # ---- the venue's side -------------------------------------------------------------------------

    def pending_command(self, key: Key, ts: int) -> NewOrder | CancelOrder | ModifyOrder | None:
        """The command of the record's unanswered request, to send again (the cid makes it safe)."""
        record = self._orders.get(key)
        if record is None or not record.pending:
            return None
        if record.pending == PENDING_NEW_OP:
            return self._command(record, record.created_ts if record.created_ts else ts)
        if record.pending == PENDING_CANCEL_OP:
            return CancelOrder(account=record.account, client_order_id=record.client_order_id,
                               symbol=record.symbol, ts=ts)
        return self._modify_command(record, ts)

    def not_delivered(self, key: Key, ts: int) -> OrderRecord | None:
        """The venue provably never got the record's pending request: a new order ends REJECTED
        venue_unavailable, a cancel or modify is dropped (the order is as the venue last said)."""
        record = self._orders.get(key)
        if record is None or not record.pending:
            return record
        if record.pending == PENDING_NEW_OP:
            record.reason, record.message = VENUE_UNAVAILABLE_REASON, "the venue could not be reached"
            self._set_status(record, S.REJECTED, ts)
        else:
            self._revert(record, ts)
            record.reason, record.message = VENUE_UNAVAILABLE_REASON, "the venue could not be reached"
        return record

    def stuck(self, now: int, after_ns: int) -> list[OrderRecord]:
        """Records pending longer than `after_ns` and not yet reported; they are marked stuck."""
        found = []
        for records in self._working.values():
            for record in records.values():
                if record.pending and not record.stuck and now - record.pending_since >= after_ns:
                    record.stuck = True
                    self._touch(record)
                    found.append(record)
        return found

    def pending_records(self) -> list[OrderRecord]:
        return [r for rs in self._working.values() for r in rs.values() if r.pending]

    def recovered(self, key: Key) -> bool:
        """True (and the stuck mark cleared) once the record's pending request is answered."""
        record = self._orders.get(key)
        if record is None or record.pending:
            return False
        if record.stuck:
            record.stuck = False
            self._touch(record)
        return True

    def on_events(self, events: Iterable[Event]) -> list[Event]:
        """Offer venue events (duplicates and any order welcome); applies and returns the ones now due."""
        due = self.sequencer.offer(events)
        for event in due:
            self._apply(event)
        return due

    def on_stream_event(self, event: Event, stream_seq: int) -> list[Event]:
        """`on_events` for one event read from the venue's stream at `stream_seq`; moves `stream_seq` (the
        checkpoint's resume position) as far as every event read up to it is applied."""
        due = self.on_events_at(event, stream_seq)
        self.stream_seq = max(self.stream_seq, self.sequencer.stream_safe(stream_seq))
        return due

    def on_events_at(self, event: Event, stream_seq: int) -> list[Event]:
        due = self.sequencer.offer_at(event, stream_seq)
        for e in due:
            self._apply(e)
        return due

    def skip_to(self, seq: int, shard: str | None = None) -> list[Event]:
        """A fresh OMS joining a running venue: events of `shard` (default: the first) up to `seq` are
        history it will not see."""
        due = self.sequencer.skip_to(shard if shard is not None else self.shard_names[0], seq)
        for event in due:
            self._apply(event)
        self._checkpoint_due = True  # the skipped history is in no checkpoint yet
        return due

    def _apply(self, event: Event) -> None:
        try:
            if isinstance(event, Trade):
                self._on_trade(event)
            elif isinstance(event, OrderAccepted):
                self._on_accepted(event)
            elif isinstance(event, OrderRejected):
                self._on_rejected(event)
            elif isinstance(event, OrderCanceled):
                self._on_done(event, S.CANCELED, event.reason.value)
            elif isinstance(event, OrderExpired):
                self._on_done(event, S.EXPIRED, "expired")
            elif isinstance(event, OrderModified):
                self._on_modified(event)
            elif isinstance(event, OrderTriggered):
                self._on_triggered(event)
        except InvalidTransitionError as exc:
            # The venue's word is final; an event our lifecycle cannot place is reported, never guessed at.
            log.error("venue event seq %d does not fit the order's lifecycle: %s", event.seq, exc)

    def _ours(self, account: str, cid: str, order_id: int | None, seq: int) -> OrderRecord | None:
        """Our record the event is about, unless it already reflects the event (a replay after a restart
        skips what the stored record has; the ledger and market still take every event)."""
        record = self._orders.get((account, cid))
        if record is None or (order_id is not None and record.order_id not in (None, order_id)) or seq <= record.seq:
            return None
        record.seq = seq
        return record

    def _on_accepted(self, e: OrderAccepted) -> None:
        record = self._ours(e.account, e.client_order_id, e.order_id, e.seq)
        if record is None:
            return
        record.order_id = e.order_id
        self._by_id[e.order_id] = record.key
        record.venue_status = S.ACCEPTED
        if record.status is S.PENDING_NEW:
            record.pending = ""
            self._set_status(record, S.ACCEPTED, e.ts)
        else:
            self._touch(record, e.ts)

    def _on_rejected(self, e: OrderRejected) -> None:
        record = self._ours(e.account, e.client_order_id, e.order_id, e.seq)
        if record is None or e.reason is RejectReason.DUPLICATE_CLIENT_ORDER_ID:
            return  # a resend of an order the venue already has: the original's events tell its story
        if record.pending == PENDING_NEW_OP:
            record.reason, record.message = e.reason.value, e.message
            self._set_status(record, S.REJECTED, e.ts)
        elif record.pending in (PENDING_CANCEL_OP, PENDING_MODIFY_OP):
            self._revert(record, e.ts)
            record.reason, record.message = e.reason.value, e.message

    def _revert(self, record: OrderRecord, ts: int) -> None:
        """A cancel or modify that did not happen: back to what the venue last said."""
        record.pending = ""
        record.pending_price = record.pending_qty = None
        self._set_status(record, record.venue_status or S.ACCEPTED, ts)

    def _on_trade(self, t: Trade) -> None:
        self.ledger.apply_trade(t)
        self.ledger.mark(t.symbol, t.price)
        views = self._views
        views.pop(t.maker_account, None)
        views.pop(t.taker_account, None)
        for holder in self._holders.pop(t.symbol, ()):  # the new mark moves their equity
            views.pop(holder, None)
        self.market.on_trade(t)
        for account in {t.maker_account, t.taker_account}:
            self.risk.on_trade(account, t.ts)
        sides = ((t.maker_account, t.maker_client_order_id, t.maker_order_id, t.maker_cum_qty, t.maker_leaves_qty),
                 (t.taker_account, t.taker_client_order_id, t.taker_order_id, t.taker_cum_qty, t.taker_leaves_qty))
        for account, cid, order_id, cum, leaves in sides:
            record = self._ours(account, cid, order_id, t.seq)
            if record is None:
                continue
            if record.order_id is None:
                record.order_id = order_id
                self._by_id[order_id] = record.key
            record.filled_qty, record.leaves_qty = cum, leaves
            record.fill_value += t.price * t.qty
            record.fills.append(t)
            record.venue_status = S.FILLED if leaves == 0 else S.PARTIALLY_FILLED
            if leaves == 0:
                record.pending = ""
                self._set_status(record, S.FILLED, t.ts)
            elif record.status in (S.PENDING_CANCEL, S.PENDING_MODIFY):
                self._touch(record, t.ts)  # still waiting for the cancel/modify answer
            else:
                if record.pending == PENDING_NEW_OP:
                    record.pending = ""
                self._set_status(record, S.PARTIALLY_FILLED, t.ts)

    def _on_done(self, e: OrderCanceled | OrderExpired, status: S, reason: str) -> None:
        record = self._ours(e.account, e.client_order_id, e.order_id, e.seq)
        if record is None:
            return
        record.pending = ""
        record.leaves_qty = 0
        record.reason = reason
        record.message = "" if status is S.CANCELED and reason == "user" else record.message
        self._set_status(record, status, e.ts)

    def _on_modified(self, e: OrderModified) -> None:
        record = self._ours(e.account, e.client_order_id, e.order_id, e.seq)
        if record is None:
            return
        record.price, record.qty, record.leaves_qty = e.price, e.qty, e.leaves_qty
        if record.reserve_price is not None and e.price is not None:
            record.reserve_price = e.price
        if record.venue_status is not S.TRIGGERED:
            record.venue_status = S.PARTIALLY_FILLED if record.filled_qty else S.ACCEPTED
        if record.pending == PENDING_MODIFY_OP:
            record.pending = ""
            record.pending_price = record.pending_qty = None
            record.reason = record.message = ""
        self._set_status(record, record.venue_status or S.ACCEPTED, e.ts)

    def _on_triggered(self, e: OrderTriggered) -> None:
        record = self._ours(e.account, e.client_order_id, e.order_id, e.seq)
        if record is None:
            return
        record.venue_status = S.TRIGGERED
        if record.status is S.ACCEPTED:
            self._set_status(record, S.TRIGGERED, e.ts)
        else:
            self._touch(record, e.ts)

    # ---- bookkeeping ------------------------------------------------------------------------------

    def _begin(self, record: OrderRecord, op: str, ts: int) -> None:
        record.pending, record.pending_since, record.stuck = op, ts, False
        self._touch(record, ts)

    def _set_status(self, record: OrderRecord, target: S, ts: int) -> None:
        """Every status change goes through the domain's transition table (same status: no transition)."""
        if record.status is not target:
            record.status = transition(record.status, target)
        if target in TERMINAL:
            record.pending = ""
            self._working.get(record.account, {}).pop(record.key, None)
        self._touch(record, ts)

    def _touch(self, record: OrderRecord, ts: int | None = None) -> None:
        """Every change of a record comes through here: mark it for the store, re-count its reservation."""
        if ts is not None and ts > record.updated_ts:
            record.updated_ts = ts
        key = record.key
        self._dirty[key] = record
        self._reshare(record, key)

    def _reshare(self, record: OrderRecord, key: Key) -> None:
        """Replace the record's share of its account's `Reserved` (none once it stops working)."""
        reserved = self._reserved.get(record.account)
        if reserved is None:
            return
        old = self._shares.pop(key, None)
        if old is not None:
            reserved.add(old, -1)
        if key in self._working.get(record.account, ()):
            new = self._shares[key] = share(record, self.instruments[record.symbol])
            reserved.add(new, 1)

    # ---- snapshot / restore -----------------------------------------------------------------------

    def state(self) -> OmsState:
        return OmsState(
            seq=self.sequencer.applied(self.shard_names[0]), seqs=self.sequencer.applied_seqs,
            next_n=self._next_n, stream_seq=self.stream_seq,
            ledger=self.ledger.snapshot(),
            market=self.market.snapshot(),
            counters=[CounterState(account=a, counts=msgspec.structs.replace(self.risk.counters.get(a, 0)))
                      for a in sorted(self.accounts)],
            day_pnl=[msgspec.structs.replace(d) for _, d in sorted(self._day_pnl.items())],
        )

    def snapshot(self) -> OmsSnapshot:
        return OmsSnapshot(state=self.state(), orders=[msgspec.structs.replace(r, fills=list(r.fills))
                                                        for r in self.records()],
                           accounts=[self._account_counts(a) for a in sorted(self.accounts)])

    def restore(self, snapshot: OmsSnapshot) -> None:
        """Replace the whole state with `snapshot` (held-order ids and decisions are replayed in id order)."""
        st = snapshot.state
        seqs = dict(st.seqs) if st.seqs else {self.shard_names[0]: st.seq}
        unknown = sorted(set(seqs) - set(self.shard_names))
        if unknown:
            raise ValueError(f"the stored OMS checkpoint has venue shards {unknown} that the shard map "
                             f"{self.shard_names} does not: restore it with the shard map it was written with")
        self.sequencer = ShardSequencer(self.shard_names, self.shard_of, seqs)
        self.stream_seq = st.stream_seq
        self._checkpoint_seq, self._checkpoint_due = self.sequencer.total, False
        self._next_n = max(st.next_n, 1 + max((r.n for r in snapshot.orders), default=0))
        self.ledger = Ledger.restore(st.ledger) if st.ledger is not None else self._fresh_ledger()
        for account, (cash, kind, currency) in self.accounts.items():
            if account not in self.ledger.accounts:
                self.ledger.open_account(account, Decimal(cash), kind=AccountKind(kind), currency=currency)
        self.market.restore(st.market)
        for c in st.counters:
            counts = self.risk.counters.get(c.account, c.counts.day * 86_400_000_000_000 - self._day_offset)
            counts.day, counts.orders, counts.cancels, counts.trades = (
                c.counts.day, c.counts.orders, c.counts.cancels, c.counts.trades)
        self._day_pnl = {d.account: msgspec.structs.replace(d) for d in st.day_pnl}
        for a in snapshot.accounts:  # newer than the checkpoint: the requests' counts since
            counts = self.risk.counters.get(a.account, a.day * 86_400_000_000_000 - self._day_offset)
            if counts.day == a.day:
                counts.orders, counts.cancels = a.orders, a.cancels
            known = self._day_pnl.get(a.account)
            if a.pnl is not None and (known is None or a.pnl.day >= known.day):
                self._day_pnl[a.account] = msgspec.structs.replace(a.pnl)
        self._orders, self._by_id, self._by_hold = {}, {}, {}
        self._working = {a: {} for a in self.accounts}
        self._reserved = {a: Reserved() for a in self.accounts}
        self._shares, self._views, self._holders = {}, {}, {}
        self.held = HeldOrders()
        for record in sorted(snapshot.orders, key=lambda r: r.n):
            record = msgspec.structs.replace(record, fills=list(record.fills))
            self._orders[record.key] = record
            if record.order_id is not None:
                self._by_id[record.order_id] = record.key
            if not record.terminal:
                self._working.setdefault(record.account, {})[record.key] = record
                self._reshare(record, record.key)
        held = sorted((r for r in self._orders.values() if r.hold_id), key=lambda r: int(r.hold_id[1:]))
        for record in held:
            decision = Decision(verdict=Verdict.HOLD, code=record.hold_code, message=record.hold_message)
            hold_id = self.held.hold(self._command(record, record.created_ts), decision, record.created_ts)
            if hold_id != record.hold_id:
                raise ValueError(f"held orders out of order in the snapshot: {hold_id} != {record.hold_id}")
            self._by_hold[hold_id] = record.key
            if record.hold_state == "approved":
                self.held.approve(hold_id, record.decided_by)
            elif record.hold_state == "rejected":
                self.held.reject(hold_id, record.decided_by, record.message)
        self._dirty.clear()
        self._dirty_accounts.clear()


def _one_shard(symbol: str) -> str:
    return "main"


def _same_order(record: OrderRecord, req: OrderRequest) -> bool:
    """A retry names the order as first sent (price and qty may have been modified since)."""
    return (record.symbol, record.side, record.type, record.tif, record.stop_price, record.orig_price,
            record.orig_qty) == (req.symbol, req.side, req.type, req.tif, req.stop_price, req.price, req.qty)
