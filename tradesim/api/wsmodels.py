"""The WebSocket protocol's messages (`/ws`): what a client sends and every frame the server pushes.

Every server frame is a JSON object whose `type` comes first; prices are decimal strings of the
instrument's tick, quantities ints, `seq` the venue's event sequence. Market-data frames also carry
`prev_seq`, the `seq` of the frame before them on the same channel and symbol (or of the snapshot), so
a client detects a gap with `prev_seq != last seq` and resubscribes. See docs/api.md (WebSocket).
"""

from __future__ import annotations

import msgspec

from tradesim.services.accounts.views import PositionView

PriceLevel = tuple[str, int, int]  # [price, visible qty, order count]; qty 0 in an update = level gone


class WsRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A client's message: `op` is subscribe, unsubscribe, auth or ping; `id` is echoed in the answer.
    `auth` takes a JWT (`token`: the socket closes when it expires) or an API key (`api_key`)."""

    op: str
    channel: str | None = None
    symbol: str | None = None
    account: str | None = None
    token: str | None = None
    api_key: str | None = None
    id: str | int | None = None


class _Out(msgspec.Struct, kw_only=True, omit_defaults=True, tag_field="type"):
    """Base of server frames: the tag is the frame's `type`; None fields are left out."""


class ErrorMsg(_Out, tag="error"):
    error: str
    message: str
    channel: str | None = None
    symbol: str | None = None
    id: str | int | None = None


class Subscribed(_Out, tag="subscribed"):
    channel: str
    symbol: str | None = None
    account: str | None = None
    id: str | int | None = None


class Unsubscribed(_Out, tag="unsubscribed"):
    channel: str
    symbol: str | None = None
    account: str | None = None
    id: str | int | None = None


class Authenticated(_Out, tag="authenticated"):
    """`exp` (epoch seconds, the JWT's claim) is when the socket is closed unless a fresh token is sent
    before; absent for an API key, which holds the socket as long as the key is valid."""

    username: str
    role: str
    account: str
    exp: int | None = None
    id: str | int | None = None


class Pong(_Out, tag="pong"):
    ts: int
    id: str | int | None = None


class Heartbeat(_Out, tag="heartbeat"):
    ts: int


class Level2Snapshot(_Out, tag="snapshot"):
    """The top levels at `seq`; the updates that follow apply on top of it in order."""

    channel: str
    symbol: str
    seq: int
    bids: list[PriceLevel]
    asks: list[PriceLevel]


class Level2Update(_Out, tag="update"):
    """The levels that changed between `prev_seq` and `seq`: set each to its qty/count, drop it at qty 0."""

    channel: str
    symbol: str
    seq: int
    prev_seq: int
    ts: int
    bids: list[PriceLevel]
    asks: list[PriceLevel]


class TradeOut(msgspec.Struct, kw_only=True):
    trade_id: str
    symbol: str
    price: str
    qty: int
    aggressor: str
    seq: int
    ts: int


class TradesSnapshot(_Out, tag="snapshot"):
    """The tape's latest trades on the symbol, oldest first; `seq` is the newest's (0 if none)."""

    channel: str
    symbol: str
    seq: int
    trades: list[TradeOut]


class TradeMsg(_Out, tag="trade"):
    channel: str
    symbol: str
    seq: int
    prev_seq: int
    trade_id: str
    price: str
    qty: int
    aggressor: str
    ts: int


class TickerOut(msgspec.Struct, kw_only=True):
    """The market-data service's latest view of a symbol (GET /ticker and the ticker channel)."""

    symbol: str
    seq: int
    ts: int
    bid: str | None
    bid_qty: int
    ask: str | None
    ask_qty: int
    last: str | None
    last_qty: int
    volume: int
    turnover: str  # sum of price * qty today, in price units
    trades: int
    vwap: str | None
    reference: str | None


class TickerSnapshot(_Out, tag="snapshot"):
    channel: str
    symbol: str
    seq: int
    ticker: TickerOut | None  # None: the market-data service did not answer


class TickerMsg(_Out, tag="ticker"):
    channel: str
    symbol: str
    seq: int
    prev_seq: int
    ticker: TickerOut


class OrderEventMsg(_Out, tag="order"):
    """One of the account's order events: accepted, rejected, canceled, expired, modified, triggered."""

    channel: str
    account: str
    event: str
    seq: int
    ts: int
    client_order_id: str
    symbol: str
    order_id: str | None = None
    side: str | None = None
    order_type: str | None = None
    tif: str | None = None
    price: str | None = None
    stop_price: str | None = None
    qty: int | None = None
    leaves_qty: int | None = None
    canceled_qty: int | None = None
    reason: str | None = None
    message: str | None = None


class FillMsg(_Out, tag="fill"):
    """The account's side of one trade (a self-trade yields two fills)."""

    channel: str
    account: str
    seq: int
    ts: int
    trade_id: str
    order_id: str
    client_order_id: str
    symbol: str
    side: str
    price: str
    qty: int
    liquidity: str  # maker or taker
    cum_qty: int
    leaves_qty: int


class PositionsMsg(msgspec.Struct, kw_only=True, tag_field="type", tag="positions"):
    """The account's positions (as GET /positions) after its fills up to `seq`; `snapshot` on subscribe."""

    channel: str
    account: str
    seq: int
    positions: list[PositionView]
    snapshot: bool = False


def encode(msg: msgspec.Struct) -> str:
    """One frame's text (encoded once, then shared by every client it goes to)."""
    return msgspec.json.encode(msg).decode()
