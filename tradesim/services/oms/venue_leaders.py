"""The OMS's view of who leads each venue shard: it follows the shards' election keys.

Why: a request in flight to a venue leader that crashes is never answered. Without this the OMS
waits out its whole `request_timeout` before it even looks again; with it, the moment the shard's
election key names a new leadership (or is released) the OMS re-drives the request at the new
leader — safe, because the venue refuses a client_order_id it already has and the original's events
tell that order's story (docs/venue-ha.md, "The venue role", item 3).

A *leadership* is identified by its fencing token (the revision that won it): renewals keep it, a
takeover by another instance — or by a restarted process under the same instance id — changes it,
a release (delete) ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

from tradesim.bus.base import Entry, Watch
from tradesim.cluster.election import LEADERS_BUCKET, KVSource, decode_leader

log = logging.getLogger("tradesim.oms.venue_leaders")


class VenueLeaders:
    """Follows `elections` (venue RPC service → its election name, e.g. `{"venue": "venue.main"}`).

    `generation(service)` counts the leadership changes seen for the service's shard;
    `wait_changed(service, generation, timeout)` returns True as soon as it moved past `generation`.
    """

    def __init__(self, bus: KVSource, elections: Mapping[str, str], *, bucket: str = LEADERS_BUCKET) -> None:
        if not elections:
            raise ValueError("VenueLeaders needs at least one venue service to follow")
        self.bus = bus
        self.bucket = bucket
        self.elections = dict(elections)
        self._by_election = {election: service for service, election in self.elections.items()}
        self._leadership: dict[str, int | None] = dict.fromkeys(self.elections)  # service → token
        self._holder: dict[str, str | None] = dict.fromkeys(self.elections)
        self._generation: dict[str, int] = dict.fromkeys(self.elections, 0)
        self._changed: dict[str, asyncio.Event] = {s: asyncio.Event() for s in self.elections}
        self._watches: list[Watch] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Open the bucket and watch every shard's key (its current holder first); returns once live."""
        if self._tasks:
            return
        kv = await self.bus.kv(self.bucket)
        for election in self._by_election:
            watch = await kv.watch(election, include_initial=True)
            self._watches.append(watch)
            self._tasks.append(asyncio.create_task(self._run(watch), name=f"oms-venue-leader:{election}"))

    async def stop(self) -> None:
        for watch in self._watches:
            with contextlib.suppress(Exception):
                await watch.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._watches.clear()
        self._tasks.clear()

    def holder(self, service: str) -> str | None:
        """The instance id leading `service`'s shard as last seen (None: released or not known yet)."""
        return self._holder[service]

    def generation(self, service: str) -> int:
        """How many leadership changes of `service`'s shard were seen (compare with a later value)."""
        return self._generation.get(service, 0)

    async def wait_changed(self, service: str, generation: int, timeout: float | None) -> bool:
        """Until the shard's leadership changes past `generation`; False if `timeout` passes first."""
        event = self._changed.get(service)
        if event is None:  # a service we do not follow (e.g. a symbol on no shard): nothing to wait for
            if timeout is not None:
                await asyncio.sleep(timeout)
            return False
        if self._generation[service] != generation:
            return True
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            return False
        return self._generation[service] != generation

    async def _run(self, watch: Watch) -> None:
        try:
            async for entry in watch:
                self._seen(entry)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("venue leader watch ended: in-flight venue requests wait out their timeout again")

    def _seen(self, entry: Entry) -> None:
        service = self._by_election.get(entry.key)
        if service is None:
            return
        if entry.deleted:
            leadership, holder = None, None
        else:
            record = decode_leader(entry.value)
            # The first write of a leadership carries token 0: its revision is the token.
            leadership = (record.token or entry.revision) if record is not None else entry.revision
            holder = record.instance_id if record is not None else "?"
        if leadership == self._leadership[service]:
            return  # a renewal
        first = self._generation[service] == 0 and self._leadership[service] is None and holder is not None
        self._leadership[service], self._holder[service] = leadership, holder
        self._generation[service] += 1
        event = self._changed[service]
        self._changed[service] = asyncio.Event()
        event.set()
        if not first:
            log.info("venue %s: leadership now %s (token %s)", service, holder or "released", leadership)
