"""The order executor: brings the live orders to the desired quotes through the OMS, at a bounded rate.

It owns the live-order table (from OMS replies, venue fills and cancels), plans with `reconcile`,
and sends at most `max_orders_per_second` requests in any one-second window of the injected clock;
what does not fit waits for the next requote (cancels go first, so pulling quotes is never starved
by new orders).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from tradesim.domain import TERMINAL, OrderStatus, OrderType, Side, TimeInForce, Trade
from tradesim.services.agents.fills import Fill
from tradesim.services.agents.gateway import Clock, OmsGateway
from tradesim.services.agents.quotes import Quotes
from tradesim.services.agents.reconcile import Cancel, LiveOrder, Modify, Place, reconcile
from tradesim.services.oms.messages import OmsError, OrderReply, OrderRequest

NS_PER_S = 1_000_000_000
PENDING = frozenset({OrderStatus.PENDING_NEW, OrderStatus.PENDING_CANCEL, OrderStatus.PENDING_MODIFY,
                     OrderStatus.HELD})
GONE_ERRORS = frozenset({"unknown_order", "order_closed"})


class OrderExecutor:
    """Reconciles desired quotes with live orders for one (account, symbol)."""

    def __init__(self, gateway: OmsGateway, symbol: str, *, threshold_bps: float, max_orders_per_second: int,
                 clock: Clock, id_prefix: str, on_trades: Callable[[list[Trade]], object] | None = None,
                 post_only: bool = True) -> None:
        if threshold_bps < 0 or max_orders_per_second < 1:
            raise ValueError("threshold_bps >= 0 and max_orders_per_second >= 1 are required")
        self.gateway = gateway
        self.symbol = symbol
        self.threshold_bps = threshold_bps
        self.max_orders_per_second = max_orders_per_second
        self.clock = clock
        self.id_prefix = id_prefix
        self.on_trades = on_trades
        self.post_only = post_only
        self.live: dict[str, LiveOrder] = {}
        self.requests = 0
        self.deferred = 0  # actions left for a later round by the rate limit
        self._next_id = 0
        self._window: deque[int] = deque()

    # ---- planning and sending ---------------------------------------------------------------
    async def execute(self, quotes: Quotes) -> int:
        """Sends what `reconcile` plans (as far as the rate allows) and the taker order; returns the count."""
        plan = reconcile(quotes.bids, quotes.asks, list(self.live.values()), self.threshold_bps)
        sent = 0
        for action in plan:
            if not self._allow():
                self.deferred += 1
                continue
            sent += 1
            if isinstance(action, Cancel):
                await self._cancel(action.client_order_id)
            elif isinstance(action, Modify):
                await self._modify(action)
            else:
                await self._place(action)
        if quotes.taker_qty and self._allow():
            sent += 1
            await self._take(quotes.taker_qty)
        return sent

    async def cancel_all(self) -> None:
        """Cancels every live order regardless of the rate limit (stop, kill switch)."""
        for cid in sorted(self.live):
            await self._cancel(cid)

    def _allow(self) -> bool:
        now = self.clock()
        while self._window and now - self._window[0] >= NS_PER_S:
            self._window.popleft()
        if len(self._window) >= self.max_orders_per_second:
            return False
        self._window.append(now)
        self.requests += 1
        return True

    def new_client_order_id(self) -> str:
        self._next_id += 1
        return f"{self.id_prefix}{self._next_id}"

    async def _place(self, action: Place) -> None:
        cid = self.new_client_order_id()
        self.live[cid] = LiveOrder(client_order_id=cid, side=action.side, price=action.price, qty=action.qty,
                                   pending=True)
        reply = await self.gateway.submit(OrderRequest(
            account=self.gateway.account, symbol=self.symbol, side=action.side, qty=action.qty,
            price=action.price, client_order_id=cid, post_only=self.post_only))
        self._apply(cid, reply)

    async def _take(self, signed_qty: int) -> None:
        cid = self.new_client_order_id()
        side = Side.BUY if signed_qty > 0 else Side.SELL
        reply = await self.gateway.submit(OrderRequest(
            account=self.gateway.account, symbol=self.symbol, side=side, qty=abs(signed_qty),
            type=OrderType.MARKET, tif=TimeInForce.IOC, client_order_id=cid))
        if isinstance(reply, OrderReply):
            self._report(reply)

    async def _cancel(self, cid: str) -> None:
        order = self.live.get(cid)
        if order is not None:
            order.pending = True
        self._apply(cid, await self.gateway.cancel(cid))

    async def _modify(self, action: Modify) -> None:
        order = self.live.get(action.client_order_id)
        if order is None:
            return
        price = action.price if action.price != order.price else None
        qty = action.qty if action.qty != order.qty else None
        order.pending = True
        self._apply(action.client_order_id, await self.gateway.modify(action.client_order_id, price=price, qty=qty))

    # ---- what comes back --------------------------------------------------------------------
    def _report(self, reply: OrderReply) -> None:
        if reply.trades and self.on_trades is not None:
            self.on_trades(reply.trades)

    def _apply(self, cid: str, reply: OrderReply | OmsError) -> None:
        if isinstance(reply, OmsError):
            order = self.live.get(cid)
            if reply.error in GONE_ERRORS or (order is not None and order.order_id is None):
                self.live.pop(cid, None)  # never placed, or already gone
            elif order is not None:
                order.pending = False
            return
        self._report(reply)
        view = reply.order
        if view.status in TERMINAL:
            self.live.pop(cid, None)
            return
        self.live[cid] = LiveOrder(client_order_id=cid, side=view.side, price=view.price or 0, qty=view.qty,
                                   filled=view.filled_qty, order_id=view.order_id, pending=view.status in PENDING)

    def on_fill(self, fill: Fill) -> None:
        """A venue fill of one of our orders (from any source; the FillTracker deduped it)."""
        order = self.live.get(fill.client_order_id)
        if order is None:
            return
        if fill.leaves <= 0:
            del self.live[fill.client_order_id]
        else:
            order.filled = max(order.filled, order.qty - fill.leaves)

    def on_gone(self, cid: str) -> None:
        """The venue cancelled or expired one of our orders (STP, end of day, a liquidation)."""
        self.live.pop(cid, None)
