"""`AsyncClient`: the tradesim REST API over httpx (one pooled connection set), typed results, typed errors.

Orders are named by the client (`client_order_id`, generated when not given) so that a retry after a
broken connection is safe: the venue refuses a duplicate id, and the client then fetches the order the
first attempt made instead of placing a second one.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator, Mapping
from decimal import Decimal
from types import TracebackType
from typing import Any, Final, TypeVar

import httpx
import msgspec

from tradesim.client.errors import ApiError, Conflict, Rejected, TransportError, error_for
from tradesim.client.models import (
    Account,
    Algo,
    AlgoPage,
    AlgoParams,
    Bars,
    Book,
    Instrument,
    Order,
    OrderPage,
    Positions,
    Risk,
    Ticker,
    Token,
    Trades,
)
from tradesim.client.stream import Message, Stream
from tradesim.domain import STP, OrderStatus, OrderType, Side, TimeInForce

T = TypeVar("T")
PriceLike = Decimal | str | int
OrderRef = str | int | Order

API: Final = "/api/v1"
DEFAULT_URL: Final = "http://127.0.0.1:8000"
_SEP: Final = "\x1f"
_DUPLICATE: Final = "duplicate_client_order_id"


class _AccountEnvelope(msgspec.Struct, frozen=True, kw_only=True):
    account: Account
    seq: int


class _Instruments(msgspec.Struct, frozen=True, kw_only=True):
    instruments: list[Instrument]


def _price(value: PriceLike | None) -> str | None:
    """Prices travel as decimal strings; a float would carry binary noise, so it is refused."""
    if value is None:
        return None
    if isinstance(value, float):
        raise TypeError("pass prices as Decimal, str or int, not float")
    return str(value)


def _order_id(ref: OrderRef) -> str:
    return ref.order_id if isinstance(ref, Order) else str(ref)


def client_order_ref(account: str, client_order_id: str) -> str:
    """The `/orders/{id}` path id that names an order by (account, client_order_id), as the API encodes it."""
    raw = f"{account}{_SEP}{client_order_id}".encode()
    return "c-" + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def token_claims(token: str) -> dict[str, Any]:
    """The (unverified) claims of a JWT: the client only reads its own account and role from them."""
    try:
        body = token.split(".")[1]
        claims = msgspec.json.decode(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (IndexError, ValueError, msgspec.DecodeError):
        return {}
    return claims if isinstance(claims, dict) else {}


class AsyncClient:
    """An API session. Authenticate with `token=`, `api_key=` or `username=`/`password=` (logged in on first
    use and again when the token expires), or call `login` / `login_api_key` yourself.

    `retries` is how many times a request is re-sent after a connection error: always when nothing was sent
    (connect failures), and for reads, cancels and `submit_order` (same client_order_id) when the answer was
    lost. `transport` lets tests route requests to an in-process app.
    """

    def __init__(self, base_url: str = DEFAULT_URL, *, token: str | None = None, api_key: str | None = None,
                 username: str | None = None, password: str | None = None, timeout: float = 10.0,
                 retries: int = 2, retry_backoff: float = 0.05, max_connections: int = 100,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._api_key = api_key
        self._username = username
        self._password = password
        self.retries = retries
        self.retry_backoff = retry_backoff
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, limits=limits, transport=transport)
        self._login_lock = asyncio.Lock()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # ---- authentication ----------------------------------------------------------------------------------

    @property
    def token(self) -> str | None:
        return self._token

    @token.setter
    def token(self, value: str | None) -> None:
        self._token = value

    @property
    def account_id(self) -> str | None:
        """The account the current token acts for (from its claims), None before login."""
        account = token_claims(self._token).get("account") if self._token else None
        return account if isinstance(account, str) else None

    async def login(self, username: str, password: str) -> Token:
        """Exchange a password for an access token; later calls use it (and re-login with it on expiry)."""
        token = await self._fetch_token({"username": username, "password": password})
        self._username, self._password, self._api_key = username, password, None  # only once they work
        return token

    async def login_api_key(self, api_key: str) -> Token:
        """Exchange an API key for an access token (rate limits then apply per key)."""
        token = await self._fetch_token({"api_key": api_key})
        self._api_key, self._username, self._password = api_key, None, None
        return token

    async def _fetch_token(self, body: dict[str, str]) -> Token:
        token = await self._request("POST", "/auth/token", Token, json=body, auth=False, idempotent=True)
        self._token = token.access_token
        return token

    def _can_login(self) -> bool:
        return self._api_key is not None or (self._username is not None and self._password is not None)

    async def _relogin(self, stale: str | None) -> None:
        async with self._login_lock:
            if self._token != stale:  # another task already renewed it
                return
            if self._api_key is not None:
                await self._fetch_token({"api_key": self._api_key})
            elif self._username is not None and self._password is not None:
                await self._fetch_token({"username": self._username, "password": self._password})

    # ---- transport ---------------------------------------------------------------------------------------

    async def _send(self, method: str, path: str, *, json: Any = None, params: Mapping[str, Any] | None = None,
                    auth: bool = True, idempotent: bool = False) -> httpx.Response:
        """One request with the bearer token; re-sent on connection errors as `retries` allows."""
        if auth and self._token is None and self._can_login():
            await self._relogin(None)
        attempt = 0
        relogged = False
        while True:
            headers = {"Authorization": f"Bearer {self._token}"} if auth and self._token else {}
            content = None if json is None else msgspec.json.encode(json)
            if content is not None:
                headers["Content-Type"] = "application/json"
            sent_token = self._token
            try:
                response = await self._http.request(method, API + path, content=content, params=params,
                                                    headers=headers)
            except httpx.TransportError as exc:
                safe = idempotent or isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
                if not safe or attempt >= self.retries:
                    raise TransportError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
                attempt += 1
                await asyncio.sleep(self.retry_backoff * 2 ** (attempt - 1))
                continue
            if (response.status_code == 401 and auth and not relogged and self._can_login()
                    and _error_code(response) in ("token_expired", "invalid_token", "missing_token")):
                relogged = True
                await self._relogin(sent_token)
                continue
            return response

    async def _request(self, method: str, path: str, into: type[T], *, json: Any = None,
                       params: Mapping[str, Any] | None = None, auth: bool = True, idempotent: bool = False) -> T:
        response = await self._send(method, path, json=json, params=params, auth=auth, idempotent=idempotent)
        return _decode(response, into)

    # ---- orders ------------------------------------------------------------------------------------------

    async def submit_order(self, symbol: str, side: Side | str, qty: int, *, type: OrderType | str = OrderType.LIMIT,
                           tif: TimeInForce | str = TimeInForce.GTC, price: PriceLike | None = None,
                           stop_price: PriceLike | None = None, client_order_id: str | None = None,
                           display_qty: int | None = None, post_only: bool = False, stp: STP | str | None = None,
                           expire_ts: int | None = None, account: str | None = None) -> Order:
        """Place an order and answer it once durable at the venue (status `pending_new` if the venue was slow).

        Raises `Rejected` (with `.order`) when compliance, risk or the engine refused it. A connection error
        re-sends it with the same client_order_id; if the first attempt had gone through, that order is
        returned rather than a second one placed.
        """
        cid = client_order_id or uuid.uuid4().hex
        body: dict[str, Any] = {"symbol": symbol, "side": str(side), "type": str(type), "tif": str(tif), "qty": qty,
                                "client_order_id": cid}
        for key, value in (("price", _price(price)), ("stop_price", _price(stop_price)),
                           ("display_qty", display_qty), ("expire_ts", expire_ts), ("account", account),
                           ("stp", None if stp is None else str(stp))):
            if value is not None:
                body[key] = value
        if post_only:
            body["post_only"] = True
        attempt = 0
        while True:
            try:
                response = await self._send("POST", "/orders", json=body)
            except TransportError:
                if attempt >= self.retries:
                    raise
                attempt += 1
                await asyncio.sleep(self.retry_backoff * 2 ** (attempt - 1))
                continue
            try:
                return _decode(response, Order)
            except (Conflict, Rejected) as exc:
                if attempt == 0 or exc.error != _DUPLICATE:
                    raise
                # an earlier attempt went through before its answer was lost: that order is the answer
                return await self.order_by_client_id(cid, account=account)

    async def buy(self, symbol: str, qty: int, price: PriceLike | None = None, **kw: Any) -> Order:
        """A buy: limit at `price`, or market when `price` is None (unless `type=` says otherwise)."""
        kw.setdefault("type", OrderType.LIMIT if price is not None else OrderType.MARKET)
        if price is None and kw["type"] == OrderType.MARKET:
            kw.setdefault("tif", TimeInForce.IOC)
        return await self.submit_order(symbol, Side.BUY, qty, price=price, **kw)

    async def sell(self, symbol: str, qty: int, price: PriceLike | None = None, **kw: Any) -> Order:
        """A sell: limit at `price`, or market when `price` is None (unless `type=` says otherwise)."""
        kw.setdefault("type", OrderType.LIMIT if price is not None else OrderType.MARKET)
        if price is None and kw["type"] == OrderType.MARKET:
            kw.setdefault("tif", TimeInForce.IOC)
        return await self.submit_order(symbol, Side.SELL, qty, price=price, **kw)

    async def cancel(self, order: OrderRef) -> Order:
        """Cancel; answers the order's final state (a finished order as it is)."""
        return await self._request("DELETE", f"/orders/{_order_id(order)}", Order, idempotent=True)

    async def modify(self, order: OrderRef, *, price: PriceLike | None = None, qty: int | None = None) -> Order:
        """Cancel/replace: new price and/or new *total* qty (leaves = qty - filled)."""
        body: dict[str, Any] = {}
        if price is not None:
            body["price"] = _price(price)
        if qty is not None:
            body["qty"] = qty
        return await self._request("PATCH", f"/orders/{_order_id(order)}", Order, json=body)

    async def order(self, order: OrderRef) -> Order:
        return await self._request("GET", f"/orders/{_order_id(order)}", Order, idempotent=True)

    async def order_by_client_id(self, client_order_id: str, *, account: str | None = None) -> Order:
        """The order this account named `client_order_id` (`account` defaults to the token's)."""
        owner = account or self.account_id
        if owner is None:
            raise ApiError(0, "no_account", "log in first (or pass account=) to look up a client order id")
        return await self.order(client_order_ref(owner, client_order_id))

    async def orders(self, *, status: OrderStatus | str | None = None, symbol: str | None = None,
                     account: str | None = None, open_only: bool = False, limit: int = 100,
                     offset: int = 0) -> OrderPage:
        """One page of orders, newest first."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if open_only:
            params["open_only"] = "true"
        for key, value in (("status", status), ("symbol", symbol), ("account", account)):
            if value is not None:
                params[key] = str(value)
        return await self._request("GET", "/orders", OrderPage, params=params, idempotent=True)

    async def iter_orders(self, *, page_size: int = 100, **filters: Any) -> AsyncIterator[Order]:
        """Every matching order, newest first, page by page."""
        offset = 0
        while True:
            page = await self.orders(limit=page_size, offset=offset, **filters)
            for item in page.orders:
                yield item
            offset += len(page.orders)
            if not page.orders or offset >= page.total:
                return

    # ---- market data -------------------------------------------------------------------------------------

    async def instruments(self) -> list[Instrument]:
        return (await self._request("GET", "/instruments", _Instruments, idempotent=True)).instruments

    async def book(self, symbol: str, depth: int = 10) -> Book:
        return await self._request("GET", f"/book/{symbol}", Book, params={"depth": depth}, idempotent=True)

    async def trades(self, symbol: str, limit: int = 100) -> Trades:
        """The latest public trades, newest first (`limit` 1..1000)."""
        return await self._request("GET", f"/trades/{symbol}", Trades, params={"limit": limit}, idempotent=True)

    async def ticker(self, symbol: str) -> Ticker:
        return await self._request("GET", f"/ticker/{symbol}", Ticker, idempotent=True)

    async def bars(self, symbol: str, interval: int = 60, *, start: int | None = None, end: int | None = None,
                   limit: int = 500) -> Bars:
        """Closed OHLCV bars, oldest first; `interval` in seconds, `start`/`end` in ns since the epoch."""
        params: dict[str, Any] = {"interval": interval, "limit": limit}
        if start is not None:
            params["start"] = start
        if end is not None:
            params["end"] = end
        return await self._request("GET", f"/bars/{symbol}", Bars, params=params, idempotent=True)

    # ---- algos -------------------------------------------------------------------------------------------

    async def algo_order(self, symbol: str, side: Side | str, qty: int, algo: str,
                         params: AlgoParams | None = None, *, client_id: str | None = None,
                         account: str | None = None) -> Algo:
        """Start a parent worked by `algo` (twap, vwap, pov, iceberg). `client_id` (generated when not given)
        makes a re-send after a lost answer safe: the OMS answers the existing parent."""
        knobs = msgspec.to_builtins(params or AlgoParams())
        if knobs.get("limit_price") is not None:
            knobs["limit_price"] = str(knobs["limit_price"])
        body: dict[str, Any] = {"symbol": symbol, "side": str(side), "qty": qty, "algo": algo,
                                "params": {k: v for k, v in knobs.items() if v is not None},
                                "client_id": client_id or uuid.uuid4().hex}
        if account is not None:
            body["account"] = account
        return await self._request("POST", "/algos", Algo, json=body, idempotent=True)

    async def algo(self, algo_id: str, *, children: bool = False) -> Algo:
        params = {"children": "true"} if children else None
        return await self._request("GET", f"/algos/{algo_id}", Algo, params=params, idempotent=True)

    async def algos(self, *, state: str | None = None, account: str | None = None, limit: int = 100,
                    offset: int = 0) -> AlgoPage:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if state is not None:
            params["state"] = state
        if account is not None:
            params["account"] = account
        return await self._request("GET", "/algos", AlgoPage, params=params, idempotent=True)

    async def cancel_algo(self, algo_id: str) -> Algo:
        """Stop the parent and cancel its open children."""
        return await self._request("DELETE", f"/algos/{algo_id}", Algo, idempotent=True)

    async def pause_algo(self, algo_id: str) -> Algo:
        return await self._request("POST", f"/algos/{algo_id}/pause", Algo, idempotent=True)

    async def resume_algo(self, algo_id: str) -> Algo:
        return await self._request("POST", f"/algos/{algo_id}/resume", Algo, idempotent=True)

    # ---- streaming ---------------------------------------------------------------------------------------

    @property
    def ws_url(self) -> str:
        scheme, _, rest = self.base_url.partition("://")
        return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/ws"

    async def stream(self, *, check_gaps: bool = True) -> Stream:
        """An open `/ws` connection (authenticated when the client has a token) for several subscriptions:
        `async with await client.stream() as s: await s.subscribe("level2", "AAPL.SIM"); async for m in s: ...`"""
        if self._token is None and self._can_login():
            await self._relogin(None)
        return await Stream(self.ws_url, self._token, check_gaps=check_gaps).connect()

    async def subscribe(self, channel: str, symbol: str | None = None, *, account: str | None = None,
                        check_gaps: bool = True) -> AsyncIterator[Message]:
        """One channel's frames as they come: the snapshot first, then updates (`trades`, `level2`, `ticker`
        per symbol; `orders`, `positions` of the token's account). Closes the socket when the loop ends."""
        async with await self.stream(check_gaps=check_gaps) as s:
            await s.subscribe(channel, symbol, account=account)
            async for msg in s:
                yield msg

    # ---- accounts ----------------------------------------------------------------------------------------

    async def account(self, account: str | None = None) -> Account:
        """Cash, equity, P&L, margin and positions (`account=` for admin/compliance)."""
        params = {"account": account} if account else None
        envelope = await self._request("GET", "/accounts/me", _AccountEnvelope, params=params, idempotent=True)
        return msgspec.structs.replace(envelope.account, seq=envelope.seq)

    async def positions(self, *, account: str | None = None, open_only: bool = False) -> Positions:
        params: dict[str, Any] = {}
        if account:
            params["account"] = account
        if open_only:
            params["open_only"] = "true"
        return await self._request("GET", "/positions", Positions, params=params, idempotent=True)

    async def risk(self, account: str | None = None) -> Risk:
        params = {"account": account} if account else None
        return await self._request("GET", "/risk", Risk, params=params, idempotent=True)


def _error_code(response: httpx.Response) -> str:
    try:
        data = msgspec.json.decode(response.content)
    except msgspec.DecodeError:
        return ""
    return str(data.get("error", "")) if isinstance(data, dict) else ""


def _decode(response: httpx.Response, into: type[T]) -> T:
    """The typed body of a 2xx answer; the typed exception of anything else."""
    if response.status_code >= 400:
        raise error_for(response.status_code, response.content, dict(response.headers))
    try:
        return msgspec.json.decode(response.content, type=into)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ApiError(response.status_code, "bad_response",
                       f"unexpected answer to {response.request.method} {response.request.url.path}: {exc}") \
            from exc


__all__ = ["AsyncClient", "client_order_ref", "token_claims"]
