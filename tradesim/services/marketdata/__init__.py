"""Market data: a reference price process, ticks built from the real book, and recorded bars."""
