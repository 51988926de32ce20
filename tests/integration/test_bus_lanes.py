"""The bus runtime's lanes, takeovers and fence (DESIGN §12): a failing lane backs off alone, entries of a
consumer known dead are claimed at once and run before newer ones of the same key, and a fenced commit
never goes through once the fence key has changed hands."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from common import keys, streams
from common.bus import Consumer, Delivery, Effects, Fence, FenceLost
from common.bus.consumer import heartbeat_dead
from common.bus.metrics import BusMetrics
from common.config import Settings
from common.contracts import TradeIntent
from common.streams import Service, Stream
from tests.helpers import fast_settings, intent, poll, run
from tests.integration.test_bus import bridge_handler, die_holding, plans, publish_intents

SYMBOLS = ["XRPUSDT", "BTCUSDT"]


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return fast_settings(redis_url, claim_idle_ms=60_000, retry_initial_ms=500, retry_max_ms=1000,
                         max_deliveries=4)


def lanes_consumer(redis: Redis, settings: Settings, handler: Any, name: str = "intent_bridge@t", **extra: Any
                   ) -> Consumer:
    return Consumer(redis, streams.get(Stream.TRADE_INTENT), Service.INTENT_BRIDGE, name, handler, settings.bus,
                    lane=lambda m: m.symbol if isinstance(m, TradeIntent) else "",
                    metrics=BusMetrics(CollectorRegistry()), **extra)


async def publish(redis: Redis, *messages: TradeIntent) -> None:
    from common.bus import publish as bus_publish

    for message in messages:
        await bus_publish(redis, Service.TRADING_BOT, (Stream.TRADE_INTENT, message))


def test_a_failing_lane_backs_off_alone(redis_url: str, settings: Settings) -> None:
    """XRP's entry fails every time; BTC entries published after it are handled at once, in order, while
    XRP waits out its backoff and is finally dead-lettered after max_deliveries — entries of the XRP lane
    behind it waited for it."""

    async def scenario() -> None:
        redis = Redis.from_url(redis_url, decode_responses=True)
        handled: list[tuple[str, float]] = []
        xrp_tries: list[float] = []

        async def handle(delivery: Delivery) -> Effects:
            assert isinstance(delivery.message, TradeIntent)
            if delivery.message.intent_id == intent(0, "XRPUSDT").intent_id:
                xrp_tries.append(time.monotonic())
                raise RuntimeError("XRP's exchange refuses")
            handled.append((delivery.message.intent_id, time.monotonic()))
            return Effects()

        consumer = lanes_consumer(redis, settings, handle)
        stop = asyncio.Event()
        await consumer.setup()
        task = asyncio.create_task(consumer.run(stop))
        await publish(redis, intent(0, "XRPUSDT"))
        await poll(_async(lambda: len(xrp_tries) == 1))  # XRP failed once: its lane waits 500 ms now
        started = time.monotonic()
        await publish(redis, intent(1, "BTCUSDT"), intent(2, "XRPUSDT"), intent(3, "BTCUSDT"))
        await poll(lambda: _has(handled, intent(3, "BTCUSDT").intent_id), timeout_s=5)
        btc_done = time.monotonic() - started
        assert btc_done < 0.4  # well before XRP's first retry (500 ms)
        assert [i for i, _ in handled] == [intent(1, "BTCUSDT").intent_id, intent(3, "BTCUSDT").intent_id]
        await poll(lambda: _has(handled, intent(2, "XRPUSDT").intent_id), timeout_s=15)
        assert await redis.xlen(keys.dlq_stream(Stream.TRADE_INTENT)) == 1
        assert len(xrp_tries) == settings.bus.max_deliveries  # then dead-lettered; the XRP entry behind it ran
        stop.set()
        await asyncio.wait_for(task, 10)
        await redis.aclose()

    run(scenario())


async def _has(handled: list[tuple[str, float]], intent_id: str) -> bool:
    return any(i == intent_id for i, _ in handled)


def test_a_dead_consumers_entries_are_claimed_at_once_and_run_first(redis_url: str, settings: Settings) -> None:
    """Consumer A holds two BTC entries when it dies; a newer BTC entry is published. B — knowing A dead —
    claims A's entries at once (claim_idle_ms is 60 s) and handles them before the newer one."""

    async def scenario() -> None:
        redis = Redis.from_url(redis_url, decode_responses=True)
        await publish(redis, intent(0), intent(1))
        # A dies holding both
        await die_holding(lambda hang: lanes_consumer(redis, settings, hang, name="intent_bridge@hostA"))
        await publish(redis, intent(2))
        order: list[str] = []

        async def record(delivery: Delivery) -> Effects:
            assert isinstance(delivery.message, TradeIntent)
            order.append(delivery.message.intent_id)
            return Effects()

        async def a_is_dead(name: str) -> bool:
            return name == "intent_bridge@hostA"

        b = lanes_consumer(redis, settings, record, name="intent_bridge@hostB", dead=a_is_dead)
        stop = asyncio.Event()
        started = time.monotonic()
        b_task = asyncio.create_task(b.run(stop))
        await poll(_async(lambda: len(order) == 3), timeout_s=10)
        assert time.monotonic() - started < 3
        assert order == [intent(i).intent_id for i in range(3)]
        stop.set()
        await asyncio.wait_for(b_task, 10)
        assert (await redis.xpending(keys.stream(Stream.TRADE_INTENT), Service.INTENT_BRIDGE))["pending"] == 0
        await redis.aclose()

    run(scenario())


def test_a_consumer_without_a_heartbeat_is_known_dead(redis_url: str) -> None:
    """The default liveness: a consumer ``<service>@<instance>`` is dead when its heartbeat key is gone."""

    async def scenario() -> None:
        redis = Redis.from_url(redis_url, decode_responses=True)
        dead = heartbeat_dead(redis)
        await redis.set(keys.heartbeat(Service.INTENT_BRIDGE, "hostA-1"), "{}", px=10_000)
        assert not await dead("intent_bridge@hostA-1")
        assert await dead("intent_bridge@hostB")
        await redis.aclose()

    run(scenario())


def test_a_fenced_commit_fails_once_the_fence_changed_hands(redis_url: str, settings: Settings) -> None:
    """A consumer fenced by ``quantum:apply:lease`` commits while the key holds its value; once another
    value is there the commit raises FenceLost, nothing of it is written, the entry stays pending and the
    consumer stops with the error."""

    async def scenario() -> None:
        redis = Redis.from_url(redis_url, decode_responses=True)
        await redis.set(keys.apply_lease(), "me")
        fence = Fence(keys.apply_lease(), "me")
        consumer = Consumer(redis, streams.get(Stream.TRADE_INTENT), Service.INTENT_BRIDGE, "intent_bridge@t",
                            bridge_handler(), settings.bus, metrics=BusMetrics(CollectorRegistry()), fence=fence)
        await consumer.setup()
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run(stop))
        await publish_intents(redis, 1)
        await poll(lambda: _plans(redis, 1))
        await redis.set(keys.apply_lease(), "someone else")
        await publish_intents(redis, 1, start=1)
        with pytest.raises(FenceLost):
            await asyncio.wait_for(task, 10)
        assert len(await plans(redis)) == 1
        assert (await redis.xpending(keys.stream(Stream.TRADE_INTENT), Service.INTENT_BRIDGE))["pending"] == 1
        await redis.aclose()

    run(scenario())


async def _plans(redis: Redis, n: int) -> bool:
    return len(await plans(redis)) >= n


def _async(fn: Any) -> Any:
    async def check() -> bool:
        return bool(fn())

    return check


def test_entries_waiting_behind_a_slow_head_are_not_claimed_by_another_consumer(redis_url: str) -> None:
    """Two consumers of one group: B's XRP head takes 2 s, far past claim_idle_ms (300 ms). The entries
    waiting behind it in B's memory keep a fresh idle time, so C claims none of them: each entry is
    handled once, by B, in order."""
    settings = fast_settings(redis_url, claim_idle_ms=300, claim_interval_ms=100)

    async def scenario() -> None:
        redis = Redis.from_url(redis_url, decode_responses=True)
        seen: list[tuple[str, str]] = []
        slow = intent(0, "XRPUSDT").intent_id

        def handler(name: str) -> Any:
            async def handle(delivery: Delivery) -> Effects:
                assert isinstance(delivery.message, TradeIntent)
                seen.append((name, delivery.message.intent_id))
                if name == "B" and delivery.message.intent_id == slow:
                    await asyncio.sleep(2.0)  # the slow head itself (an exchange call), not a synchronisation
                return Effects()

            return handle

        b = lanes_consumer(redis, settings, handler("B"), name="intent_bridge@hostB")
        c = lanes_consumer(redis, settings, handler("C"), name="intent_bridge@hostC")
        await b.setup()
        await publish(redis, *[intent(i, "XRPUSDT") for i in range(4)])
        stop = asyncio.Event()
        tb = asyncio.create_task(b.run(stop))
        await poll(_async(lambda: len(seen) == 1))  # B holds all four, the head in hand
        tc = asyncio.create_task(c.run(stop))
        await poll(_async(lambda: len(seen) == 4), timeout_s=10)
        stop.set()
        await asyncio.gather(tb, tc)
        assert seen == [("B", intent(i, "XRPUSDT").intent_id) for i in range(4)]
        await redis.aclose()

    run(scenario())


def test_claimed_entries_respect_the_in_flight_bound(redis_url: str) -> None:
    """A dead consumer held 60 entries; the consumer that claims them holds at most in_flight_max (4) in
    memory at any time, and handles all 60 once."""
    settings = fast_settings(redis_url, in_flight_max=4, batch_size=32)

    async def scenario() -> None:
        redis = Redis.from_url(redis_url, decode_responses=True)
        await publish(redis, *[intent(i, ["BTCUSDT", "ETHUSDT", "XRPUSDT", "SOLUSDT"][i % 4]) for i in range(60)])
        await die_holding(lambda hang: lanes_consumer(redis, settings.model_copy(update={"bus": settings.bus.model_copy(
            update={"in_flight_max": 256})}), hang, name="intent_bridge@hostA"))
        peak = 0
        handled: list[str] = []
        consumer: Consumer | None = None

        async def record(delivery: Delivery) -> Effects:
            nonlocal peak
            assert consumer is not None and isinstance(delivery.message, TradeIntent)
            peak = max(peak, len(consumer._held))
            handled.append(delivery.message.intent_id)
            return Effects()

        async def dead(name: str) -> bool:
            return name == "intent_bridge@hostA"

        consumer = lanes_consumer(redis, settings, record, name="intent_bridge@hostB", dead=dead)
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run(stop))
        await poll(_async(lambda: len(handled) == 60), timeout_s=20)
        stop.set()
        await asyncio.wait_for(task, 10)
        assert peak <= 4 and len(set(handled)) == 60
        await redis.aclose()

    run(scenario())
