"""The matching core: order books and the matching engine. Pure: no I/O, no clock, no randomness."""

from tradesim.engine.book import BookSide, OrderBook
from tradesim.engine.matching import MatchingEngine
from tradesim.engine.order import Order
from tradesim.engine.snapshot import BookState, EngineSnapshot, LevelState, OrderState

__all__ = [
    "BookSide",
    "BookState",
    "EngineSnapshot",
    "LevelState",
    "MatchingEngine",
    "Order",
    "OrderBook",
    "OrderState",
]
