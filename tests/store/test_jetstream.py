"""The JetStream journal on a private nats-server: append/read/verify/reopen, the single writer enforced by
the server, retried publishes stored once, tampering detected, snapshots, bad input; and the PostgreSQL
mirror (exact copy, resume, divergence, one active copier)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
import nats
import pytest
from nats.js import api

from tests.store.conftest import pg_url  # noqa: F401  (fixture)
from tests.store.streams import SYMBOL, listing
from tests.support.nats_server import nats_server, nats_url  # noqa: F401  (fixtures)
from tradesim.cli import main as cli_main
from tradesim.domain import Command, NewOrder, OrderType, Side
from tradesim.store import (
    GENESIS_HASH,
    CorruptRecordError,
    JournalClosedError,
    JournalRecord,
    JournalUnavailableError,
    open_journal,
)
from tradesim.store.chain import record_hash
from tradesim.store.jetstream import (
    InvalidJournalURLError,
    JetStreamJournal,
    JournalFencedError,
    JournalMirror,
    MirrorDivergedError,
    decode_record,
    encode_record,
    parse_url,
)
from tradesim.store.postgres import PostgresJournal
from tradesim.store.recovery import Snapshotter, recover

pytestmark = pytest.mark.timeout(120)


def order(i: int, qty: int = 10) -> NewOrder:
    return NewOrder(account="alice", client_order_id=f"o{i}", symbol=SYMBOL, side=Side.BUY if i % 2 else Side.SELL,
                    type=OrderType.LIMIT, price=10_000 + i % 3, qty=qty, ts=i)


def shard() -> str:
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
async def raw(nats_url: str) -> AsyncIterator[nats.NATS]:  # noqa: F811
    """A plain nats-py connection, to do to the stream what the journal never would."""
    nc = await nats.connect(nats_url)
    try:
        yield nc
    finally:
        await nc.close()


async def fill(url: str, name: str, n: int, **options: object) -> list[Command]:
    commands: list[Command] = [listing(), *[order(i) for i in range(1, n)]]
    async with await JetStreamJournal.open(url, shard=name, **options) as journal:  # type: ignore[arg-type]
        await journal.append_many(commands)
    return commands


# -- appending, reading, reopening --------------------------------------------------------------------

async def test_append_read_verify_reopen(nats_url: str) -> None:  # noqa: F811
    name = shard()
    url = f"{nats_url}?shard={name}"
    async with await open_journal(url) as journal:
        assert isinstance(journal, JetStreamJournal)
        assert (journal.last_seq, journal.head_hash) == (0, GENESIS_HASH)
        assert journal.stream == f"JOURNAL_{name}" and journal.subject == f"journal.{name}"
        records = [await journal.append(order(i), ts=1_000 + i) for i in range(1, 31)]
        records += await journal.append_many([order(i) for i in range(31, 41)], ts=5)
        assert [r.seq for r in records] == list(range(1, 41))
        assert records[0].prev_hash == GENESIS_HASH
        for before, after in itertools.pairwise(records):
            assert after.prev_hash == before.hash
            assert after.hash == record_hash(before.hash, after.seq, after.ts, journal.encode(after.command))
        assert [r async for r in journal.read()] == records
        assert [r.seq async for r in journal.read(from_seq=35)] == list(range(35, 41))
        assert [r async for r in journal.read(from_seq=41)] == []
        report = await journal.verify()
        assert report.ok and report.count == 40 and report.head_hash == records[-1].hash
        stored = await journal.record_at(17)  # the stream's sequence is the journal's
        assert stored is not None and (stored.seq, stored.hash) == (17, records[16].hash)
        assert await journal.stream_end() == 40
    async with await open_journal(url) as journal:
        assert (journal.last_seq, journal.head_hash) == (40, records[-1].hash)
        record = await journal.append(order(41))
        assert (record.seq, record.prev_hash) == (41, records[-1].hash)
        assert (await journal.verify()).count == 41


async def test_reads_past_one_chunk(nats_url: str) -> None:  # noqa: F811
    name = shard()
    await fill(nats_url, name, 4_500)
    async with await JetStreamJournal.open(nats_url, shard=name) as journal:
        assert [r.seq async for r in journal.read()] == list(range(1, 4_501))
        assert [r.seq async for r in journal.read(from_seq=4_000)] == list(range(4_000, 4_501))


async def test_group_commit_with_many_concurrent_writers(nats_url: str) -> None:  # noqa: F811
    async with await JetStreamJournal.open(nats_url, shard=shard()) as journal:
        async def writer(t: int) -> list[int]:
            return [(await journal.append(order(t * 1000 + i))).seq for i in range(40)]

        seqs = await asyncio.gather(*(writer(t) for t in range(50)))
        assert sorted(itertools.chain.from_iterable(seqs)) == list(range(1, 2_001))
        assert all(s == sorted(s) for s in seqs)  # each writer's appends keep their order
        assert journal.stats.transactions < journal.stats.appends
        report = await journal.verify()
        assert report.ok and report.count == 2_000


async def test_close_waits_for_pending_appends(nats_url: str) -> None:  # noqa: F811
    name = shard()
    journal = await JetStreamJournal.open(nats_url, shard=name)
    pending = [asyncio.ensure_future(journal.append(order(i))) for i in range(1, 201)]
    await asyncio.sleep(0)
    await journal.close()
    assert [p.result().seq for p in pending] == list(range(1, 201))
    with pytest.raises(JournalClosedError):
        await journal.append(order(1))
    async with await JetStreamJournal.open(nats_url, shard=name) as again:
        assert again.last_seq == 200


async def test_a_borrowed_bus_is_not_closed(nats_url: str) -> None:  # noqa: F811
    from tradesim.bus.nats import NatsBus

    bus = await NatsBus.connect(nats_url)
    try:
        async with await JetStreamJournal.open(bus, shard=shard()) as journal:
            await journal.append(order(1))
        assert not bus.nc.is_closed
    finally:
        await bus.close()


# -- one writer, enforced by the server -----------------------------------------------------------------

async def test_a_second_writer_is_refused_and_changes_nothing(nats_url: str) -> None:  # noqa: F811
    name = shard()
    first = await JetStreamJournal.open(nats_url, shard=name)
    second = await JetStreamJournal.open(nats_url, shard=name)  # both believe the stream is empty
    try:
        written = await first.append_many([listing(), order(1), order(2)])
        with pytest.raises(JournalClosedError, match="another writer appended"):
            await second.append(order(99))
        assert isinstance(second.failure, JournalFencedError)
        with pytest.raises(JournalClosedError):  # fail-stop: it accepts nothing any more
            await second.append(order(100))
        assert await first.stream_end() == 3
        assert [r async for r in first.read()] == written  # nothing of the second writer is there
        assert (await first.append(order(3))).seq == 4  # the real writer goes on
    finally:
        await first.close()
        await second.close()


async def test_a_stale_writer_is_fenced_once_the_new_one_appended(nats_url: str) -> None:  # noqa: F811
    name = shard()
    await fill(nats_url, name, 10)
    old = await JetStreamJournal.open(nats_url, shard=name)
    new = await JetStreamJournal.open(nats_url, shard=name)
    try:
        assert old.last_seq == new.last_seq == 10
        taken = await new.append_many([order(i) for i in range(11, 21)])  # the new leader writes
        results = await asyncio.gather(*(old.append(order(i)) for i in range(50, 60)), return_exceptions=True)
        assert all(isinstance(r, JournalClosedError) for r in results)
        assert isinstance(old.failure, JournalFencedError)
        assert "refused seq 11" in str(old.failure)
        assert [r async for r in new.read(11)] == taken
        report = await new.verify()
        assert report.ok and report.count == 20
    finally:
        await old.close()
        await new.close()


async def test_two_writers_racing_with_pipelined_groups_never_fork_the_chain(nats_url: str) -> None:  # noqa: F811
    for _round in range(6):
        name = shard()
        await fill(nats_url, name, 3)
        one = await JetStreamJournal.open(nats_url, shard=name, max_batch=40)
        two = await JetStreamJournal.open(nats_url, shard=name, max_batch=40)
        try:
            async def write(journal: JetStreamJournal, base: int) -> list[JournalRecord]:
                stored: list[JournalRecord] = []
                for k in range(5):
                    try:
                        stored += await journal.append_many([order(base + k * 100 + i) for i in range(40)])
                    except JournalClosedError:
                        break
                return stored

            got_one, got_two = await asyncio.gather(write(one, 10_000), write(two, 20_000))
            async with await JetStreamJournal.open(nats_url, shard=name) as audit:
                report = await audit.verify()
                assert report.ok, report.bad
                in_stream = {r.seq: r async for r in audit.read()}
            assert report.count == len(in_stream) == 3 + len(got_one) + len(got_two)
            for record in got_one + got_two:  # whatever a writer was told is stored, is there as it was told
                assert in_stream[record.seq] == record
        finally:
            await one.close()
            await two.close()


async def test_a_record_pipelined_behind_one_in_flight_is_refused_after_a_rivals_record(
        nats_url: str, raw: nats.NATS) -> None:  # noqa: F811
    """A stale writer has records 3 and 4 in flight; a rival's record takes seq 3 first. Record 4 counts
    right (the stream is at 3) but must not chain onto the rival's record: the server refuses it by msg id."""
    name = shard()
    async with await JetStreamJournal.open(nats_url, shard=name) as journal:
        head = (await journal.append_many([listing(), order(1)]))[-1].hash
        stale = [journal.encode(order(3)), journal.encode(order(4))]
        hash3 = record_hash(head, 3, 3, stale[0])
        row4 = (4, 4, stale[1], hash3, record_hash(hash3, 4, 4, stale[1]))
        rival = await journal.append(order(30))  # takes seq 3
        data, _reply, headers = journal._publish_args(row4, after_stored=False)
        with pytest.raises(nats.js.errors.APIError, match="wrong last msg ID"):
            await raw.jetstream().publish(journal.subject, data, headers=headers)
        assert await journal.stream_end() == 3
        report = await journal.verify()
        assert report.ok and report.head_hash == rival.hash


async def test_take_over_continues_from_a_verified_head(nats_url: str) -> None:  # noqa: F811
    name = shard()
    async with await JetStreamJournal.open(nats_url, shard=name) as leader, \
            await JetStreamJournal.open(nats_url, shard=name) as successor:
        records = await leader.append_many([listing(), order(1), order(2)])
        successor.take_over(records[-1].seq, records[-1].hash)  # what a caught-up standby hands over
        record = await successor.append(order(3))
        assert (record.seq, record.prev_hash) == (4, records[-1].hash)
        with pytest.raises(JournalClosedError):
            await leader.append(order(4))
        assert isinstance(leader.failure, JournalFencedError)
        assert (await successor.verify()).count == 4


# -- retried publishes ----------------------------------------------------------------------------------

async def test_a_retried_publish_is_stored_once(nats_url: str, raw: nats.NATS) -> None:  # noqa: F811
    name = shard()
    async with await JetStreamJournal.open(nats_url, shard=name) as journal:
        record = await journal.append(listing())
        data, _reply, headers = journal._publish_args(
            (record.seq, record.ts, journal.encode(record.command), record.prev_hash, record.hash))
        ack = await raw.jetstream().publish(journal.subject, data, headers=headers)  # the same record again
        assert ack.duplicate and ack.seq == 1
        assert await journal.stream_end() == 1
        # a different record for the same seq is no duplicate: refused by the expected last sequence
        other = encode_record(1, record.ts + 1, journal.encode(order(1)), GENESIS_HASH, bytes(32))
        with pytest.raises(nats.js.errors.APIError, match="wrong last sequence"):
            await raw.jetstream().publish(journal.subject, other, headers={
                "Nats-Msg-Id": f"1-{bytes(32).hex()}", "Nats-Expected-Last-Sequence": "0"})
        assert (await journal.append(order(2))).seq == 2


class LossyAcksJournal(JetStreamJournal):
    """Loses the first PubAck of every record on its way back (as a dropped connection would): the server
    stored the record, the writer does not know and must republish it."""

    lost: set[int]

    async def _on_ack(self, msg: Any) -> None:
        seq = int(msg.subject.rpartition(".")[2])
        if seq not in self.lost:
            self.lost.add(seq)
            return
        await super()._on_ack(msg)


async def test_republishing_after_lost_acks_stores_each_record_once(
        nats_url: str, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    name = shard()
    journal = await LossyAcksJournal.open(nats_url, shard=name, ack_timeout=0.2, write_timeout=30)
    journal.lost = set()
    try:
        with caplog.at_level(logging.WARNING, logger="tradesim.store.jetstream"):
            records = await journal.append_many([listing(), *[order(i) for i in range(1, 300)]])
            more = await journal.append(order(300))
        assert "republishing from seq 1" in caplog.text
        assert [r.seq for r in records] == list(range(1, 301)) and more.seq == 301
        assert journal.lost == set(range(1, 302))
        assert await journal.stream_end() == 301  # every record once, although each was published twice
        report = await journal.verify()
        assert report.ok and report.count == 301
    finally:
        await journal.close()


# -- tampering -------------------------------------------------------------------------------------------

async def test_a_record_with_a_wrong_hash_is_detected(nats_url: str, raw: nats.NATS) -> None:  # noqa: F811
    name = shard()
    await fill(nats_url, name, 5)
    async with await JetStreamJournal.open(nats_url, shard=name) as journal:
        # a rogue writer appends seq 6 with a well-formed body but a made-up hash
        forged = encode_record(6, 6, journal.encode(order(6)), journal.head_hash, b"\x01" * 32)
        await raw.jetstream().publish(journal.subject, forged, headers={"Nats-Expected-Last-Sequence": "5"})
        report = await journal.verify()
        assert report.bad is not None and (report.bad.seq, report.bad.problem) == (6, "hash_mismatch")
        assert report.count == 5
    with pytest.raises(CorruptRecordError, match="seq 6"):
        await JetStreamJournal.open(nats_url, shard=name)


async def test_a_forged_record_with_a_fresh_hash_breaks_the_link(nats_url: str, raw: nats.NATS) -> None:  # noqa: F811
    name = shard()
    await fill(nats_url, name, 5)
    async with await JetStreamJournal.open(nats_url, shard=name) as journal:
        command = journal.encode(order(6))
        prev = b"\x02" * 32  # chained to something else than record 5
        await raw.jetstream().publish(journal.subject, encode_record(6, 6, command, prev,
                                                                    record_hash(prev, 6, 6, command)))
        report = await journal.verify()
        assert report.bad is not None and (report.bad.seq, report.bad.problem) == (6, "broken_link")


async def test_a_deleted_record_is_a_gap(nats_url: str, raw: nats.NATS) -> None:  # noqa: F811
    name = shard()
    await fill(nats_url, name, 10, deny_delete=False)
    async with await JetStreamJournal.open(nats_url, shard=name) as journal:
        await raw.jetstream().delete_msg(journal.stream, 4)
        assert await journal.record_at(4) is None
        report = await journal.verify()
        assert report.bad is not None and (report.bad.seq, report.bad.problem) == (4, "sequence_gap")
        assert report.count == 3
    with pytest.raises(CorruptRecordError):  # the tail check at open sees it too
        await JetStreamJournal.open(nats_url, shard=name)


async def test_a_message_that_is_no_record_is_named(nats_url: str, raw: nats.NATS) -> None:  # noqa: F811
    name = shard()
    await fill(nats_url, name, 3)
    async with await JetStreamJournal.open(nats_url, shard=name) as journal:
        await raw.jetstream().publish(journal.subject, b"not a record")
        report = await journal.verify()
        assert report.bad is not None and (report.bad.seq, report.bad.problem) == (4, "undecodable")
        assert decode_record(b"not a record", 4).hash == b""


async def test_the_journal_stream_refuses_deletes_by_default(nats_url: str, raw: nats.NATS) -> None:  # noqa: F811
    name = shard()
    await fill(nats_url, name, 3)
    with pytest.raises(nats.js.errors.APIError, match="not permitted"):
        await raw.jetstream().delete_msg(f"JOURNAL_{name}", 2)
    info = await raw.jetstream().stream_info(f"JOURNAL_{name}")
    assert info.config.storage == api.StorageType.FILE and info.config.deny_purge


# -- snapshots ---------------------------------------------------------------------------------------

async def test_snapshots_are_kept_in_the_object_store_and_pruned(nats_url: str) -> None:  # noqa: F811
    name = shard()
    async with await JetStreamJournal.open(nats_url, shard=name, snapshots_kept=2) as journal:
        assert await journal.latest_snapshot() is None
        await journal.append_many([listing(), *[order(i) for i in range(1, 50)]])
        for seq in (10, 20, 30):
            await journal.save_snapshot(seq, {"at": seq}, f"hash-{seq}")
        latest = await journal.latest_snapshot()
        assert latest is not None and (latest.seq, latest.state_hash) == (30, "hash-30")
        assert msgspec.msgpack.decode(latest.data) == {"at": 30}
        older = await journal.latest_snapshot(max_seq=29)
        assert older is not None and older.seq == 20
        assert await journal.latest_snapshot(max_seq=19) is None  # pruned: two kept
        with pytest.raises(ValueError, match="not a durable journal seq"):
            await journal.save_snapshot(51, {}, "x")
    async with await JetStreamJournal.open(nats_url, shard=name) as reader:  # another process finds them
        found = await reader.latest_snapshot()
        assert found is not None and found.seq == 30


async def test_recovery_from_snapshot_and_tail_equals_the_engine(nats_url: str) -> None:  # noqa: F811
    from tradesim.engine import MatchingEngine

    name = shard()
    engine = MatchingEngine()
    async with await JetStreamJournal.open(nats_url, shard=name) as journal:
        snapshots = Snapshotter(journal, every=25)
        for command in [listing(), *[order(i, qty=1 + i % 7) for i in range(1, 80)]]:
            record = await journal.append(command, ts=getattr(command, "ts", 0))
            engine.apply(record.command)
            await snapshots.maybe_save(record.seq, engine)
    async with await JetStreamJournal.open(nats_url, shard=name) as journal:
        assert (await journal.latest_snapshot()) is not None
        recovered, last_seq = await recover(journal)
        assert last_seq == 80
        assert recovered.state_hash() == engine.state_hash()


# -- bad input ---------------------------------------------------------------------------------------

async def test_bad_urls_are_clear_errors(nats_url: str) -> None:  # noqa: F811
    for url, message in ((f"{nats_url}?shard=a.b", "invalid journal shard"),
                         (f"{nats_url}?shard=", "invalid journal shard"),
                         (f"{nats_url}?replicas=9", "replicas must be 1 to 5"),
                         (f"{nats_url}?stream=x", "unknown parameter")):
        with pytest.raises(InvalidJournalURLError, match=message):
            await open_journal(url)
    assert parse_url("nats://h:1,nats://h:2?shard=s1&replicas=3") == ("nats://h:1,nats://h:2", "s1", 3)
    assert parse_url("nats://h:1") == ("nats://h:1", "main", 1)


async def test_missing_stream_is_not_created_when_only_reading(nats_url: str) -> None:  # noqa: F811
    with pytest.raises(JournalUnavailableError, match="no journal stream"):
        await open_journal(f"{nats_url}?shard={shard()}", create=False)


async def test_unreachable_server_is_a_clear_error() -> None:
    from tradesim.bus.natsserver import free_port

    with pytest.raises(JournalUnavailableError, match="cannot connect"):
        await open_journal(f"nats://127.0.0.1:{free_port()}?shard=x")


async def test_audit_verify_reads_a_jetstream_journal(nats_url: str, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    name = shard()
    await fill(nats_url, name, 12)
    code = await asyncio.to_thread(cli_main, ["audit", "verify", "--db", f"{nats_url}?shard={name}"])
    assert code == 0
    assert "ok: 12 records" in capsys.readouterr().out


# -- the PostgreSQL mirror ----------------------------------------------------------------------------

async def pg_rows(url: str) -> list[tuple[int, int, bytes, bytes, bytes]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT seq, ts, command, prev_hash, hash FROM journal ORDER BY seq")
    finally:
        await conn.close()
    return [(r[0], r[1], bytes(r[2]), bytes(r[3]), bytes(r[4])) for r in rows]


async def stream_rows(journal: JetStreamJournal) -> list[tuple[int, int, bytes, bytes, bytes]]:
    return [(r.seq, r.ts, r.command, r.prev_hash, r.hash) async for r in journal.read_raw()]


async def test_the_mirror_copies_exactly_and_resumes(nats_url: str, pg_url: str,  # noqa: F811
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    name = shard()
    async with await JetStreamJournal.open(nats_url, shard=name) as journal:
        await journal.append_many([listing(), *[order(i) for i in range(1, 150)]])
        mirror = JournalMirror(journal, pg_url, batch=64)
        await mirror.start()
        try:
            assert await mirror.sync() == 150
            for i in range(150, 400):  # live records while it runs, in groups of all sizes
                await journal.append(order(i))
            await journal.append_many([order(i) for i in range(400, 700)])
            assert await mirror.sync() == 700
            assert mirror.lag.records == 0 and mirror.active
        finally:
            await mirror.stop()
        assert await pg_rows(pg_url) == await stream_rows(journal)
        await journal.append_many([order(i) for i in range(700, 750)])  # while no mirror runs
        again = JournalMirror(journal, pg_url)
        await again.start()
        try:
            assert again.mirrored_seq == 700  # resumes after what PostgreSQL holds
            assert await again.sync() == 750
        finally:
            await again.stop()
        assert await pg_rows(pg_url) == await stream_rows(journal)
    async with await PostgresJournal.open(pg_url, create=False) as copy:
        report = await copy.verify()
        assert report.ok and report.count == 750
    code = await asyncio.to_thread(cli_main, ["audit", "verify", "--db", pg_url])
    assert code == 0 and "ok: 750 records" in capsys.readouterr().out


async def test_a_diverged_mirror_is_refused(nats_url: str, pg_url: str) -> None:  # noqa: F811
    name = shard()
    async with await JetStreamJournal.open(nats_url, shard=name) as journal:
        await journal.append_many([listing(), *[order(i) for i in range(1, 20)]])
        mirror = JournalMirror(journal, pg_url)
        await mirror.start()
        await mirror.sync()
        await mirror.stop()
        conn = await asyncpg.connect(pg_url)
        try:
            await conn.execute("UPDATE journal SET hash = $1 WHERE seq = 20", b"\x07" * 32)
        finally:
            await conn.close()
        await journal.append(order(20))
        again = JournalMirror(journal, pg_url)
        await again.start()
        try:
            with pytest.raises(Exception, match=r"mirror .* failed") as caught:
                await again.sync()
            assert isinstance(again.failure, MirrorDivergedError)
            assert "ends at seq 20" in str(caught.value)
        finally:
            await again.stop()
        assert len(await pg_rows(pg_url)) == 20  # nothing was copied after the mismatch


async def test_only_one_mirror_copies_at_a_time(nats_url: str, pg_url: str) -> None:  # noqa: F811
    name = shard()
    async with await JetStreamJournal.open(nats_url, shard=name) as journal:
        first, second = JournalMirror(journal, pg_url, retry_delay=0.05), JournalMirror(journal, pg_url,
                                                                                          retry_delay=0.05)
        await first.start()
        await journal.append_many([listing(), *[order(i) for i in range(1, 100)]])
        assert await first.sync() == 100
        await second.start()
        await journal.append_many([order(i) for i in range(100, 200)])
        assert await first.sync() == 200
        assert first.active and not second.active
        await first.stop()  # the lock passes to the second, which resumes where the first stopped
        await journal.append_many([order(i) for i in range(200, 250)])
        try:
            assert await second.sync() == 250
            assert second.active
        finally:
            await second.stop()
        assert await pg_rows(pg_url) == await stream_rows(journal)
