"""One bus subscription per subject for every agent in a process, instead of one per agent.

A hundred noise traders each subscribed to `orders.filled` would make every trade be decoded and
queued a hundred times. The shared feed takes each message once and hands it to the agents' handlers
one after another, in the order they subscribed — which also keeps simulations deterministic. A
handler subscribed for one account (`subscribe_account`) is only called with the trades and order
events of that account: each trade concerns two agents, so calling all hundred (most to find it is not
theirs) was the largest cost of a trade's delivery in a simulation.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from tradesim.bus import Bus, Delivery, Subscription
from tradesim.domain import Trade

Handler = Callable[[Delivery], Awaitable[None]]


class Unsubscribe(Protocol):
    async def unsubscribe(self) -> None: ...


class Feed(Protocol):
    """What an agent subscribes through: the bus itself, or a SharedFeed."""

    async def subscribe(self, pattern: str, handler: Handler) -> Unsubscribe: ...


class _Membership:
    def __init__(self, feed: SharedFeed, pattern: str, entry: _Entry) -> None:
        self._feed, self._pattern, self._entry = feed, pattern, entry

    async def unsubscribe(self) -> None:
        await self._feed.remove(self._pattern, self._entry)


class _Entry:
    """One registration: the handler and, for an account's subscription, that account."""

    __slots__ = ("account", "handler")

    def __init__(self, handler: Handler, account: str | None) -> None:
        self.handler, self.account = handler, account


def _accounts_of(data: object) -> tuple[str | None, str | None]:
    """The accounts a message concerns: both sides of a trade, the `account` of an order event."""
    if isinstance(data, Trade):
        return data.maker_account, data.taker_account
    account = getattr(data, "account", None)
    return (account, None) if isinstance(account, str) else (None, None)


class _Routes:
    """A subject's registrations indexed by account, so that a message costs the handlers it reaches,
    not a scan of every agent's registration. Rebuilt on every (un)subscription; immutable otherwise,
    so a delivery in progress is unaffected by handlers that (un)subscribe, as with a copied list."""

    __slots__ = ("by_account", "everyone", "general")

    def __init__(self, entries: list[_Entry]) -> None:
        self.everyone: list[Handler] = [e.handler for e in entries if e.account is None]
        self.general = len(self.everyone) == len(entries)  # no account subscriptions: all get everything
        # registration position and handler: the handlers for a message run in registration order
        self.by_account: dict[str | None, list[tuple[int, Handler]]] = {}
        for i, e in enumerate(entries):
            self.by_account.setdefault(e.account, []).append((i, e.handler))

    def handlers(self, first: str | None, second: str | None) -> list[Handler]:
        if self.general:
            return self.everyone
        by_account = self.by_account
        picked = list(by_account.get(None, ()))
        if first is not None:
            picked.extend(by_account.get(first, ()))
        if second is not None and second != first:
            picked.extend(by_account.get(second, ()))
        picked.sort(key=_position)
        return [handler for _, handler in picked]


def _position(item: tuple[int, Handler]) -> int:
    return item[0]


class SharedFeed:
    """Fans each subject's messages out to the handlers registered for it, in registration order."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._entries: dict[str, list[_Entry]] = {}
        self._routes: dict[str, _Routes] = {}
        self._subs: dict[str, Subscription] = {}
        # Highest trade seq delivered per subject: what an account's subscriber has "seen" of the
        # subject although it was only called with its own trades.
        self.last_trade_seq: dict[str, int] = {}

    async def subscribe(self, pattern: str, handler: Handler) -> Unsubscribe:
        """Every message on `pattern`."""
        return await self._add(pattern, _Entry(handler, None))

    async def subscribe_account(self, pattern: str, account: str, handler: Handler) -> Unsubscribe:
        """Only the messages on `pattern` that concern `account` (a trade it is a side of, its order events)."""
        return await self._add(pattern, _Entry(handler, account))

    async def _add(self, pattern: str, entry: _Entry) -> Unsubscribe:
        entries = self._entries.get(pattern)
        if entries is None:
            entries = self._entries[pattern] = []
            seqs = self.last_trade_seq
            routes = self._routes

            async def deliver(d: Delivery) -> None:
                data = d.data
                first, second = _accounts_of(data)
                if isinstance(data, Trade) and data.seq > seqs.get(pattern, 0):
                    seqs[pattern] = data.seq
                for handler in routes[pattern].handlers(first, second):
                    await handler(d)

            self._subs[pattern] = await self.bus.subscribe(pattern, deliver)
        entries.append(entry)
        self._routes[pattern] = _Routes(entries)
        return _Membership(self, pattern, entry)

    async def remove(self, pattern: str, entry: _Entry) -> None:
        entries = self._entries.get(pattern)
        if entries is None or entry not in entries:
            return
        entries.remove(entry)
        self._routes[pattern] = _Routes(entries)
        if not entries:
            del self._entries[pattern]
            del self._routes[pattern]
            await self._subs.pop(pattern).unsubscribe()
