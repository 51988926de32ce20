"""From market events to Redis writes: one MULTI/EXEC per round, for every symbol of the round.

A feed hands over a :class:`Batch` (the ticks and klines of one round); the :class:`Publisher` turns
it into the publications and key writes of DESIGN §3 and commits them at once:

- each tick → ``market.tick``, and the symbol's latest one → ``quantum:market:price:{s}`` (stamped
  with the wall clock: the paper exchange fills at that price only while it is fresh);
- each closed kline → ``market.klines``, then the symbol's market state → ``marketstate`` and
  ``quantum:marketstate:{s}``;
- the latest in-progress kline of a symbol → ``market.klines``, at most every ``kline_update_ms``.

Ticks and in-progress klines are latest-value data: a round Redis refuses is dropped. Closed klines
and market states are kept (bounded) and go out first in the next round that commits, so a Redis
outage loses no closed kline.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

import structlog
from redis.asyncio import Redis

from common import keys
from common.bus import HashSet, Op, Publish, commit
from common.contracts import MarketKline, MarketTick, new_trace_id, now_ms
from common.klines import Kline
from common.market import marketstate_mapping, price_mapping
from common.redis_client import REDIS_DOWN
from common.streams import Stream
from services.marketdata.state import MarketStates, state_message

log = structlog.get_logger()

#: closed klines and states kept across a Redis outage (oldest dropped beyond it)
DEFAULT_BACKLOG = 50_000


#: klines built and committed together at most (see :meth:`Publisher.publish`)
KLINE_CHUNK = 2_000


@dataclass(frozen=True)
class Tick:
    """One price observation of a symbol: last trade price and mark price."""

    symbol: str
    price: Decimal
    mark_price: Decimal


@dataclass
class Batch:
    """What a feed hands over for one round; empty batches only keep the loop beating."""

    ticks: list[Tick] = field(default_factory=list)
    klines: list[Kline] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.ticks or self.klines)


def kline_message(kline: Kline, source: str) -> MarketKline:
    return MarketKline(
        source=source, trace_id=new_trace_id(), symbol=kline.symbol, interval=kline.interval,
        open_time=kline.open_time, open=kline.open, high=kline.high, low=kline.low, close=kline.close,
        volume=kline.volume, closed=kline.closed,
    )


def tick_message(tick: Tick, source: str) -> MarketTick:
    return MarketTick(source=source, trace_id=new_trace_id(), symbol=tick.symbol, price=tick.price,
                      mark_price=tick.mark_price)


class Publisher:
    """Turns batches into ops (:meth:`ops`, pure) and commits them (:meth:`publish`)."""

    def __init__(self, service: str, *, kline_update_ms: int, clock: Callable[[], int] = now_ms,
                 backlog_max: int = DEFAULT_BACKLOG) -> None:
        self.service = service
        self.kline_update_ms = kline_update_ms
        self.clock = clock
        self.states = MarketStates()
        self._last_update: dict[str, int] = {}
        self._last_closed: dict[str, int] = {}
        self._backlog: deque[Op] = deque()
        self._backlog_max = backlog_max
        #: counts for logs and tests
        self.ticks = self.closed_klines = self.open_klines = self.states_published = 0
        self.rounds = self.failed_rounds = self.dropped_backlog = 0

    @property
    def backlog(self) -> int:
        """Closed-kline and market-state writes waiting for Redis."""
        return len(self._backlog)

    def ops(self, batch: Batch) -> tuple[list[Op], list[Op]]:
        """``(durable, latest)``: the writes that must not be lost, and the latest-value ones."""
        now = self.clock()
        durable: list[Op] = []
        latest: list[Op] = []
        last_tick: dict[str, Tick] = {}
        for tick in batch.ticks:
            latest.append(Publish(Stream.MARKET_TICK, tick_message(tick, self.service)))
            last_tick[tick.symbol] = tick
            self.ticks += 1
        for symbol, tick in last_tick.items():
            latest.append(HashSet(keys.market_price(symbol), price_mapping(tick.price, tick.mark_price, now)))
        open_klines: dict[str, Kline] = {}
        for kline in batch.klines:
            if not kline.closed:
                open_klines[kline.symbol] = kline
                continue
            last = self._last_closed.get(kline.symbol)
            if last is not None and kline.open_time <= last:
                continue  # already published (a repeat after a reconnect or a backfill)
            self._last_closed[kline.symbol] = kline.open_time
            durable.append(Publish(Stream.MARKET_KLINES, kline_message(kline, self.service)))
            self.closed_klines += 1
            value = self.states.update(kline)
            if value is not None:
                state = state_message(kline.symbol, value, self.service)
                durable.append(Publish(Stream.MARKETSTATE, state))
                durable.append(HashSet(keys.marketstate(kline.symbol), marketstate_mapping(state)))
                self.states_published += 1
        if self.kline_update_ms > 0:
            for symbol, kline in open_klines.items():
                last = self._last_closed.get(symbol)
                if last is not None and kline.open_time <= last:
                    continue
                if now - self._last_update.get(symbol, -self.kline_update_ms) < self.kline_update_ms:
                    continue
                self._last_update[symbol] = now
                latest.append(Publish(Stream.MARKET_KLINES, kline_message(kline, self.service)))
                self.open_klines += 1
        return durable, latest

    async def publish(self, redis: Redis, batch: Batch) -> bool:
        """Commit one round (after whatever an outage held back); False when Redis refused it. A round of
        many klines (the start-up backfill: 200 per symbol, 116,000 at 580 symbols) is built and committed
        ``KLINE_CHUNK`` klines at a time, in order: neither this process nor the Redis server holds the
        whole of it in one transaction (a transaction's buffers stay in the server's RSS long after)."""
        if len(batch.klines) <= KLINE_CHUNK:
            return await self._publish(redis, batch)
        for at in range(0, len(batch.klines), KLINE_CHUNK):
            part = Batch(ticks=batch.ticks if at == 0 else [], klines=batch.klines[at:at + KLINE_CHUNK])
            if not await self._publish(redis, part):
                for rest in range(at + KLINE_CHUNK, len(batch.klines), KLINE_CHUNK):  # held back, in order
                    self._hold(self.ops(Batch(klines=batch.klines[rest:rest + KLINE_CHUNK]))[0])
                return False
        return True

    async def _publish(self, redis: Redis, batch: Batch) -> bool:
        durable, latest = self.ops(batch)
        if not (durable or latest or self._backlog):
            return True
        try:
            await commit(redis, [*self._backlog, *durable, *latest], service=self.service)
        except REDIS_DOWN as e:
            self.failed_rounds += 1
            self._hold(durable)
            log.warning("market_round_not_written", error=str(e), backlog=len(self._backlog))
            return False
        self._backlog.clear()
        self.rounds += 1
        return True

    def _hold(self, ops: list[Op]) -> None:
        self._backlog.extend(ops)
        overflow = len(self._backlog) - self._backlog_max
        for _ in range(max(0, overflow)):
            self._backlog.popleft()
            self.dropped_backlog += 1
        if overflow > 0:
            log.error("market_backlog_overflow", dropped=overflow)
