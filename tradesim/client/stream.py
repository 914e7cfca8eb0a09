"""`Stream`: one WebSocket to `/ws` as an async iterator of typed frames, with sequence-gap detection.

Market-data frames carry `seq` and `prev_seq` (the previous frame's `seq` on that channel and symbol, or the
snapshot's), so a lost frame is noticed at once: the stream raises `SequenceGap`, and the caller resubscribes
for a fresh snapshot. Heartbeats are consumed here; server errors become the typed API exceptions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from types import TracebackType
from typing import Any, Final

import msgspec

from tradesim.client.errors import ApiError, ClientError, error_for
from tradesim.client.models import Level, Position, TapeTrade, Ticker
from tradesim.domain import Side

PUBLIC: Final = frozenset({"trades", "level2", "ticker"})
# WebSocket error codes → the HTTP status their REST twin would answer, for the typed exception
_WS_STATUS: Final = {"unauthorized": 401, "missing_token": 401, "invalid_token": 401, "token_expired": 401,
                     "invalid_credentials": 401, "key_revoked": 401,
                     "forbidden": 403, "unknown_symbol": 404, "not_subscribed": 404, "unknown_account": 404,
                     "already_subscribed": 409, "already_authenticated": 409,
                     "slow_consumer": 429, "rate_limited": 429, "rate_limit_exceeded": 429}


class SequenceGap(ClientError):
    """A market-data frame arrived whose `prev_seq` is not the last `seq` seen: something was lost."""

    def __init__(self, channel: str, key: str, expected: int, prev_seq: int) -> None:
        super().__init__(f"{channel} {key}: gap, had seq {expected}, next frame follows {prev_seq}")
        self.channel, self.key, self.expected, self.prev_seq = channel, key, expected, prev_seq


class StreamClosed(ClientError):
    """The server closed the WebSocket (`reason` says why, e.g. slow_consumer)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the stream was closed: {reason}")
        self.reason = reason


class Subscribed(msgspec.Struct, frozen=True, kw_only=True):
    channel: str
    symbol: str | None = None
    account: str | None = None


class Level2Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    """The top levels at `seq`; later `Level2Update`s apply on top of it."""

    channel: str
    symbol: str
    seq: int
    bids: list[Level]
    asks: list[Level]


class Level2Update(msgspec.Struct, frozen=True, kw_only=True):
    """Changed levels between `prev_seq` and `seq`: set each, drop those with qty 0."""

    channel: str
    symbol: str
    seq: int
    prev_seq: int
    ts: int
    bids: list[Level]
    asks: list[Level]


class TradesSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """The latest trades on the symbol, oldest first."""

    channel: str
    symbol: str
    seq: int
    trades: list[TapeTrade]


class TradeMsg(msgspec.Struct, frozen=True, kw_only=True):
    channel: str
    symbol: str
    seq: int
    prev_seq: int
    trade_id: str
    price: Decimal
    qty: int
    aggressor: Side
    ts: int


class TickerSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    channel: str
    symbol: str
    seq: int
    ticker: Ticker | None


class TickerMsg(msgspec.Struct, frozen=True, kw_only=True):
    channel: str
    symbol: str
    seq: int
    prev_seq: int
    ticker: Ticker


class OrderEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One of the account's order events: accepted, rejected, canceled, expired, modified, triggered."""

    channel: str
    account: str
    event: str
    seq: int
    ts: int
    client_order_id: str
    symbol: str
    order_id: str | None = None
    side: Side | None = None
    order_type: str | None = None
    tif: str | None = None
    price: Decimal | None = None
    stop_price: Decimal | None = None
    qty: int | None = None
    leaves_qty: int | None = None
    canceled_qty: int | None = None
    reason: str | None = None
    message: str | None = None


class FillEvent(msgspec.Struct, frozen=True, kw_only=True):
    """The account's side of one trade."""

    channel: str
    account: str
    seq: int
    ts: int
    trade_id: str
    order_id: str
    client_order_id: str
    symbol: str
    side: Side
    price: Decimal
    qty: int
    liquidity: str
    cum_qty: int
    leaves_qty: int


class PositionsMsg(msgspec.Struct, frozen=True, kw_only=True):
    """The account's positions after its fills up to `seq` (`snapshot` on subscribe)."""

    channel: str
    account: str
    seq: int
    positions: list[Position]
    snapshot: bool = False


Message = (Subscribed | Level2Snapshot | Level2Update | TradesSnapshot | TradeMsg | TickerSnapshot | TickerMsg
           | OrderEvent | FillEvent | PositionsMsg)


class _Head(msgspec.Struct):
    type: str
    channel: str | None = None
    symbol: str | None = None
    account: str | None = None
    seq: int = 0
    prev_seq: int | None = None
    error: str = ""
    message: str = ""


_BY_TYPE: Final[dict[str, type[Any]]] = {
    "subscribed": Subscribed, "update": Level2Update, "trade": TradeMsg, "ticker": TickerMsg,
    "order": OrderEvent, "fill": FillEvent, "positions": PositionsMsg,
}
_SNAPSHOTS: Final[dict[str, type[Any]]] = {"level2": Level2Snapshot, "trades": TradesSnapshot,
                                           "ticker": TickerSnapshot}
_SKIP: Final = frozenset({"heartbeat", "pong", "authenticated", "unsubscribed"})


def _ws_error(head: _Head) -> ApiError:
    status = _WS_STATUS.get(head.error, 400)
    return error_for(status, msgspec.json.encode({"error": head.error, "message": head.message}))


class Stream:
    """An open `/ws` connection. `subscribe` more channels on it, then `async for msg in stream`.

    `check_gaps=False` turns off the gap check (the frames still carry seq/prev_seq).
    """

    def __init__(self, url: str, token: str | None, *, check_gaps: bool = True, open_timeout: float = 10.0) -> None:
        self.url = url
        self._token = token
        self.check_gaps = check_gaps
        self._open_timeout = open_timeout
        self._ws: Any = None
        self._last: dict[tuple[str, str], int] = {}
        self._pending: list[Message] = []

    async def connect(self) -> Stream:
        from websockets.asyncio.client import connect

        try:
            self._ws = await connect(self.url, open_timeout=self._open_timeout, max_queue=None)
        except Exception as exc:  # websockets raises many kinds; all mean "no stream"
            raise ClientError(f"cannot open {self.url}: {type(exc).__name__}: {exc}") from exc
        if self._token:
            await self._send({"op": "auth", "token": self._token})
            await self._until({"authenticated"})
        return self

    async def __aenter__(self) -> Stream:
        return self if self._ws is not None else await self.connect()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()

    async def _send(self, body: dict[str, Any]) -> None:
        await self._ws.send(msgspec.json.encode(body).decode())

    async def subscribe(self, channel: str, symbol: str | None = None, *, account: str | None = None) -> None:
        """Subscribe and wait for the server's acknowledgement (the snapshot follows as the first frame);
        a refusal raises the typed error (`NotFound` for an unknown symbol, `Unauthorized` when private)."""
        body: dict[str, Any] = {"op": "subscribe", "channel": channel}
        if symbol is not None:
            body["symbol"] = symbol
        if account is not None:
            body["account"] = account
        await self._send(body)
        await self._until({"subscribed"})

    async def unsubscribe(self, channel: str, symbol: str | None = None, *, account: str | None = None) -> None:
        body: dict[str, Any] = {"op": "unsubscribe", "channel": channel}
        if symbol is not None:
            body["symbol"] = symbol
        if account is not None:
            body["account"] = account
        self._last.pop((channel, symbol or account or ""), None)
        await self._send(body)

    async def _until(self, kinds: set[str]) -> None:
        """Read until a frame of one of `kinds` (or an error, raised); data frames meanwhile are kept."""
        while True:
            head, raw = await self._recv()
            if head.type == "error":
                raise _ws_error(head)
            if head.type in kinds:
                return
            msg = self._decode(head, raw)
            if msg is not None:
                self._pending.append(msg)

    async def _recv(self) -> tuple[_Head, bytes | str]:
        from websockets.exceptions import ConnectionClosed

        try:
            raw = await self._ws.recv()
        except ConnectionClosed as exc:
            reason = exc.rcvd.reason if exc.rcvd is not None and exc.rcvd.reason else "closed"
            raise StreamClosed(reason) from exc
        return msgspec.json.decode(raw, type=_Head), raw

    def _decode(self, head: _Head, raw: bytes | str) -> Message | None:
        if head.type in _SKIP:
            return None
        cls = _SNAPSHOTS.get(head.channel or "") if head.type == "snapshot" else _BY_TYPE.get(head.type)
        if cls is None:
            return None  # a frame this client does not know yet
        key = (head.channel or "", head.symbol or head.account or "")
        if head.type == "snapshot":
            self._last[key] = head.seq
        elif head.prev_seq is not None:
            last = self._last.get(key)
            if self.check_gaps and last is not None and head.prev_seq != last:
                raise SequenceGap(key[0], key[1], last, head.prev_seq)
            self._last[key] = head.seq
        message: Message = msgspec.json.decode(raw, type=cls)
        return message

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[Message]:
        while True:
            while self._pending:
                yield self._pending.pop(0)
            head, raw = await self._recv()
            if head.type == "error":
                raise _ws_error(head)
            msg = self._decode(head, raw)
            if msg is not None and not isinstance(msg, Subscribed):
                yield msg
