"""The storage schema, in one place: table definitions for SQLite and PostgreSQL and the schema version.

Both dialects hold the same tables with the same columns, so a journal can move between backends
and `tradesim audit verify` reads either the same way. Bump `SCHEMA_VERSION` on any change.
"""

from __future__ import annotations

SCHEMA_VERSION = 1
"""Stored in `store_meta` under `schema_version`; opening a store of another version is refused."""

JOURNAL_TABLE = "journal"
SNAPSHOT_TABLE = "journal_snapshots"
META_TABLE = "store_meta"

JOURNAL_COLUMNS = ("seq", "ts", "command", "prev_hash", "hash")
"""`command` is the msgpack encoding of the command alone; the hashed canonical bytes are derived
from (seq, ts, command), see `tradesim.store.chain.canonical_bytes`."""

SQLITE_DDL = (
    f"""CREATE TABLE IF NOT EXISTS {META_TABLE} (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL)""",
    f"""CREATE TABLE IF NOT EXISTS {JOURNAL_TABLE} (
        seq INTEGER PRIMARY KEY,
        ts INTEGER NOT NULL,
        command BLOB NOT NULL,
        prev_hash BLOB NOT NULL,
        hash BLOB NOT NULL)""",
    f"""CREATE TABLE IF NOT EXISTS {SNAPSHOT_TABLE} (
        seq INTEGER PRIMARY KEY,
        state_hash TEXT NOT NULL,
        data BLOB NOT NULL,
        created_ns INTEGER NOT NULL)""",
)

POSTGRES_DDL = (
    f"""CREATE TABLE IF NOT EXISTS {META_TABLE} (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL)""",
    f"""CREATE TABLE IF NOT EXISTS {JOURNAL_TABLE} (
        seq BIGINT PRIMARY KEY,
        ts BIGINT NOT NULL,
        command BYTEA NOT NULL,
        prev_hash BYTEA NOT NULL,
        hash BYTEA NOT NULL)""",
    f"""CREATE TABLE IF NOT EXISTS {SNAPSHOT_TABLE} (
        seq BIGINT PRIMARY KEY,
        state_hash TEXT NOT NULL,
        data BYTEA NOT NULL,
        created_ns BIGINT NOT NULL)""",
)
