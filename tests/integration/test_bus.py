"""The bus runtime against fakeredis and against a real Redis server (DESIGN §5)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import fakeredis
import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from common import keys, streams
from common.bus import Consumer, Delivery, Effects, OversizedEntry, publish
from common.bus import effects as effects_module
from common.bus.consumer import DLQ_FIELD_CHARS, Handler
from common.bus.metrics import BusMetrics
from common.config import Settings
from common.contracts import ApplyPlan, DeadLetter, TradeIntent, decode
from common.streams import Service, Stream
from tests.helpers import entry_plan, fast_settings, intent, poll, run

RedisFactory = Callable[[], Redis]


@pytest.fixture(params=["fakeredis", "real"])
def make_redis(request: pytest.FixtureRequest) -> Iterator[RedisFactory]:
    """A factory of clients to one Redis: fakeredis, or the suite's real server."""
    if request.param == "fakeredis":
        server = fakeredis.FakeServer()
        yield lambda: fakeredis.FakeAsyncRedis(server=server, decode_responses=True)
    else:
        url = request.getfixturevalue("redis_url")
        yield lambda: Redis.from_url(url, decode_responses=True)


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return fast_settings(redis_url)


def bridge_handler(calls: list[str] | None = None) -> Callable[[Delivery], Any]:
    """A handler like intent_bridge's: one apply.plan per intent."""

    async def handle(delivery: Delivery) -> Effects:
        assert isinstance(delivery.message, TradeIntent)
        if calls is not None:
            calls.append(delivery.message.intent_id)
        return Effects().publish(Stream.APPLY_PLAN, entry_plan(delivery.message))

    return handle


async def die_holding(make: Callable[[Handler], Consumer]) -> None:
    """Run the consumer ``make`` builds around a handler that never returns, until it holds what it read;
    then kill it (its entries stay pending under its name)."""
    held = asyncio.Event()

    async def hang(delivery: Delivery) -> Effects:
        held.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    dead = make(hang)
    await dead.setup()
    task = asyncio.create_task(dead.run(asyncio.Event()))
    await asyncio.wait_for(held.wait(), 10)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def make_consumer(redis: Redis, settings: Settings, handler: Any, name: str = "intent_bridge@test") -> Consumer:
    return Consumer(redis, streams.get(Stream.TRADE_INTENT), Service.INTENT_BRIDGE, name, handler, settings.bus,
                    metrics=BusMetrics(CollectorRegistry()))


@asynccontextmanager
async def running(consumer: Consumer) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    await consumer.setup()
    task = asyncio.create_task(consumer.run(stop))
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def publish_intents(redis: Redis, n: int, start: int = 0) -> list[TradeIntent]:
    sent = [intent(i) for i in range(start, start + n)]
    for message in sent:
        await publish(redis, Service.TRADING_BOT, (Stream.TRADE_INTENT, message))
    return sent


async def plans(redis: Redis) -> list[ApplyPlan]:
    entries = await redis.xrange(keys.stream(Stream.APPLY_PLAN))
    return [decode(ApplyPlan, fields) for _, fields in entries]


def test_entries_are_handled_once_and_acknowledged(make_redis: RedisFactory, settings: Settings) -> None:
    """Every entry is handled, its publication made and the entry acknowledged (pending 0)."""

    async def scenario() -> None:
        redis = make_redis()
        await publish_intents(redis, 25)
        async with running(make_consumer(redis, settings, bridge_handler())):
            await poll(lambda: _count(redis, Stream.APPLY_PLAN, 25))
        assert len({p.plan_id for p in await plans(redis)}) == 25
        pending = await redis.xpending(keys.stream(Stream.TRADE_INTENT), Service.INTENT_BRIDGE)
        assert pending["pending"] == 0

    run(scenario())


def test_group_created_at_zero_sees_entries_published_before(make_redis: RedisFactory, settings: Settings) -> None:
    """A group created after entries were published still gets them (created at id 0, never $)."""

    async def scenario() -> None:
        redis = make_redis()
        await publish_intents(redis, 5)
        async with running(make_consumer(redis, settings, bridge_handler())):
            await poll(lambda: _count(redis, Stream.APPLY_PLAN, 5))

    run(scenario())


def test_killed_between_handler_and_commit_is_redelivered_once(make_redis: RedisFactory, settings: Settings) -> None:
    """A consumer killed after its handler ran but before the commit: the restarted consumer (same name)
    re-reads its own pending entry first, and the effect happens exactly once."""

    async def scenario() -> None:
        redis = make_redis()
        await publish_intents(redis, 3)
        in_handler = asyncio.Event()

        async def hang(delivery: Delivery) -> Effects:
            in_handler.set()
            await asyncio.Event().wait()  # killed here, before the commit
            raise AssertionError("unreachable")

        first = make_consumer(redis, settings.model_copy(update={"bus": settings.bus.model_copy(
            update={"batch_size": 1, "claim_idle_ms": 60_000})}), hang)
        await first.setup()
        task = asyncio.create_task(first.run(asyncio.Event()))
        await asyncio.wait_for(in_handler.wait(), 10)
        task.cancel()  # the kill
        await asyncio.gather(task, return_exceptions=True)
        assert await redis.xlen(keys.stream(Stream.APPLY_PLAN)) == 0

        calls: list[str] = []
        async with running(make_consumer(redis, settings, bridge_handler(calls))):
            await poll(lambda: _count(redis, Stream.APPLY_PLAN, 3))
        assert calls[0] == intent(0).intent_id  # its own pending entry came first
        assert sorted(p.intent_id or "" for p in await plans(redis)) == sorted(intent(i).intent_id for i in range(3))

    run(scenario())


def test_second_consumer_claims_dead_consumers_idle_entries(make_redis: RedisFactory, settings: Settings) -> None:
    """Entries held by a dead consumer are claimed (XAUTOCLAIM) by another once idle past claim_idle_ms."""

    async def scenario() -> None:
        redis = make_redis()
        await publish_intents(redis, 4)
        await die_holding(lambda hang: make_consumer(redis, settings, hang, name="intent_bridge@hostA"))

        async with running(make_consumer(redis, settings, bridge_handler(), name="intent_bridge@hostB")):
            await poll(lambda: _count(redis, Stream.APPLY_PLAN, 4))
        info = await redis.xpending(keys.stream(Stream.TRADE_INTENT), Service.INTENT_BRIDGE)
        assert info["pending"] == 0
        assert len(await plans(redis)) == 4

    run(scenario())


def test_poison_entry_reaches_dlq_after_max_deliveries(make_redis: RedisFactory, settings: Settings) -> None:
    """An entry whose handler always fails is delivered max_deliveries times, then dead-lettered with
    the handler's error, acknowledged, and the stream moves on."""

    async def scenario() -> None:
        redis = make_redis()
        await publish_intents(redis, 2)
        attempts: dict[str, int] = {}

        async def poison_first(delivery: Delivery) -> Effects:
            assert isinstance(delivery.message, TradeIntent)
            if delivery.message.intent_id == intent(0).intent_id:
                attempts["n"] = attempts.get("n", 0) + 1
                raise RuntimeError("cannot handle this one")
            return await bridge_handler()(delivery)

        async with running(make_consumer(redis, settings, poison_first)):
            await poll(lambda: _count(redis, Stream.TRADE_INTENT + ".dlq", 1))
            await poll(lambda: _count(redis, Stream.APPLY_PLAN, 1))
        assert attempts["n"] == settings.bus.max_deliveries
        [(_, fields)] = await redis.xrange(keys.dlq_stream(Stream.TRADE_INTENT))
        letter = decode(DeadLetter, fields)
        assert letter.deliveries == settings.bus.max_deliveries + 1
        assert "cannot handle this one" in letter.error and letter.error.startswith("max_deliveries")
        assert letter.payload["intent_id"] == intent(0).intent_id
        assert (await redis.xpending(keys.stream(Stream.TRADE_INTENT), Service.INTENT_BRIDGE))["pending"] == 0

    run(scenario())


def test_malformed_entry_reaches_dlq_with_its_error(make_redis: RedisFactory, settings: Settings) -> None:
    """An entry failing its contract goes to the DLQ at once, with the field named, and is acknowledged;
    the handler never sees it."""

    async def scenario() -> None:
        redis = make_redis()
        fields = {k: v for k, v in _encoded(intent(7)).items() if k != "side"}
        await redis.xadd(keys.stream(Stream.TRADE_INTENT), fields)
        await publish_intents(redis, 1)
        calls: list[str] = []
        async with running(make_consumer(redis, settings, bridge_handler(calls))):
            await poll(lambda: _count(redis, Stream.TRADE_INTENT + ".dlq", 1))
            await poll(lambda: _count(redis, Stream.APPLY_PLAN, 1))
        [(_, raw)] = await redis.xrange(keys.dlq_stream(Stream.TRADE_INTENT))
        letter = decode(DeadLetter, raw)
        assert letter.error == "contract: TradeIntent.side: missing"
        assert letter.deliveries == 1 and letter.group == Service.INTENT_BRIDGE
        assert calls == [intent(0).intent_id]

    run(scenario())


def test_a_dead_letter_keeps_a_capped_copy_of_an_oversized_entry(make_redis: RedisFactory,
                                                                 settings: Settings) -> None:
    """A 5 MB field (injected raw, past every producer's check) is not stored a second time in full: the
    dead letter keeps its first DLQ_FIELD_CHARS characters, the original size and its SHA-256."""

    async def scenario() -> None:
        redis = make_redis()
        fields = {**_encoded(intent(7)), "side": "B" * 5_000_000}
        await redis.xadd(keys.stream(Stream.TRADE_INTENT), fields)
        async with running(make_consumer(redis, settings, bridge_handler())):
            await poll(lambda: _count(redis, Stream.TRADE_INTENT + ".dlq", 1))
        [(_, raw)] = await redis.xrange(keys.dlq_stream(Stream.TRADE_INTENT))
        letter = decode(DeadLetter, raw)
        assert letter.truncated and len(letter.payload["side"]) == DLQ_FIELD_CHARS
        assert letter.payload["symbol"] == fields["symbol"]  # short fields whole
        assert letter.payload_chars == sum(len(k) + len(v) for k, v in fields.items())
        assert letter.payload_sha256 == hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
        assert sum(len(v) for v in raw.values()) < 20_000

    run(scenario())


def test_an_oversized_message_is_refused_at_publish(make_redis: RedisFactory,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        redis = make_redis()
        monkeypatch.setattr(effects_module, "MAX_ENTRY_CHARS", 200)
        with pytest.raises(OversizedEntry, match=r"trade\.intent: a TradeIntent of"):
            await publish(redis, Service.TRADING_BOT, (Stream.TRADE_INTENT, intent(1)))
        assert await redis.exists(keys.stream(Stream.TRADE_INTENT)) == 0

    run(scenario())


def test_consumer_names_do_not_grow_across_restarts(make_redis: RedisFactory, settings: Settings) -> None:
    """Ten restarts of a consumer leave one consumer in the group: the name is stable."""

    async def scenario() -> None:
        redis = make_redis()
        for i in range(10):
            await publish_intents(redis, 1, start=i)
            async with running(make_consumer(redis, settings, bridge_handler())):
                await poll(lambda i=i: _count(redis, Stream.APPLY_PLAN, i + 1))
        consumers = await redis.xinfo_consumers(keys.stream(Stream.TRADE_INTENT), Service.INTENT_BRIDGE)
        assert [c["name"] for c in consumers] == ["intent_bridge@test"]

    run(scenario())


def test_lanes_keep_order_within_a_symbol(make_redis: RedisFactory, settings: Settings) -> None:
    """With a lane key, entries of one symbol are handled in stream order while symbols interleave."""

    async def scenario() -> None:
        redis = make_redis()
        for i in range(30):
            await publish(redis, Service.TRADING_BOT, (Stream.TRADE_INTENT, intent(i, ["BTCUSDT", "ETHUSDT"][i % 2])))
        seen: dict[str, list[int]] = {}
        order = {intent(i, ["BTCUSDT", "ETHUSDT"][i % 2]).intent_id: i for i in range(30)}

        async def handle(delivery: Delivery) -> Effects:
            assert isinstance(delivery.message, TradeIntent)
            await asyncio.sleep(0.001 if delivery.message.symbol == "BTCUSDT" else 0)
            seen.setdefault(delivery.message.symbol, []).append(order[delivery.message.intent_id])
            return Effects()

        consumer = Consumer(redis, streams.get(Stream.TRADE_INTENT), Service.INTENT_BRIDGE, "intent_bridge@t",
                            handle, settings.bus, lane=lambda m: m.symbol if isinstance(m, TradeIntent) else "",
                            metrics=BusMetrics(CollectorRegistry()))
        async with running(consumer):
            await poll(_async(lambda: sum(len(v) for v in seen.values()) == 30))
        assert seen["BTCUSDT"] == sorted(seen["BTCUSDT"]) and len(seen["BTCUSDT"]) == 15
        assert seen["ETHUSDT"] == sorted(seen["ETHUSDT"]) and len(seen["ETHUSDT"]) == 15

    run(scenario())


def test_publishing_checks_contract_and_producer(make_redis: RedisFactory) -> None:
    """A service may only publish the stream's contract to a stream it is registered to produce."""

    async def scenario() -> None:
        redis = make_redis()
        with pytest.raises(ValueError, match="not a registered producer"):
            await publish(redis, Service.EXITBRAIN, (Stream.TRADE_INTENT, intent(1)))
        with pytest.raises(ValueError, match="takes TradeIntent"):
            await publish(redis, Service.TRADING_BOT, (Stream.TRADE_INTENT, entry_plan(intent(1))))
        assert await redis.exists(keys.stream(Stream.TRADE_INTENT)) == 0

    run(scenario())


# --- helpers -----------------------------------------------------------------------------------------


def _encoded(message: Any) -> dict[str, str]:
    from common.contracts import encode

    return encode(message)


def _count(redis: Redis, stream: str, n: int) -> Any:
    async def check() -> bool:
        return int(await redis.xlen(keys.stream(stream))) >= n

    return check()


def _async(fn: Callable[[], bool]) -> Callable[[], Any]:
    async def check() -> bool:
        return fn()

    return check


@pytest.mark.parametrize("failure", ["handler", "redis"])
def test_a_failed_entry_keeps_its_place_in_line(make_redis: RedisFactory, settings: Settings, failure: str) -> None:
    """When an entry's handler fails once (an exception, or Redis dropping mid-batch), the entries behind
    it wait: after a short backoff the consumer re-reads its own pending entries first, and the entries
    are handled in stream order — not the newest first."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    async def scenario() -> None:
        redis = make_redis()
        await publish_intents(redis, 3)
        handled: list[int] = []
        failed: list[int] = []
        order = {intent(i).intent_id: i for i in range(3)}

        async def flaky(delivery: Delivery) -> Effects:
            assert isinstance(delivery.message, TradeIntent)
            n = order[delivery.message.intent_id]
            if n == 0 and not failed:
                failed.append(n)
                raise RuntimeError("transient") if failure == "handler" else RedisConnectionError("dropped")
            handled.append(n)
            return await bridge_handler()(delivery)

        consumer = make_consumer(redis, settings.model_copy(update={"bus": settings.bus.model_copy(
            update={"claim_idle_ms": 60_000})}), flaky)
        async with running(consumer):
            await poll(lambda: _count(redis, Stream.APPLY_PLAN, 3))
        assert failed == [0] and handled == [0, 1, 2]

    run(scenario())
