"""The HTTP API: a Litestar app over the bus (`create_app`), JWT auth with roles, per-key rate limits."""

from tradesim.api.app import create_app

__all__ = ["create_app"]
