"""`AsyncNatsClient` / `NatsClient`: trade straight on the bus (`rpc.oms.*`, `rpc.accounts.*`, `rpc.risk.*`),
retrying across an OMS failover, with the HTTP client's typed errors.

The NATS side speaks the bus's own messages: results are the OMS's `OrderReply` / `OrderView` /
`OrdersReply` / `AlgoView` and the accounts' and risk monitor's replies, prices in integer ticks. Prices
you pass may be ticks (`int`) or decimals (`Decimal`/`str`, converted with the instrument's tick, which the
client reads once from `rpc.venue.instruments`). Every order call goes through `call_oms`: no responders,
timeouts and `not_active` are retried with jittered backoff until the policy's deadline, safely, because
client order ids (and algo client ids) are generated when you give none, before the first attempt.
"""

from __future__ import annotations

from collections.abc import Awaitable
from decimal import Decimal
from types import TracebackType
from typing import Any, Final, TypeVar

import msgspec

from tradesim.bus import Bus, BusError, RemoteError, open_bus, register
from tradesim.client.errors import ApiError, BadRequest, Conflict, NotFound, Rejected, ServerError, TransportError
from tradesim.client.loop import LoopThread
from tradesim.domain import Instrument, OffTickError, OrderStatus, OrderType, Side, TimeInForce
from tradesim.services.accounts.messages import (
    ACCOUNTS_MESSAGES,
    AccountReply,
    AccountsError,
    GetAccount,
    GetPositions,
    PositionsReply,
)
from tradesim.services.oms.messages import (
    OMS_MESSAGES,
    AlgoControl,
    AlgoGetRequest,
    AlgoListRequest,
    AlgoParams,
    AlgoReply,
    AlgoRequest,
    AlgosReply,
    AlgoState,
    AlgoView,
    CancelRequest,
    GetOrderRequest,
    ListOrdersRequest,
    ModifyRequest,
    OmsError,
    OrderReply,
    OrderRequest,
    OrdersReply,
    OrderView,
)
from tradesim.services.oms.rpc import OmsUnavailableError, RetryPolicy, call_oms, with_client_order_id
from tradesim.services.risk.monitor_messages import RISK_MONITOR_MESSAGES, GetRisk, RiskError, RiskReply
from tradesim.services.venue.messages import VENUE_MESSAGES, InstrumentsReply, InstrumentsRequest

register(*OMS_MESSAGES, *VENUE_MESSAGES, *ACCOUNTS_MESSAGES, *RISK_MONITOR_MESSAGES)

T = TypeVar("T")
PriceLike = Decimal | str | int
DEFAULT_NATS: Final = "nats://127.0.0.1:4222"
# the OMS's error codes as the HTTP API answers them, so both clients raise the same exception classes
_STATUS: Final = {
    "unknown_account": 404, "unknown_symbol": 404, "unknown_order": 404, "unknown_hold": 404,
    "unknown_parent": 404, "unknown_algo": 400, "bad_request": 400, "bad_qty": 400, "bad_price": 400,
    "bad_params": 400, "missing_stop_price": 400, "duplicate_client_order_id": 409, "order_pending": 409,
    "order_closed": 409, "hold_already_decided": 409, "algo_closed": 409, "not_owner": 409,
    "venue_unavailable": 503, "internal": 500,
}
_BY_STATUS: Final[dict[int, type[ApiError]]] = {400: BadRequest, 404: NotFound, 409: Conflict}


def error_of(reply: OmsError | RiskError | AccountsError) -> ApiError:
    """The typed exception of a refusal on the bus (same classes and codes as the HTTP client's)."""
    status = _STATUS.get(reply.error, 422)
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else Rejected)
    return cls(status, reply.error, reply.message, {"error": reply.error, "message": reply.message})


class AsyncNatsClient:
    """A session on the bus for `account` (the account every order and query is for unless told otherwise).

    `await AsyncNatsClient.connect("nats://127.0.0.1:4222", account="alice")`, or pass an open `bus` (it is
    then left open by `aclose`). `policy` bounds each call: per-attempt timeout and overall deadline.
    """

    def __init__(self, bus: Bus, account: str, *, policy: RetryPolicy | None = None, own_bus: bool = False) -> None:
        if not account:
            raise ValueError("account must not be empty")
        self.bus = bus
        self.account = account
        self.policy = policy or RetryPolicy()
        self._own_bus = own_bus
        self._instruments: dict[str, Instrument] | None = None

    @classmethod
    async def connect(cls, url: str = DEFAULT_NATS, *, account: str, policy: RetryPolicy | None = None
                      ) -> AsyncNatsClient:
        try:
            bus = await open_bus(url)
        except BusError as exc:
            raise TransportError(f"cannot reach the bus at {url}: {exc}") from exc
        return cls(bus, account, policy=policy, own_bus=True)

    async def __aenter__(self) -> AsyncNatsClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own_bus:
            await self.bus.close()

    # ---- transport ---------------------------------------------------------------------------------------

    async def _call(self, service: str, method: str, request: msgspec.Struct) -> msgspec.Struct:
        try:
            reply = await call_oms(self.bus, method, request, policy=self.policy, service=service)
        except OmsUnavailableError as exc:
            raise TransportError(str(exc)) from exc
        except RemoteError as exc:
            raise ServerError(502, "service_error", f"{exc.error_type}: {exc.message}") from exc
        except BusError as exc:
            raise TransportError(f"rpc.{service}.{method}: {type(exc).__name__}: {exc}") from exc
        if isinstance(reply, OmsError | RiskError | AccountsError):
            raise error_of(reply)
        return reply

    async def _expect(self, service: str, method: str, request: msgspec.Struct, into: type[T]) -> T:
        reply = await self._call(service, method, request)
        if not isinstance(reply, into):
            raise ApiError(0, "bad_response", f"rpc.{service}.{method} answered {type(reply).__name__}, "
                                              f"expected {into.__name__}")
        return reply

    # ---- instruments and prices --------------------------------------------------------------------------

    async def instruments(self) -> dict[str, Instrument]:
        """The venue's instruments by symbol (read once, then cached)."""
        if self._instruments is None:
            reply = await self._expect("venue", "instruments", InstrumentsRequest(), InstrumentsReply)
            self._instruments = {i.symbol: i for i in reply.instruments}
        return self._instruments

    async def ticks(self, symbol: str, price: PriceLike | None) -> int | None:
        """`price` in ticks: an int is taken as ticks already, a Decimal/str is converted (off-tick: BadRequest)."""
        if price is None:
            return None
        if isinstance(price, bool | float):
            raise TypeError("pass prices as int ticks, Decimal or str, not float or bool")
        if isinstance(price, int):
            return price
        instrument = (await self.instruments()).get(symbol)
        if instrument is None:
            raise NotFound(404, "unknown_symbol", f"unknown symbol {symbol!r}")
        try:
            return instrument.to_ticks(Decimal(price))
        except (OffTickError, ArithmeticError, ValueError) as exc:
            raise BadRequest(400, "bad_price", f"price {price!r} for {symbol}: {exc}") from exc

    # ---- orders ------------------------------------------------------------------------------------------

    async def submit(self, symbol: str, side: Side | str, qty: int, *, type: OrderType | str = OrderType.LIMIT,
                     tif: TimeInForce | str = TimeInForce.GTC, price: PriceLike | None = None,
                     stop_price: PriceLike | None = None, client_order_id: str = "", display_qty: int | None = None,
                     post_only: bool = False, expire_ts: int | None = None, account: str | None = None
                     ) -> OrderReply:
        """Place an order; answers once the venue answered (or the order was refused before it: `Rejected`
        with the REJECTED order in `.order_id`/`.body`). A retry across failover is answered from the record."""
        request = with_client_order_id(OrderRequest(
            account=account or self.account, symbol=symbol, side=Side(side), qty=qty, type=OrderType(type),
            tif=TimeInForce(tif), price=await self.ticks(symbol, price),
            stop_price=await self.ticks(symbol, stop_price), client_order_id=client_order_id,
            display_qty=display_qty, post_only=post_only, expire_ts=expire_ts))
        reply = await self._expect("oms", "submit", request, OrderReply)
        order = reply.order
        if order.status is OrderStatus.REJECTED:
            raise Rejected(422, order.reason or "rejected", order.message or "the order was refused",
                           {"error": order.reason, "message": order.message, "client_order_id":
                            order.client_order_id, "order_id": str(order.order_id or "")})
        return reply

    async def buy(self, symbol: str, qty: int, price: PriceLike | None = None, **kw: Any) -> OrderReply:
        """A buy: limit at `price`, or market (IOC) when `price` is None."""
        kw.setdefault("type", OrderType.LIMIT if price is not None else OrderType.MARKET)
        if price is None and kw["type"] == OrderType.MARKET:
            kw.setdefault("tif", TimeInForce.IOC)
        return await self.submit(symbol, Side.BUY, qty, price=price, **kw)

    async def sell(self, symbol: str, qty: int, price: PriceLike | None = None, **kw: Any) -> OrderReply:
        """A sell: limit at `price`, or market (IOC) when `price` is None."""
        kw.setdefault("type", OrderType.LIMIT if price is not None else OrderType.MARKET)
        if price is None and kw["type"] == OrderType.MARKET:
            kw.setdefault("tif", TimeInForce.IOC)
        return await self.submit(symbol, Side.SELL, qty, price=price, **kw)

    async def cancel(self, client_order_id: str = "", *, order_id: int | None = None,
                     account: str | None = None) -> OrderReply:
        """Cancel by client_order_id (or venue order_id); a finished order is answered as it is."""
        return await self._expect("oms", "cancel", CancelRequest(
            account=account or self.account, client_order_id=client_order_id, order_id=order_id), OrderReply)

    async def modify(self, client_order_id: str = "", *, price: PriceLike | None = None, qty: int | None = None,
                     order_id: int | None = None, account: str | None = None, symbol: str | None = None) -> OrderReply:
        """Cancel/replace: new price and/or new total qty. A decimal price needs `symbol` (for its tick).
        A retried modify may be answered `Conflict(order_pending)` while the first one is at the venue."""
        if price is not None and not isinstance(price, int) and symbol is None:
            raise TypeError("a decimal price needs symbol= (or pass ticks as int)")
        ticks = await self.ticks(symbol, price) if symbol is not None else (price if isinstance(price, int)
                                                                              else None)
        return await self._expect("oms", "modify", ModifyRequest(
            account=account or self.account, client_order_id=client_order_id, order_id=order_id,
            price=ticks, qty=qty), OrderReply)

    async def get_order(self, client_order_id: str = "", *, order_id: int | None = None,
                        account: str | None = None) -> OrderView:
        reply = await self._expect("oms", "get_order", GetOrderRequest(
            account=account or self.account, client_order_id=client_order_id, order_id=order_id), OrderReply)
        return reply.order

    async def list_orders(self, *, status: OrderStatus | str | None = None, symbol: str | None = None,
                          open_only: bool = False, limit: int = 100, offset: int = 0,
                          account: str | None = None) -> OrdersReply:
        """One page of the account's orders, newest first (`total` counts every match)."""
        return await self._expect("oms", "list_orders", ListOrdersRequest(
            account=account or self.account, status=OrderStatus(status) if status is not None else None,
            symbol=symbol, open_only=open_only, limit=limit, offset=offset), OrdersReply)

    # ---- algos -------------------------------------------------------------------------------------------

    async def algo_order(self, symbol: str, side: Side | str, qty: int, algo: str,
                         params: AlgoParams | None = None, *, client_id: str = "",
                         account: str | None = None) -> AlgoView:
        """Start a parent (twap, vwap, pov, iceberg); `params.limit_price` is in ticks."""
        reply = await self._expect("oms", "algo_order", AlgoRequest(
            account=account or self.account, symbol=symbol, side=Side(side), qty=qty, algo=algo,
            params=params or AlgoParams(), client_id=client_id), AlgoReply)
        return reply.algo

    async def algo(self, parent_id: str, *, children: bool = False) -> AlgoReply:
        return await self._expect("oms", "algo_get", AlgoGetRequest(
            parent_id=parent_id, account=self.account, children=children), AlgoReply)

    async def algos(self, *, state: str | None = None, limit: int = 100, offset: int = 0) -> AlgosReply:
        return await self._expect("oms", "algo_list", AlgoListRequest(
            account=self.account, state=AlgoState(state) if state is not None else None, limit=limit,
            offset=offset), AlgosReply)

    async def pause_algo(self, parent_id: str) -> AlgoView:
        return (await self._expect("oms", "algo_pause", AlgoControl(parent_id=parent_id, account=self.account),
                                   AlgoReply)).algo

    async def resume_algo(self, parent_id: str) -> AlgoView:
        return (await self._expect("oms", "algo_resume", AlgoControl(parent_id=parent_id, account=self.account),
                                   AlgoReply)).algo

    async def cancel_algo(self, parent_id: str) -> AlgoView:
        """Stop the parent and cancel its open children."""
        return (await self._expect("oms", "algo_cancel", AlgoControl(parent_id=parent_id, account=self.account),
                                   AlgoReply)).algo

    # ---- accounts and risk -------------------------------------------------------------------------------

    async def account_info(self, account: str | None = None) -> AccountReply:
        """Cash, equity, P&L, margin and positions (`rpc.accounts.get`)."""
        return await self._expect("accounts", "get", GetAccount(account=account or self.account), AccountReply)

    async def positions(self, *, open_only: bool = False, account: str | None = None) -> PositionsReply:
        return await self._expect("accounts", "positions", GetPositions(
            account=account or self.account, open_only=open_only), PositionsReply)

    async def risk(self, account: str | None = None) -> RiskReply:
        """Post-trade risk of the account (`rpc.risk.get`)."""
        return await self._expect("risk", "get", GetRisk(account=account or self.account), RiskReply)


class NatsClient:
    """The blocking face of `AsyncNatsClient` (same methods), on a private event loop in a daemon thread."""

    def __init__(self, url: str = DEFAULT_NATS, *, account: str, policy: RetryPolicy | None = None) -> None:
        self._thread = LoopThread("tradesim-nats-client")
        try:
            self.aio: AsyncNatsClient = self._run(AsyncNatsClient.connect(url, account=account, policy=policy))
        except BaseException:
            self._thread.stop()
            raise

    def _run(self, coro: Awaitable[T]) -> T:
        return self._thread.run(coro)

    def close(self) -> None:
        if self._thread.closed:
            return
        self._run(self.aio.aclose())
        self._thread.stop()

    def __enter__(self) -> NatsClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # ---- the same calls, blocking ------------------------------------------------------------------------

    def instruments(self) -> dict[str, Instrument]:
        return self._run(self.aio.instruments())

    def submit(self, symbol: str, side: Side | str, qty: int, **kw: Any) -> OrderReply:
        return self._run(self.aio.submit(symbol, side, qty, **kw))

    def buy(self, symbol: str, qty: int, price: PriceLike | None = None, **kw: Any) -> OrderReply:
        return self._run(self.aio.buy(symbol, qty, price, **kw))

    def sell(self, symbol: str, qty: int, price: PriceLike | None = None, **kw: Any) -> OrderReply:
        return self._run(self.aio.sell(symbol, qty, price, **kw))

    def cancel(self, client_order_id: str = "", **kw: Any) -> OrderReply:
        return self._run(self.aio.cancel(client_order_id, **kw))

    def modify(self, client_order_id: str = "", **kw: Any) -> OrderReply:
        return self._run(self.aio.modify(client_order_id, **kw))

    def get_order(self, client_order_id: str = "", **kw: Any) -> OrderView:
        return self._run(self.aio.get_order(client_order_id, **kw))

    def list_orders(self, **kw: Any) -> OrdersReply:
        return self._run(self.aio.list_orders(**kw))

    def algo_order(self, symbol: str, side: Side | str, qty: int, algo: str, params: AlgoParams | None = None,
                   **kw: Any) -> AlgoView:
        return self._run(self.aio.algo_order(symbol, side, qty, algo, params, **kw))

    def algo(self, parent_id: str, *, children: bool = False) -> AlgoReply:
        return self._run(self.aio.algo(parent_id, children=children))

    def algos(self, **kw: Any) -> AlgosReply:
        return self._run(self.aio.algos(**kw))

    def pause_algo(self, parent_id: str) -> AlgoView:
        return self._run(self.aio.pause_algo(parent_id))

    def resume_algo(self, parent_id: str) -> AlgoView:
        return self._run(self.aio.resume_algo(parent_id))

    def cancel_algo(self, parent_id: str) -> AlgoView:
        return self._run(self.aio.cancel_algo(parent_id))

    def account_info(self, account: str | None = None) -> AccountReply:
        return self._run(self.aio.account_info(account))

    def positions(self, **kw: Any) -> PositionsReply:
        return self._run(self.aio.positions(**kw))

    def risk(self, account: str | None = None) -> RiskReply:
        return self._run(self.aio.risk(account))



__all__ = ["AsyncNatsClient", "NatsClient", "error_of"]
