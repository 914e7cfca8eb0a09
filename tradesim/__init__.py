"""tradesim: a simulated exchange whose order books really match, and the trading stack around it."""

__version__ = "0.1.0"
