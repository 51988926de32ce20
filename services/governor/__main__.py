"""``python -m services.governor``: the policy in force and the one kill switch."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from common import governance
from common.redis_client import REDIS_DOWN
from common.service import Loop, ServiceContext, run
from common.streams import Service, Stream
from services.governor.watch import PolicyWatch, RiskWatch

log = structlog.get_logger()


def every(name: str, interval_s: float, step: Callable[[], Awaitable[Any]]) -> Loop:
    """A loop that runs ``step`` every ``interval_s`` (the first after one interval: setup ran it once)
    until the service stops; a Redis outage skips a step."""

    async def loop(ctx: ServiceContext) -> None:
        while not ctx.stop.is_set():
            ctx.beat(name)
            try:
                await asyncio.wait_for(ctx.stop.wait(), timeout=interval_s)
                return
            except TimeoutError:
                pass
            try:
                await step()
            except REDIS_DOWN as e:
                log.warning("check_skipped", loop=name, error=str(e))

    return loop


async def setup(ctx: ServiceContext) -> None:
    settings = ctx.settings.governor
    policy = PolicyWatch(ctx.redis, ctx.settings)
    await policy.sync()  # a bad policy file stops the start here (exit 78)
    if await governance.ensure_ess(ctx.redis):
        log.info("ess_created", state="ARMED")
    risk = RiskWatch(ctx.redis, ctx.settings)
    await risk.check()  # a ledger already past a limit trips the switch before anything is consumed
    ctx.consume(Stream.EXECUTION_RESULT, risk.handle, guard=risk.guard)
    ctx.consume(Stream.TRADE_CLOSED, risk.handle, guard=risk.guard)
    ctx.loop("policy", every("policy", settings.policy_check_interval_s, policy.check))
    ctx.loop("risk", every("risk", settings.risk_check_interval_s, risk.check))


def main() -> None:
    run(Service.GOVERNOR, setup)


if __name__ == "__main__":
    main()
