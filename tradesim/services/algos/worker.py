"""`AlgoWorker`: one member of the COMPETE group on the durable `orders.algo.*` stream that drives the parents
it takes to completion, sending child orders through `rpc.oms.submit`.

Everything a worker needs to resume lives in the OMS (the parent, its children and their fills), so a
worker keeps no state worth losing: it acks a parent's message only when the parent is finished, and a
message left unacked by a dead worker comes back after `ack_wait` to another, which reclaims the parent
(`rpc.oms.algo_claim`, a lease) once the dead worker's lease runs out and goes on from the OMS's figures.
Child ids are `{parent_id}-{n}` with n = the OMS's `next_child`, so a resent child is an idempotent retry:
calls to the OMS go through `call_oms`, which retries across an OMS failover (no responders, not_active,
timeouts) for up to half a lease. Time comes only from the injected `clock` and `asyncio.sleep`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Final

import msgspec

from tradesim.bus import Bus, BusError, Delivery, Mode, Subscription, register, subjects
from tradesim.domain import OrderStatus, OrderType, TimeInForce
from tradesim.services.algos import schedules as S
from tradesim.services.algos.config import Settings
from tradesim.services.marketdata.messages import MARKETDATA_MESSAGES, BarsReply, BarsRequest
from tradesim.services.oms import errors as E
from tradesim.services.oms.algo_desk import ensure_algo_stream
from tradesim.services.oms.messages import (
    ALGO_NAMES,
    ALGO_TERMINAL,
    OMS_MESSAGES,
    AlgoClaim,
    AlgoFinish,
    AlgoOrder,
    AlgoReply,
    AlgoState,
    AlgoView,
    OmsError,
    OrderReply,
    OrderRequest,
)
from tradesim.services.oms.rpc import RetryPolicy, call_oms

log = logging.getLogger("tradesim.algos")

register(*OMS_MESSAGES, *MARKETDATA_MESSAGES)

DURABLE: Final = "algos"
"""The one durable consumer every worker shares (COMPETE): each parent message goes to one worker."""
NS: Final = 1_000_000_000


class AlgoWorker:
    """ExecutionAlgo: `start()` joins the group, `stop()` leaves it (parents in hand go back unacked)."""

    def __init__(self, bus: Bus, worker_id: str, *, clock: Callable[[], int] = time.time_ns,
                 algos: Iterable[str] = ALGO_NAMES, settings: Settings | None = None, oms: str = "oms") -> None:
        self.bus = bus
        self.worker_id = worker_id
        self.clock = clock
        self.algos = frozenset(algos)
        unknown = self.algos - set(ALGO_NAMES)
        if unknown or not self.algos:
            raise ValueError(f"algos must be a non-empty subset of {ALGO_NAMES}, got {sorted(self.algos)}")
        self.settings = settings or Settings()
        self._oms = oms
        self._policy = RetryPolicy(timeout=self.settings.request_timeout,
                                   deadline=max(self.settings.request_timeout, self.settings.lease / 2))
        self._sub: Subscription | None = None
        self._slots = asyncio.Semaphore(self.settings.max_parents)
        self._running: dict[str, tuple[asyncio.Task[None], Delivery]] = {}
        self.completed: list[str] = []  # parent ids this worker saw finish (for tests and metrics)

    @property
    def running(self) -> list[str]:
        return list(self._running)

    async def start(self) -> None:
        await ensure_algo_stream(self.bus.add_stream)
        self._sub = await self.bus.subscribe(subjects.ORDERS_ALGO_ALL, self._on_parent, mode=Mode.COMPETE,
                                             durable=DURABLE, ack_wait=self.settings.ack_wait)

    async def stop(self) -> None:
        """Leave: parents in hand are abandoned unacked and given back at once (another worker resumes
        them when this worker's lease runs out)."""
        await self._leave(give_back=True)

    async def kill(self) -> None:
        """As if the process died: nothing acked, nothing given back; redelivery after `ack_wait`."""
        await self._leave(give_back=False)

    async def _leave(self, *, give_back: bool) -> None:
        if self._sub is not None:
            with contextlib.suppress(BusError):
                await self._sub.unsubscribe()
            self._sub = None
        running = list(self._running.values())
        for task, _ in running:
            task.cancel()
        await asyncio.gather(*(t for t, _ in running), return_exceptions=True)
        if give_back:
            for _, delivery in running:
                with contextlib.suppress(BusError):
                    await delivery.nak()

    # ---- taking parents ---------------------------------------------------------------------------

    async def _on_parent(self, d: Delivery) -> None:
        order = d.data
        if not isinstance(order, AlgoOrder):
            log.error("not an algo order on %s: %r", d.subject, order)
            await d.ack()
            return
        if order.algo not in self.algos:
            await d.nak(delay=self.settings.poll)  # someone else in the group runs this algo
            return
        if order.parent_id in self._running:  # a duplicate or early redelivery of one we drive
            await d.nak(delay=self.settings.lease)
            return
        await self._slots.acquire()  # back-pressure: at most max_parents at once, the rest stay queued
        task = asyncio.create_task(self._drive(order, d), name=f"algo-{self.worker_id}-{order.parent_id}")
        self._running[order.parent_id] = (task, d)

    async def _drive(self, order: AlgoOrder, d: Delivery) -> None:
        try:
            retry_in = await Driver(self, order).run()
            if retry_in is None:
                await d.ack()
            else:
                await d.nak(delay=retry_in)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("algo %s failed in worker %s; giving it back", order.parent_id, self.worker_id)
            with contextlib.suppress(BusError):
                await d.nak(delay=self.settings.poll)
        finally:
            self._running.pop(order.parent_id, None)
            self._slots.release()

    # ---- the OMS ----------------------------------------------------------------------------------

    async def claim(self, parent_id: str) -> AlgoView | None:
        return await self._algo_call("algo_claim", AlgoClaim(parent_id=parent_id, worker_id=self.worker_id,
                                                             lease_ms=int(self.settings.lease * 1000)))

    async def finish(self, parent_id: str, state: AlgoState, reason: str) -> AlgoView | None:
        return await self._algo_call("algo_finish", AlgoFinish(parent_id=parent_id, worker_id=self.worker_id,
                                                               state=state, reason=reason))

    async def _algo_call(self, method: str, req: msgspec.Struct) -> AlgoView | None:
        try:
            reply = await call_oms(self.bus, method, req, policy=self._policy, service=self._oms)
        except (BusError, TimeoutError) as exc:
            log.warning("%s %s: %s", method, getattr(req, "parent_id", ""), exc)
            return None
        if isinstance(reply, AlgoReply):
            return reply.algo
        log.warning("%s answered %r", method, reply)
        return None

    async def submit(self, req: OrderRequest) -> OrderReply | OmsError | None:
        """None: no answer (the next claim shows whether the OMS has the child; a resend is idempotent)."""
        try:
            reply = await call_oms(self.bus, "submit", req, policy=self._policy, service=self._oms)
        except (BusError, TimeoutError) as exc:
            log.warning("child %s: %s", req.client_order_id, exc)
            return None
        return reply if isinstance(reply, OrderReply | OmsError) else None

    async def bars(self, symbol: str) -> BarsReply | None:
        try:
            reply = await self.bus.request(subjects.rpc("marketdata", "bars"), BarsRequest(symbol=symbol, limit=1000),
                                           timeout=self.settings.request_timeout)
        except (BusError, TimeoutError) as exc:
            log.info("no bars for %s (%s): default VWAP profile", symbol, exc)
            return None
        return reply if isinstance(reply, BarsReply) else None

    async def sleep_until(self, ts: int) -> None:
        await asyncio.sleep(max(0.0, (ts - self.clock()) / NS))


class Driver:
    """Drives one parent; `run()` returns None when the parent is finished (ack), else the seconds after
    which the message should come back (another worker holds the lease)."""

    def __init__(self, worker: AlgoWorker, order: AlgoOrder) -> None:
        self.w = worker
        self.order = order
        self.pid = order.parent_id
        self.schedule: list[S.Slice] | None = None
        self.acted = 0  # slices acted on (twap/vwap)
        self.last_send = 0  # ns of the last child (retry pacing)
        self.rejects = 0

    async def run(self) -> float | None:
        w, s = self.w, self.w.settings
        poll_ns, renew_ns = int(s.poll * NS), int(s.lease * NS / 3)
        while True:
            view = await w.claim(self.pid)
            if view is None:
                await asyncio.sleep(s.poll)
                continue
            if view.state in ALGO_TERMINAL:
                w.completed.append(self.pid)
                return None
            now = w.clock()
            if view.owner != w.worker_id:
                return max(s.poll, (view.lease_until - now) / NS)
            wake = now + poll_ns
            if view.state is AlgoState.RUNNING:
                if now < view.start_ts:
                    wake = view.start_ts
                else:
                    wake = await self.step(view, now)
            await w.sleep_until(min(wake, now + renew_ns))

    async def step(self, view: AlgoView, now: int) -> int:
        """Act once; returns when to look again."""
        algo = view.algo
        if algo in ("twap", "vwap"):
            return await self._scheduled(view, now)
        if algo == "pov":
            return await self._pov(view, now)
        return await self._iceberg(view, now)

    async def _scheduled(self, view: AlgoView, now: int) -> int:
        schedule = self.schedule or await self._build(view)
        self.schedule = schedule
        poll = int(self.w.settings.poll * NS)
        interval = max(1, (view.end_ts - view.start_ts) // len(schedule))
        grace = view.params.grace_ms * 1_000_000 or interval
        deadline = view.end_ts + grace
        count, due_qty = S.due(schedule, now)
        remaining = view.qty - view.filled_qty
        late = count == len(schedule) and now - self.last_send >= interval
        if count > self.acted or late:
            self.acted = count
            size = min(due_qty, view.qty) - view.filled_qty - view.open_qty
            if size > 0:
                await self._send(view, size, now)
                return now + min(poll, interval)
        if remaining > 0 and view.open_qty == 0 and now >= deadline:
            await self.w.finish(self.pid, AlgoState.EXPIRED, f"window ended with {remaining} of {view.qty} left")
            return now
        nxt = schedule[count].ts if count < len(schedule) else min(self.last_send + interval, deadline)
        return max(now + 1_000_000, min(nxt, now + poll))

    async def _build(self, view: AlgoView) -> list[S.Slice]:
        p = view.params
        lot = view.lot
        slices = p.slices or S.default_slices(p.duration_ms)
        slices = min(slices, view.qty // lot)
        duration = view.end_ts - view.start_ts
        if view.algo == "twap":
            return S.twap_schedule(view.qty, slices, view.start_ts, duration, lot)
        weights: list[float] | None = None
        if p.profile == "bars":
            reply = await self.w.bars(view.symbol)
            if reply is not None:
                weights = S.learned_profile(reply.bars, view.start_ts, duration, slices)
        return S.vwap_schedule(view.qty, weights or S.u_profile(slices), view.start_ts, duration, lot)

    async def _pov(self, view: AlgoView, now: int) -> int:
        p = view.params
        poll = int(self.w.settings.poll * NS)
        if view.end_ts and now >= view.end_ts and view.open_qty == 0:
            left = view.qty - view.filled_qty
            await self.w.finish(self.pid, AlgoState.EXPIRED, f"end reached with {left} of {view.qty} left")
            return now
        size = S.pov_child(p.participation, view.market_volume, view.filled_qty, view.open_qty,
                           view.qty - view.filled_qty, p.min_child_qty, view.lot)
        if size > 0:
            await self._send(view, size, now)
        wake = now + poll
        return min(wake, view.end_ts) if view.end_ts else wake

    async def _iceberg(self, view: AlgoView, now: int) -> int:
        size = S.iceberg_child(view.params.display_qty, view.qty - view.filled_qty, view.open_qty)
        if size > 0:
            await self._send(view, size, now, tif=TimeInForce.GTC)
        return now + int(self.w.settings.poll * NS)

    async def _send(self, view: AlgoView, qty: int, now: int, tif: TimeInForce = TimeInForce.IOC) -> None:
        limit = view.params.limit_price
        req = OrderRequest(
            account=view.account, symbol=view.symbol, side=view.side, qty=qty,
            type=OrderType.LIMIT if limit is not None else OrderType.MARKET,
            tif=tif, price=limit,
            client_order_id=f"{self.pid}-{view.next_child}", parent_id=self.pid,
            correlation_id=view.correlation_id or self.pid,
        )
        self.last_send = now
        reply = await self.w.submit(req)
        refused = ""
        if isinstance(reply, OrderReply) and reply.order.status is OrderStatus.REJECTED:
            refused = reply.order.reason
        elif isinstance(reply, OmsError) and reply.error not in (
                E.PARENT_OVERFILL, E.PARENT_NOT_RUNNING, E.DUPLICATE_CLIENT_ORDER_ID):
            refused = reply.error
        if not refused:
            self.rejects = 0
            return
        self.rejects += 1
        log.warning("algo %s: child %s refused: %s", self.pid, req.client_order_id, refused)
        if self.rejects >= self.w.settings.max_rejects:
            await self.w.finish(self.pid, AlgoState.FAILED, f"{self.rejects} children refused, last: {refused}")
