"""Durable storage: the hash-chained command journal (SQLite, PostgreSQL or JetStream), snapshots and recovery.

`recover`/`Snapshotter` live in `tradesim.store.recovery` (they need the engine); everything here
needs only the domain.
"""

from tradesim.store.chain import (
    GENESIS_HASH,
    BadRecord,
    RawRecord,
    VerifyReport,
    canonical_bytes,
    record_hash,
)
from tradesim.store.jetstream import (
    InvalidJournalURLError,
    JetStreamJournal,
    JournalFencedError,
    JournalFollower,
    JournalMirror,
    MirrorDivergedError,
)
from tradesim.store.journal import (
    CorruptRecordError,
    InvalidCommandError,
    Journal,
    JournalClosedError,
    JournalError,
    JournalRecord,
    JournalStats,
    JournalUnavailableError,
    SchemaVersionError,
    StoredSnapshot,
    open_journal,
)
from tradesim.store.schema import SCHEMA_VERSION

__all__ = [
    "GENESIS_HASH",
    "SCHEMA_VERSION",
    "BadRecord",
    "CorruptRecordError",
    "InvalidCommandError",
    "InvalidJournalURLError",
    "JetStreamJournal",
    "Journal",
    "JournalClosedError",
    "JournalError",
    "JournalFencedError",
    "JournalFollower",
    "JournalMirror",
    "JournalRecord",
    "JournalStats",
    "JournalUnavailableError",
    "MirrorDivergedError",
    "RawRecord",
    "SchemaVersionError",
    "StoredSnapshot",
    "VerifyReport",
    "canonical_bytes",
    "open_journal",
    "record_hash",
]
