"""The warm standby venue on a private nats-server: it follows the journal stream live or from a snapshot,
its engine equals a from-scratch replay (state hash) after random bursts, it stops at a gap, a duplicate
or a forged record, and it is promoted to a journal writer that fences the old leader."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal

import nats
import pytest
from hypothesis import HealthCheck, given, settings

from tests.engine.strategies import Scenario, scenarios
from tests.store.streams import listing, random_commands
from tests.support.nats_server import nats_server, nats_url  # noqa: F401  (fixtures)
from tradesim.bus import open_bus
from tradesim.domain import AddInstrument, Command, Event, Instrument, NewOrder, OrderType, Side, TimeInForce
from tradesim.engine import MatchingEngine
from tradesim.services.venue import RPC_SUBMIT, VenueReply, VenueService
from tradesim.services.venue.standby import StandbyError, VenueStandby
from tradesim.store import CorruptRecordError, JournalClosedError, JournalRecord
from tradesim.store.jetstream import JetStreamJournal, JournalFencedError, encode_record
from tradesim.store.recovery import Snapshotter, recover

pytestmark = pytest.mark.timeout(180)


def shard() -> str:
    return "s" + uuid.uuid4().hex[:12]


class Leader:
    """What the venue does with each command, minus the bus: apply to its engine, journal it."""

    def __init__(self, journal: JetStreamJournal, snapshot_every: int | None = None) -> None:
        self.journal = journal
        self.engine = MatchingEngine()
        self.events: list[Event] = []
        self.snapshots = Snapshotter(journal, snapshot_every) if snapshot_every else None

    async def run(self, commands: Sequence[Command]) -> None:
        for command in commands:
            self.events += self.engine.apply(command)
        records = await self.journal.append_many(list(commands), ts=None)
        if self.snapshots is not None:
            # a snapshot of a state we passed would need a copy per seq; take it at the group's end
            await self.snapshots.maybe_save(records[-1].seq, self.engine)


async def replayed(nats_url: str, name: str) -> tuple[str, int]:  # noqa: F811
    """State hash and seq of a from-scratch replay of the whole journal (no snapshot)."""
    engine = MatchingEngine()
    last = 0
    async with await JetStreamJournal.open(nats_url, shard=name, create=False) as journal:
        async for record in journal.read():
            engine.apply(record.command)
            last = record.seq
    return engine.state_hash(), last


@pytest.fixture
async def raw(nats_url: str) -> AsyncIterator[nats.NATS]:  # noqa: F811
    nc = await nats.connect(nats_url)
    try:
        yield nc
    finally:
        await nc.close()


async def wait_until(predicate: object, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


# -- following -----------------------------------------------------------------------------------------

async def test_a_live_standby_and_a_late_one_equal_a_replay_after_a_random_burst(nats_url: str) -> None:  # noqa: F811
    name = shard()
    rng = random.Random(8)
    async with await JetStreamJournal.open(nats_url, shard=name) as leader_journal, \
            await JetStreamJournal.open(nats_url, shard=name) as live_journal:
        leader = Leader(leader_journal)
        live = VenueStandby(live_journal)
        await live.start()
        try:
            await leader.run([listing()])
            for burst in range(10):  # groups of many sizes while the standby follows
                await leader.run(random_commands(rng, rng.randint(1, 400), start=burst * 1_000))
            engine = await live.catch_up()
            assert live.last_seq == leader_journal.last_seq
            assert live.head_hash == leader_journal.head_hash
            assert engine.state_hash() == leader.engine.state_hash()
            assert (engine.state_hash(), live.last_seq) == await replayed(nats_url, name)
            assert live.lag.records == 0 and live.following
            async with await JetStreamJournal.open(nats_url, shard=name) as late_journal:
                late = VenueStandby(late_journal)  # starts after everything was written
                await late.start()
                try:
                    assert (await late.catch_up()).state_hash() == leader.engine.state_hash()
                finally:
                    await late.stop()
        finally:
            await live.stop()


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                HealthCheck.too_slow])
@given(scenario=scenarios(min_commands=5, max_commands=80))
def test_the_standby_equals_the_leader_on_every_kind_of_command(nats_url: str, scenario: Scenario) -> None:  # noqa: F811
    async def run() -> None:
        name = shard()
        async with await JetStreamJournal.open(nats_url, shard=name) as leader_journal, \
                await JetStreamJournal.open(nats_url, shard=name) as standby_journal:
            leader = Leader(leader_journal)
            standby = VenueStandby(standby_journal)
            await standby.start()
            try:
                await leader.run([AddInstrument(instrument=i) for i in scenario.instruments])
                commands = list(scenario.commands)
                while commands:
                    await leader.run(commands[:7])
                    del commands[:7]
                assert (await standby.catch_up()).state_hash() == leader.engine.state_hash()
                assert standby.events_after(0) == leader.events
            finally:
                await standby.stop()

    asyncio.run(run())


async def test_a_standby_starts_from_the_newest_snapshot_and_applies_the_tail(nats_url: str) -> None:  # noqa: F811
    name = shard()
    rng = random.Random(3)
    async with await JetStreamJournal.open(nats_url, shard=name) as journal:
        leader = Leader(journal, snapshot_every=500)
        await leader.run([listing()])
        for burst in range(8):
            await leader.run(random_commands(rng, 300, start=burst * 1_000))
        snapshot = await journal.latest_snapshot()
        assert snapshot is not None and 500 <= snapshot.seq <= journal.last_seq
        async with await JetStreamJournal.open(nats_url, shard=name) as standby_journal:
            standby = VenueStandby(standby_journal)
            await standby.start()
            try:
                assert standby.snapshot_seq == snapshot.seq
                await leader.run(random_commands(rng, 200, start=50_000))  # the tail keeps growing
                engine = await standby.catch_up()
                assert engine.state_hash() == leader.engine.state_hash()
                assert (engine.state_hash(), standby.last_seq) == await replayed(nats_url, name)
                with pytest.raises(LookupError, match="not kept"):  # events before the snapshot were never seen
                    standby.events_after(0)
            finally:
                await standby.stop()


async def test_lag_and_the_apply_hook(nats_url: str) -> None:  # noqa: F811
    name = shard()
    seen: list[tuple[int, int]] = []

    def on_apply(record: JournalRecord, events: list[Event]) -> None:
        seen.append((record.seq, len(events)))

    async with await JetStreamJournal.open(nats_url, shard=name) as journal, \
            await JetStreamJournal.open(nats_url, shard=name) as standby_journal:
        leader = Leader(journal)
        standby = VenueStandby(standby_journal, on_apply=on_apply)
        await standby.start()
        try:
            await leader.run([listing(), *random_commands(random.Random(5), 200)])
            await wait_until(lambda: standby.last_seq == 201)  # applied as it arrives, no catch_up needed
            assert [s for s, _ in seen] == list(range(1, 202))
            lag = standby.lag
            assert lag.records == 0 and lag.delay_ms >= 0
        finally:
            await standby.stop()


# -- what a standby refuses ------------------------------------------------------------------------------

async def test_a_gap_in_the_stream_stops_the_standby(nats_url: str, raw: nats.NATS) -> None:  # noqa: F811
    name = shard()
    async with await JetStreamJournal.open(nats_url, shard=name, deny_delete=False) as journal:
        await Leader(journal).run([listing(), *random_commands(random.Random(1), 20)])
        await raw.jetstream().delete_msg(journal.stream, 9)
        async with await JetStreamJournal.open(nats_url, shard=name, verify_tail=5) as standby_journal:
            standby = VenueStandby(standby_journal)
            await standby.start()
            try:
                with pytest.raises(CorruptRecordError, match="expected seq 9, found seq 10") as caught:
                    await standby.catch_up()
                assert caught.value.seq == 9
                assert standby.last_seq == 8 and not standby.following
                assert isinstance(standby.failure, CorruptRecordError)
            finally:
                await standby.stop()


async def test_a_live_duplicate_or_forged_record_stops_the_standby(nats_url: str, raw: nats.NATS) -> None:  # noqa: F811
    name = shard()
    async with await JetStreamJournal.open(nats_url, shard=name) as journal, \
            await JetStreamJournal.open(nats_url, shard=name) as standby_journal:
        await Leader(journal).run([listing(), *random_commands(random.Random(2), 10)])
        standby = VenueStandby(standby_journal)
        await standby.start()
        try:
            await wait_until(lambda: standby.last_seq == 11)
            tail = await journal.record_at(11)
            assert tail is not None
            # a rogue writer re-appends record 11 (a duplicate in the journal's own seqs) at stream seq 12
            await raw.jetstream().publish(journal.subject, encode_record(
                tail.seq, tail.ts, tail.command, tail.prev_hash, tail.hash),
                headers={"Nats-Expected-Last-Sequence": "11"})
            await wait_until(lambda: standby.failure is not None)
            assert isinstance(standby.failure, CorruptRecordError)
            assert "seq 11 out of order" in str(standby.failure)
            assert standby.last_seq == 11
            with pytest.raises(CorruptRecordError):
                await standby.catch_up()
        finally:
            await standby.stop()


async def test_a_record_with_a_wrong_hash_stops_the_standby(nats_url: str, raw: nats.NATS) -> None:  # noqa: F811
    name = shard()
    async with await JetStreamJournal.open(nats_url, shard=name) as journal, \
            await JetStreamJournal.open(nats_url, shard=name) as standby_journal:
        await Leader(journal).run([listing(), *random_commands(random.Random(4), 10)])
        standby = VenueStandby(standby_journal)
        await standby.start()
        try:
            forged = encode_record(12, 12, journal.encode(random_commands(random.Random(9), 1)[0]),
                                   journal.head_hash, b"\x05" * 32)
            await raw.jetstream().publish(journal.subject, forged, headers={"Nats-Expected-Last-Sequence": "11"})
            with pytest.raises(CorruptRecordError, match="hash mismatch"):
                await standby.catch_up()
            assert standby.last_seq == 11 and isinstance(standby.failure, CorruptRecordError)
        finally:
            await standby.stop()


# -- taking over ----------------------------------------------------------------------------------------

async def test_promotion_hands_over_engine_and_journal_and_fences_the_old_leader(nats_url: str) -> None:  # noqa: F811
    name = shard()
    rng = random.Random(11)
    async with await JetStreamJournal.open(nats_url, shard=name) as old_journal, \
            await JetStreamJournal.open(nats_url, shard=name) as standby_journal:
        old = Leader(old_journal)
        standby = VenueStandby(standby_journal)
        await standby.start()
        await old.run([listing(), *random_commands(rng, 300)])
        published_up_to = old.events[len(old.events) // 2].seq  # the old leader published half its events
        engine, last_seq = await standby.promote()
        assert last_seq == old_journal.last_seq == 301 and not standby.following
        assert engine.state_hash() == old.engine.state_hash()
        assert standby.events_after(published_up_to) == [e for e in old.events if e.seq > published_up_to]
        with pytest.raises(StandbyError, match="promoted"):
            await standby.catch_up()
        # the new leader appends right after the old one's last record ...
        command = random_commands(rng, 1, start=9_000)[0]
        record = await standby_journal.append(command)
        assert (record.seq, record.prev_hash) == (302, old_journal.head_hash)
        engine.apply(command)
        # ... and the old one, still believing it leads, cannot append any more
        with pytest.raises(JournalClosedError):
            await old_journal.append(random_commands(rng, 1, start=9_500)[0])
        assert isinstance(old_journal.failure, JournalFencedError)
        assert (engine.state_hash(), 302) == await replayed(nats_url, name)


async def test_a_promotion_racing_a_leader_that_still_writes_never_forks_the_chain(nats_url: str) -> None:  # noqa: F811
    name = shard()
    rng = random.Random(12)
    async with await JetStreamJournal.open(nats_url, shard=name) as old_journal, \
            await JetStreamJournal.open(nats_url, shard=name) as standby_journal:
        old = Leader(old_journal)
        await old.run([listing()])
        standby = VenueStandby(standby_journal)
        await standby.start()
        stop = asyncio.Event()

        async def keep_writing() -> None:  # a paused-and-resumed former leader, say
            n = 0
            while not stop.is_set():
                try:
                    await old.run(random_commands(rng, 5, start=n))
                except JournalClosedError:
                    return
                n += 5
                await asyncio.sleep(0.001)

        writer = asyncio.create_task(keep_writing())
        new_record = None
        try:
            await wait_until(lambda: standby.last_seq > 50)
            try:
                await standby.promote(timeout=0.5)
            except StandbyError as exc:  # the stream kept growing for the whole timeout
                assert "kept growing" in str(exc)
            else:
                try:
                    new_record = await standby_journal.append(random_commands(rng, 1, start=90_000)[0])
                except JournalClosedError:  # the old leader appended after the hand-over: we are fenced
                    assert isinstance(standby_journal.failure, JournalFencedError)
        finally:
            stop.set()
            await writer
        async with await JetStreamJournal.open(nats_url, shard=name) as audit:
            report = await audit.verify()
            assert report.ok and report.count == await audit.stream_end()
            if new_record is not None:  # whoever lost the race stored nothing after the other's record
                stored = await audit.record_at(new_record.seq)
                assert stored is not None and stored.hash == new_record.hash


async def test_a_standby_follows_a_serving_venue(nats_url: str) -> None:  # noqa: F811
    """The real VenueService journaling to JetStream (memory bus for its RPCs) and a standby beside it."""
    name = shard()
    aapl = Instrument(symbol="AAPL.SIM", tick_size=Decimal("0.01"))
    bus = await open_bus(f"memory://standby-{name}")
    async with await JetStreamJournal.open(nats_url, shard=name) as journal, \
            await JetStreamJournal.open(nats_url, shard=name) as standby_journal:
        venue = VenueService(bus, journal, [aapl], snapshot_every=40)
        await venue.start()
        standby = VenueStandby(standby_journal)
        await standby.start()
        try:
            rng = random.Random(21)
            replies = await asyncio.gather(*(bus.request(RPC_SUBMIT, NewOrder(
                account=f"acct{i % 5}", client_order_id=f"c{i}", symbol="AAPL.SIM",
                side=Side.BUY if rng.random() < 0.5 else Side.SELL, type=OrderType.LIMIT, tif=TimeInForce.GTC,
                price=15_000 + rng.randint(-3, 3), qty=rng.randint(1, 20)), timeout=10) for i in range(150)))
            assert all(isinstance(r, VenueReply) for r in replies)
            engine = await standby.catch_up()
            assert standby.last_seq == journal.last_seq == 151
            assert engine.state_hash() == venue.engine.state_hash()
        finally:
            await standby.stop()
            await venue.stop()
            await bus.close()
    async with await JetStreamJournal.open(nats_url, shard=name) as again:
        assert await again.latest_snapshot() is not None  # the venue's snapshots are there for anyone
        recovered, last_seq = await recover(again)
        assert (recovered.state_hash(), last_seq) == (engine.state_hash(), 151)


def test_the_docs_end_to_end_example_runs() -> None:
    """docs/venue-ha.md's complete example, run as written (it starts its own nats-server)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    text = (root / "docs" / "venue-ha.md").read_text()
    start = text.index("```python\nimport asyncio")
    code = text[start + len("```python\n"): text.index("```", start + 10)]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["200", "True", "201", "JournalFencedError", "201"]
