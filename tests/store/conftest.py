"""Backends for the store suite: every test taking `backend` runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.support.pg import create_database, drop_database, pg_url, reset_database
from tradesim.store import Journal, open_journal

__all__ = ["Backend", "pg_url"]


class Backend:
    """Where a test journal lives, plus raw SQL access to it for tampering (no mocks: the real database)."""

    def __init__(self, name: str, target: str) -> None:
        self.name = name
        self.target = target

    async def open(self, **options: Any) -> Journal:
        return await open_journal(self.target, **options)

    async def sql(self, statement: str, *args: Any) -> None:
        """Runs one statement with `?` placeholders (rewritten to $n for PostgreSQL)."""
        if self.name == "sqlite":
            conn = sqlite3.connect(Path(self.target) / "journal.db", isolation_level=None)
            try:
                conn.execute(statement, args)
            finally:
                conn.close()
            return
        parts = statement.split("?")
        pg_statement = parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], start=1))
        conn = await asyncpg.connect(self.target)
        try:
            await conn.execute(pg_statement, *args)
        finally:
            await conn.close()

    async def reset(self) -> None:
        """Back to an empty store (for hypothesis examples sharing one test's backend)."""
        if self.name == "sqlite":
            shutil.rmtree(self.target, ignore_errors=True)
        else:
            await reset_database(self.target)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "sqlite":
        directory = tempfile.mkdtemp(prefix="tradesim-journal-")
        try:
            yield Backend("sqlite", directory)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    else:
        url, name = create_database()
        try:
            yield Backend("postgres", url)
        finally:
            drop_database(name)
