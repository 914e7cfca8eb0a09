"""The OMS's algo RPCs on the bus: `rpc.oms.algo_*`, the durable `orders.algo.*` stream the parents are
published on, parent persistence, and canceling a parent's open children.

A thin shell around the pure `ParentBook`, owned by `OmsService` (same event loop, same store file):
decisions are made between awaits, so a child's over-fill check and its record creation are atomic.
Beside a one-instance store the parents have their own `ParentStore`, written at once; beside a
`SharedOrderStore` (a cluster) their changes ride in the OMS's next batch — one transaction, one fence
check — and a handler awaits that batch before it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final, TypeVar

import msgspec

from tradesim.bus import BusError, Subscription, subjects
from tradesim.services.oms import errors as E
from tradesim.services.oms.errors import OmsRequestError
from tradesim.services.oms.manager import Outcome
from tradesim.services.oms.messages import (
    AlgoClaim,
    AlgoControl,
    AlgoFinish,
    AlgoGetRequest,
    AlgoListRequest,
    AlgoReply,
    AlgoRequest,
    AlgosReply,
    AlgoState,
    CancelRequest,
    OmsError,
    OrderRequest,
)
from tradesim.services.oms.parents import (
    MS,
    MemoryParentStore,
    ParentBook,
    ParentRecord,
    ParentStore,
    SqliteParentStore,
)
from tradesim.services.oms.store import SharedOrderStore, SharedParentStore, SqliteOrderStore

if TYPE_CHECKING:
    from tradesim.services.oms.service import OmsService

log = logging.getLogger("tradesim.oms.algos")

ALGO_STREAM: Final = "ALGOS"
"""The durable stream of `orders.algo.*` (JetStream on NATS, the broker's stream in memory)."""
ALGO_SUBJECTS: Final = (subjects.ORDERS_ALGO_ALL,)
REPUBLISH_EVERY: Final = 1.0
_T = TypeVar("_T", bound=msgspec.Struct)


async def ensure_algo_stream(bus_add_stream: Callable[..., Awaitable[None]]) -> None:
    """Both the OMS and the workers declare the stream (create-or-update), so either may start first."""
    await bus_add_stream(ALGO_STREAM, list(ALGO_SUBJECTS))


class AlgoDesk:
    """Serves the algo RPCs for `service`; `book` is the pure record of parents."""

    def __init__(self, service: OmsService, store: ParentStore | SharedParentStore | None = None) -> None:
        self.service = service
        self.book = ParentBook(service.manager)
        order_store = service.store
        self.shared = isinstance(order_store, SharedOrderStore)
        self.store: ParentStore | None = None
        if self.shared:
            if store is not None and not (isinstance(store, SharedParentStore) and store.orders is order_store):
                raise ValueError("beside a SharedOrderStore the parents must be that store's own "
                                 "(PostgresParentStore of the same PostgresOrderStore), or None")
        elif isinstance(store, SharedParentStore):
            raise ValueError("a SharedParentStore needs its SharedOrderStore as the OMS's order store")
        elif store is None:
            self.store = (SqliteParentStore(order_store.path) if isinstance(order_store, SqliteOrderStore)
                          else MemoryParentStore())
        else:
            self.store = store
        self._pending: dict[str, ParentRecord] = {}  # shared store: changes waiting for the OMS's next batch
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> list[Subscription]:
        """Restore the parents (after the orders), declare the stream, serve, republish what is unpublished."""
        assert self.store is not None, "a shared store's parents are loaded by reset()"
        self.book.restore(self.store.load())
        subs = await self.serve()
        await self.start_republisher()
        return subs

    async def reset(self, parents: list[ParentRecord]) -> None:
        """A fresh book over the OMS's (fresh) manager, with `parents` (a new leader's state rebuild)."""
        if self._task is not None:
            await self.stop_republisher()
        self.book = ParentBook(self.service.manager)
        self.book.restore(parents)
        self._pending.clear()

    async def serve(self) -> list[Subscription]:
        """Declare the parents' stream and serve `rpc.oms.algo_*`."""
        bus = self.service.bus
        await ensure_algo_stream(bus.add_stream)
        methods: dict[str, Callable[[msgspec.Struct], Awaitable[AlgoReply | AlgosReply | OmsError]]] = {
            "algo_order": self._order, "algo_get": self._get, "algo_list": self._list,
            "algo_pause": self._pause, "algo_resume": self._resume, "algo_cancel": self._cancel,
            "algo_claim": self._claim, "algo_finish": self._finish,
        }
        subs = []
        for method, handler in methods.items():
            subs.append(await bus.serve(subjects.rpc("oms", method), self.service._guard(handler),
                                        concurrency=self.service.concurrency))
        return subs

    async def start_republisher(self) -> None:
        await self._republish()
        self._task = asyncio.create_task(self._republisher(), name="oms-algo-republisher")

    async def stop_republisher(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def stop(self) -> None:
        await self.stop_republisher()
        self.flush()

    def flush(self) -> None:
        """Hand the changed parents to their store (a shared store: to the OMS's next batch)."""
        dirty = self.book.take_dirty()
        if not dirty:
            return
        if self.store is None:
            for parent in dirty:
                self._pending[parent.parent_id] = parent
        else:
            self.store.save(dirty)

    @property
    def pending(self) -> bool:
        """Parent changes waiting for the OMS's next batch (shared store only)."""
        return bool(self._pending)

    def take_pending(self) -> list[ParentRecord]:
        out = list(self._pending.values())
        self._pending.clear()
        return out

    async def durable(self) -> None:
        """Until the parents' changes so far are committed (before an answer acknowledges them)."""
        self.flush()
        if self.store is None:
            await self.service._durable()

    # ---- children (called by OmsService._submit) ---------------------------------------------------

    def decide_child(self, req: OrderRequest, ts: int) -> Outcome:
        """Over-fill guard, then the ordinary order path, then the child is indexed under its parent."""
        self.book.check_child(req)
        outcome = self.service.manager.submit(req, ts)
        self.book.add_child(outcome.record, ts)
        return outcome

    # ---- RPC handlers -----------------------------------------------------------------------------

    async def _order(self, req: msgspec.Struct) -> AlgoReply:
        parent, existed = self.book.create(_expect(req, AlgoRequest), self.service.clock())
        await self.durable()
        if not existed or not parent.published:
            await self._publish(parent)
        return AlgoReply(algo=self.book.view(parent))

    async def _publish(self, parent: ParentRecord) -> None:
        try:
            await self.service.bus.publish(f"orders.algo.{parent.algo}", parent.order())
        except BusError as exc:
            log.warning("could not publish algo %s (retrying): %s", parent.parent_id, exc)
            return
        self.book.published(parent, self.service.clock())
        self.flush()

    async def _republish(self) -> None:
        for parent in self.book.all():
            if not parent.published and not parent.terminal:
                await self._publish(parent)

    async def _republisher(self) -> None:
        while True:
            await asyncio.sleep(REPUBLISH_EVERY)
            try:
                await self._republish()
            except Exception:
                log.exception("algo republisher")

    async def _get(self, req: msgspec.Struct) -> AlgoReply:
        r = _expect(req, AlgoGetRequest)
        parent = self.book.get(r.parent_id, r.account)
        children = [c.view() for c in self.book.child_records(parent)] if r.children else []
        return AlgoReply(algo=self.book.view(parent), children=children)

    async def _list(self, req: msgspec.Struct) -> AlgosReply:
        r = _expect(req, AlgoListRequest)
        if r.account is not None and r.account not in self.service.manager.accounts:
            raise OmsRequestError(E.UNKNOWN_ACCOUNT, f"unknown account {r.account!r}")
        found, total = self.book.find(r)
        return AlgosReply(algos=[self.book.view(p) for p in found], total=total)

    async def _control(self, req: msgspec.Struct, target: AlgoState) -> AlgoReply:
        r = _expect(req, AlgoControl)
        parent = self.book.get(r.parent_id, r.account)
        if target is AlgoState.RUNNING and parent.state is not AlgoState.PAUSED and not parent.terminal:
            return AlgoReply(algo=self.book.view(parent))
        self.book.set_state(parent, target, self.service.clock())
        await self.durable()
        return AlgoReply(algo=self.book.view(parent))

    async def _pause(self, req: msgspec.Struct) -> AlgoReply:
        return await self._control(req, AlgoState.PAUSED)

    async def _resume(self, req: msgspec.Struct) -> AlgoReply:
        return await self._control(req, AlgoState.RUNNING)

    async def _cancel(self, req: msgspec.Struct) -> AlgoReply:
        r = _expect(req, AlgoControl)
        parent = self.book.get(r.parent_id, r.account)
        if parent.state is not AlgoState.CANCELED:
            self.book.set_state(parent, AlgoState.CANCELED, self.service.clock(), reason="user")
            await self.durable()
        await self._cancel_children(parent)
        return AlgoReply(algo=self.book.view(parent))

    async def _cancel_children(self, parent: ParentRecord) -> None:
        """Cancel every open child; one with a request still at the venue is retried once it is answered."""
        deadline = asyncio.get_running_loop().time() + 4 * self.service.request_timeout
        while True:
            pending = False
            for child in self.book.open_children(parent):
                try:
                    outcome = self.service.manager.cancel(
                        CancelRequest(account=child.account, client_order_id=child.client_order_id),
                        self.service.clock())
                except OmsRequestError as exc:
                    if exc.code != E.ORDER_PENDING:
                        log.warning("algo %s: cancel of child %s refused: %s", parent.parent_id,
                                    child.client_order_id, exc.message)
                        continue
                    pending = True
                    continue
                await self.service._answer(outcome, change=True)
            if not pending or asyncio.get_running_loop().time() > deadline:
                return
            await asyncio.sleep(0.01)

    async def _claim(self, req: msgspec.Struct) -> AlgoReply:
        r = _expect(req, AlgoClaim)
        if r.lease_ms <= 0 or not r.worker_id:
            raise OmsRequestError(E.BAD_REQUEST, "a claim needs a worker_id and lease_ms > 0")
        parent = self.book.get(r.parent_id)
        self.book.claim(parent, r.worker_id, r.lease_ms * MS, self.service.clock())
        await self.durable()
        return AlgoReply(algo=self.book.view(parent))

    async def _finish(self, req: msgspec.Struct) -> AlgoReply:
        r = _expect(req, AlgoFinish)
        if r.state not in (AlgoState.EXPIRED, AlgoState.FAILED):
            raise OmsRequestError(E.BAD_REQUEST, f"a worker finishes a parent EXPIRED or FAILED, not {r.state.value}")
        parent = self.book.get(r.parent_id)
        if parent.terminal:
            return AlgoReply(algo=self.book.view(parent))
        if parent.owner and parent.owner != r.worker_id:
            raise OmsRequestError(E.NOT_OWNER, f"algo {parent.parent_id} is leased by {parent.owner}")
        self.book.set_state(parent, r.state, self.service.clock(), reason=r.reason)
        await self.durable()
        await self._cancel_children(parent)
        return AlgoReply(algo=self.book.view(parent))


def _expect(req: msgspec.Struct, tp: type[_T]) -> _T:
    if not isinstance(req, tp):
        raise OmsRequestError(E.BAD_REQUEST, f"expected {tp.__name__}, got {type(req).__name__}")
    return req

