"""Lockstep replay (``marketdata.replay_lockstep``, replay only): each price and each closed kline of the
file is published alone, and the next only once the fleet has done everything the last one caused — so
the fleet decides on every tick and every kline, in order, as the backtest does (the parity test).

The fleet is *idle* when, observed in this order:

1. every latest-value reader of ``market.tick`` and ``market.klines`` (the registry's readers:
   exitbrain, harvest_proposal, trading_bot — one blocking XREAD each) is blocked on its XREAD again
   (``CLIENT LIST``: ``cmd=xread``, flag ``b``): a reader blocks only once it has read and handled
   everything there is, and nothing wakes it but the next publication, which waits;
2. then every consumer group with a consumer has nothing pending and nothing left to read: what the
   readers published has been handled, and what that caused (a consumer commits its effects with its
   acknowledgement, atomically) too.

Start the consumers first: a group that does not exist yet, or has no consumer, is not waited for. The
timers of the services (exitbrain's and harvest_proposal's scans, the governor's checks) are not
waited for either: the parity test turns the scans off.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import structlog
from redis.asyncio import Redis

from common import streams
from common.backoff import pause
from common.bus.inspect import stream_info
from common.streams import Stream
from services.marketdata.publisher import Batch, Tick
from services.marketdata.replay import ReplaySource, ReplayTick

log = structlog.get_logger()

#: between two looks at the fleet
POLL_S = 0.003
#: a wait this long is logged (and the wait goes on)
SLOW_S = 10.0
#: the empty batches after the end keep the loop beating
IDLE_S = 1.0


def latest_readers() -> int:
    """How many services read the replayed streams without a group (one blocking XREAD each)."""
    return sum(len(streams.get(name).readers) for name in (Stream.MARKET_TICK, Stream.MARKET_KLINES))


async def readers_waiting(redis: Redis) -> int:
    """Connections blocked in XREAD right now."""
    clients: Any = await redis.client_list()
    return sum(1 for c in clients if c.get("cmd") == "xread" and "b" in str(c.get("flags", "")))


async def groups_caught_up(redis: Redis) -> bool:
    """Every consumer group that has a consumer: nothing pending, nothing unread."""
    for spec in streams.grouped_streams():
        info = await stream_info(redis, spec.key)
        if info is None:
            continue
        if any(g.consumers and (g.pending or g.lag) for g in info.groups):
            return False
    return True


async def wait_idle(redis: Redis, stop: asyncio.Event | None = None, *, readers: int | None = None) -> bool:
    """Until the fleet is idle (see the module docstring); False when ``stop`` was set first."""
    expected = latest_readers() if readers is None else readers
    started = logged = time.monotonic()
    while stop is None or not stop.is_set():
        if await readers_waiting(redis) >= expected and await groups_caught_up(redis):
            return True
        if time.monotonic() - logged >= SLOW_S:
            logged = time.monotonic()
            log.warning("lockstep_waiting", waited_s=round(logged - started, 1), readers_expected=expected)
        await asyncio.sleep(POLL_S)
    return False


class LockstepReplayFeed:
    """A kline file replayed event by event, each after the fleet handled the one before."""

    name = "replay-lockstep"

    def __init__(self, source: ReplaySource, redis: Redis) -> None:
        self.source = source
        self.redis = redis
        self.published = 0
        self.finished = False

    async def batches(self, stop: asyncio.Event) -> AsyncIterator[Batch]:
        if not await wait_idle(self.redis, stop):
            return
        log.info("lockstep_started", file=str(self.source.path), klines=len(self.source.klines))
        for _, event in self.source.events():
            if isinstance(event, ReplayTick):
                yield Batch(ticks=[Tick(event.symbol, event.price, event.price)])
            else:
                yield Batch(klines=[event])
            self.published += 1  # the runtime publishes a batch before asking for the next
            if not await wait_idle(self.redis, stop):
                return
        self.finished = True
        log.info("replay_finished", file=str(self.source.path), klines=len(self.source.klines),
                 events=self.published, lockstep=True)
        while not await pause(stop, IDLE_S):
            yield Batch()
