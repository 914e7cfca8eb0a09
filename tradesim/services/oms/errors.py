"""The one exception the OMS core raises for a request it refuses before anything changes.

The bus shell turns it into `OmsError(error=code, message=...)`; `code` is a stable snake_case string
that clients (and the API's 4xx bodies) switch on.
"""

from __future__ import annotations

from typing import Final

UNKNOWN_ACCOUNT: Final = "unknown_account"
UNKNOWN_SYMBOL: Final = "unknown_symbol"
UNKNOWN_ORDER: Final = "unknown_order"
BAD_REQUEST: Final = "bad_request"
BAD_QTY: Final = "bad_qty"
BAD_PRICE: Final = "bad_price"
MISSING_STOP_PRICE: Final = "missing_stop_price"
DUPLICATE_CLIENT_ORDER_ID: Final = "duplicate_client_order_id"
ORDER_PENDING: Final = "order_pending"
ORDER_CLOSED: Final = "order_closed"
UNKNOWN_HOLD: Final = "unknown_hold"
HOLD_ALREADY_DECIDED: Final = "hold_already_decided"
VENUE_UNAVAILABLE: Final = "venue_unavailable"
INTERNAL: Final = "internal"
NOT_ACTIVE: Final = "not_active"  # this OMS instance is a standby (or just stepped down): retry, the leader serves
# algo parents (docs/algos.md)
UNKNOWN_ALGO: Final = "unknown_algo"
BAD_PARAMS: Final = "bad_params"
UNKNOWN_PARENT: Final = "unknown_parent"
PARENT_MISMATCH: Final = "parent_mismatch"
PARENT_NOT_RUNNING: Final = "parent_not_running"
PARENT_OVERFILL: Final = "parent_overfill"
ALGO_CLOSED: Final = "algo_closed"
NOT_OWNER: Final = "not_owner"


class OmsRequestError(ValueError):
    """A refused request; nothing in the OMS changed. `code` is the wire error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
