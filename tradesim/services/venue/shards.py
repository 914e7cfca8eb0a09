"""Symbol sharding of the venue: which shard holds a symbol, and the `rpc.venue.*` router over shards.

Each shard is its own venue: its own journal stream (`JOURNAL_<shard>`), leader election
(`venue.<shard>`), standbys and RPC service. With a single shard (the default: every instrument) that
service is `venue`, so `rpc.venue.*` is the venue itself, exactly as in embedded mode. With several,
shard `a` serves `rpc.venue-a.*`; the OMS routes each command there by its symbol (`ShardMap`), and
every shard leader also runs a `ShardRouter` on `rpc.venue.*` (one queue group, any leader answers)
that forwards by symbol, so the API's book, the market data and any other caller of `rpc.venue.*`
keep working unchanged for every shard. See docs/venue-ha.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Final

import msgspec

from tradesim.bus import Bus, BusError, RemoteError, Subscription, subjects
from tradesim.domain import CancelOrder, ModifyOrder, NewOrder
from tradesim.services.venue.messages import (
    BookRequest,
    EndOfDayRequest,
    Fenced,
    InstrumentsReply,
    InstrumentsRequest,
    OrderStatusReply,
    OrderStatusRequest,
    VenueReply,
)
from tradesim.services.venue.service import (
    METHODS,
    SERVICE,
    BadVenueRequestError,
    UnknownSymbolError,
    VenueError,
    VenueUnavailableError,
)

DEFAULT_SHARD: Final = "main"
"""The name of the one shard of a venue that is not split (its journal stream is `JOURNAL_main`)."""
ID_BLOCK: Final = 10**12
"""Order ids and trade ids of shard k (its index in the map) are numbered from `k * ID_BLOCK + 1`, so they
are unique over every shard; shard 0 (and the single default shard) numbers from 1, as ever."""
_NAME_RE: Final = re.compile(r"^[a-z0-9_]{1,32}$")


class ShardMapError(ValueError):
    """A shard map that cannot be used (bad or repeated name, a symbol on two shards or on none)."""


def check_shard_name(name: str) -> str:
    """Shard names go into a stream name, a subject token, a KV key and a PostgreSQL schema name."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ShardMapError(f"invalid shard name {name!r}: use 1-32 lowercase letters, digits or '_'")
    return name


class Shard(msgspec.Struct, frozen=True):
    """One venue shard: its name, its RPC service (`rpc.{service}.*`) and the symbols it holds."""

    name: str
    service: str
    symbols: tuple[str, ...]
    index: int = 0  # position in the map: decides the id block

    @property
    def id_base(self) -> int:
        """The shard's engine numbers order and trade ids from `id_base + 1` (`MatchingEngine(id_base=)`)."""
        return self.index * ID_BLOCK

    @property
    def election(self) -> str:
        """The leader election of the shard's venue instances."""
        return f"venue.{self.name}"

    @property
    def schema(self) -> str | None:
        """The PostgreSQL schema of the shard's journal mirror (None: the database's default schema)."""
        return None if self.service == SERVICE else f"venue_{self.name}"


class ShardMap:
    """`[(name, symbols), …]` → the shards, and the shard of each symbol.

    Every symbol of `instruments` must be on exactly one shard. One shard: its service is `venue`;
    several: `venue-<name>` each."""

    def __init__(self, shards: Sequence[tuple[str, Sequence[str]]], instruments: Iterable[str]) -> None:
        listed = list(instruments)
        if not shards:
            raise ShardMapError("a shard map needs at least one shard")
        names = [check_shard_name(name) for name, _ in shards]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ShardMapError(f"shard {repeated[0]!r} is listed twice")
        single = len(shards) == 1
        self.shards: list[Shard] = []
        self._by_symbol: dict[str, Shard] = {}
        for index, (name, symbols) in enumerate(shards):
            if isinstance(symbols, str) or not all(isinstance(symbol, str) for symbol in symbols):
                raise ShardMapError(f"shard {name!r}: symbols must be a list of symbols, got {symbols!r}")
            if not symbols:
                raise ShardMapError(f"shard {name!r} holds no symbol")
            twice = sorted({s for s in symbols if list(symbols).count(s) > 1})
            if twice:
                raise ShardMapError(f"shard {name!r} lists {twice[0]} twice")
            shard = Shard(name, SERVICE if single else f"{SERVICE}-{name}", tuple(symbols), index)
            for symbol in symbols:
                if symbol not in listed:
                    raise ShardMapError(f"shard {name!r}: {symbol} is not a listed instrument")
                other = self._by_symbol.get(symbol)
                if other is not None:
                    raise ShardMapError(f"{symbol} is on two shards: {other.name!r} and {name!r}")
                self._by_symbol[symbol] = shard
            self.shards.append(shard)
        missing = [s for s in listed if s not in self._by_symbol]
        if missing:
            raise ShardMapError(f"{', '.join(missing)} on no shard: every instrument needs one")

    @classmethod
    def single(cls, instruments: Iterable[str]) -> ShardMap:
        """The default: one shard, `main`, with every instrument, served as `venue`."""
        symbols = list(instruments)
        return cls([(DEFAULT_SHARD, symbols)], symbols)

    @classmethod
    def split(cls, instruments: Iterable[str], n: int) -> ShardMap:
        """The instruments dealt round-robin over `n` shards named `s1`…`sN` (`cluster up --shards N`)."""
        symbols = list(instruments)
        if not 1 <= n <= len(symbols):
            raise ShardMapError(f"cannot split {len(symbols)} instruments over {n} shards")
        if n == 1:
            return cls.single(symbols)
        return cls([(f"s{i + 1}", symbols[i::n]) for i in range(n)], symbols)

    @property
    def sharded(self) -> bool:
        """True with several shards (then `rpc.venue.*` is the router, not a venue)."""
        return len(self.shards) > 1

    def shard(self, name: str) -> Shard:
        for shard in self.shards:
            if shard.name == name:
                return shard
        raise ShardMapError(f"no venue shard {name!r} (shards: {', '.join(s.name for s in self.shards)})")

    def of(self, symbol: str) -> Shard | None:
        return self._by_symbol.get(symbol)

    def shard_of(self, symbol: str) -> str:
        """The name of the shard whose venue numbers `symbol`'s events: a symbol on no shard is refused by
        the first (see `service_for`), so its rejections are in the first shard's sequence."""
        shard = self._by_symbol.get(symbol)
        return (shard or self.shards[0]).name

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.shards]

    def service_for(self, symbol: str) -> str:
        """The RPC service of `symbol`'s shard; a symbol on no shard goes to the first (which refuses it as
        the engine does: an unknown symbol is a rejected order, or an UnknownSymbolError for a query)."""
        shard = self._by_symbol.get(symbol)
        return (shard or self.shards[0]).service

    def __repr__(self) -> str:
        return f"ShardMap({[(s.name, list(s.symbols)) for s in self.shards]!r})"


_REMOTE_TYPES: dict[str, type[VenueError]] = {}


def _reraise(exc: RemoteError) -> VenueError:
    """A shard's refusal, passed on under its own error type (callers tell StaleTokenError etc. apart)."""
    tp = _REMOTE_TYPES.get(exc.error_type)
    if tp is None:
        tp = type(exc.error_type, (VenueError,), {"__module__": __name__})
        _REMOTE_TYPES[exc.error_type] = tp
    return tp(exc.message)


class ShardRouter:
    """Serves `rpc.venue.*` over several shards by forwarding each request to the shard that holds its
    symbol: commands (bare or `Fenced`) and `book` by symbol; `instruments` is every shard's list;
    `order_status` asks every shard (an order lives on one); `end_of_day` runs on every shard (the reply
    lists all their events; `seq`/`journal_seq` are those of the last shard). Run by every shard's leader
    in one queue group: any of them answers, so the router is up as long as one shard leader is."""

    def __init__(self, bus: Bus, shards: ShardMap, *, timeout: float = 5.0, concurrency: int = 256) -> None:
        if not shards.sharded:
            raise ValueError("one shard is served as `venue` itself: no router needed")
        self.bus = bus
        self.shards = shards
        self.timeout = timeout
        self.concurrency = concurrency
        self._subs: list[Subscription] = []

    async def start(self) -> None:
        handlers: dict[str, _Handler] = {"submit": self._command, "cancel": self._command, "modify": self._command,
                    "book": self._book, "instruments": self._instruments, "order_status": self._order_status,
                    "end_of_day": self._end_of_day}
        assert set(handlers) == set(METHODS)
        for method, handler in handlers.items():
            self._subs.append(await self.bus.serve(subjects.rpc(SERVICE, method), _bind(handler, method),
                                                   concurrency=self.concurrency))

    async def stop(self) -> None:
        subs, self._subs = self._subs, []
        for sub in subs:
            with contextlib.suppress(BusError):
                await sub.unsubscribe()

    async def _ask(self, service: str, method: str, req: msgspec.Struct) -> msgspec.Struct:
        try:
            return await self.bus.request(subjects.rpc(service, method), req, timeout=self.timeout)
        except RemoteError as exc:
            raise _reraise(exc) from None
        except (BusError, TimeoutError) as exc:
            raise VenueUnavailableError(f"venue shard {service} did not answer {method}: {exc}") from exc

    async def _command(self, req: msgspec.Struct, method: str) -> msgspec.Struct:
        command = req.command if isinstance(req, Fenced) else req
        if not isinstance(command, NewOrder | CancelOrder | ModifyOrder):
            raise BadVenueRequestError(f"rpc.venue.{method} takes a command, got {type(command).__name__}")
        if self.shards.of(command.symbol) is None:
            raise UnknownSymbolError(f"rpc.venue.{method}: unknown symbol {command.symbol!r} (on no venue shard)")
        return await self._ask(self.shards.service_for(command.symbol), method, req)

    async def _book(self, req: msgspec.Struct, method: str) -> msgspec.Struct:
        if not isinstance(req, BookRequest):
            raise BadVenueRequestError(f"rpc.venue.book takes BookRequest, got {type(req).__name__}")
        if self.shards.of(req.symbol) is None:
            raise UnknownSymbolError(f"rpc.venue.book: unknown symbol {req.symbol!r}")
        return await self._ask(self.shards.service_for(req.symbol), method, req)

    async def _all(self, method: str, req: msgspec.Struct) -> list[msgspec.Struct]:
        return list(await asyncio.gather(*(self._ask(s.service, method, req) for s in self.shards.shards)))

    async def _instruments(self, req: msgspec.Struct, method: str) -> msgspec.Struct:
        if not isinstance(req, InstrumentsRequest):
            raise BadVenueRequestError(f"rpc.venue.instruments takes InstrumentsRequest, got {type(req).__name__}")
        return InstrumentsReply(instruments=[i for r in await self._all(method, req)
                                             if isinstance(r, InstrumentsReply) for i in r.instruments])

    async def _order_status(self, req: msgspec.Struct, method: str) -> msgspec.Struct:
        if not isinstance(req, OrderStatusRequest):
            raise BadVenueRequestError(f"rpc.venue.order_status takes OrderStatusRequest, got {type(req).__name__}")
        replies = [r for r in await self._all(method, req) if isinstance(r, OrderStatusReply)]
        for reply in replies:
            if reply.found:
                return reply
        return OrderStatusReply(found=False, seq=0)

    async def _end_of_day(self, req: msgspec.Struct, method: str) -> msgspec.Struct:
        if not isinstance(req, EndOfDayRequest):
            raise BadVenueRequestError(f"rpc.venue.end_of_day takes EndOfDayRequest, got {type(req).__name__}")
        replies = [r for r in await self._all(method, req) if isinstance(r, VenueReply)]
        return VenueReply(events=[e for r in replies for e in r.events], seq=replies[-1].seq,
                          journal_seq=replies[-1].journal_seq)


_Handler = Callable[[msgspec.Struct, str], Awaitable[msgspec.Struct]]


def _bind(handler: _Handler, method: str) -> Callable[[msgspec.Struct], Awaitable[msgspec.Struct]]:
    async def serve(req: msgspec.Struct) -> msgspec.Struct:
        return await handler(req, method)
    return serve
