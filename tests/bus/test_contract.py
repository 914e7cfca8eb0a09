"""The bus contract: every test runs against `memory://` and a private nats-server, same assertions."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest

from tests.bus.conftest import Connect
from tests.bus.helpers import Collector, Ping, Pong, Secret, eventually
from tradesim.bus import (
    BusConnectionError,
    Codec,
    CodecError,
    Delivery,
    KeyExistsError,
    Mode,
    NoRespondersError,
    RemoteError,
    RequestTimeoutError,
    StreamError,
    SubjectError,
    WrongRevisionError,
    open_bus,
)

pytestmark = pytest.mark.timeout(60)


# ---- pub/sub ----------------------------------------------------------------------------------
async def test_broadcast_reaches_every_subscriber(connect: Connect, uid: str) -> None:
    a, b, pub = await connect(), await connect(), await connect()
    c1, c2, c3 = Collector(), Collector(), Collector()
    await a.subscribe(f"{uid}.ev", c1)
    await a.subscribe(f"{uid}.ev", c2)
    await b.subscribe(f"{uid}.ev", c3)
    for i in range(20):
        await pub.publish(f"{uid}.ev", Ping(n=i))
    await eventually(lambda: len(c1.items) == len(c2.items) == len(c3.items) == 20, what="20 each")
    assert c1.ns == c2.ns == c3.ns == list(range(20))
    assert c1.items[0].subject == f"{uid}.ev"
    assert not c1.items[0].durable


async def test_compete_delivers_each_message_to_exactly_one_member(connect: Connect, uid: str) -> None:
    a, b, pub = await connect(), await connect(), await connect()
    m1, m2, other_group, watcher = Collector(), Collector(), Collector(), Collector()
    await a.subscribe(f"{uid}.work", m1, mode=Mode.COMPETE, group="workers")
    await b.subscribe(f"{uid}.work", m2, mode=Mode.COMPETE, group="workers")
    await b.subscribe(f"{uid}.work", other_group, mode=Mode.COMPETE, group="auditors")
    await a.subscribe(f"{uid}.work", watcher)
    n = 200
    for i in range(n):
        await pub.publish(f"{uid}.work", Ping(n=i))
    await eventually(lambda: len(m1.items) + len(m2.items) == n and len(watcher.items) == n, what="all")
    await asyncio.sleep(0.05)
    got = m1.ns + m2.ns
    assert sorted(got) == list(range(n)), "every message exactly once across the group"
    assert m1.items and m2.items, "both live members get work"
    assert sorted(other_group.ns) == list(range(n)), "another group gets its own copy"


async def test_compete_without_group_is_an_error(connect: Connect, uid: str) -> None:
    bus = await connect()
    with pytest.raises(ValueError, match="group"):
        await bus.subscribe(f"{uid}.x", Collector(), mode=Mode.COMPETE)


async def test_wildcards(connect: Connect, uid: str) -> None:
    sub, pub = await connect(), await connect()
    star, tail, exact = Collector(), Collector(), Collector()
    await sub.subscribe(f"{uid}.tick.*", star)
    await sub.subscribe(f"{uid}.tick.>", tail)
    await sub.subscribe(f"{uid}.tick.AAPL.SIM", exact)
    await pub.publish(f"{uid}.tick.X", Ping(n=1))
    await pub.publish(f"{uid}.tick.AAPL.SIM", Ping(n=2))
    await pub.publish(f"{uid}.tick", Ping(n=3))  # matches none: '>' needs at least one token
    await pub.publish(f"{uid}.tock.X", Ping(n=4))
    await eventually(lambda: len(tail.items) == 2 and len(star.items) == 1 and len(exact.items) == 1)
    await asyncio.sleep(0.05)
    assert star.ns == [1]
    assert tail.ns == [1, 2]
    assert exact.ns == [2]
    assert [d.subject for d in tail.items] == [f"{uid}.tick.X", f"{uid}.tick.AAPL.SIM"]


async def test_per_publisher_order_is_preserved(connect: Connect, uid: str) -> None:
    sub, p1, p2 = await connect(), await connect(), await connect()
    c = Collector()
    await sub.subscribe(f"{uid}.seq.*", c)
    n = 1000

    async def run(bus: object, src: str) -> None:
        for i in range(n):
            await bus.publish(f"{uid}.seq.{src}", Ping(n=i, src=src))  # type: ignore[attr-defined]

    await asyncio.gather(run(p1, "a"), run(p2, "b"))
    await eventually(lambda: len(c.items) == 2 * n, what=f"{2 * n} messages")
    for src in ("a", "b"):
        seen = [d.data.n for d in c.items if isinstance(d.data, Ping) and d.data.src == src]
        assert seen == list(range(n)), f"publisher {src} out of order"


async def test_unsubscribe_stops_delivery(connect: Connect, uid: str) -> None:
    bus = await connect()
    c = Collector()
    sub = await bus.subscribe(f"{uid}.u", c)
    await bus.publish(f"{uid}.u", Ping(n=1))
    await eventually(lambda: len(c.items) == 1)
    await sub.unsubscribe()
    await bus.publish(f"{uid}.u", Ping(n=2))
    await asyncio.sleep(0.1)
    assert c.ns == [1]


async def test_handler_error_is_reported_and_delivery_goes_on(connect: Connect, uid: str) -> None:
    errors: list[tuple[str, BaseException]] = []
    bus = await connect(on_error=lambda s, e: errors.append((s, e)))
    seen: list[int] = []

    async def handler(d: Delivery) -> None:
        assert isinstance(d.data, Ping)
        if d.data.n == 1:
            raise RuntimeError("boom")
        seen.append(d.data.n)

    await bus.subscribe(f"{uid}.h", handler)
    for i in range(3):
        await bus.publish(f"{uid}.h", Ping(n=i))
    await eventually(lambda: len(seen) == 2)
    assert seen == [0, 2]
    assert [(s, str(e)) for s, e in errors] == [(f"{uid}.h", "boom")]


async def test_bad_subjects_are_rejected(connect: Connect, uid: str) -> None:
    bus = await connect()
    for bad in ("", f"{uid}..x", f"{uid}.x.", f"{uid}.*", f"{uid} x"):
        with pytest.raises(SubjectError):
            await bus.publish(bad, Ping(n=1))
    with pytest.raises(SubjectError, match="last token"):
        await bus.subscribe(f"{uid}.>.x", Collector())


# ---- codec errors -----------------------------------------------------------------------------
async def test_unknown_tag_gives_codec_error_naming_the_subject(connect: Connect, uid: str) -> None:
    errors: list[tuple[str, BaseException]] = []
    receiver = await connect(on_error=lambda s, e: errors.append((s, e)))
    sender = await connect(codec=Codec(Secret, Ping))
    c = Collector()
    await receiver.subscribe(f"{uid}.sec", c)
    await sender.publish(f"{uid}.sec", Secret(text="hi"))
    await sender.publish(f"{uid}.sec", Ping(n=7))
    await eventually(lambda: len(c.items) == 1 and len(errors) == 1)
    assert c.ns == [7], "the next good message still arrives"
    subject, exc = errors[0]
    assert subject == f"{uid}.sec"
    assert isinstance(exc, CodecError)
    assert f"{uid}.sec" in str(exc) and "test.secret" in str(exc)


async def test_publishing_an_unregistered_type_is_a_codec_error(connect: Connect, uid: str) -> None:
    bus = await connect()
    with pytest.raises(CodecError, match=rf"Secret.*{uid}\.x.*register"):
        await bus.publish(f"{uid}.x", Secret(text="no"))


# ---- RPC ------------------------------------------------------------------------------------
async def test_rpc_reply(connect: Connect, uid: str) -> None:
    server, client = await connect(), await connect()

    async def double(req: msgspec.Struct) -> msgspec.Struct:
        assert isinstance(req, Ping)
        return Pong(n=req.n * 2)

    await server.serve(f"rpc.{uid}.double", double)
    replies = await asyncio.gather(*(client.request(f"rpc.{uid}.double", Ping(n=i), 2.0) for i in range(10)))
    assert replies == [Pong(n=2 * i) for i in range(10)]


async def test_rpc_served_by_one_of_several_servers(connect: Connect, uid: str) -> None:
    s1, s2, client = await connect(), await connect(), await connect()
    calls: list[str] = []

    def make(name: str):  # type: ignore[no-untyped-def]
        async def h(req: msgspec.Struct) -> msgspec.Struct:
            calls.append(name)
            return Pong(n=0)

        return h

    await s1.serve(f"rpc.{uid}.m", make("s1"))
    await s2.serve(f"rpc.{uid}.m", make("s2"))
    for _ in range(20):
        assert await client.request(f"rpc.{uid}.m", Ping(n=0), 2.0) == Pong(n=0)
    assert len(calls) == 20, "each request answered exactly once"


async def test_rpc_no_responders(connect: Connect, uid: str) -> None:
    client = await connect()
    t0 = time.monotonic()
    with pytest.raises(NoRespondersError, match=f"rpc.{uid}.nobody"):
        await client.request(f"rpc.{uid}.nobody", Ping(n=1), timeout=5.0)
    assert time.monotonic() - t0 < 2.0, "no-responders is immediate, not a timeout"


async def test_rpc_timeout(connect: Connect, uid: str) -> None:
    server, client = await connect(), await connect()
    release = asyncio.Event()

    async def slow(req: msgspec.Struct) -> msgspec.Struct:
        await release.wait()
        return Pong(n=1)

    await server.serve(f"rpc.{uid}.slow", slow)
    t0 = time.monotonic()
    with pytest.raises(RequestTimeoutError):
        await client.request(f"rpc.{uid}.slow", Ping(n=1), timeout=0.3)
    assert 0.25 < time.monotonic() - t0 < 2.0
    release.set()


async def test_rpc_handler_error_comes_back_as_remote_error(connect: Connect, uid: str) -> None:
    server, client = await connect(on_error=lambda s, e: None), await connect()

    async def bad(req: msgspec.Struct) -> msgspec.Struct:
        raise ValueError("qty must be positive")

    async def wrong_reply(req: msgspec.Struct) -> msgspec.Struct:
        return Secret(text="not registered on the server's codec")

    await server.serve(f"rpc.{uid}.bad", bad)
    await server.serve(f"rpc.{uid}.wrong", wrong_reply)
    with pytest.raises(RemoteError) as ei:
        await client.request(f"rpc.{uid}.bad", Ping(n=1), timeout=2.0)
    assert ei.value.error_type == "ValueError"
    assert ei.value.message == "qty must be positive"
    assert f"rpc.{uid}.bad" in str(ei.value)
    with pytest.raises(RemoteError) as ei2:
        await client.request(f"rpc.{uid}.wrong", Ping(n=1), timeout=2.0)
    assert ei2.value.error_type == "CodecError"
    # the server survives and answers the next request
    await server.serve(f"rpc.{uid}.ok", lambda req: _pong())
    assert await client.request(f"rpc.{uid}.ok", Ping(n=1), timeout=2.0) == Pong(n=1)


async def _pong() -> msgspec.Struct:
    return Pong(n=1)


async def test_rpc_serve_is_one_at_a_time_by_default(connect: Connect, uid: str) -> None:
    server, client = await connect(), await connect()
    active, peak = 0, 0

    async def slow(req: msgspec.Struct) -> msgspec.Struct:
        nonlocal active, peak
        assert isinstance(req, Ping)
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.01)
        active -= 1
        return Pong(n=req.n)

    await server.serve(f"rpc.{uid}.serial", slow)
    replies = await asyncio.gather(*(client.request(f"rpc.{uid}.serial", Ping(n=i), 5.0) for i in range(5)))
    assert replies == [Pong(n=i) for i in range(5)]
    assert peak == 1


async def test_rpc_serve_with_concurrency_runs_handlers_at_once(connect: Connect, uid: str) -> None:
    server, client = await connect(), await connect()
    started: list[int] = []
    all_in = asyncio.Event()
    n = 8

    async def gated(req: msgspec.Struct) -> msgspec.Struct:
        assert isinstance(req, Ping)
        started.append(req.n)
        if len(started) == n:
            all_in.set()
        await all_in.wait()  # deadlocks (times out) unless all n handlers are in flight together
        return Pong(n=req.n)

    await server.serve(f"rpc.{uid}.conc", gated, concurrency=n)
    replies = await asyncio.gather(*(client.request(f"rpc.{uid}.conc", Ping(n=i), 5.0) for i in range(n)))
    assert replies == [Pong(n=i) for i in range(n)]
    assert sorted(started) == list(range(n))


async def test_rpc_serve_concurrency_is_bounded(connect: Connect, uid: str) -> None:
    server, client = await connect(), await connect()
    active, peak = 0, 0
    release = asyncio.Event()

    async def held(req: msgspec.Struct) -> msgspec.Struct:
        nonlocal active, peak
        assert isinstance(req, Ping)
        active += 1
        peak = max(peak, active)
        await release.wait()
        active -= 1
        return Pong(n=req.n)

    await server.serve(f"rpc.{uid}.bounded", held, concurrency=3)
    calls = [asyncio.create_task(client.request(f"rpc.{uid}.bounded", Ping(n=i), 5.0)) for i in range(6)]
    await eventually(lambda: active == 3, what="3 handlers in flight")
    await asyncio.sleep(0.05)
    assert peak == 3, "the 4th request waits for a free slot"
    release.set()
    assert await asyncio.gather(*calls) == [Pong(n=i) for i in range(6)]
    with pytest.raises(ValueError, match="concurrency"):
        await server.serve(f"rpc.{uid}.zero", held, concurrency=0)


async def test_rpc_unknown_reply_tag_is_a_codec_error_naming_the_subject(connect: Connect, uid: str) -> None:
    server = await connect(codec=Codec(Secret, Ping))
    client = await connect()

    async def secret(req: msgspec.Struct) -> msgspec.Struct:
        return Secret(text="x")

    await server.serve(f"rpc.{uid}.secret", secret)
    with pytest.raises(CodecError, match=rf"rpc\.{uid}\.secret.*test\.secret"):
        await client.request(f"rpc.{uid}.secret", Ping(n=1), timeout=2.0)


# ---- key-value -------------------------------------------------------------------------------
async def test_kv_create_race_has_exactly_one_winner(connect: Connect, uid: str) -> None:
    a, b = await connect(), await connect()
    kva, kvb = await a.kv(uid), await b.kv(uid)
    for round_ in range(5):
        key = f"leader.{round_}"
        results = await asyncio.gather(kva.create(key, b"a"), kvb.create(key, b"b"), return_exceptions=True)
        wins = [r for r in results if isinstance(r, int)]
        losses = [r for r in results if isinstance(r, KeyExistsError)]
        assert len(wins) == 1 and len(losses) == 1, results
        entry = await kva.get(key)
        assert entry is not None and entry.revision == wins[0]
        assert entry.value == (b"a" if isinstance(results[0], int) else b"b")


async def test_kv_revisions_compare_and_set(connect: Connect, uid: str) -> None:
    bus = await connect()
    kv = await bus.kv(uid)
    assert await kv.get("svc.oms") is None
    r1 = await kv.create("svc.oms", b"node-1")
    with pytest.raises(KeyExistsError, match=r"svc\.oms"):
        await kv.create("svc.oms", b"node-2")
    r2 = await kv.update("svc.oms", b"node-1", expected_revision=r1)
    assert r2 > r1
    with pytest.raises(WrongRevisionError):
        await kv.update("svc.oms", b"node-2", expected_revision=r1)
    got = await kv.get("svc.oms")
    assert got is not None and (got.value, got.revision) == (b"node-1", r2)
    assert await kv.keys() == ["svc.oms"]
    with pytest.raises(WrongRevisionError):
        await kv.delete("svc.oms", expected_revision=r1)
    await kv.delete("svc.oms", expected_revision=r2)
    assert await kv.get("svc.oms") is None
    assert await kv.keys() == []
    r3 = await kv.create("svc.oms", b"node-2")  # a deleted key can be created again
    assert r3 > r2
    r4 = await kv.put("svc.oms", b"node-3")
    assert r4 > r3
    await kv.delete("svc.oms")
    assert await kv.get("svc.oms") is None


async def test_kv_watch_sees_puts_and_deletes(connect: Connect, uid: str) -> None:
    a, b = await connect(), await connect()
    kva, kvb = await a.kv(uid), await b.kv(uid)
    await kva.put("svc.old", b"0")
    w = await kvb.watch("svc.>")
    seen = []

    async def reader() -> None:
        async for e in w:
            seen.append((e.key, e.value, e.deleted))

    task = asyncio.create_task(reader())
    r = await kva.put("svc.a", b"1")
    await kva.update("svc.a", b"2", expected_revision=r)
    await kva.put("other.x", b"ignored")
    await kva.delete("svc.a")
    await eventually(lambda: len(seen) >= 4, what="4 watch entries")
    await w.stop()
    await asyncio.wait_for(task, 2.0)
    assert seen == [
        ("svc.old", b"0", False),
        ("svc.a", b"1", False),
        ("svc.a", b"2", False),
        ("svc.a", b"", True),
    ]


async def test_kv_watch_updates_only(connect: Connect, uid: str) -> None:
    bus = await connect()
    kv = await bus.kv(uid)
    await kv.put("k", b"before")
    w = await kv.watch("k", include_initial=False)
    await kv.put("k", b"after")
    e = await asyncio.wait_for(w.__anext__(), 2.0)
    assert (e.key, e.value) == ("k", b"after")
    await w.stop()


async def test_kv_bucket_ttl_expires_entries(connect: Connect, uid: str) -> None:
    bus = await connect()
    kv = await bus.kv(uid, ttl=1.0)
    await kv.create("leader", b"me")
    assert await kv.get("leader") is not None
    t0 = time.monotonic()
    while await kv.get("leader") is not None:
        assert time.monotonic() - t0 < 5.0, "entry did not expire"
        await asyncio.sleep(0.1)
    assert time.monotonic() - t0 > 0.5
    await kv.create("leader", b"next")  # expired = absent: a new leader can take over


async def test_kv_rejects_bad_keys(connect: Connect, uid: str) -> None:
    bus = await connect()
    kv = await bus.kv(uid)
    for bad in ("", "a b", ".a", "a.", "a*"):
        with pytest.raises(ValueError):
            await kv.put(bad, b"x")


# ---- durable streams --------------------------------------------------------------------------
async def test_durable_needs_a_stream(connect: Connect, uid: str) -> None:
    bus = await connect()
    with pytest.raises(StreamError, match="no stream covers"):
        await bus.subscribe(f"{uid}.jobs.>", Collector(), durable="w")


async def test_durable_compete_each_message_once(connect: Connect, uid: str) -> None:
    a, b, pub = await connect(), await connect(), await connect()
    await pub.add_stream(uid, [f"{uid}.jobs.>"])
    m1, m2 = Collector(ack=True), Collector(ack=True)
    await a.subscribe(f"{uid}.jobs.>", m1, mode=Mode.COMPETE, durable="algo")
    await b.subscribe(f"{uid}.jobs.>", m2, mode=Mode.COMPETE, durable="algo")
    for i in range(30):
        await pub.publish(f"{uid}.jobs.twap", Ping(n=i))
    await eventually(lambda: len(m1.items) + len(m2.items) >= 30, what="30 jobs")
    await asyncio.sleep(0.2)
    assert sorted(m1.ns + m2.ns) == list(range(30))
    assert all(d.durable and d.delivery_count == 1 for d in m1.items + m2.items)


async def test_durable_broadcast_each_name_has_its_own_cursor(connect: Connect, uid: str) -> None:
    a, b, pub = await connect(), await connect(), await connect()
    await pub.add_stream(uid, [f"{uid}.ev.*"])
    for i in range(5):
        await pub.publish(f"{uid}.ev.x", Ping(n=i))  # stored before anyone subscribes
    r1, r2 = Collector(ack=True), Collector(ack=True)
    await a.subscribe(f"{uid}.ev.*", r1, durable="risk-1")
    await b.subscribe(f"{uid}.ev.*", r2, durable="risk-2")
    for i in range(5, 10):
        await pub.publish(f"{uid}.ev.x", Ping(n=i))
    await eventually(lambda: len(r1.items) == 10 and len(r2.items) == 10, what="10 each")
    assert sorted(r1.ns) == sorted(r2.ns) == list(range(10))


async def test_durable_redelivers_to_another_member_when_one_dies(connect: Connect, uid: str) -> None:
    a, b, pub = await connect(), await connect(), await connect()
    await pub.add_stream(uid, [f"{uid}.algo.*"])
    dying = Collector(ack=False)  # takes the message and never acks it
    await a.subscribe(f"{uid}.algo.*", dying, mode=Mode.COMPETE, durable="algos", ack_wait=1.0)
    await pub.publish(f"{uid}.algo.twap", Ping(n=42))
    await eventually(lambda: len(dying.items) == 1, what="first member gets the job")
    survivor = Collector(ack=True)
    await b.subscribe(f"{uid}.algo.*", survivor, mode=Mode.COMPETE, durable="algos", ack_wait=1.0)
    t0 = time.monotonic()
    await a.close()  # dies without acking
    await eventually(lambda: len(survivor.items) == 1, timeout=10.0, what="redelivery to the survivor")
    assert time.monotonic() - t0 < 5.0
    d = survivor.items[0]
    assert d.data == Ping(n=42)
    assert d.redelivered and d.delivery_count >= 2
    await asyncio.sleep(1.5)  # acked: never delivered again
    assert len(survivor.items) == 1


async def test_durable_nak_redelivers_at_once(connect: Connect, uid: str) -> None:
    bus, pub = await connect(), await connect()
    await pub.add_stream(uid, [f"{uid}.n"])
    seen: list[int] = []

    async def handler(d: Delivery) -> None:
        seen.append(d.delivery_count)
        if d.delivery_count == 1:
            await d.nak()
        else:
            await d.ack()

    await bus.subscribe(f"{uid}.n", handler, durable="nak", ack_wait=30.0)
    await pub.publish(f"{uid}.n", Ping(n=1))
    await eventually(lambda: len(seen) == 2, timeout=5.0, what="redelivery after nak")
    assert seen == [1, 2]


async def test_durable_resumes_after_restart(connect: Connect, uid: str) -> None:
    consumer, pub = await connect(), await connect()
    await pub.add_stream(uid, [f"{uid}.orders"])
    got: list[Delivery] = []

    async def ack_but_5(d: Delivery) -> None:
        got.append(d)
        assert isinstance(d.data, Ping)
        if d.data.n != 5:
            await d.ack()

    sub = await consumer.subscribe(f"{uid}.orders", ack_but_5, durable="oms", ack_wait=1.0)
    for i in range(1, 6):
        await pub.publish(f"{uid}.orders", Ping(n=i))
    await eventually(lambda: len(got) == 5, what="first 5")
    await sub.unsubscribe()
    for i in range(6, 9):
        await pub.publish(f"{uid}.orders", Ping(n=i))
    await asyncio.sleep(0.1)
    assert len(got) == 5, "nothing delivered while stopped"

    again = await connect()  # a new process, same durable name
    after = Collector(ack=True)
    await again.subscribe(f"{uid}.orders", after, durable="oms", ack_wait=1.0)
    await eventually(lambda: len(after.items) >= 4, timeout=10.0, what="unacked 5 and new 6..8")
    await asyncio.sleep(1.5)
    assert sorted(after.ns) == [5, 6, 7, 8], "exactly the unacked and the new ones"


async def test_durable_handler_error_leaves_message_for_redelivery(connect: Connect, uid: str) -> None:
    errors: list[BaseException] = []
    bus = await connect(on_error=lambda s, e: errors.append(e))
    await bus.add_stream(uid, [f"{uid}.e"])
    attempts: list[int] = []

    async def flaky(d: Delivery) -> None:
        attempts.append(d.delivery_count)
        if d.delivery_count == 1:
            raise RuntimeError("transient")
        await d.ack()

    await bus.subscribe(f"{uid}.e", flaky, durable="flaky", ack_wait=0.5)
    await bus.publish(f"{uid}.e", Ping(n=1))
    await eventually(lambda: len(attempts) == 2, timeout=10.0, what="retry after ack_wait")
    assert attempts == [1, 2]
    assert [str(e) for e in errors] == ["transient"]


# ---- connection -------------------------------------------------------------------------------
async def test_closed_bus_refuses_work(connect: Connect, uid: str) -> None:
    bus = await connect()
    kv = await bus.kv(uid)
    await bus.close()
    with pytest.raises(BusConnectionError, match="closed"):
        await kv.get("k")
    bus = await connect()
    await bus.close()
    with pytest.raises(BusConnectionError, match="closed"):
        await bus.publish(f"{uid}.x", Ping(n=1))
    with pytest.raises(BusConnectionError, match="closed"):
        await bus.subscribe(f"{uid}.x", Collector())
    with pytest.raises(BusConnectionError, match="closed"):
        await bus.request(f"{uid}.x", Ping(n=1))
    await bus.close()  # idempotent


async def test_unreachable_nats_url_is_a_fast_connection_error() -> None:
    import socket

    with socket.socket() as s:  # a port that nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"nats://127.0.0.1:{port}"
    t0 = time.monotonic()
    with pytest.raises(BusConnectionError, match=f"127.0.0.1:{port}"):
        await open_bus(url, timeout=1.0)
    assert time.monotonic() - t0 < 3.0


async def test_unknown_url_scheme() -> None:
    with pytest.raises(BusConnectionError, match="unsupported bus URL"):
        await open_bus("kafka://localhost:9092")
