"""The Python client of tradesim's API: `AsyncClient` (asyncio) and `Client` (blocking), typed results and errors.

```python
from tradesim.client import Client
with Client("http://127.0.0.1:8000", username="alice", password="...") as c:
    order = c.buy("AAPL.SIM", 10, "190.00")
    c.cancel(order)
```
"""

from tradesim.client.aio import AsyncClient, client_order_ref, token_claims
from tradesim.client.errors import (
    ApiError,
    BadRequest,
    ClientError,
    Conflict,
    Forbidden,
    NotFound,
    RateLimited,
    Rejected,
    ServerError,
    TransportError,
    Unauthorized,
)
from tradesim.client.models import (
    Account,
    Book,
    Fill,
    Instrument,
    Level,
    Order,
    OrderPage,
    Position,
    PositionRisk,
    Positions,
    Risk,
    Token,
    VarFigure,
)
from tradesim.client.sync import Client

__all__ = [
    "Account", "ApiError", "AsyncClient", "BadRequest", "Book", "Client", "ClientError", "Conflict", "Fill",
    "Forbidden", "Instrument", "Level", "NotFound", "Order", "OrderPage", "Position", "PositionRisk", "Positions",
    "RateLimited", "Rejected", "Risk", "ServerError", "Token", "TransportError", "Unauthorized", "VarFigure",
    "client_order_ref", "token_claims",
]
