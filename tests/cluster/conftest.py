"""Fixtures of the cluster suite: the bus contract suite's `connect` (memory:// and a private nats-server) and `uid`."""

from __future__ import annotations

from tests.bus.conftest import connect, uid  # noqa: F401  (fixtures)
from tests.support.nats_server import nats_server, nats_url  # noqa: F401  (fixtures)
