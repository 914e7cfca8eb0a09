"""PostgreSQL for tests: a fresh, randomly named database per test, dropped afterwards.

The server is `TRADESIM_TEST_PG_URL` (default postgresql://postgres@127.0.0.1:5432/postgres). A server
that cannot be reached FAILS the test (it does not skip): the PostgreSQL backend must be tested.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
HOW_TO_START = (
    "PostgreSQL is required for these tests. Start a server and point TRADESIM_TEST_PG_URL at it "
    "(default {default}); e.g. `sudo apt-get install postgresql && sudo service postgresql start`, "
    "or `docker run -d -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust postgres:15`."
)


def server_url() -> str:
    return os.environ.get("TRADESIM_TEST_PG_URL", DEFAULT_URL)


def with_database(url: str, name: str) -> str:
    """`url` pointing at database `name` instead."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


async def _admin(url: str, sql: str) -> None:
    try:
        conn = await asyncpg.connect(url, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        pytest.fail(f"cannot reach PostgreSQL at {url}: {type(exc).__name__}: {exc}\n"
                    + HOW_TO_START.format(default=DEFAULT_URL), pytrace=False)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def create_database() -> tuple[str, str]:
    """Creates a randomly named database; returns (its URL, its name)."""
    name = "tradesim_test_" + secrets.token_hex(6)
    asyncio.run(_admin(server_url(), f'CREATE DATABASE "{name}"'))
    return with_database(server_url(), name), name


def drop_database(name: str) -> None:
    asyncio.run(_admin(server_url(), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def reset_database(url: str) -> None:
    """Empties a test database (drops and recreates the public schema) between hypothesis examples."""
    await _admin(url, "DROP SCHEMA public CASCADE; CREATE SCHEMA public")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """URL of a fresh, empty database, dropped after the test."""
    url, name = create_database()
    try:
        yield url
    finally:
        drop_database(name)
