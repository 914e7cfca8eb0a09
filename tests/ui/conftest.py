"""The API test stack (real venue, OMS, accounts, risk on a memory bus) for the web UI's tests."""

from __future__ import annotations

from tests.api.conftest import cheap_hashing, client, stack

__all__ = ["cheap_hashing", "client", "stack"]
