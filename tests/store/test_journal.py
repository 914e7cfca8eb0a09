"""The journal suite, run on SQLite and on PostgreSQL: order, group commit, the hash chain, tampering,
reopening, snapshot + tail recovery and bad input."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.store.conftest import Backend
from tests.store.streams import INSTRUMENT, SYMBOL, Step, build, listing, steps_strategy
from tradesim.domain import Command, NewOrder, OrderType, Side
from tradesim.store import (
    GENESIS_HASH,
    CorruptRecordError,
    JournalClosedError,
    JournalUnavailableError,
    SchemaVersionError,
    open_journal,
)
from tradesim.store.chain import canonical_bytes, encode_command, record_hash


def order(i: int, qty: int = 10) -> NewOrder:
    return NewOrder(account="alice", client_order_id=f"o{i}", symbol=SYMBOL, side=Side.BUY,
                    type=OrderType.LIMIT, price=10_000, qty=qty, ts=i)


async def fill(backend: Backend, n: int) -> list[Command]:
    commands: list[Command] = [listing(), *[order(i) for i in range(1, n)]]
    async with await backend.open() as journal:
        await journal.append_many(commands)
    return commands


# -- appending and reading ---------------------------------------------------------------------------

async def test_append_then_read_in_order(backend: Backend) -> None:
    async with await backend.open() as journal:
        assert (journal.last_seq, journal.head_hash) == (0, GENESIS_HASH)
        records = [await journal.append(order(i), ts=1_000 + i) for i in range(1, 31)]
        records += await journal.append_many([order(i) for i in range(31, 41)], ts=5)
        assert [r.seq for r in records] == list(range(1, 41))
        assert records[0].prev_hash == GENESIS_HASH
        for before, after in itertools.pairwise(records):
            assert after.prev_hash == before.hash
        for r in records:
            canonical = canonical_bytes(r.seq, r.ts, encode_command(r.command))
            assert canonical == msgspec.msgpack.encode((r.seq, r.ts, r.command), order="deterministic")
            assert r.hash == hashlib.sha256(r.prev_hash + canonical).digest()
        assert (journal.last_seq, journal.head_hash) == (40, records[-1].hash)
        read = [r async for r in journal.read()]
        assert read == records
        assert [r.seq async for r in journal.read(from_seq=35)] == list(range(35, 41))
        assert [r async for r in journal.read(from_seq=41)] == []


async def test_reads_past_one_chunk(backend: Backend) -> None:
    await fill(backend, 4_500)
    async with await backend.open() as journal:
        assert [r.seq async for r in journal.read()] == list(range(1, 4_501))


async def test_group_commit_many_concurrent_writers(backend: Backend) -> None:
    tasks, per_task = 50, 40
    async with await backend.open() as journal:
        async def writer(t: int) -> list[tuple[int, str]]:
            acked = []
            for i in range(per_task):
                record = await journal.append(NewOrder(
                    account=f"acct{t}", client_order_id=str(i), symbol=SYMBOL, side=Side.SELL,
                    type=OrderType.LIMIT, price=10_000 + i, qty=1))
                assert isinstance(record.command, NewOrder)
                acked.append((record.seq, f"{record.command.account}/{record.command.client_order_id}"))
            return acked

        results = await asyncio.gather(*(writer(t) for t in range(tasks)))
        acked = dict(pair for result in results for pair in result)
        total = tasks * per_task
        assert sorted(acked) == list(range(1, total + 1))
        for result in results:  # each writer's appends are sequenced in its order
            assert [seq for seq, _ in result] == sorted(seq for seq, _ in result)
        assert journal.stats.appends == total
        assert journal.stats.transactions < total / 5, journal.stats
        stored = {r.seq: f"{r.command.account}/{r.command.client_order_id}"  # type: ignore[union-attr]
                  async for r in journal.read()}
        assert stored == acked
        report = await journal.verify()
        assert (report.ok, report.count) == (True, total)


async def test_reopen_continues_the_chain(backend: Backend) -> None:
    await fill(backend, 10)
    async with await backend.open() as journal:
        assert journal.last_seq == 10
        head = journal.head_hash
        record = await journal.append(order(99))
        assert (record.seq, record.prev_hash) == (11, head)
    async with await backend.open() as journal:
        assert journal.last_seq == 11
        report = await journal.verify()
        assert (report.ok, report.count, report.head_hash) == (True, 11, journal.head_hash)


async def test_closed_journal_refuses_appends(backend: Backend) -> None:
    journal = await backend.open()
    await journal.append(order(1))
    await journal.close()
    with pytest.raises(JournalClosedError, match="closed"):
        await journal.append(order(2))


async def test_close_waits_for_pending_appends(backend: Backend) -> None:
    journal = await backend.open()
    pending = [asyncio.ensure_future(journal.append(order(i))) for i in range(1, 101)]
    await asyncio.sleep(0)
    await journal.close()
    assert sorted((await asyncio.gather(*pending)), key=lambda r: r.seq)[-1].seq == 100
    async with await backend.open() as journal:
        assert journal.last_seq == 100


# -- the chain and tampering -------------------------------------------------------------------------

async def test_verify_counts_a_good_chain(backend: Backend) -> None:
    await fill(backend, 25)
    async with await backend.open() as journal:
        report = await journal.verify()
    assert report.ok and report.count == 25 and report.bad is None


async def test_altered_command_bytes_are_named(backend: Backend) -> None:
    await fill(backend, 20)
    forged = encode_command(order(7, qty=1_000_000))
    await backend.sql("UPDATE journal SET command = ? WHERE seq = ?", forged, 7)
    async with await backend.open() as journal:
        report = await journal.verify()
    assert report.bad is not None
    assert (report.bad.seq, report.bad.problem, report.count) == (7, "hash_mismatch", 6)
    assert "seq 7" in str(report.bad)


async def test_altered_ts_is_named(backend: Backend) -> None:
    await fill(backend, 20)
    await backend.sql("UPDATE journal SET ts = ts + 1 WHERE seq = ?", 12)
    async with await backend.open() as journal:
        report = await journal.verify()
    assert report.bad is not None and (report.bad.seq, report.bad.problem) == (12, "hash_mismatch")


async def test_deleted_record_is_named_as_a_gap(backend: Backend) -> None:
    await fill(backend, 20)
    await backend.sql("DELETE FROM journal WHERE seq = ?", 5)
    async with await backend.open() as journal:
        report = await journal.verify()
    assert report.bad is not None
    assert (report.bad.seq, report.bad.problem, report.count) == (5, "sequence_gap", 4)
    assert "expected seq 5, found seq 6" in report.bad.detail


async def test_rewritten_record_with_a_fresh_hash_breaks_the_next_link(backend: Backend) -> None:
    await fill(backend, 20)
    async with await backend.open() as journal:
        original = await anext(journal.read(from_seq=9))
    forged = encode_command(order(9, qty=777))
    forged_hash = record_hash(original.prev_hash, 9, original.ts, forged)
    await backend.sql("UPDATE journal SET command = ?, hash = ? WHERE seq = ?", forged, forged_hash, 9)
    async with await backend.open() as journal:
        report = await journal.verify()
    assert report.bad is not None and (report.bad.seq, report.bad.problem) == (10, "broken_link")


async def test_truncated_record_is_a_clear_error_naming_its_seq(backend: Backend) -> None:
    await fill(backend, 10)
    async with await backend.open() as journal:
        stored = await anext(journal.read_raw(3))
    await backend.sql("UPDATE journal SET command = ? WHERE seq = ?", stored.command[:-7], 3)
    async with await backend.open() as journal:
        report = await journal.verify()
        assert report.bad is not None and (report.bad.seq, report.bad.problem) == (3, "undecodable")
        with pytest.raises(CorruptRecordError, match="seq 3") as raised:
            _ = [r async for r in journal.read()]
        assert raised.value.seq == 3


async def test_truncated_hash_is_named(backend: Backend) -> None:
    await fill(backend, 10)
    await backend.sql("UPDATE journal SET hash = ? WHERE seq = ?", b"\x01\x02", 4)
    async with await backend.open() as journal:
        report = await journal.verify()
    assert report.bad is not None and (report.bad.seq, report.bad.problem) == (4, "undecodable")


# -- bad input -------------------------------------------------------------------------------------

async def test_missing_journal_is_not_created_when_only_reading(backend: Backend) -> None:
    with pytest.raises(JournalUnavailableError, match="no journal"):
        await open_journal(backend.target, create=False)


async def test_unknown_schema_version_is_refused(backend: Backend) -> None:
    await fill(backend, 1)
    await backend.sql("UPDATE store_meta SET value = '999' WHERE key = 'schema_version'")
    with pytest.raises(SchemaVersionError, match="999"):
        await backend.open()


async def test_unreachable_postgres_is_a_clear_error() -> None:
    with pytest.raises(JournalUnavailableError, match=r"cannot connect to PostgreSQL at postgresql://u@127\.0\.0\.1:1/"):
        await open_journal("postgresql://u:secret@127.0.0.1:1/nothing")


async def test_missing_sqlite_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(JournalUnavailableError, match="no journal at"):
        await open_journal(tmp_path / "absent", create=False)
    assert not (tmp_path / "absent").exists()


async def test_sqlite_url_forms(tmp_path: Path) -> None:
    async with await open_journal(f"sqlite:///{tmp_path}/j.db") as journal:
        await journal.append(order(1))
    assert (tmp_path / "j.db").is_file()
    async with await open_journal(f"sqlite:///{tmp_path}") as journal:
        assert journal.last_seq == 0  # a directory means <dir>/journal.db, which is a new journal
    with pytest.raises(ValueError, match="synchronous"):
        await open_journal(tmp_path, synchronous="sometimes")


async def test_snapshot_seq_must_be_durable(backend: Backend) -> None:
    async with await backend.open() as journal:
        await journal.append(order(1))
        with pytest.raises(ValueError, match="not a durable journal seq"):
            await journal.save_snapshot(5, {"x": 1}, "h")


# -- snapshots and recovery ------------------------------------------------------------------------

async def _recovery_scenario(backend: Backend, steps: list[Step], cut: int, every: int) -> None:
    from tradesim.engine import MatchingEngine
    from tradesim.store.recovery import Snapshotter, recover

    commands = [listing(), *build(steps)]
    cut = cut % (len(commands) + 1)
    reference = MatchingEngine(instruments=[])
    live = MatchingEngine(instruments=[])
    async with await backend.open(snapshots_kept=2) as journal:
        snapshotter = Snapshotter(journal, every=every)
        for command in commands[:cut]:  # the venue: journal, apply, maybe snapshot
            record = await journal.append(command)
            live.apply(command)
            await snapshotter.maybe_save(record.seq, live)
        await journal.append_many(commands[cut:])  # then it dies before applying the rest
        for command in commands:
            reference.apply(command)
    async with await backend.open() as journal:
        engine, last_seq = await recover(journal)
        assert last_seq == len(commands)
        assert engine.state_hash() == reference.state_hash()
        probe = NewOrder(account="zed", client_order_id="probe", symbol=SYMBOL, side=Side.BUY,
                         type=OrderType.MARKET, qty=50, ts=10**9)
        assert engine.apply(probe) == reference.apply(probe)  # and it behaves the same from here on


@given(steps=steps_strategy, cut=st.integers(0, 1_000), every=st.integers(1, 25))
@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_snapshot_plus_tail_recovery_equals_uninterrupted_engine(
        backend: Backend, steps: list[Step], cut: int, every: int) -> None:
    """Property: journal a random stream, snapshot at every `every` commands up to a random cut, stop
    applying there; recovery (newest snapshot + tail) equals an engine that never stopped."""

    async def run() -> None:
        await backend.reset()  # examples share the test's backend
        await _recovery_scenario(backend, steps, cut, every)

    asyncio.run(run())


async def test_recovery_without_snapshot_replays_from_the_start(backend: Backend) -> None:
    from tradesim.engine import MatchingEngine
    from tradesim.store.recovery import recover

    commands = build([("limit", 0, True, 0, 5, 0), ("limit", 1, False, 0, 3, 0),
                      ("cancel", 0, True, 0, 1, 0)])
    async with await backend.open() as journal:
        await journal.append_many(commands)
        engine, last_seq = await recover(journal, instruments=[INSTRUMENT])
    reference = MatchingEngine(instruments=[INSTRUMENT])
    for command in commands:
        reference.apply(command)
    assert last_seq == 3 and engine.state_hash() == reference.state_hash()


async def test_recovery_skips_a_snapshot_that_does_not_restore(backend: Backend) -> None:
    from tradesim.engine import MatchingEngine
    from tradesim.store.recovery import Snapshotter, recover

    commands = [listing(), *build([("limit", i % 3, i % 2 == 0, i % 4, 5, i) for i in range(30)])]
    engine = MatchingEngine(instruments=[])
    async with await backend.open() as journal:
        snapshotter = Snapshotter(journal, every=10)
        for command in commands:
            record = await journal.append(command)
            engine.apply(command)
            await snapshotter.maybe_save(record.seq, engine)
    await backend.sql("UPDATE journal_snapshots SET state_hash = 'bogus' WHERE seq = 30")
    await backend.sql("UPDATE journal_snapshots SET data = ? WHERE seq = 20", b"\xc1garbage")
    async with await backend.open() as journal:
        latest = await journal.latest_snapshot()
        assert latest is not None and latest.seq == 30
        recovered, last_seq = await recover(journal)
    assert last_seq == 31 and recovered.state_hash() == engine.state_hash()


async def test_recovery_refuses_a_tampered_tail(backend: Backend) -> None:
    from tradesim.store.recovery import recover

    await fill(backend, 12)
    await backend.sql("UPDATE journal SET command = ? WHERE seq = ?", encode_command(order(8, qty=3)), 8)
    async with await backend.open() as journal:
        with pytest.raises(CorruptRecordError, match="seq 8"):
            await recover(journal)


async def test_a_failed_group_fails_its_callers_and_closes_the_journal(pg_url: str) -> None:
    import asyncpg

    journal = await open_journal(pg_url)
    await journal.append(order(1))
    admin = await asyncpg.connect(pg_url)
    try:  # the database goes away under the writer: kill every other session on it
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    finally:
        await admin.close()
    with pytest.raises(JournalClosedError, match="outcome of the last group is unknown"):
        await journal.append(order(2))
    with pytest.raises(JournalClosedError, match="failed earlier"):
        await journal.append(order(3))
    await journal.close()
    async with await open_journal(pg_url) as reopened:  # what is durable is intact
        assert reopened.last_seq == 1 and (await reopened.verify()).ok


async def test_ill_typed_commands_are_refused_before_they_reach_the_journal(backend: Backend) -> None:
    from tradesim.store import InvalidCommandError

    bad = NewOrder(account="a", client_order_id="x", symbol=SYMBOL, side="sideways",  # type: ignore[arg-type]
                   type=OrderType.LIMIT, price=1, qty=1)
    async with await backend.open() as journal:
        with pytest.raises(InvalidCommandError, match=r"Invalid enum value 'sideways' - at `\$.side`"):
            await journal.append(bad)
        with pytest.raises(InvalidCommandError):
            await journal.append_many([order(1), bad])
        assert (await journal.append(order(2))).seq == 1
        assert (await journal.verify()).count == 1
