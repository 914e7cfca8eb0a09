"""Fixtures of the bus contract suite: one `connect` factory per backend, sharing one 'server'."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from tests.support.nats_server import nats_server, nats_url  # noqa: F401  (fixtures)
from tradesim.bus import Bus, open_bus

Connect = Callable[..., Awaitable[Bus]]


@pytest.fixture(params=["memory", "nats"])
async def connect(request: pytest.FixtureRequest) -> AsyncIterator[Connect]:
    """`await connect()` opens another connection to the same broker/server (closed after the test)."""
    if request.param == "memory":
        url = f"memory://contract-{uuid.uuid4().hex[:8]}"
    else:
        url = request.getfixturevalue("nats_url")
    buses: list[Bus] = []

    async def _connect(**kw: Any) -> Bus:
        bus = await open_bus(url, **kw)
        buses.append(bus)
        return bus

    yield _connect
    for b in buses:
        await b.close()


@pytest.fixture
def uid() -> str:
    """A unique token so tests sharing one NATS server never see each other's subjects/streams."""
    return "t" + uuid.uuid4().hex[:10]
