"""The codec: registered tagged Structs round-trip; everything else is a CodecError naming the subject."""

from __future__ import annotations

import msgspec
import pytest

from tests.bus.helpers import Ping, Secret
from tradesim.bus import Codec, CodecError, RemoteFault, default_codec
from tradesim.domain import NewOrder, OrderType, Side, Trade


def test_domain_types_round_trip_by_default() -> None:
    c = Codec()
    order = NewOrder(
        account="a", client_order_id="1", symbol="X.SIM", side=Side.BUY, type=OrderType.LIMIT, price=10, qty=5
    )
    assert c.decode("orders.new", c.encode("orders.new", order)) == order
    trade = Trade(
        seq=1, ts=2, trade_id=3, symbol="X.SIM", price=10, qty=5, aggressor=Side.SELL,
        maker_order_id=1, maker_account="a", maker_client_order_id="1", maker_cum_qty=5, maker_leaves_qty=0,
        taker_order_id=2, taker_account="b", taker_client_order_id="2", taker_cum_qty=5, taker_leaves_qty=0,
    )  # fmt: skip
    assert c.decode("trades.executed", c.encode("trades.executed", trade)) == trade
    assert RemoteFault in c.types


def test_register_rebuilds_the_decoder() -> None:
    c = Codec()
    data = Codec(Secret).encode("s.x", Secret(text="hi"))
    with pytest.raises(CodecError, match=r"'s\.x'.*unknown message kind 'test\.secret'"):
        c.decode("s.x", data)
    c.register(Secret)
    c.register(Secret)  # idempotent
    assert c.decode("s.x", data) == Secret(text="hi")


def test_unregistered_type_cannot_be_sent() -> None:
    with pytest.raises(CodecError, match=r"Secret on 'a\.b'.*register"):
        Codec().encode("a.b", Secret(text="x"))


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\xc1garbage", "not msgpack"),
        (msgspec.msgpack.encode({"x": 1}), "no 'kind' field"),
        (msgspec.msgpack.encode([1, 2]), "no 'kind' field"),
        (msgspec.msgpack.encode({"kind": "test.ping", "n": "one"}), "invalid Ping"),
        (msgspec.msgpack.encode({"kind": "nope"}), "unknown message kind 'nope'"),
    ],
)
def test_bad_bytes_give_codec_error_naming_subject(data: bytes, why: str) -> None:
    with pytest.raises(CodecError, match=r"cannot decode message on 'orders\.new'") as ei:
        default_codec.decode("orders.new", data)
    assert why in str(ei.value)
    assert isinstance(default_codec.decode("x", default_codec.encode("x", Ping(n=1))), Ping)


def test_bad_registrations() -> None:
    class Untagged(msgspec.Struct):
        a: int

    class OtherField(msgspec.Struct, tag="x", tag_field="type"):
        a: int

    class Clash(msgspec.Struct, tag="test.ping", tag_field="kind"):
        a: int

    c = Codec()
    with pytest.raises(TypeError, match="tag_field='kind'"):
        c.register(Untagged)
    with pytest.raises(TypeError, match="tag_field='kind'"):
        c.register(OtherField)
    c.register(Ping)
    with pytest.raises(TypeError, match="already used"):
        c.register(Clash)
    with pytest.raises(TypeError, match=r"not a msgspec\.Struct"):
        c.register(int)  # type: ignore[arg-type]
