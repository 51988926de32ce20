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
        """The newest mark of each symbol that ticked since the last call. A read that comes back full means
        the reader is behind: it jumps to the newest ``batch`` ticks (XREVRANGE) instead of walking up
        through superseded ones — the marks it acts on are never a round or more old."""
        reply: Any = await self.redis.xread({self.key: self.last_id}, count=self.batch, block=max(1, block_ms))
        entries = [entry for _, batch in reply or [] for entry in batch]
        if len(entries) >= self.batch:
            newest: Any = await self.redis.xrevrange(self.key, count=self.batch)
            skipped = newest and newest[0][0] != entries[-1][0]
            if skipped:
                log.warning("ticks_skipped_to_newest", behind_from=entries[-1][0], newest=newest[0][0])
                entries = list(reversed(newest))
        latest: dict[str, Decimal] = {}
        for entry_id, fields in entries:
            self.last_id = entry_id
            try:
                tick = decode(MarketTick, fields)
            except ContractError as e:
                log.warning("tick_unreadable", entry_id=entry_id, error=str(e))
                continue
            latest[tick.symbol] = tick.mark_price
        return latest


def follow_marks(ctx: ServiceContext, on_mark: Callable[[str, Decimal], Awaitable[None]],
                 scan: Callable[[], Awaitable[object]], *, every_s: float, batch: int = 1000,
                 wanted: Callable[[list[str]], Awaitable[set[str]]] | None = None) -> None:
    """A ``marks`` loop for ``ctx``: ``on_mark(symbol, mark)`` for the newest tick of each symbol as ticks
    arrive — of the symbols ``wanted`` picks out of each read (e.g. those with a position, asked in one
    round trip, instead of a read per ticking symbol) — and ``scan()`` at least every ``every_s``
    (positions whose symbol is quiet, state changes)."""
    ticks = TickFollower(ctx.redis, batch)
    next_scan = 0.0

    async def marks() -> None:
        nonlocal next_scan
        block_ms = min(ctx.settings.bus.block_ms, int((next_scan - time.monotonic()) * 1000))
        latest = await ticks.marks(block_ms)
        picked = await wanted(list(latest)) if wanted is not None and latest else set(latest)
        for symbol, mark in latest.items():
            if symbol in picked:
                await on_mark(symbol, mark)
        if time.monotonic() >= next_scan:
            next_scan = time.monotonic() + every_s
            await scan()

    ctx.repeat("marks", marks)
