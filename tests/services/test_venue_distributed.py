"""The venue in distributed mode (`event_stream=True`): every event lands in `VENUE_EVENTS` exactly once
and in seq order — live, after a restart that finds the stream behind the journal, after a SIGKILL
between journaling and publishing, and through a nats-server restart — and `Fenced` commands are
admitted or refused by their fencing token (the newest one surviving a restart).

The stream's contents are always checked against the journal itself: replaying the journal through a
fresh engine gives exactly the messages the stream must hold, in order.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.support.pg import pg_url  # noqa: F401  (fixture)
from tradesim.bus import (
    Bus,
    Delivery,
    NoRespondersError,
    RemoteError,
    RequestTimeoutError,
    open_bus,
    subjects,
)
from tradesim.bus.nats import NatsBus
from tradesim.bus.natsserver import LocalNatsServer, NatsServerNotFoundError
from tradesim.domain import CancelOrder, Instrument, NewOrder, OrderAccepted, OrderType, Side, Trade
from tradesim.engine import MatchingEngine
from tradesim.services.venue import (
    RPC_CANCEL,
    RPC_SUBMIT,
    VENUE_EVENTS,
    Fenced,
    VenueReply,
    VenueService,
    VenueStreamMismatchError,
    event_messages,
    event_msg_id,
)
from tradesim.store import Journal, open_journal

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[2]
AAPL = Instrument(symbol="AAPL.SIM", tick_size=Decimal("0.01"))


def order(cid: str, side: Side, price: int = 100, qty: int = 10, account: str | None = None) -> NewOrder:
    return NewOrder(account=account or ("alice" if side is Side.BUY else "bob"), client_order_id=cid,
                    symbol="AAPL.SIM", side=side, type=OrderType.LIMIT, price=price, qty=qty)


async def call(bus: Bus, subject: str, msg: msgspec.Struct, timeout: float = 10.0) -> VenueReply:
    reply = await bus.request(subject, msg, timeout=timeout)
    assert isinstance(reply, VenueReply), reply
    return reply


async def trade_a_little(bus: Bus, prefix: str, pairs: int = 5) -> None:
    """Rests bids, crosses them (trades), cancels one: every kind of message the stream carries."""
    for i in range(pairs):
        await call(bus, RPC_SUBMIT, order(f"{prefix}b{i}", Side.BUY, price=100 + i))
        await call(bus, RPC_SUBMIT, order(f"{prefix}s{i}", Side.SELL, price=100 + i, qty=4))
    await call(bus, RPC_CANCEL, CancelOrder(account="alice", client_order_id=f"{prefix}b0", symbol="AAPL.SIM"))


async def journal_messages(journal: Journal) -> list[tuple[str, msgspec.Struct]]:
    """What VENUE_EVENTS must hold for `journal`: its replay through a fresh engine, message by message."""
    engine = MatchingEngine()
    out: list[tuple[str, msgspec.Struct]] = []
    async for record in journal.read(1):
        for event in engine.apply(record.command):
            out.extend(event_messages(event))
    return out


async def stream_messages(bus: Bus, expected: int, timeout: float = 30.0) -> list[Delivery]:
    """Everything in VENUE_EVENTS, read with a follower once it holds `expected` messages."""
    got: list[Delivery] = []

    async def collect(d: Delivery) -> None:
        got.append(d)

    sub = await bus.follow("orders.*", collect)
    tape = await bus.follow("trades.*", collect)
    try:
        async with asyncio.timeout(timeout):
            while len(got) < expected:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # anything beyond `expected` would show up now
    finally:
        await sub.unsubscribe()
        await tape.unsubscribe()
    return sorted(got, key=lambda d: d.stream_seq or 0)


async def assert_stream_matches_journal(bus: Bus, journal: Journal) -> int:
    """The stream holds exactly the journal's messages, once each, in seq order; returns how many."""
    expected = await journal_messages(journal)
    got = await stream_messages(bus, len(expected))
    assert [(d.subject, d.data) for d in got] == expected
    assert [d.stream_seq for d in got] == list(range(1, len(expected) + 1))
    info = await bus.stream_info(VENUE_EVENTS)
    assert (info.messages, info.last_seq) == (len(expected), len(expected))
    return len(expected)


def private_nats(store: Path) -> LocalNatsServer:
    """A nats-server of this test's own (VENUE_EVENTS is one fixed name), on a store dir that survives
    its restarts."""
    store.mkdir(parents=True, exist_ok=True)
    try:
        return LocalNatsServer(store_dir=str(store)).start()
    except NatsServerNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(params=["memory", "nats"])
async def bus_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "memory":
        yield f"memory://venue-dist-{uuid.uuid4().hex[:8]}"
        return
    server = private_nats(tmp_path / "nats")
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
async def bus(bus_url: str) -> AsyncIterator[Bus]:
    b = await open_bus(bus_url, on_error=lambda s, e: None)
    yield b
    await b.close()


Start = Callable[..., Awaitable[VenueService]]
OpenJournal = Callable[[str], Awaitable[Journal]]


@pytest.fixture
async def journals(tmp_path: Path) -> AsyncIterator[OpenJournal]:
    """`await journals(name)` opens a SQLite journal in tmp_path (closed after the venues stopped)."""
    opened: list[Journal] = []

    async def _open(name: str) -> Journal:
        journal = await open_journal(tmp_path / name)
        opened.append(journal)
        return journal

    yield _open
    for j in opened:
        await j.close()


@pytest.fixture
async def start_venue(bus: Bus, journals: OpenJournal) -> AsyncIterator[Start]:
    """`await start_venue(journal=..., **kw)`: a distributed-mode venue, stopped at teardown."""
    venues: list[VenueService] = []

    async def _start(journal: Journal, **kw: Any) -> VenueService:
        venue = VenueService(kw.pop("bus", bus), journal, [AAPL], event_stream=kw.pop("event_stream", True), **kw)
        await venue.start()
        venues.append(venue)
        return venue

    yield _start
    for v in venues:
        await v.stop()


# ---- the stream -------------------------------------------------------------------------------
async def test_events_land_in_the_stream_once_in_seq_order(bus: Bus, start_venue: Start, journals: OpenJournal) -> None:
    journal = await journals("j")
    await start_venue(journal)
    info = await bus.stream_info(VENUE_EVENTS)
    assert sorted(info.subjects) == ["orders.*", "trades.*"]
    await trade_a_little(bus, "x")
    n = await assert_stream_matches_journal(bus, journal)
    assert n == 5 * 2 + 5 * 2 + 1  # 10 accepted, 5 fills with their 5 tape prints, 1 cancel
    last = await bus.last_message(VENUE_EVENTS)
    assert last is not None and last.subject == subjects.ORDERS_CANCELLED


async def test_a_clean_restart_adds_nothing_and_goes_on(bus: Bus, start_venue: Start, journals: OpenJournal) -> None:
    journal = await journals("j")
    venue = await start_venue(journal)
    await trade_a_little(bus, "a")
    await venue.stop()
    before = (await bus.stream_info(VENUE_EVENTS)).messages
    await start_venue(journal)
    assert (await bus.stream_info(VENUE_EVENTS)).messages == before
    await trade_a_little(bus, "b")
    await assert_stream_matches_journal(bus, journal)


async def test_restart_publishes_what_the_stream_missed(bus_url: str, tmp_path: Path) -> None:
    """Commands journaled while the venue's events went elsewhere (here: to another bus) — and a crash
    between a fill and its tape print — are published at the next start, each message once."""
    bus = await open_bus(bus_url, on_error=lambda s, e: None)
    elsewhere = await open_bus(f"memory://elsewhere-{uuid.uuid4().hex[:8]}", on_error=lambda s, e: None)
    try:
        async with await open_journal(tmp_path / "j") as journal:
            venue = VenueService(bus, journal, [AAPL], event_stream=True, snapshot_every=3)
            await venue.start()
            await trade_a_little(bus, "a")
            await venue.stop()
            stored = (await bus.stream_info(VENUE_EVENTS)).messages

            # the same journal goes on, but its events do not reach the stream
            away = VenueService(elsewhere, journal, [AAPL], event_stream=True, snapshot_every=3)
            await away.start()
            await call(elsewhere, RPC_SUBMIT, order("c-b", Side.BUY, price=120))
            await call(elsewhere, RPC_SUBMIT, order("c-s", Side.SELL, price=120, qty=3))
            await trade_a_little(elsewhere, "c")
            await away.stop()
            # as if the venue died between a fill and its tape print: the stream ends on that fill
            expected = await journal_messages(journal)
            fill_at = next(i for i in range(stored, len(expected)) if expected[i][0] == subjects.ORDERS_FILLED)
            for subject, msg in expected[stored:fill_at + 1]:
                seq: int = msgspec.structs.asdict(msg)["seq"]
                await bus.publish(subject, msg, msg_id=event_msg_id(seq, subject))
            last = await bus.last_message(VENUE_EVENTS)
            assert last is not None and isinstance(last.data, Trade) and last.subject == subjects.ORDERS_FILLED
            assert len(expected) - (fill_at + 1) > 20, "much is missing"

            again = VenueService(bus, journal, [AAPL], event_stream=True)
            await again.start()
            try:
                await assert_stream_matches_journal(bus, journal)
                await trade_a_little(bus, "d")
                await assert_stream_matches_journal(bus, journal)
            finally:
                await again.stop()
    finally:
        await bus.close()
        await elsewhere.close()


async def test_a_stream_ahead_of_the_journal_is_refused(bus: Bus, start_venue: Start, journals: OpenJournal) -> None:
    journal = await journals("one")
    await start_venue(journal)
    await trade_a_little(bus, "x")
    journal = await journals("other")
    with pytest.raises(VenueStreamMismatchError, match="another journal"):
        await start_venue(journal)


# ---- fencing ----------------------------------------------------------------------------------
async def test_stale_token_is_refused_and_changes_nothing(bus: Bus, start_venue: Start, journals: OpenJournal) -> None:
    journal = await journals("j")
    venue = await start_venue(journal)
    r = await call(bus, RPC_SUBMIT, Fenced(command=order("new-leader", Side.BUY), token=5))
    assert isinstance(r.events[0], OrderAccepted)
    assert venue.newest_token == 5
    seq, jseq = venue.engine.seq, journal.last_seq
    stream_before = (await bus.stream_info(VENUE_EVENTS)).messages

    for stale in (
        Fenced(command=order("old-leader", Side.SELL), token=4),
        Fenced(command=CancelOrder(account="alice", client_order_id="new-leader", symbol="AAPL.SIM"), token=1),
    ):
        subject = RPC_SUBMIT if isinstance(stale.command, NewOrder) else RPC_CANCEL
        with pytest.raises(RemoteError) as info:
            await bus.request(subject, stale, timeout=10)
        assert info.value.error_type == "StaleTokenError"
        assert f"fencing token {stale.token} is older than 5" in info.value.message
    assert (venue.engine.seq, journal.last_seq) == (seq, jseq), "nothing journaled, nothing applied"
    assert venue.engine.order_by_client("bob", "old-leader") is None
    assert (await bus.stream_info(VENUE_EVENTS)).messages == stream_before

    same = await call(bus, RPC_SUBMIT, Fenced(command=order("same-leader", Side.BUY, price=90), token=5))
    newer = await call(bus, RPC_SUBMIT, Fenced(command=order("newer-leader", Side.SELL, price=90, qty=2),
                                               token=9))
    assert isinstance(same.events[0], OrderAccepted) and isinstance(newer.events[-1], Trade)
    assert venue.newest_token == 9
    bare = await call(bus, RPC_SUBMIT, order("bare", Side.BUY, price=80))  # embedded senders, LOBSTER replay
    assert isinstance(bare.events[0], OrderAccepted)


async def test_bad_fenced_requests(bus: Bus, start_venue: Start, journals: OpenJournal) -> None:
    journal = await journals("j")
    venue = await start_venue(journal)
    jseq = journal.last_seq
    cancel = CancelOrder(account="alice", client_order_id="x", symbol="AAPL.SIM")
    with pytest.raises(RemoteError, match="takes NewOrder, got CancelOrder") as info:
        await bus.request(RPC_SUBMIT, Fenced(command=cancel, token=3), timeout=10)
    assert info.value.error_type == "BadVenueRequestError"
    for token in (0, -2):
        with pytest.raises(RemoteError, match="fencing token must be a positive int"):
            await bus.request(RPC_SUBMIT, Fenced(command=order("z", Side.BUY), token=token), timeout=10)
    assert journal.last_seq == jseq and venue.newest_token == 0


async def test_newest_token_survives_a_restart(bus: Bus, start_venue: Start, journals: OpenJournal) -> None:
    journal = await journals("j")
    venue = await start_venue(journal)
    await call(bus, RPC_SUBMIT, Fenced(command=order("t1", Side.BUY), token=11))
    await venue.stop()
    again = await start_venue(journal)
    assert again.newest_token == 11
    with pytest.raises(RemoteError, match="fencing token 10 is older than 11"):
        await bus.request(RPC_SUBMIT, Fenced(command=order("t2", Side.BUY), token=10), timeout=10)
    r = await call(bus, RPC_SUBMIT, Fenced(command=order("t3", Side.BUY), token=12))
    assert isinstance(r.events[0], OrderAccepted)


async def test_embedded_mode_fences_in_memory_only(bus: Bus, start_venue: Start, journals: OpenJournal) -> None:
    """Without the event stream there is no KV record: the guard starts empty at every start."""
    journal = await journals("j")
    venue = await start_venue(journal, event_stream=False)
    await call(bus, RPC_SUBMIT, Fenced(command=order("e1", Side.BUY), token=3))
    with pytest.raises(RemoteError, match="StaleTokenError"):
        await bus.request(RPC_SUBMIT, Fenced(command=order("e2", Side.BUY), token=2), timeout=10)
    await venue.stop()
    with pytest.raises(Exception, match="no stream named"):
        await bus.stream_info(VENUE_EVENTS)
    again = await start_venue(journal, event_stream=False)
    assert again.newest_token == 0


# ---- crashes and outages (real nats-server; the crash test journals on PostgreSQL) -------------
CHILD = textwrap.dedent("""
    import asyncio, sys
    from decimal import Decimal
    from tradesim.bus import open_bus
    from tradesim.domain import Instrument
    from tradesim.services.venue import VenueService
    from tradesim.store import open_journal

    async def main(nats_url, pg_url):
        bus = await open_bus(nats_url, on_error=lambda s, e: None)
        journal = await open_journal(pg_url)
        venue = VenueService(bus, journal, [Instrument(symbol="AAPL.SIM", tick_size=Decimal("0.01"))],
                             event_stream=True)
        await venue.start()
        print("ready", flush=True)
        await asyncio.Event().wait()  # until SIGKILL

    asyncio.run(main(sys.argv[1], sys.argv[2]))
""")


async def test_sigkill_between_journal_and_stream_then_restart_publishes_every_event_once(
        tmp_path: Path, pg_url: str) -> None:  # noqa: F811
    server = private_nats(tmp_path / "nats")
    proc = subprocess.Popen([sys.executable, "-c", CHILD, server.url, pg_url], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    bus = await open_bus(server.url, on_error=lambda s, e: None)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
        assert line == b"ready\n", proc.stderr.read().decode() if proc.stderr else line
        await trade_a_little(bus, "a")

        # JetStream now refuses the stream's writes: the venue journals but cannot publish
        assert isinstance(bus, NatsBus)
        info = await bus.js.stream_info(VENUE_EVENTS)
        config = info.config
        config.max_msgs = info.state.messages
        config.discard = "new"
        await bus.js.update_stream(config)
        held = info.state.messages

        async def submit(i: int) -> object:
            side = Side.BUY if i % 2 else Side.SELL
            try:
                return await bus.request(RPC_SUBMIT, order(f"held{i}", side, price=110), timeout=3)
            except (RequestTimeoutError, RemoteError) as exc:
                return exc

        outcomes = await asyncio.gather(*(submit(i) for i in range(8)))
        assert not any(isinstance(o, VenueReply) for o in outcomes), "no reply before the events are out"
        async with await open_journal(pg_url) as journal:
            unpublished = len(await journal_messages(journal)) - held
            assert unpublished > 0, "some commands are journaled but not in the stream"

        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.wait, 10)
        assert proc.returncode == -signal.SIGKILL
        assert (await bus.stream_info(VENUE_EVENTS)).messages == held

        async with await open_journal(pg_url) as journal:
            venue = VenueService(bus, journal, [AAPL], event_stream=True)
            await venue.start()  # its add_stream restores the stream's limits; then it catches up
            try:
                await assert_stream_matches_journal(bus, journal)
                await trade_a_little(bus, "b")
                await assert_stream_matches_journal(bus, journal)
            finally:
                await venue.stop()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        await bus.close()
        server.stop()


async def test_nats_server_restart_mid_flow_loses_and_repeats_nothing(tmp_path: Path) -> None:
    server = private_nats(tmp_path / "nats")
    venue_bus = await open_bus(server.url, on_error=lambda s, e: None)
    client = await open_bus(server.url, on_error=lambda s, e: None)
    try:
        async with await open_journal(tmp_path / "j") as journal:
            venue = VenueService(venue_bus, journal, [AAPL], event_stream=True)
            await venue.start()
            try:
                ok = 0
                failed = 0
                stop_flow = asyncio.Event()

                async def flow() -> None:
                    nonlocal ok, failed
                    i = 0
                    while not stop_flow.is_set():
                        i += 1
                        side = Side.BUY if i % 2 else Side.SELL
                        try:
                            await call(client, RPC_SUBMIT, order(f"f{i}", side, price=100 + i % 3, qty=3), timeout=2)
                            ok += 1
                        except (RequestTimeoutError, NoRespondersError, RemoteError, AssertionError):
                            failed += 1
                            await asyncio.sleep(0.05)
                        except Exception:
                            failed += 1
                            await asyncio.sleep(0.05)

                runner = asyncio.create_task(flow())
                async with asyncio.timeout(60):
                    while ok < 30:
                        await asyncio.sleep(0.01)
                await asyncio.to_thread(server.stop)
                await asyncio.sleep(1.0)
                await asyncio.to_thread(server.start)
                before = ok
                async with asyncio.timeout(90):
                    while ok < before + 30:
                        await asyncio.sleep(0.05)
                stop_flow.set()
                await runner
                assert venue.failure is None and venue.serving
                await assert_stream_matches_journal(client, journal)
            finally:
                await venue.stop()
    finally:
        await venue_bus.close()
        await client.close()
        server.stop()
