"""The OMS's algo RPCs on the bus: `rpc.oms.algo_*`, the durable `orders.algo.*` stream the parents are
published on, parent persistence, and canceling a parent's open children.

A thin shell around the pure `ParentBook`, owned by `OmsService` (same event loop, same store file):
decisions are made between awaits, so a child's over-fill check and its record creation are atomic.
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
from tradesim.services.oms.store import SqliteOrderStore

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

    def __init__(self, service: OmsService, store: ParentStore | None = None) -> None:
        self.service = service
        self.book = ParentBook(service.manager)
        if store is None:
            order_store = service.store
            store = (SqliteParentStore(order_store.path) if isinstance(order_store, SqliteOrderStore)
                     else MemoryParentStore())
        self.store: ParentStore = store
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> list[Subscription]:
        """Restore the parents (after the orders), declare the stream, serve, republish what is unpublished."""
        self.book.restore(self.store.load())
        bus = self.service.bus
        await ensure_algo_stream(bus.add_stream)
        methods: dict[str, Callable[[msgspec.Struct], Awaitable[AlgoReply | AlgosReply | OmsError]]] = {
            "algo_order": self._order, "algo_get": self._get, "algo_list": self._list,
            "algo_pause": self._pause, "algo_resume": self._resume, "algo_cancel": self._cancel,
            "algo_claim": self._claim, "algo_finish": self._finish,
        }
        subs = []
        for method, handler in methods.items():
            subs.append(await bus.serve(subjects.rpc("oms", method), self._guard(handler),
                                        concurrency=self.service.concurrency))
        await self._republish()
        self._task = asyncio.create_task(self._republisher(), name="oms-algo-republisher")
        return subs

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.flush()

    def _guard(self, handler: Callable[[msgspec.Struct], Awaitable[msgspec.Struct]]) -> Callable[
            [msgspec.Struct], Awaitable[msgspec.Struct]]:
        """As the OMS's own RPCs: a refusal is an OmsError with its code, a bug is `internal`."""
        async def serve(req: msgspec.Struct) -> msgspec.Struct:
            try:
                return await handler(req)
            except OmsRequestError as exc:
                self.service._flush()
                return OmsError(error=exc.code, message=exc.message)
            except Exception as exc:
                log.exception("algo request failed: %r", req)
                return OmsError(error=E.INTERNAL, message=f"{type(exc).__name__}: {exc}")
        return serve

    def flush(self) -> None:
        dirty = self.book.take_dirty()
        if dirty:
            self.store.save(dirty)

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
        self.flush()
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
        self.flush()
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
            self.flush()
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
                await self.service._change(outcome)
            if not pending or asyncio.get_running_loop().time() > deadline:
                return
            await asyncio.sleep(0.01)

    async def _claim(self, req: msgspec.Struct) -> AlgoReply:
        r = _expect(req, AlgoClaim)
        if r.lease_ms <= 0 or not r.worker_id:
            raise OmsRequestError(E.BAD_REQUEST, "a claim needs a worker_id and lease_ms > 0")
        parent = self.book.get(r.parent_id)
        self.book.claim(parent, r.worker_id, r.lease_ms * MS, self.service.clock())
        self.flush()
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
        self.flush()
        await self._cancel_children(parent)
        return AlgoReply(algo=self.book.view(parent))


def _expect(req: msgspec.Struct, tp: type[_T]) -> _T:
    if not isinstance(req, tp):
        raise OmsRequestError(E.BAD_REQUEST, f"expected {tp.__name__}, got {type(req).__name__}")
    return req

