"""`open_bus(url)`: the one way to get a Bus, choosing the backend from the URL scheme."""

from __future__ import annotations

from tradesim.bus.base import Bus, ErrorHandler
from tradesim.bus.codec import Codec
from tradesim.bus.errors import InvalidURLError


async def open_bus(
    url: str = "memory://",
    *,
    codec: Codec | None = None,
    on_error: ErrorHandler | None = None,
    timeout: float = 2.0,
) -> Bus:
    """Open `memory://[NAME]` or `nats://host:port[,nats://...]`.

    All `memory://` buses of a process share one in-process broker (`memory://NAME`: the broker NAME).

    `codec` defaults to the process-wide one (see `tradesim.bus.register`); `on_error(subject, exc)`
    receives what cannot be raised to a caller (handler exceptions, undecodable messages) and
    defaults to logging. An unreachable NATS server raises BusConnectionError within ~`timeout`.
    """
    if not isinstance(url, str):
        raise InvalidURLError(f"bus URL must be a string, got {url!r}")
    if url.startswith("memory://"):
        from tradesim.bus.memory import MemoryBus

        return MemoryBus(url, codec, on_error)
    if url.startswith(("nats://", "tls://")):
        from tradesim.bus.nats import NatsBus

        return await NatsBus.connect(url, codec=codec, on_error=on_error, timeout=timeout)
    raise InvalidURLError(f"unsupported bus URL {url!r}: use memory:// or nats://host:port")
