"""Running blocking database calls in a thread, one at a time per connection, safely under cancellation.

Cancelling a coroutine that awaits `asyncio.to_thread` does not stop the thread. If the lock guarding
the connection were released then, a second call — or `close()` — would use the connection while the
first thread still does: sqlite3 can crash the process on that. So the lock is held until the thread
is really done, and only then is the cancellation passed on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


async def run_serialized(lock: asyncio.Lock, fn: Callable[[], T]) -> T:
    async with lock:
        call = asyncio.ensure_future(asyncio.to_thread(fn))
        try:
            return await asyncio.shield(call)
        except asyncio.CancelledError:
            await asyncio.wait([call])
            raise
