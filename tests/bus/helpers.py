"""Test messages and small helpers shared by the bus tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import msgspec

from tradesim.bus import Delivery, register


class Ping(msgspec.Struct, frozen=True, tag="test.ping", tag_field="kind"):
    n: int
    src: str = ""


class Pong(msgspec.Struct, frozen=True, tag="test.pong", tag_field="kind"):
    n: int


class Secret(msgspec.Struct, frozen=True, tag="test.secret", tag_field="kind"):
    """Registered only in a private codec: the default one does not know this tag."""

    text: str


register(Ping, Pong)


async def eventually(cond: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Poll `cond` until true; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)


class Collector:
    """A handler that records deliveries (optionally acking them)."""

    def __init__(self, ack: bool = False) -> None:
        self.ack = ack
        self.items: list[Delivery] = []

    async def __call__(self, d: Delivery) -> None:
        self.items.append(d)
        if self.ack:
            await d.ack()

    @property
    def ns(self) -> list[int]:
        out = []
        for d in self.items:
            assert isinstance(d.data, Ping)
            out.append(d.data.n)
        return out
