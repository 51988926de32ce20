"""Periodic loops stay visibly alive while they wait for their next round (the watchdog counts on it)."""

from __future__ import annotations

import asyncio

import fakeredis

from common.config import load_settings
from common.service import ServiceContext
from tests.helpers import run


def test_a_long_interval_loop_beats_while_it_waits() -> None:
    """A loop run every 3 s stays healthy at a 1.5 s horizon throughout its wait, runs its step on time,
    and returns promptly when the service stops."""

    async def scenario() -> None:
        ctx = ServiceContext("governor", load_settings(), fakeredis.FakeAsyncRedis(), asyncio.Event())
        rounds: list[float] = []

        async def step() -> None:
            rounds.append(asyncio.get_running_loop().time())

        ctx.every("slow", 3.0, step)
        task = asyncio.create_task(ctx.loops["slow"](ctx))
        started = asyncio.get_running_loop().time()
        for _ in range(7):
            await asyncio.sleep(0.5)
            assert ctx.healthy_since(1.5)
        assert len(rounds) == 1 and 2.9 <= rounds[0] - started <= 3.5
        ctx.stop.set()
        await asyncio.wait_for(task, 2)

    run(scenario(), timeout_s=20)
