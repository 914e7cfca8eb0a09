"""A real server for the client: the embedded System and the API app under uvicorn on a free port, in the
test's event loop (`server`) or on a thread with its own loop (`threaded_server`, for the blocking Client)."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest
import uvicorn

from tests.support.config import quiet_config
from tradesim.api import create_app
from tradesim.api.server import EmbeddedServer
from tradesim.services.config import SystemConfig
from tradesim.services.system import System
from tradesim.store.users import MemoryUserStore

SECRET = "client-test-secret-0123456789-abcdefghij"
PASSWORD = "correct horse battery"
USERS = {  # username: (role, account)
    "alice": ("trader", "alice"),
    "bob": ("trader", "bob"),
    "vic": ("viewer", "alice"),
    "root": ("admin", "root"),
}


@dataclass
class Server:
    url: str
    system: System
    users: MemoryUserStore
    app_server: EmbeddedServer


def _config(tmp_path: Path) -> SystemConfig:
    config = quiet_config(tmp_path / "data")
    api = msgspec.structs.replace(config.api, rate_limit=1000.0, rate_burst=1000, login_rate_limit=1000.0,
                                  login_burst=1000)
    return msgspec.structs.replace(config, api=api)


def _socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


async def run_server(tmp_path: Path) -> AsyncIterator[Server]:
    system = System(_config(tmp_path), fsync=False)
    await system.start()
    users = MemoryUserStore()
    for name, (role, account) in USERS.items():
        await users.add(name, role, PASSWORD, account)
    app = create_app(system.bus, system.config, users, secret=SECRET)
    sock = _socket()
    port = sock.getsockname()[1]
    server = EmbeddedServer(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield Server(url=f"http://127.0.0.1:{port}", system=system, users=users, app_server=server)
    finally:
        server.should_exit = True
        await asyncio.gather(task, return_exceptions=True)
        sock.close()
        await system.stop()


@pytest.fixture(autouse=True)
def cheap_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """scrypt at n=2**10 (the hash records its cost): users are made per test."""
    monkeypatch.setattr("tradesim.store.users.SCRYPT_N", 2**10)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async for s in run_server(tmp_path):
        yield s


@pytest.fixture
def threaded_server(tmp_path: Path) -> Iterator[Server]:
    """The server on its own thread and loop, so that a plain (non-async) test can block on it."""
    ready = threading.Event()
    stop: list[asyncio.Event] = []
    box: list[Server] = []
    errors: list[BaseException] = []

    async def main() -> None:
        stop.append(asyncio.Event())
        try:
            async for s in run_server(tmp_path):
                box.append(s)
                ready.set()
                await stop[0].wait()
        except BaseException as exc:
            errors.append(exc)
            ready.set()
            raise

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(30), "server did not start"
    if errors:
        raise errors[0]
    try:
        yield box[0]
    finally:
        loop.call_soon_threadsafe(stop[0].set)
        thread.join(30)
        loop.close()
