"""The venue (TradingGateway): owns the matching engine, journals first, publishes what happened."""
