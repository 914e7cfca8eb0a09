"""The real venue, OMS, accounts and risk monitor on a private memory bus, the API app over them, and users
of every role with their tokens."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar

from tradesim.api import create_app
from tradesim.bus import Bus, open_bus
from tradesim.services.accounts.service import AccountsService
from tradesim.services.config import SystemConfig, load_config
from tradesim.services.oms.service import OmsService
from tradesim.services.risk.monitor import RiskMonitorService
from tradesim.services.venue.service import VenueService
from tradesim.store import open_journal
from tradesim.store.users import MemoryUserStore, UserStore

SECRET = "test-secret-0123456789-abcdefghijklmnop"
PASSWORD = "correct horse battery"
USERS = {  # username: (role, account)
    "alice": ("trader", "alice"),
    "bob": ("trader", "bob"),
    "fatima": ("trader", "fatima"),
    "vic": ("viewer", "alice"),
    "cora": ("compliance", "cora"),
    "root": ("admin", "root"),
}
CONFIG_TOML = """
[risk.defaults]
max_order_qty = 1_000
max_pct_day_volume = 50
min_day_volume = 100

[api]
rate_limit = 1000.0
rate_burst = 1000
login_rate_limit = 1000.0
login_burst = 1000
"""


def make_config(tmp_path: Path, extra: str = "") -> SystemConfig:
    path = tmp_path / "tradesim.toml"
    path.write_text(CONFIG_TOML + extra)
    return load_config(path, env={}).with_settings(data_dir=str(tmp_path / "data"))


@dataclass
class Stack:
    bus: Bus
    config: SystemConfig
    users: UserStore
    venue: VenueService
    tokens: dict[str, str] = field(default_factory=dict)

    def app(self, **kw: Any) -> Litestar:
        return create_app(self.bus, self.config, self.users, secret=SECRET, **kw)

    def auth(self, username: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[username]}"}


async def start_stack(tmp_path: Path, config: SystemConfig) -> AsyncIterator[Stack]:
    bus = await open_bus(f"memory://api-{uuid.uuid4().hex[:10]}", on_error=lambda s, e: None)
    journal = await open_journal(tmp_path / "journal")
    instruments = config.instruments
    accounts = {a.id: (a.cash, a.kind, a.currency) for a in config.accounts}
    venue = VenueService(bus, journal, instruments)
    oms = OmsService(bus, instruments, accounts, config.risk, config.compliance,
                     reference_prices=config.reference_prices)
    ledger = AccountsService(bus, instruments, accounts)
    monitor = RiskMonitorService(bus, instruments, accounts, config.monitor)
    users = MemoryUserStore()
    for name, (role, account) in USERS.items():
        await users.add(name, role, PASSWORD, account)
    for service in (ledger, monitor, oms, venue):
        await service.start()
    try:
        yield Stack(bus=bus, config=config, users=users, venue=venue)
    finally:
        for service in (oms, venue, monitor, ledger):
            await service.stop()
        await journal.close()
        await bus.close()


@pytest.fixture(autouse=True)
def cheap_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """scrypt at n=2**10 here (the hash records its cost, so checks still work): users are made per test.
    tests/store/test_users.py covers the real cost."""
    monkeypatch.setattr("tradesim.store.users.SCRYPT_N", 2**10)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async for s in start_stack(tmp_path, make_config(tmp_path)):
        yield s


def http(app: Litestar) -> httpx.AsyncClient:
    """A client calling the app in this event loop (Litestar's AsyncTestClient runs it in another thread,
    where the memory bus's futures cannot be awaited)."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with http(stack.app()) as c:
        for name in USERS:
            r = await c.post("/api/v1/auth/token", json={"username": name, "password": PASSWORD})
            assert r.status_code == 200, r.text
            stack.tokens[name] = r.json()["access_token"]
        yield c
