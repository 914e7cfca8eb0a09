"""Market data: a reference price process, ticks built from the real book, and recorded bars."""

from tradesim.bus import register
from tradesim.services.marketdata.bars import BarBuilder, aggregate
from tradesim.services.marketdata.messages import (
    MARKETDATA_MESSAGES,
    Bar,
    BarsReply,
    BarsRequest,
    MarketDataError,
    Tick,
    TickerRequest,
)
from tradesim.services.marketdata.reference import (
    FileReference,
    FileReferenceError,
    GbmParams,
    GbmProcess,
    ReferenceSource,
    gbm_processes,
    symbol_seed,
)
from tradesim.services.marketdata.service import RPC_BARS, RPC_TICKER, MarketDataService, market_bar

register(*MARKETDATA_MESSAGES)  # importing the package makes the messages sendable on default-codec buses

__all__ = [
    "MARKETDATA_MESSAGES",
    "RPC_BARS",
    "RPC_TICKER",
    "Bar",
    "BarBuilder",
    "BarsReply",
    "BarsRequest",
    "FileReference",
    "FileReferenceError",
    "GbmParams",
    "GbmProcess",
    "MarketDataError",
    "MarketDataService",
    "ReferenceSource",
    "Tick",
    "TickerRequest",
    "aggregate",
    "gbm_processes",
    "market_bar",
    "symbol_seed",
]
