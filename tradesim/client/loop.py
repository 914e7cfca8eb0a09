"""`LoopThread`: a private event loop on a daemon thread, the engine under the blocking clients.

Each call is handed to the loop, so a blocking client works the same whether or not the calling thread
has a loop of its own (a notebook's, say) and is safe to use from many threads.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


class LoopThread:
    """Runs coroutines to completion on its own loop; `stop()` ends the loop and the thread."""

    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()
        self.closed = False

    def run(self, coro: Awaitable[T]) -> T:
        """The coroutine's result (or exception), computed on the loop; the caller blocks meanwhile."""
        if self.closed:
            raise RuntimeError("the client is closed")
        return asyncio.run_coroutine_threadsafe(_wrap(coro), self._loop).result()

    def stop(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()


async def _wrap(coro: Awaitable[T]) -> T:
    return await coro
