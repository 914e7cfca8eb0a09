"""Order management: compliance, pre-trade risk, routing to the venue, and the life of every order."""

from tradesim.services.oms.errors import OmsRequestError
from tradesim.services.oms.manager import AccountCounts, OmsSnapshot, OmsState, OrderManager, Outcome
from tradesim.services.oms.records import OrderRecord
from tradesim.services.oms.sequencer import EventSequencer, ShardSequencer
from tradesim.services.oms.service import OmsService
from tradesim.services.oms.store import MemoryOrderStore, OrderStore, SqliteOrderStore

__all__ = [
    "AccountCounts",
    "EventSequencer",
    "MemoryOrderStore",
    "OmsRequestError",
    "OmsService",
    "OmsSnapshot",
    "OmsState",
    "OrderManager",
    "OrderRecord",
    "OrderStore",
    "Outcome",
    "ShardSequencer",
    "SqliteOrderStore",
]
