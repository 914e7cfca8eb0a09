"""The elected OMS's activation on a memory bus and a real PostgreSQL store: an activation that gives up
must not leave the instance holding the leadership while it never serves."""

from __future__ import annotations

import uuid

from tests.services.oms_support import ACCOUNTS, COMPLIANCE, INSTRUMENTS, REFERENCE, RISK, until
from tests.support.pg import pg_url  # noqa: F401  (fixture)
from tradesim.bus import open_bus
from tradesim.cluster.election import SingleActive
from tradesim.services.oms.pgstore import open_oms_stores
from tradesim.services.oms.service import OmsService

FENCED_AT = 12  # a token the store already knows, above the first few the election hands out


async def test_an_activation_that_gives_up_resigns_instead_of_holding_the_lease(pg_url: str) -> None:  # noqa: F811
    """The store knows a newer token than the one this instance won with (StaleLeaderError in the rebuild).
    Before the fix the activation returned and the election kept renewing: leader for ever, serving never,
    no standby could take over. Now it resigns and contends again, until it wins with a token the store
    accepts, and serves."""
    bus = await open_bus(f"memory://oms-activation-{uuid.uuid4().hex[:8]}")
    store, parents = await open_oms_stores(pg_url, holder="oms-0")
    election = SingleActive(bus, "oms", "oms-0", ttl=1.0)
    await store.fence(FENCED_AT, await election.incarnation())
    oms = OmsService(bus, INSTRUMENTS, ACCOUNTS, RISK, COMPLIANCE, store=store, parent_store=parents,
                     reference_prices=REFERENCE, election=election, request_timeout=1.0, stuck_after=1.0)
    await oms.start()
    try:
        await until(lambda: oms.serving, 20)
        assert oms._token is not None and oms._token >= FENCED_AT
        assert election.elections >= 2  # the stale leaderships were given back, not kept
        assert oms.activations == 1
    finally:
        await oms.stop()
        await store.close()
        await bus.close()
