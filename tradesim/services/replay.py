"""The JSONL replay format: decimal-priced command lines in, one event per line out.

This is the edge where decimals become ticks (through each `Instrument`) and back. A line that
cannot become a command — bad JSON, unknown op or enum value, a missing field, an off-tick price —
yields a `rejected` line with its line number, and the run goes on. See docs/replay.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import Any

import msgspec

from tradesim.domain import (
    STP,
    AddInstrument,
    CancelOrder,
    Command,
    Event,
    ExpireOrders,
    Instrument,
    ModifyOrder,
    NewOrder,
    OffTickError,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderModified,
    OrderRejected,
    OrderTriggered,
    OrderType,
    RejectReason,
    Side,
    TimeInForce,
    Trade,
)
from tradesim.engine import MatchingEngine

# --- input lines --------------------------------------------------------------------------------


class _Line(msgspec.Struct, tag_field="op", forbid_unknown_fields=True):
    """Fields common to every input line."""

    ts: int | None = None


class InstrumentLine(_Line, kw_only=True, tag="instrument"):
    symbol: str
    tick_size: Decimal
    lot_size: int = 1
    multiplier: Decimal = Decimal(1)
    currency: str = "USD"
    margin_rate: Decimal = Decimal(0)
    price_band: Decimal | None = None
    flags: list[str] = []


class NewLine(_Line, kw_only=True, tag="new"):
    account: str
    client_order_id: str
    symbol: str
    side: Side
    type: OrderType
    tif: TimeInForce = TimeInForce.GTC
    price: Decimal | None = None
    qty: int
    stop_price: Decimal | None = None
    display_qty: int | None = None
    post_only: bool = False
    stp: STP = STP.CANCEL_NEWEST
    expire_ts: int | None = None


class ModifyLine(_Line, kw_only=True, tag="modify"):
    account: str
    client_order_id: str
    symbol: str
    price: Decimal | None = None
    qty: int | None = None


class CancelLine(_Line, kw_only=True, tag="cancel"):
    account: str
    client_order_id: str
    symbol: str


class BookLine(_Line, kw_only=True, tag="book"):
    symbol: str
    depth: int = 10


class ExpireLine(_Line, kw_only=True, tag="expire"):
    end_of_day: bool = False


ReplayLine = InstrumentLine | NewLine | ModifyLine | CancelLine | BookLine | ExpireLine

_decoder = msgspec.json.Decoder(ReplayLine)


class LineError(Exception):
    """A line that cannot become a command; carries the reject reason for the `rejected` line."""

    def __init__(self, reason: RejectReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


# --- the replayer -------------------------------------------------------------------------------

Json = dict[str, Any]


class Replayer:
    """Feeds replay lines through a fresh engine and renders the resulting events as JSON objects."""

    def __init__(self, engine: MatchingEngine | None = None) -> None:
        self.engine = engine if engine is not None else MatchingEngine(instruments=[])
        self.ts = 0
        self.last_seq = 0
        self.lines = 0
        self.events = 0
        self.trades = 0
        self.rejected = 0

    def run(self, lines: Iterable[str | bytes]) -> Iterator[Json]:
        for number, raw in enumerate(lines, start=1):
            yield from self.feed(raw, number)

    def feed(self, raw: str | bytes, number: int) -> list[Json]:
        """Processes one input line; blank lines and `#` comments produce nothing."""
        text = (raw.encode() if isinstance(raw, str) else raw).strip()
        if not text or text.startswith(b"#"):
            return []
        self.lines += 1
        try:
            line = _decoder.decode(text)
        except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
            return [self._reject_line(number, RejectReason.MALFORMED, str(exc), _names(text))]
        if line.ts is not None:
            if line.ts < self.ts:
                message = f"ts {line.ts} goes back in time (previous {self.ts})"
                return [self._reject_line(number, RejectReason.MALFORMED, message, line)]
            self.ts = line.ts
        if isinstance(line, BookLine):
            return [self._book(line)]
        try:
            command = self._command(line)
        except LineError as exc:
            return [self._reject_line(number, exc.reason, exc.message, line)]
        return [self._render(event, number) for event in self.engine.apply(command)]

    # -- lines → commands

    def _command(self, line: ReplayLine) -> Command:
        ts = self.ts
        if isinstance(line, InstrumentLine):
            return AddInstrument(instrument=self._instrument(line), ts=ts)
        if isinstance(line, ExpireLine):
            return ExpireOrders(ts=ts, end_of_day=line.end_of_day)
        if isinstance(line, CancelLine):
            return CancelOrder(account=line.account, client_order_id=line.client_order_id,
                               symbol=line.symbol, ts=ts)
        instrument = self._listed(line.symbol)
        if isinstance(line, ModifyLine):
            return ModifyOrder(account=line.account, client_order_id=line.client_order_id, symbol=line.symbol,
                               price=_ticks(instrument, line.price), qty=line.qty, ts=ts)
        assert isinstance(line, NewLine)
        return NewOrder(
            account=line.account, client_order_id=line.client_order_id, symbol=line.symbol, side=line.side,
            type=line.type, tif=line.tif, price=_ticks(instrument, line.price), qty=line.qty, ts=ts,
            stop_price=_ticks(instrument, line.stop_price), display_qty=line.display_qty,
            post_only=line.post_only, stp=line.stp, expire_ts=line.expire_ts,
        )

    def _instrument(self, line: InstrumentLine) -> Instrument:
        if line.symbol in self.engine.instruments:
            raise LineError(RejectReason.MALFORMED, f"instrument {line.symbol} is already listed")
        try:
            return Instrument(
                symbol=line.symbol, tick_size=line.tick_size, lot_size=line.lot_size,
                multiplier=line.multiplier, currency=line.currency, margin_rate=line.margin_rate,
                price_band=line.price_band, flags=frozenset(line.flags),
            )
        except ValueError as exc:
            raise LineError(RejectReason.MALFORMED, str(exc)) from exc

    def _listed(self, symbol: str) -> Instrument:
        instrument = self.engine.instruments.get(symbol)
        if instrument is None:
            raise LineError(RejectReason.UNKNOWN_SYMBOL, f"symbol {symbol} is not listed")
        return instrument

    # -- events → JSON

    def _reject_line(self, number: int, reason: RejectReason, message: str,
                     line: ReplayLine | dict[str, str]) -> Json:
        names = line if isinstance(line, dict) else {
            key: value for key in _NAMES if isinstance(value := getattr(line, key, None), str)
        }
        event = self.engine.reject(
            account=names.get("account", ""), client_order_id=names.get("client_order_id", ""),
            symbol=names.get("symbol", ""), reason=reason, message=message, ts=self.ts,
        )
        return self._render(event, number)

    def _book(self, line: BookLine) -> Json:
        instrument = self.engine.instruments.get(line.symbol)
        if instrument is None:
            bids: list[list[Any]] = []
            asks: list[list[Any]] = []
        else:
            raw_bids, raw_asks = self.engine.book(line.symbol).depth(line.depth)
            bids = [[str(instrument.from_ticks(p)), q, n] for p, q, n in raw_bids]
            asks = [[str(instrument.from_ticks(p)), q, n] for p, q, n in raw_asks]
        return {"type": "book", "seq": self.last_seq, "ts": self.ts, "symbol": line.symbol,
                "bids": bids, "asks": asks}

    def _price(self, symbol: str, ticks: int | None) -> str | None:
        if ticks is None:
            return None
        return str(self.engine.instruments[symbol].from_ticks(ticks))

    def _render(self, event: Event, number: int) -> Json:
        self.last_seq = event.seq
        self.events += 1
        head: Json = {"seq": event.seq, "ts": event.ts}
        if isinstance(event, Trade):
            self.trades += 1
            return {"type": "trade", **head, "trade_id": str(event.trade_id), "symbol": event.symbol,
                    "price": self._price(event.symbol, event.price), "qty": event.qty,
                    "aggressor": event.aggressor.value,
                    "maker_order_id": str(event.maker_order_id), "maker_account": event.maker_account,
                    "maker_client_order_id": event.maker_client_order_id,
                    "taker_order_id": str(event.taker_order_id), "taker_account": event.taker_account,
                    "taker_client_order_id": event.taker_client_order_id}
        if isinstance(event, OrderRejected):
            self.rejected += 1
            return {"type": "rejected", **head, "account": event.account,
                    "client_order_id": event.client_order_id, "symbol": event.symbol,
                    "reason": event.reason.value, "message": event.message, "line": number}
        ids: Json = {"order_id": str(event.order_id), "account": event.account,
                     "client_order_id": event.client_order_id, "symbol": event.symbol}
        if isinstance(event, OrderAccepted):
            return {"type": "accepted", **head, **ids, "side": event.side.value,
                    "price": self._price(event.symbol, event.price), "qty": event.qty}
        if isinstance(event, OrderCanceled):
            return {"type": "canceled", **head, **ids, "reason": event.reason.value,
                    "canceled_qty": event.canceled_qty}
        if isinstance(event, OrderModified):
            return {"type": "modified", **head, **ids, "price": self._price(event.symbol, event.price),
                    "qty": event.qty}
        if isinstance(event, OrderTriggered):
            return {"type": "triggered", **head, **ids}
        if isinstance(event, OrderExpired):
            return {"type": "expired", **head, **ids, "canceled_qty": event.canceled_qty}
        raise TypeError(f"no JSON form for event {type(event).__name__}")


_NAMES = ("account", "client_order_id", "symbol")


def _names(text: bytes) -> dict[str, str]:
    """The order's names from a line that failed validation, so its rejection still says whose it was."""
    try:
        raw = msgspec.json.decode(text)
    except msgspec.DecodeError:
        return {}
    if not isinstance(raw, dict):
        return {}
    return {key: value for key in _NAMES if isinstance(value := raw.get(key), str)}


def _ticks(instrument: Instrument, price: Decimal | None) -> int | None:
    if price is None:
        return None
    try:
        return instrument.to_ticks(price)
    except OffTickError as exc:
        raise LineError(RejectReason.OFF_TICK, str(exc)) from exc
