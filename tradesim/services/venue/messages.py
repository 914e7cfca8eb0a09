"""The venue's wire contract: RPC replies, book queries, and the public market-data messages it publishes.

Requests to `rpc.venue.submit|cancel|modify` are the domain commands themselves (NewOrder,
CancelOrder, ModifyOrder). Order events go out as the domain events; see docs/services.md for which
subject carries what.
"""

from __future__ import annotations

import msgspec

from tradesim.domain import CancelOrder, Event, Instrument, ModifyOrder, NewOrder, OrderStatus, Side

Level = tuple[int, int, int]  # (price ticks, visible qty, order count)


class VenueReply(msgspec.Struct, frozen=True, kw_only=True, tag="venue.reply", tag_field="kind"):
    """The events one command produced, sent only after the command is durable in the journal."""

    events: list[Event]
    # The venue's event sequence after this command (== the last event's seq when there are events).
    seq: int
    # The journal sequence of the command.
    journal_seq: int


class BookRequest(msgspec.Struct, frozen=True, kw_only=True, tag="venue.book_request", tag_field="kind"):
    symbol: str
    depth: int = 10


class BookReply(msgspec.Struct, frozen=True, kw_only=True, tag="venue.book", tag_field="kind"):
    symbol: str
    seq: int
    bids: list[Level]
    asks: list[Level]
    last_price: int | None = None


class InstrumentsRequest(msgspec.Struct, frozen=True, kw_only=True, tag="venue.instruments_request",
                         tag_field="kind"):
    pass


class InstrumentsReply(msgspec.Struct, frozen=True, kw_only=True, tag="venue.instruments", tag_field="kind"):
    instruments: list[Instrument]


class TradePrint(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag="venue.trade_print", tag_field="kind"):
    """The public tape (`trades.executed`): a trade without who was behind it."""

    seq: int
    ts: int
    trade_id: int
    symbol: str
    price: int
    qty: int
    aggressor: Side


class DepthUpdate(msgspec.Struct, frozen=True, kw_only=True, tag="venue.depth", tag_field="kind"):
    """Top of book after a batch of commands touched the symbol (`market.depth.{symbol}`), conflated."""

    symbol: str
    seq: int
    ts: int
    bids: list[Level]
    asks: list[Level]
    last_price: int | None = None


class OrderStatusRequest(msgspec.Struct, frozen=True, kw_only=True, tag="venue.order_status_request",
                         tag_field="kind"):
    """`rpc.venue.order_status`: what the venue knows of (account, client_order_id) — the OMS asks this
    to recover an order whose request timed out."""

    account: str
    client_order_id: str


class OrderStatusReply(msgspec.Struct, frozen=True, kw_only=True, tag="venue.order_status", tag_field="kind"):
    found: bool
    seq: int  # the venue's event sequence when it answered
    order_id: int | None = None
    status: OrderStatus | None = None
    price: int | None = None
    qty: int = 0
    filled_qty: int = 0
    leaves_qty: int = 0


class EndOfDayRequest(msgspec.Struct, frozen=True, kw_only=True, tag="venue.end_of_day_request", tag_field="kind"):
    """`rpc.venue.end_of_day`: expire every DAY order (and due GTD ones); the venue stamps the time.

    Answered with the `VenueReply` of the journaled `ExpireOrders(end_of_day=True)`."""


class Fenced(msgspec.Struct, frozen=True, kw_only=True, tag="venue.fenced", tag_field="kind"):
    """A command from a single-active sender (the OMS leader) with its election's fencing token.

    Sent to `rpc.venue.submit|cancel|modify` instead of the bare command in distributed mode. The venue
    keeps the newest token it has seen and refuses (RemoteError, nothing journaled) a command whose
    token is older: a former leader that was paused past its lease cannot act after a takeover.
    """

    command: NewOrder | CancelOrder | ModifyOrder
    token: int


VENUE_MESSAGES: tuple[type[msgspec.Struct], ...] = (
    VenueReply, BookRequest, BookReply, InstrumentsRequest, InstrumentsReply, TradePrint, DepthUpdate,
    OrderStatusRequest, OrderStatusReply, EndOfDayRequest, Fenced,
)
