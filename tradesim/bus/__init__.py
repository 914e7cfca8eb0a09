"""The event bus: one interface (`Bus`), two backends (`memory://`, `nats://`), one behaviour.

    bus = await open_bus("memory://")          # or "nats://127.0.0.1:4222"
    await bus.subscribe("trades.*", handler)   # async def handler(d: Delivery) -> None
    await bus.publish(subjects.TRADES_EXECUTED, trade)

See docs/bus.md.
"""

from tradesim.bus import subjects
from tradesim.bus.base import (
    DEFAULT_ACK_WAIT,
    DEFAULT_DUPLICATE_WINDOW,
    Bus,
    Delivery,
    Entry,
    ErrorHandler,
    Handler,
    KeyValue,
    Mode,
    RpcHandler,
    StreamInfo,
    Subscription,
    Watch,
)
from tradesim.bus.codec import Codec, RemoteFault, default_codec, register
from tradesim.bus.errors import (
    BusConnectionError,
    BusError,
    CodecError,
    InvalidKeyError,
    InvalidURLError,
    KeyExistsError,
    KVError,
    NoRespondersError,
    PartialPublishError,
    PublishTimeoutError,
    RemoteError,
    RequestTimeoutError,
    StreamError,
    SubjectError,
    WrongRevisionError,
)
from tradesim.bus.factory import open_bus

__all__ = [
    "DEFAULT_ACK_WAIT",
    "DEFAULT_DUPLICATE_WINDOW",
    "Bus",
    "BusConnectionError",
    "BusError",
    "Codec",
    "CodecError",
    "Delivery",
    "Entry",
    "ErrorHandler",
    "Handler",
    "InvalidKeyError",
    "InvalidURLError",
    "KVError",
    "KeyExistsError",
    "KeyValue",
    "Mode",
    "NoRespondersError",
    "PartialPublishError",
    "PublishTimeoutError",
    "RemoteError",
    "RemoteFault",
    "RequestTimeoutError",
    "RpcHandler",
    "StreamError",
    "StreamInfo",
    "SubjectError",
    "Subscription",
    "Watch",
    "WrongRevisionError",
    "default_codec",
    "open_bus",
    "register",
    "subjects",
]
