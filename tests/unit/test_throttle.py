"""The order rate cap serves waiting exits before waiting entries."""

from __future__ import annotations

import asyncio

from services.apply_layer.throttle import ENTRY, EXIT, OrderThrottle
from tests.helpers import run


def test_exits_go_before_entries_when_the_rate_binds() -> None:
    """With the bucket empty, an exit that arrives after two entries is still served first."""

    async def scenario() -> list[str]:
        throttle = OrderThrottle(rate_per_s=50.0, burst=1)
        await throttle.acquire(ENTRY)  # the bucket is now empty
        order: list[str] = []

        async def take(name: str, priority: int) -> None:
            await throttle.acquire(priority)
            order.append(name)

        tasks = [asyncio.create_task(take("entry-1", ENTRY)), asyncio.create_task(take("entry-2", ENTRY))]
        await asyncio.sleep(0)  # both entries are waiting
        tasks.append(asyncio.create_task(take("exit", EXIT)))
        await asyncio.gather(*tasks)
        return order

    assert run(scenario(), timeout_s=5) == ["exit", "entry-1", "entry-2"]


def test_rate_is_capped() -> None:
    """Eleven orders at 100/s with a burst of 1 take at least 0.1 s of the throttle's own clock."""

    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        throttle = OrderThrottle(rate_per_s=100.0, burst=1, clock=loop.time)
        start = loop.time()
        for _ in range(11):
            await throttle.acquire(EXIT)
        return loop.time() - start

    assert run(scenario(), timeout_s=5) >= 0.095
