"""Pytest fixture: a private `nats-server -js` for the session (fails, never skips, if not installed)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tradesim.bus.natsserver import LocalNatsServer, NatsServerNotFoundError


def start_nats_server() -> LocalNatsServer:
    """Start a private server; a missing binary fails the test with the install hint."""
    try:
        return LocalNatsServer().start()
    except NatsServerNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def nats_server() -> Iterator[LocalNatsServer]:
    """One private server (free port, temporary store dir) for the whole test session."""
    server = start_nats_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def nats_url(nats_server: LocalNatsServer) -> str:
    return nats_server.url
