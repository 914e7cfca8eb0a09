"""Contract of `follow`, `publish(msg_id=)`, `stream_info` and `last_message` on memory:// and NATS."""

from __future__ import annotations

import asyncio

import pytest

from tests.bus.conftest import Connect
from tests.bus.helpers import Collector, Ping, eventually
from tradesim.bus import Delivery, StreamError, open_bus
from tradesim.bus.nats import NatsBus

pytestmark = pytest.mark.timeout(60)


# ---- follow ------------------------------------------------------------------------------------
async def test_follow_reads_history_then_live_in_stream_order(connect: Connect, uid: str) -> None:
    pub, reader = await connect(), await connect()
    await pub.add_stream(uid, [f"{uid}.ev.*"])
    for i in range(5):
        await pub.publish(f"{uid}.ev.a" if i % 2 else f"{uid}.ev.b", Ping(n=i))
    got = Collector()
    await reader.follow(f"{uid}.ev.*", got)
    await eventually(lambda: len(got.items) == 5, what="history")
    for i in range(5, 10):
        await pub.publish(f"{uid}.ev.a", Ping(n=i))
    await eventually(lambda: len(got.items) == 10, what="live")
    assert got.ns == list(range(10))
    assert [d.stream_seq for d in got.items] == list(range(1, 11))
    assert [d.subject for d in got.items[:2]] == [f"{uid}.ev.b", f"{uid}.ev.a"]
    assert not got.items[0].durable
    await asyncio.sleep(0.2)
    assert len(got.items) == 10, "nothing twice"


async def test_follow_from_a_start_seq(connect: Connect, uid: str) -> None:
    bus = await connect()
    await bus.add_stream(uid, [f"{uid}.x"])
    for i in range(1, 8):
        await bus.publish(f"{uid}.x", Ping(n=i))
    got = Collector()
    await bus.follow(f"{uid}.x", got, start_seq=5)
    await eventually(lambda: len(got.items) == 3, what="seq 5..7")
    assert got.ns == [5, 6, 7]
    assert [d.stream_seq for d in got.items] == [5, 6, 7]
    late = Collector()  # beyond the end: only what comes next
    await bus.follow(f"{uid}.x", late, start_seq=9)
    await bus.publish(f"{uid}.x", Ping(n=8))
    await bus.publish(f"{uid}.x", Ping(n=9))
    await eventually(lambda: len(late.items) == 1 and len(got.items) == 5, what="seq 9")
    assert late.ns == [9]


async def test_follow_filters_a_narrower_pattern(connect: Connect, uid: str) -> None:
    bus = await connect()
    await bus.add_stream(uid, [f"{uid}.o.*"])
    for i in range(6):
        await bus.publish(f"{uid}.o.filled" if i % 3 == 0 else f"{uid}.o.new", Ping(n=i))
    fills = Collector()
    await bus.follow(f"{uid}.o.filled", fills)
    await eventually(lambda: len(fills.items) == 2, what="two fills")
    assert fills.ns == [0, 3]
    assert [d.stream_seq for d in fills.items] == [1, 4]


async def test_followers_are_independent(connect: Connect, uid: str) -> None:
    a, b, pub = await connect(), await connect(), await connect()
    await pub.add_stream(uid, [f"{uid}.e"])
    r1, r2 = Collector(), Collector()
    s1 = await a.follow(f"{uid}.e", r1)
    await b.follow(f"{uid}.e", r2)
    for i in range(3):
        await pub.publish(f"{uid}.e", Ping(n=i))
    await eventually(lambda: len(r1.items) == 3 and len(r2.items) == 3, what="3 each")
    await s1.unsubscribe()
    await pub.publish(f"{uid}.e", Ping(n=3))
    await eventually(lambda: len(r2.items) == 4, what="r2 goes on")
    await asyncio.sleep(0.2)
    assert r1.ns == [0, 1, 2] and r2.ns == [0, 1, 2, 3]


async def test_follow_one_message_at_a_time(connect: Connect, uid: str) -> None:
    bus = await connect()
    await bus.add_stream(uid, [f"{uid}.slow"])
    running = 0
    overlap = False
    seen: list[int] = []

    async def slow(d: Delivery) -> None:
        nonlocal running, overlap
        running += 1
        overlap = overlap or running > 1
        await asyncio.sleep(0.01)
        assert isinstance(d.data, Ping)
        seen.append(d.data.n)
        running -= 1

    for i in range(10):
        await bus.publish(f"{uid}.slow", Ping(n=i))
    await bus.follow(f"{uid}.slow", slow)
    await eventually(lambda: len(seen) == 10, what="10")
    assert seen == list(range(10)) and not overlap


async def test_follow_handler_error_is_reported_and_the_follower_goes_on(connect: Connect, uid: str) -> None:
    errors: list[BaseException] = []
    bus = await connect(on_error=lambda s, e: errors.append(e))
    await bus.add_stream(uid, [f"{uid}.f"])
    seen: list[int] = []

    async def picky(d: Delivery) -> None:
        assert isinstance(d.data, Ping)
        if d.data.n == 1:
            raise RuntimeError("bad one")
        seen.append(d.data.n)

    await bus.follow(f"{uid}.f", picky)
    for i in range(3):
        await bus.publish(f"{uid}.f", Ping(n=i))
    await eventually(lambda: len(seen) == 2, what="the others")
    assert seen == [0, 2] and [str(e) for e in errors] == ["bad one"]


async def test_follow_needs_a_stream_and_a_valid_start(connect: Connect, uid: str) -> None:
    bus = await connect()
    with pytest.raises(StreamError, match="no stream covers"):
        await bus.follow(f"{uid}.none.>", Collector())
    await bus.add_stream(uid, [f"{uid}.s"])
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="start_seq"):
            await bus.follow(f"{uid}.s", Collector(), start_seq=bad)  # type: ignore[arg-type]


async def test_follow_can_resume_after_the_last_seq_it_handled(connect: Connect, uid: str) -> None:
    bus = await connect()
    await bus.add_stream(uid, [f"{uid}.r"])
    first = Collector()
    sub = await bus.follow(f"{uid}.r", first)
    for i in range(3):
        await bus.publish(f"{uid}.r", Ping(n=i))
    await eventually(lambda: len(first.items) == 3, what="3")
    await sub.unsubscribe()
    last = first.items[-1].stream_seq
    assert last is not None
    for i in range(3, 5):
        await bus.publish(f"{uid}.r", Ping(n=i))
    again = Collector()
    await bus.follow(f"{uid}.r", again, start_seq=last + 1)
    await eventually(lambda: len(again.items) == 2, what="the rest")
    assert again.ns == [3, 4]


async def test_unsubscribe_from_inside_the_handler(connect: Connect, uid: str) -> None:
    bus = await connect()
    await bus.add_stream(uid, [f"{uid}.u"])
    for i in range(5):
        await bus.publish(f"{uid}.u", Ping(n=i))
    seen: list[int] = []
    done = asyncio.Event()

    async def until_two(d: Delivery) -> None:
        assert isinstance(d.data, Ping)
        seen.append(d.data.n)
        if d.data.n == 2:
            await sub.unsubscribe()
            done.set()

    sub = await bus.follow(f"{uid}.u", until_two)
    await asyncio.wait_for(done.wait(), 10)
    await asyncio.sleep(0.2)
    assert seen == [0, 1, 2]


async def test_nats_follower_leaves_no_consumer_behind(nats_url: str, uid: str) -> None:
    bus = await open_bus(nats_url)
    try:
        assert isinstance(bus, NatsBus)
        await bus.add_stream(uid, [f"{uid}.c"])
        sub = await bus.follow(f"{uid}.c", Collector())
        assert (await bus.js.stream_info(uid)).state.consumer_count == 1
        await sub.unsubscribe()
        assert (await bus.js.stream_info(uid)).state.consumer_count == 0
        await bus.follow(f"{uid}.c", Collector())
        other = await open_bus(nats_url)
        await bus.close()  # closing the bus removes its followers too
        assert isinstance(other, NatsBus)
        assert (await other.js.stream_info(uid)).state.consumer_count == 0
        await other.close()
    finally:
        await bus.close()


# ---- msg_id ------------------------------------------------------------------------------------
async def test_repeated_msg_id_is_stored_once(connect: Connect, uid: str) -> None:
    bus, live_bus = await connect(), await connect()
    await bus.add_stream(uid, [f"{uid}.d.*"])
    live = Collector()
    await live_bus.subscribe(f"{uid}.d.*", live)
    for attempt in range(3):
        for i in range(4):
            await bus.publish(f"{uid}.d.x", Ping(n=i, src=f"try{attempt}"), msg_id=f"m-{i}")
    await bus.publish(f"{uid}.d.x", Ping(n=99))  # no id: always stored
    await bus.publish(f"{uid}.d.x", Ping(n=99))
    info = await bus.stream_info(uid)
    assert (info.first_seq, info.last_seq, info.messages) == (1, 6, 6)
    got = Collector()
    await bus.follow(f"{uid}.d.*", got)
    await eventually(lambda: len(got.items) == 6, what="6 stored")
    assert got.ns == [0, 1, 2, 3, 99, 99]
    assert {d.data.src for d in got.items[:4]} == {"try0"}  # type: ignore[attr-defined]
    await eventually(lambda: len(live.items) == 14, what="live copies")  # live subscribers see every publish


async def test_msg_id_forgotten_after_the_duplicate_window(connect: Connect, uid: str) -> None:
    bus = await connect()
    await bus.add_stream(uid, [f"{uid}.w"], duplicate_window=1.0)
    await bus.publish(f"{uid}.w", Ping(n=1), msg_id="same")
    await bus.publish(f"{uid}.w", Ping(n=1), msg_id="same")
    assert (await bus.stream_info(uid)).messages == 1
    await asyncio.sleep(1.5)
    await bus.publish(f"{uid}.w", Ping(n=1), msg_id="same")
    assert (await bus.stream_info(uid)).messages == 2


async def test_msg_id_is_per_stream_and_ignored_without_one(connect: Connect, uid: str) -> None:
    bus = await connect()
    await bus.add_stream(f"{uid}A", [f"{uid}.a"])
    await bus.add_stream(f"{uid}B", [f"{uid}.b"])
    await bus.publish(f"{uid}.a", Ping(n=1), msg_id="k")
    await bus.publish(f"{uid}.b", Ping(n=1), msg_id="k")
    assert (await bus.stream_info(f"{uid}A")).messages == 1
    assert (await bus.stream_info(f"{uid}B")).messages == 1
    live = Collector()
    await bus.subscribe(f"{uid}.plain", live)
    await bus.publish(f"{uid}.plain", Ping(n=1), msg_id="k")
    await bus.publish(f"{uid}.plain", Ping(n=2), msg_id="k")
    await eventually(lambda: len(live.items) == 2, what="no stream: no dedupe")


async def test_bad_msg_ids_and_stream_options(connect: Connect, uid: str) -> None:
    bus = await connect()
    for bad in ("", "has space", "new\nline", "x" * 257, 7):
        with pytest.raises(ValueError, match="msg_id"):
            await bus.publish(f"{uid}.m", Ping(n=1), msg_id=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="duplicate_window"):
        await bus.add_stream(uid, [f"{uid}.m"], duplicate_window=0)
    with pytest.raises(ValueError, match="exceeds max_age"):
        await bus.add_stream(uid, [f"{uid}.m"], max_age=1.0, duplicate_window=5.0)
    with pytest.raises(ValueError, match="list"):
        await bus.add_stream(uid, f"{uid}.m")


async def test_overlapping_streams_are_refused(connect: Connect, uid: str) -> None:
    bus = await connect()
    await bus.add_stream(f"{uid}algo", [f"{uid}.orders.algo.*"])
    await bus.add_stream(f"{uid}venue", [f"{uid}.orders.*", f"{uid}.trades.*"])  # no overlap: other depth
    with pytest.raises(StreamError):
        await bus.add_stream(f"{uid}dup", [f"{uid}.orders.>"])


# ---- stream_info / last_message ----------------------------------------------------------------
async def test_stream_info_and_last_message(connect: Connect, uid: str) -> None:
    bus = await connect()
    with pytest.raises(StreamError, match="no stream named"):
        await bus.stream_info(uid)
    with pytest.raises(StreamError, match="no stream named"):
        await bus.last_message(uid)
    await bus.add_stream(uid, [f"{uid}.l.*"])
    info = await bus.stream_info(uid)
    assert (info.name, info.subjects, info.last_seq, info.messages) == (uid, [f"{uid}.l.*"], 0, 0)
    assert await bus.last_message(uid) is None
    await bus.publish(f"{uid}.l.a", Ping(n=1))
    await bus.publish(f"{uid}.l.b", Ping(n=2))
    last = await bus.last_message(uid)
    assert last is not None
    assert (last.subject, last.data, last.stream_seq) == (f"{uid}.l.b", Ping(n=2), 2)
    assert (await bus.stream_info(uid)).last_seq == 2


async def test_durable_deliveries_carry_the_stream_seq(connect: Connect, uid: str) -> None:
    bus = await connect()
    await bus.add_stream(uid, [f"{uid}.q"])
    for i in range(3):
        await bus.publish(f"{uid}.q", Ping(n=i))
    got = Collector(ack=True)
    await bus.subscribe(f"{uid}.q", got, durable="seqs")
    await eventually(lambda: len(got.items) == 3, what="3")
    assert [d.stream_seq for d in got.items] == [1, 2, 3]
