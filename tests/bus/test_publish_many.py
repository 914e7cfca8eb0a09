"""Contract of `publish_many` on memory:// and NATS: order, msg ids, plain subjects, and what a failure says."""

from __future__ import annotations

import pytest

from tests.bus.conftest import Connect
from tests.bus.helpers import Collector, Ping, eventually
from tradesim.bus import BusConnectionError, CodecError, PartialPublishError, StreamError, SubjectError
from tradesim.bus.nats import NatsBus

pytestmark = pytest.mark.timeout(60)


async def test_a_batch_is_stored_in_order_and_repeats_are_stored_once(connect: Connect, uid: str) -> None:
    bus = await connect()
    await bus.add_stream(uid, [f"{uid}.e.*"])
    batch = [(f"{uid}.e.{'a' if i % 2 else 'b'}", Ping(n=i), f"id-{i}") for i in range(300)]
    await bus.publish_many(batch)
    await bus.publish_many(batch[100:120])  # a retry of part of it: nothing new is stored
    await bus.publish_many([(f"{uid}.e.a", Ping(n=300), None), (f"{uid}.e.b", Ping(n=301), "id-301")])
    info = await bus.stream_info(uid)
    assert (info.first_seq, info.last_seq, info.messages) == (1, 302, 302)
    got = Collector()
    await bus.follow(f"{uid}.e.*", got)
    await eventually(lambda: len(got.items) == 302, what="302 stored")
    assert got.ns == list(range(302))
    assert [d.stream_seq for d in got.items] == list(range(1, 303))


async def test_plain_subjects_and_a_mix_reach_live_subscribers_in_order(connect: Connect, uid: str) -> None:
    bus, other = await connect(), await connect()
    await bus.add_stream(uid, [f"{uid}.s.*"])
    live = Collector()
    await other.subscribe(f"{uid}.>", live)
    await bus.publish_many([(f"{uid}.s.x" if i % 3 else f"{uid}.plain", Ping(n=i), None) for i in range(9)])
    await bus.publish_many([])
    await eventually(lambda: len(live.items) == 9, what="9 live")
    assert live.ns == list(range(9))
    assert (await bus.stream_info(uid)).messages == 6


async def test_bad_input_is_refused_before_anything_is_sent(connect: Connect, uid: str) -> None:
    bus = await connect()
    await bus.add_stream(uid, [f"{uid}.b.*"])
    with pytest.raises(SubjectError):
        await bus.publish_many([(f"{uid}.b.x", Ping(n=1), None), (f"{uid}..x", Ping(n=2), None)])
    with pytest.raises(ValueError, match="msg"):
        await bus.publish_many([(f"{uid}.b.x", Ping(n=1), None), (f"{uid}.b.x", Ping(n=2), "bad id")])
    with pytest.raises(CodecError):
        await bus.publish_many([(f"{uid}.b.x", Ping(n=1), None), (f"{uid}.b.x", object(), None)])  # type: ignore[list-item]
    assert (await bus.stream_info(uid)).messages == 0


async def test_a_refused_message_stops_the_batch_and_says_how_many_are_stored(nats_url: str, uid: str) -> None:
    bus = await NatsBus.connect(nats_url)
    try:
        await bus.add_stream(uid, [f"{uid}.r.*"])
        batch = [(f"{uid}.r.x", Ping(n=i), f"r-{i}") for i in range(5)]
        await bus.js.delete_stream(uid)  # the bus still believes the subjects stored: no responder answers
        with pytest.raises(PartialPublishError) as info:
            await bus.publish_many(batch)
        assert info.value.published == 0
        assert isinstance(info.value.cause, BusConnectionError)
        await bus.js.add_stream(name=uid, subjects=[f"{uid}.r.*"], max_msgs=3, discard="new")
        with pytest.raises(PartialPublishError) as info:
            await bus.publish_many(batch)
        assert info.value.published == 3  # the fourth is refused by the stream's limit
        assert isinstance(info.value.cause, StreamError)
        assert (await bus.stream_info(uid)).messages == 3
    finally:
        await bus.close()
    with pytest.raises(BusConnectionError):
        await bus.publish_many(batch)
