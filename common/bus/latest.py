"""Latest-only readers (DESIGN §3): high-rate market streams read with plain XREAD, no group."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import structlog
from redis.asyncio import Redis

from common import streams
from common.contracts import ContractError, MarketTick, decode
from common.streams import Stream

if TYPE_CHECKING:
    from common.service import ServiceContext

log = structlog.get_logger()


class TickFollower:
    """Follows ``market.tick`` from the moment it starts (``$``): each read gives the newest mark price
    per symbol, older ticks of the same read being superseded."""

    def __init__(self, redis: Redis, batch: int = 500) -> None:
        self.redis = redis
        self.batch = batch
        self.key = streams.get(Stream.MARKET_TICK).key
        self.last_id = "$"

    async def marks(self, block_ms: int) -> dict[str, Decimal]:
        entries: Any = await self.redis.xread({self.key: self.last_id}, count=self.batch, block=max(1, block_ms))
        latest: dict[str, Decimal] = {}
        for _, batch in entries or []:
            for entry_id, fields in batch:
                self.last_id = entry_id
                try:
                    tick = decode(MarketTick, fields)
                except ContractError as e:
                    log.warning("tick_unreadable", entry_id=entry_id, error=str(e))
                    continue
                latest[tick.symbol] = tick.mark_price
        return latest


def follow_marks(ctx: ServiceContext, on_mark: Callable[[str, Decimal], Awaitable[None]],
                 scan: Callable[[], Awaitable[object]], *, every_s: float, batch: int = 1000) -> None:
    """A ``marks`` loop for ``ctx``: ``on_mark(symbol, mark)`` for the newest tick of each symbol as ticks
    arrive, and ``scan()`` at least every ``every_s`` (positions whose symbol is quiet, state changes)."""
    ticks = TickFollower(ctx.redis, batch)
    next_scan = 0.0

    async def marks() -> None:
        nonlocal next_scan
        block_ms = min(ctx.settings.bus.block_ms, int((next_scan - time.monotonic()) * 1000))
        for symbol, mark in (await ticks.marks(block_ms)).items():
            await on_mark(symbol, mark)
        if time.monotonic() >= next_scan:
            next_scan = time.monotonic() + every_s
            await scan()

    ctx.repeat("marks", marks)
