"""``python -m services.harvest_proposal``: proposes harvests when a position reaches a ladder stage.

Reads the positions and the latest ``market.tick`` entries (plain XREAD, newest mark per symbol), and
every ``exit.evaluate_interval_s`` the price hashes; publishes ``harvest.proposal``. It writes no key:
its ladders live in memory (exitbrain dedupes what a restart proposes again).
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import structlog
from redis.asyncio import Redis

from common import streams
from common.backoff import Backoff
from common.bus import publish
from common.contracts import ContractError, MarketTick, decode, now_ms
from common.logging import bound
from common.market import read_price
from common.positions import all_positions, read_position
from common.redis_client import REDIS_DOWN
from common.service import ServiceContext, run
from common.streams import Service, Stream
from services.harvest_proposal.propose import Ladder, ProposalParams, propose

log = structlog.get_logger()

TICK_BATCH = 1000


class Proposer:
    """The in-memory ladders of the open positions and the publication of their proposals."""

    def __init__(self, redis: Redis, params: ProposalParams) -> None:
        self.redis = redis
        self.params = params
        self.ladders: dict[str, Ladder] = {}

    async def scan(self) -> None:
        positions = await all_positions(self.redis)
        for symbol in list(self.ladders):
            if symbol not in positions:
                del self.ladders[symbol]
        for symbol in positions:
            await self.evaluate(symbol)

    async def evaluate(self, symbol: str, mark: Decimal | None = None) -> None:
        position = await read_position(self.redis, symbol)
        if position is None:
            self.ladders.pop(symbol, None)
            return
        if mark is None:
            price = await read_price(self.redis, symbol)
            if price is None:
                return
            mark = price.mark_price
        ladder, proposals = propose(position, self.ladders.get(symbol), mark, now_ms(), self.params)
        if proposals:
            await publish(self.redis, Service.HARVEST_PROPOSAL, *((Stream.HARVEST_PROPOSAL, p) for p in proposals))
            for p in proposals:
                with bound(trace_id=p.trace_id, symbol=symbol):
                    log.info("harvest_proposed", position_plan_id=p.position_plan_id, stage=p.stage.value,
                             trigger_price=str(p.trigger_price), mark_price=str(mark), close_pct=p.close_pct,
                             new_stop_loss=str(p.new_stop_loss), r_multiple=round(p.r_multiple, 4))
        self.ladders[symbol] = ladder


async def setup(ctx: ServiceContext) -> None:
    proposer = Proposer(ctx.redis, ProposalParams.from_settings(ctx.settings))

    async def marks(ctx: ServiceContext) -> None:
        settings = ctx.settings
        tick_key = streams.get(Stream.MARKET_TICK).key
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
                    await proposer.evaluate(symbol, mark)
                if time.monotonic() >= next_scan:
                    next_scan = time.monotonic() + settings.exit.evaluate_interval_s
                    await proposer.scan()
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
    run(Service.HARVEST_PROPOSAL, setup)


if __name__ == "__main__":
    main()
