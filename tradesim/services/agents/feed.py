"""One bus subscription per subject for every agent in a process, instead of one per agent.

A hundred noise traders each subscribed to `orders.filled` would make every trade be decoded and
queued a hundred times. The shared feed takes each message once and hands it to the agents' handlers
one after another, in the order they subscribed — which also keeps simulations deterministic.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from tradesim.bus import Bus, Delivery, Subscription

Handler = Callable[[Delivery], Awaitable[None]]


class Unsubscribe(Protocol):
    async def unsubscribe(self) -> None: ...


class Feed(Protocol):
    """What an agent subscribes through: the bus itself, or a SharedFeed."""

    async def subscribe(self, pattern: str, handler: Handler) -> Unsubscribe: ...


class _Membership:
    def __init__(self, feed: SharedFeed, pattern: str, handler: Handler) -> None:
        self._feed, self._pattern, self._handler = feed, pattern, handler

    async def unsubscribe(self) -> None:
        await self._feed.remove(self._pattern, self._handler)


class SharedFeed:
    """Fans each subject's messages out to the handlers registered for it, in registration order."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._handlers: dict[str, list[Handler]] = {}
        self._subs: dict[str, Subscription] = {}

    async def subscribe(self, pattern: str, handler: Handler) -> Unsubscribe:
        handlers = self._handlers.get(pattern)
        if handlers is None:
            handlers = self._handlers[pattern] = []

            async def deliver(d: Delivery) -> None:
                for h in list(handlers):
                    await h(d)

            self._subs[pattern] = await self.bus.subscribe(pattern, deliver)
        handlers.append(handler)
        return _Membership(self, pattern, handler)

    async def remove(self, pattern: str, handler: Handler) -> None:
        handlers = self._handlers.get(pattern)
        if handlers is None or handler not in handlers:
            return
        handlers.remove(handler)
        if not handlers:
            del self._handlers[pattern]
            await self._subs.pop(pattern).unsubscribe()
