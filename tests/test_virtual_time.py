"""The simulated-time loop: sleeps cost no wall time, timers keep their order, threads are waited for."""

from __future__ import annotations

import asyncio
import random
import time

from tradesim.services.virtual_time import DEFAULT_EPOCH_NS, VirtualTimeLoop, run_simulated


def test_an_hour_of_sleeping_takes_no_wall_time() -> None:
    async def main(loop: VirtualTimeLoop) -> float:
        await asyncio.sleep(3600)
        return loop.time()

    started = time.perf_counter()
    assert run_simulated(main) == 3600
    assert time.perf_counter() - started < 1.0


def test_timers_fire_in_time_order_and_the_clock_follows() -> None:
    async def main(loop: VirtualTimeLoop) -> list[tuple[str, int]]:
        seen: list[tuple[str, int]] = []

        async def at(delay: float, name: str) -> None:
            await asyncio.sleep(delay)
            seen.append((name, loop.clock_ns() - DEFAULT_EPOCH_NS))

        await asyncio.gather(at(2.5, "c"), at(0.1, "a"), at(1.0, "b"))
        return seen

    assert run_simulated(main) == [("a", 100_000_000), ("b", 1_000_000_000), ("c", 2_500_000_000)]


def test_executor_work_runs_inline_in_program_order() -> None:
    async def main(loop: VirtualTimeLoop) -> list[str]:
        order: list[str] = []

        async def slow_io() -> None:
            await loop.run_in_executor(None, time.sleep, 0.05)  # real work, e.g. an fsync
            order.append(f"io done at {loop.time():.1f}")
            await asyncio.to_thread(order.append, "to_thread ran")
            try:
                await loop.run_in_executor(None, int, "x")
            except ValueError:
                order.append("error delivered")

        async def timer() -> None:
            await asyncio.sleep(10)
            order.append(f"timer at {loop.time():.1f}")

        await asyncio.gather(slow_io(), timer())
        return order

    assert run_simulated(main) == ["io done at 0.0", "to_thread ran", "error delivered", "timer at 10.0"]


def test_a_seeded_process_is_reproducible() -> None:
    async def main(loop: VirtualTimeLoop, seed: int) -> list[tuple[int, int]]:
        rng = random.Random(seed)
        out: list[tuple[int, int]] = []

        async def trader(n: int) -> None:
            for _ in range(50):
                await asyncio.sleep(rng.expovariate(2.0))
                out.append((n, loop.clock_ns()))

        await asyncio.gather(*(trader(n) for n in range(5)))
        return out

    first = run_simulated(lambda loop: main(loop, 7))
    assert first == run_simulated(lambda loop: main(loop, 7))
    assert first != run_simulated(lambda loop: main(loop, 8))
    assert [ts for _, ts in first] == sorted(ts for _, ts in first)
