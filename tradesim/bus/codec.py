"""The wire format: msgpack of tagged msgspec Structs, decoded through a union of registered types.

Decision: every message on the bus (events, commands, RPC requests *and* replies) is a registered
Struct tagged with `tag_field="kind"`. There is no untyped payload: a reply is a Struct too, so
both ends agree on its shape and a mismatch is a CodecError instead of a KeyError three calls later.
The domain commands and events are registered by default; services add theirs with `register()`
(use a prefix in the tag, e.g. `tag="oms.buy_reply"`, to keep tags unique).
"""

from __future__ import annotations

import functools
import operator
from typing import Any, Final

import msgspec

from tradesim.bus.errors import CodecError
from tradesim.domain import (
    AddInstrument,
    CancelOrder,
    ExpireOrders,
    ModifyOrder,
    NewOrder,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderModified,
    OrderRejected,
    OrderTriggered,
    Trade,
)

TAG_FIELD: Final = "kind"


class RemoteFault(msgspec.Struct, frozen=True, kw_only=True, tag="bus.remote_error", tag_field="kind"):
    """What an RPC server sends back when its handler raised; the requester raises RemoteError."""

    error_type: str
    message: str


DOMAIN_TYPES: Final[tuple[type[msgspec.Struct], ...]] = (
    NewOrder,
    CancelOrder,
    ModifyOrder,
    ExpireOrders,
    AddInstrument,
    OrderAccepted,
    OrderRejected,
    Trade,
    OrderCanceled,
    OrderModified,
    OrderTriggered,
    OrderExpired,
)


def _tag_of(tp: type[msgspec.Struct]) -> str:
    if not (isinstance(tp, type) and issubclass(tp, msgspec.Struct)):
        raise TypeError(f"{tp!r} is not a msgspec.Struct class")
    cfg = tp.__struct_config__
    if cfg.tag_field != TAG_FIELD or not isinstance(cfg.tag, str):
        raise TypeError(
            f"{tp.__qualname__} must be tagged with tag_field={TAG_FIELD!r} and a string tag "
            f"(got tag_field={cfg.tag_field!r}, tag={cfg.tag!r})"
        )
    return cfg.tag


class Codec:
    """A registry of message types plus the encoder and the decoder built from it."""

    def __init__(self, *types: type[msgspec.Struct], domain: bool = True) -> None:
        self._by_tag: dict[str, type[msgspec.Struct]] = {}
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder()
        self.register(RemoteFault, *(DOMAIN_TYPES if domain else ()), *types)

    @property
    def types(self) -> tuple[type[msgspec.Struct], ...]:
        return tuple(self._by_tag.values())

    def register(self, *types: type[msgspec.Struct]) -> None:
        """Add message types; re-registering the same class is a no-op, a clashing tag a TypeError."""
        added = False
        for tp in types:
            tag = _tag_of(tp)
            known = self._by_tag.get(tag)
            if known is tp:
                continue
            if known is not None:
                raise TypeError(
                    f"tag {tag!r} of {tp.__module__}.{tp.__qualname__} is already used by "
                    f"{known.__module__}.{known.__qualname__}"
                )
            self._by_tag[tag] = tp
            added = True
        if added:
            union = functools.reduce(operator.or_, self._by_tag.values())
            self._decoder = msgspec.msgpack.Decoder(union)

    def is_registered(self, tp: type[Any]) -> bool:
        tag = getattr(getattr(tp, "__struct_config__", None), "tag", None)
        return isinstance(tag, str) and self._by_tag.get(tag) is tp

    def encode(self, subject: str, msg: msgspec.Struct) -> bytes:
        """Encode a registered Struct; anything else is a CodecError naming the subject."""
        if not self.is_registered(type(msg)):
            raise CodecError(
                f"cannot send {type(msg).__qualname__} on {subject!r}: not a registered message type "
                f"(call tradesim.bus.register({type(msg).__qualname__}) first)"
            )
        try:
            return self._encoder.encode(msg)
        except (TypeError, ValueError, OverflowError) as exc:
            raise CodecError(f"cannot encode {type(msg).__qualname__} on {subject!r}: {exc}") from exc

    def decode(self, subject: str, data: bytes) -> msgspec.Struct:
        """Decode into the registered Struct named by its tag, or raise a CodecError naming the subject."""
        try:
            msg: msgspec.Struct = self._decoder.decode(data)
            return msg
        except msgspec.DecodeError as exc:
            raise CodecError(self._explain(subject, data, exc)) from exc

    def _explain(self, subject: str, data: bytes, exc: Exception) -> str:
        base = f"cannot decode message on {subject!r} ({len(data)} bytes)"
        try:
            raw = msgspec.msgpack.decode(data)
        except msgspec.DecodeError:
            return f"{base}: not msgpack ({exc})"
        if not isinstance(raw, dict) or TAG_FIELD not in raw:
            return f"{base}: not a tagged message (no {TAG_FIELD!r} field): {exc}"
        tag = raw[TAG_FIELD]
        if tag not in self._by_tag:
            return f"{base}: unknown message kind {tag!r} (not registered in this process)"
        return f"{base}: invalid {self._by_tag[tag].__qualname__} (kind {tag!r}): {exc}"


default_codec: Final = Codec()
"""The process-wide codec that buses use unless given their own."""


def register(*types: type[msgspec.Struct]) -> None:
    """Register message types with the default codec (every bus opened without `codec=` sees them)."""
    default_codec.register(*types)
