"""The web UI in a real browser: Playwright drives Debian's chromium against `tradesim`'s System and the
API served by uvicorn, as `tradesim run` serves them. A user signs in, places an order from the order
entry, sees it in the book ladder and in "my orders", cancels it and sees it gone.

No `playwright install`: the test launches /usr/bin/chromium (`make test` installs it with apt-get) and
fails, naming the fix, when it is missing.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from tests.support.config import quiet_config
from tradesim.api.app import create_app
from tradesim.api.server import EmbeddedServer
from tradesim.services.system import System
from tradesim.store.users import MemoryUserStore

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PASSWORD = "correct horse battery"
SCREENSHOT = os.environ.get("TRADESIM_UI_SCREENSHOT")  # a path: save the screen with the order resting
TIMEOUT_MS = 15_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServerThread(threading.Thread):
    """The system and the API on their own event loop in a background thread (the browser's driver is
    synchronous and needs this thread free)."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(name="tradesim-ui-server", daemon=True)
        self.data_dir = data_dir
        self.port = free_port()
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: EmbeddedServer | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to the test through `error`
            self.error = exc
            self.ready.set()

    async def _main(self) -> None:
        config = quiet_config(self.data_dir)
        system = System(config, fsync=False)
        await system.start()
        users = MemoryUserStore()
        await users.add("alice", "trader", PASSWORD)
        try:
            app = create_app(system.bus, config, users, secret="browser-test-secret-0123456789abcdef")
            self._server = EmbeddedServer(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
            task = asyncio.create_task(self._server.serve())
            while not self._server.started and not task.done():
                await asyncio.sleep(0.02)
            self.ready.set()
            await task
        finally:
            await system.stop()
            await users.close()

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        self.join(timeout=30)


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setattr("tradesim.store.users.SCRYPT_N", 2**10)
    thread = ServerThread(tmp_path / "data")
    thread.start()
    assert thread.ready.wait(60), "the server did not start in 60 s"
    if thread.error is not None:
        raise thread.error
    try:
        yield f"http://127.0.0.1:{thread.port}"
    finally:
        thread.stop()


def require_chromium(path: str = CHROMIUM) -> None:
    """Fail (never skip: a skipped browser test hides a broken UI) and name the fix."""
    if not os.path.exists(path):
        pytest.fail(f"{path} not found: the browser test needs Debian's chromium; run "
                    "`apt-get update && apt-get install -y chromium` (make test does this)")


def test_missing_chromium_fails_naming_the_fix(tmp_path: Path) -> None:
    with pytest.raises(pytest.fail.Exception, match="apt-get install -y chromium"):
        require_chromium(str(tmp_path / "no-chromium"))


def test_login_place_see_cancel(server: str) -> None:
    require_chromium()
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.set_default_timeout(TIMEOUT_MS)
            expect.set_options(timeout=TIMEOUT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))

            # Without a token the screen sends us to the login page.
            page.goto(server + "/?symbol=AAPL.SIM")
            page.wait_for_url(re.compile(r"/login\?next="))
            page.fill("#username", "alice")
            page.fill("#password", "wrong")
            page.click("#login-form button[type=submit]")
            expect(page.locator("#login-error")).to_contain_text("wrong username or password")
            page.fill("#password", PASSWORD)
            page.click("#login-form button[type=submit]")
            page.wait_for_url(server + "/?symbol=AAPL.SIM")
            expect(page.locator("#who")).to_have_text("alice")
            expect(page.locator("#book .ladder")).to_be_attached()
            expect(page.locator("#orders")).to_contain_text("no open orders")

            # Place a resting buy from the order entry.
            form = page.locator("#order-form")
            form.locator(".side.buy").click()
            form.locator("select[name=type]").select_option("limit")
            form.locator("input[name=qty]").fill("7")
            form.locator("input[name=price]").fill("189.50")
            expect(page.locator("#submit-order")).to_have_text("Buy 7 AAPL.SIM @ 189.50")
            page.click("#submit-order")
            expect(page.locator("#entry-msg")).to_contain_text("accepted")

            # It rests in the ladder (as the caller's own qty) and in my orders.
            rung = page.locator('#book .rung.bid[data-price="189.50"]')
            expect(rung.locator(".qty")).to_have_text("7")
            expect(rung.locator(".mine")).to_have_text("7")
            expect(page.locator("#t-bid")).to_have_text("189.50")
            row = page.locator("#orders tr.order-row")
            expect(row).to_have_count(1)
            expect(row).to_contain_text("189.50")
            expect(row).to_contain_text("accepted")
            if SCREENSHOT:
                page.screenshot(path=SCREENSHOT)

            # Cancel it from my orders: gone from both.
            row.locator("button.cancel").click()
            expect(page.locator("#entry-msg")).to_contain_text("canceled")
            expect(page.locator("#orders tr.order-row")).to_have_count(0)
            expect(page.locator("#orders")).to_contain_text("no open orders")
            expect(rung).to_have_count(0)
            expect(page.locator("#book")).to_contain_text("empty book")

            # The cancel shows in the history.
            page.locator("input[name=show][value=all]").check()
            expect(page.locator("#orders tr.order-row")).to_contain_text("canceled")
            assert errors == [], errors
        finally:
            browser.close()
