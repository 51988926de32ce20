"""apply_layer in-process over a real Redis: the real consumer, executor, paper exchange and fill router."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from common import keys, streams
from common.bus import Consumer, publish
from common.bus.metrics import BusMetrics
from common.config import ApplySettings, BusSettings, load_settings
from common.contracts import (
    ApplyPlan,
    ApplyResult,
    ExecutionResult,
    decode,
    now_ms,
)
from common.exchange.base import Exchange
from common.exchange.errors import ExchangeError
from common.exchange.paper import PaperExchange
from common.exchange.placement import RetryPolicy
from common.market import price_mapping
from common.positions import PositionRecord
from common.store import read_position
from common.streams import Service, Stream
from services.apply_layer.__main__ import lane
from services.apply_layer.executor import Executor
from services.apply_layer.settle import settle_round
from tests.helpers import poll

D = Decimal
FAST_BUS = BusSettings(block_ms=50, claim_idle_ms=500, claim_interval_ms=100, reconnect_initial_ms=20,
                       reconnect_max_ms=200, socket_timeout_s=2.0)


class Harness:
    def __init__(self, redis_url: str, wrap: Callable[[PaperExchange], Exchange] | None = None,
                 bus: BusSettings = FAST_BUS, **apply: Any) -> None:
        self.settings = load_settings(redis_url=redis_url, bus=bus,
                                      apply=ApplySettings(**{"settle_interval_s": 3600, **apply}))
        self.redis = Redis.from_url(redis_url, decode_responses=True)
        self.paper = PaperExchange.from_settings(self.redis, self.settings, poll_interval_s=0.05)
        self.exchange = wrap(self.paper) if wrap is not None else self.paper
        self.executor = Executor(self.redis, self.exchange, self.settings, RetryPolicy(2, 10, 50))
        self.router = self.executor.router
        self.consumer = Consumer(self.redis, streams.get(Stream.APPLY_PLAN), Service.APPLY_LAYER,
                                 "apply_layer@test", self.executor.handle, self.settings.bus, lane=lane,
                                 guard=self.executor.guard, metrics=BusMetrics(CollectorRegistry()),
                                 transient=self.executor.TRANSIENT, on_dead_letter=self.executor.dead_lettered)

    async def set_price(self, symbol: str, price: str) -> None:
        await self.redis.hset(keys.market_price(symbol), mapping=price_mapping(D(price), D(price), now_ms()))

    async def send(self, *plans: ApplyPlan) -> None:
        for plan in plans:
            await publish(self.redis, plan.source, (Stream.APPLY_PLAN, plan))

    async def results(self, plan_id: str | None = None) -> list[ApplyResult]:
        entries = await self.redis.xrange(keys.stream(Stream.APPLY_RESULT))
        found = [decode(ApplyResult, f) for _, f in entries]
        return [r for r in found if plan_id is None or r.plan_id == plan_id]

    async def result(self, plan: ApplyPlan, n: int = 1) -> ApplyResult:
        """The n-th apply.result of ``plan`` (waits for it)."""

        async def arrived() -> bool:
            return len(await self.results(plan.plan_id)) >= n

        await poll(arrived, timeout_s=15)
        return (await self.results(plan.plan_id))[n - 1]

    async def fills(self) -> list[ExecutionResult]:
        entries = await self.redis.xrange(keys.stream(Stream.EXECUTION_RESULT))
        return [decode(ExecutionResult, f) for _, f in entries]

    async def position(self, symbol: str = "BTCUSDT") -> PositionRecord | None:
        return await read_position(self.redis, symbol)

    async def stream(self, name: str) -> list[dict[str, str]]:
        return [f for _, f in await self.redis.xrange(keys.stream(name))]


@asynccontextmanager
async def running(redis_url: str, prices: dict[str, str] | None = None,
                  wrap: Callable[[PaperExchange], Exchange] | None = None, bus: BusSettings = FAST_BUS,
                  before: tuple[ApplyPlan, ...] = (), **apply: Any) -> AsyncIterator[Harness]:
    """A harness with the consumer, the exchange-event loop and the settling round running; ``before``
    is published before the consumer starts (so that its first read takes them all at once)."""
    h = Harness(redis_url, wrap, bus, **apply)
    await h.paper.start()
    for symbol, price in (prices or {"BTCUSDT": "50000"}).items():
        await h.set_price(symbol, price)
    await h.send(*before)
    stop = asyncio.Event()
    await h.consumer.setup()
    consumer = asyncio.create_task(h.consumer.run(stop))

    async def events() -> None:
        async for event in h.paper.events():
            await h.router.accept(event)

    async def booking() -> None:
        while True:
            await h.router.book_waiting(timeout_s=0.2)

    async def settling() -> None:  # the service's settling round, at the configured interval
        while True:
            await asyncio.sleep(h.settings.apply.settle_interval_s)
            try:
                await settle_round(h.executor)
            except ExchangeError:
                pass

    event_task = asyncio.gather(asyncio.create_task(events()), asyncio.create_task(booking()),
                                asyncio.create_task(settling()))
    try:
        yield h
    finally:
        stop.set()
        await h.paper.close()
        await asyncio.wait_for(consumer, 10)
        event_task.cancel()
        await asyncio.gather(event_task, return_exceptions=True)
        await h.redis.aclose()
