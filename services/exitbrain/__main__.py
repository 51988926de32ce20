"""``python -m services.exitbrain``: the one authority on exits.

Every open position is evaluated on each fresh ``market.tick`` of its symbol (plain XREAD from the
latest entry: the newest mark matters, not every mark) and at least every ``exit.evaluate_interval_s``
(at the price hash's mark, which also picks up market-state changes); ``harvest.proposal`` is consumed
through the group ``exitbrain``.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import structlog

from common import keys, streams
from common.backoff import Backoff
from common.contracts import ContractError, MarketTick, decode
from common.redis_client import REDIS_DOWN
from common.service import ServiceContext, run
from common.streams import Service, Stream
from services.exitbrain.brain import ExitBrain

log = structlog.get_logger()

#: market.tick entries one XREAD returns at most (only the newest per symbol is used)
TICK_BATCH = 1000


async def setup(ctx: ServiceContext) -> None:
    brain = ExitBrain(ctx.redis, ctx.settings)
    async for key in ctx.redis.scan_iter(match=keys.exit_state("*"), count=500):
        brain.tracked.add(str(key)[len(keys.exit_state("")):])
    ctx.consume(Stream.HARVEST_PROPOSAL, brain.handle_proposal, lane=lambda m: getattr(m, "symbol", ""),
                guard=brain.guard)

    async def marks(ctx: ServiceContext) -> None:
        settings = ctx.settings
        tick_key = streams.get(Stream.MARKET_TICK).key
        interval_s = settings.exit.evaluate_interval_s
        backoff = Backoff(settings.bus.reconnect_initial_ms / 1000, settings.bus.reconnect_max_ms / 1000)
        last_id, next_scan, failures = "$", 0.0, 0
        while not ctx.stop.is_set():
            ctx.beat("marks")
            try:
                block_ms = max(1, min(settings.bus.block_ms, int((next_scan - time.monotonic()) * 1000)))
                entries: Any = await ctx.redis.xread({tick_key: last_id}, count=TICK_BATCH, block=block_ms)
                latest: dict[str, Decimal] = {}
                for _, batch in entries or []:
                    for entry_id, fields in batch:
                        last_id = entry_id
                        try:
                            tick = decode(MarketTick, fields)
                        except ContractError as e:
                            log.warning("tick_unreadable", entry_id=entry_id, error=str(e))
                            continue
                        latest[tick.symbol] = tick.mark_price
                for symbol, mark in latest.items():
                    await brain.evaluate_symbol(symbol, mark)
                if time.monotonic() >= next_scan:
                    next_scan = time.monotonic() + interval_s
                    await brain.scan()
                failures = 0
            except REDIS_DOWN as e:
                delay = backoff.delay_s(failures)
                failures += 1
                log.warning("redis_unavailable", error=str(e) or type(e).__name__, retry_in_s=round(delay, 3))
                try:
                    await asyncio.wait_for(ctx.stop.wait(), timeout=delay)
                except TimeoutError:
                    pass

    ctx.loop("marks", marks)


def main() -> None:
    run(Service.EXITBRAIN, setup)


if __name__ == "__main__":
    main()
