"""A ``batched`` consumer (issue 13): the entries a lane holds are handled one after another and their
effects and XACKs committed together, in stream order. Whatever fails — a handler in the middle of a batch,
the commit before it reaches Redis, the reply of a commit that went through — every entry's effects happen
exactly once and in stream order."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from common import keys, streams
from common.bus import Consumer, Delivery, Effects
from common.bus import consumer as consumer_module
from common.bus.metrics import BusMetrics
from common.config import Settings
from common.contracts import TradeIntent
from common.streams import Service, Stream
from tests.helpers import entry_plan, fast_settings, poll, run
from tests.integration.test_bus import plans, publish_intents

N = 300


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return fast_settings(redis_url, batch_size=50, retry_initial_ms=50, retry_max_ms=100, max_deliveries=4)


@pytest.fixture
def commits(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """How many entries each of the consumer's commits acknowledged, in order."""
    sizes: list[int] = []
    real = consumer_module.commit

    async def counting(*args: Any, **kwargs: Any) -> None:
        await real(*args, **kwargs)
        ack = kwargs.get("ack")
        sizes.append(0 if ack is None else 1 if isinstance(ack[2], str) else len(ack[2]))

    monkeypatch.setattr(consumer_module, "commit", counting)
    yield sizes


def batched_consumer(redis: Redis, settings: Settings, handler: Any) -> Consumer:
    return Consumer(redis, streams.get(Stream.TRADE_INTENT), Service.INTENT_BRIDGE, "intent_bridge@t", handler,
                    settings.bus, metrics=BusMetrics(CollectorRegistry()), batched=True)


def forward(calls: list[str], fail_once: set[str] | None = None) -> Any:
    """intent_bridge's shape: one apply.plan per intent; the intents named in ``fail_once`` fail their
    first try."""
    failed: set[str] = set()

    async def handle(delivery: Delivery) -> Effects:
        assert isinstance(delivery.message, TradeIntent)
        intent_id = delivery.message.intent_id
        calls.append(intent_id)
        if fail_once and intent_id in fail_once and intent_id not in failed:
            failed.add(intent_id)
            raise RuntimeError("refused once")
        return Effects().publish(Stream.APPLY_PLAN, entry_plan(delivery.message))

    return handle


async def drained(redis: Redis) -> bool:
    groups: Any = await redis.xinfo_groups(keys.stream(Stream.TRADE_INTENT))
    return all(int(g["pending"]) == 0 and int(g.get("lag") or 0) == 0 for g in groups)


async def consume_all(redis: Redis, consumer: Consumer, expected: int, timeout_s: float = 30) -> list[str]:
    """Run ``consumer`` until ``expected`` plans are out and nothing is pending; the plans' intent ids."""
    await consumer.setup()
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        async def done() -> bool:
            return await redis.xlen(keys.stream(Stream.APPLY_PLAN)) >= expected and await drained(redis)

        await poll(done, timeout_s=timeout_s)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    return [plan.intent_id or "" for plan in await plans(redis)]


def test_a_batch_commits_many_entries_at_once_in_stream_order(redis_url: str, settings: Settings,
                                                              commits: list[int]) -> None:
    async def scenario() -> None:
        redis = Redis.from_url(redis_url, decode_responses=True)
        sent = await publish_intents(redis, N)
        calls: list[str] = []
        out = await consume_all(redis, batched_consumer(redis, settings, forward(calls)), N)
        assert out == [m.intent_id for m in sent]  # each once, in stream order
        assert sum(commits) == N
        assert len(commits) <= N // 10  # committed in batches, not one MULTI per entry
        assert max(commits) <= settings.bus.batch_size
        await redis.aclose()

    run(scenario())


def test_a_handler_failure_mid_batch_commits_the_entries_before_it_and_retries_it(
        redis_url: str, settings: Settings, commits: list[int]) -> None:
    async def scenario() -> None:
        redis = Redis.from_url(redis_url, decode_responses=True)
        sent = await publish_intents(redis, N)
        failing = {sent[17].intent_id, sent[140].intent_id, sent[141].intent_id}
        calls: list[str] = []
        inner = forward(calls, failing)
        published_at_retry: list[int] = []

        async def handle(delivery: Delivery) -> Effects:
            if calls.count(sent[17].intent_id) == 1 and delivery.message.intent_id == sent[17].intent_id:
                published_at_retry.append(int(await redis.xlen(keys.stream(Stream.APPLY_PLAN))))
            return await inner(delivery)  # type: ignore[no-any-return]

        out = await consume_all(redis, batched_consumer(redis, settings, handle), N)
        assert out == [m.intent_id for m in sent]
        # the failing entry was tried again only after the ones before it had committed, and the entries
        # after it were handled only after its own success (its place in line kept)
        _, second = [i for i, c in enumerate(calls) if c == sent[17].intent_id]
        assert calls[:17] == [m.intent_id for m in sent[:17]]
        assert published_at_retry == [17]
        assert all(c != sent[18].intent_id for c in calls[:second])
        assert await redis.xlen(keys.dlq_stream(Stream.TRADE_INTENT)) == 0
        await redis.aclose()

    run(scenario())


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_commit_lost_to_an_outage_is_made_exactly_once(redis_url: str, settings: Settings,
                                                         monkeypatch: pytest.MonkeyPatch, when: str) -> None:
    """The connection breaks on a batch's commit — before it reaches Redis, or after Redis executed it and
    before the reply came back (an unknown outcome). Either way each plan is published once."""

    async def scenario() -> None:
        redis = Redis.from_url(redis_url, decode_responses=True)
        sent = await publish_intents(redis, N)
        real = consumer_module.commit
        broken: list[int] = []

        async def flaky(*args: Any, **kwargs: Any) -> None:
            ack = kwargs.get("ack")
            many = ack is not None and not isinstance(ack[2], str) and len(ack[2]) > 1
            if many and len(broken) < 2:
                broken.append(len(ack[2]))
                if when == "after":
                    await real(*args, **kwargs)
                raise RedisConnectionError("connection reset by peer")
            await real(*args, **kwargs)

        monkeypatch.setattr(consumer_module, "commit", flaky)
        calls: list[str] = []
        out = await consume_all(redis, batched_consumer(redis, settings, forward(calls)), N)
        assert len(broken) == 2
        assert out == [m.intent_id for m in sent]  # nothing lost, nothing twice
        assert await redis.xlen(keys.dlq_stream(Stream.TRADE_INTENT)) == 0
        await redis.aclose()

    run(scenario())


def test_a_malformed_entry_between_valid_ones_is_dead_lettered_in_its_place(
        redis_url: str, settings: Settings) -> None:
    async def scenario() -> None:
        redis = Redis.from_url(redis_url, decode_responses=True)
        sent = await publish_intents(redis, 40)
        await redis.xadd(keys.stream(Stream.TRADE_INTENT), {"schema_version": "1", "symbol": "NOPE"})
        sent += await publish_intents(redis, 40, start=40)
        calls: list[str] = []
        out = await consume_all(redis, batched_consumer(redis, settings, forward(calls)), 80)
        assert out == [m.intent_id for m in sent]
        assert await redis.xlen(keys.dlq_stream(Stream.TRADE_INTENT)) == 1
        await redis.aclose()

    run(scenario())


def test_a_batched_consumer_takes_no_guard(redis_url: str, settings: Settings) -> None:
    redis = Redis.from_url(redis_url, decode_responses=True)
    with pytest.raises(ValueError, match="no guard"):
        Consumer(redis, streams.get(Stream.TRADE_INTENT), Service.INTENT_BRIDGE, "intent_bridge@t",
                 forward([]), settings.bus, guard=lambda m: asyncio.Lock(), batched=True)


def test_entries_read_while_a_failing_lane_checks_what_it_holds_are_kept(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found under load: a lane whose head failed checks, before the retry, which of its entries are still
    pending (one round trip); entries the reader routed to it during that check were dropped as "settled
    elsewhere", then auto-claimed and handled out of order. They are kept: just delivered, they are ours.
    (claim_idle_ms is long here: an entry dropped by mistake would wait a minute to be claimed again.)"""
    settings = fast_settings(redis_url, batch_size=50, retry_initial_ms=50, retry_max_ms=100, max_deliveries=4,
                             claim_idle_ms=60_000)

    async def scenario() -> None:
        redis = Redis.from_url(redis_url, decode_responses=True)
        sent = await publish_intents(redis, 20)
        calls: list[str] = []
        consumer = batched_consumer(redis, settings, forward(calls, {sent[0].intent_id}))
        real = consumer._claim_own
        more: list[TradeIntent] = []

        async def reader_routes_meanwhile(ids: list[str]) -> set[str]:
            task = asyncio.current_task()
            in_lane = task is not None and task.get_name().startswith("lane:")  # the check, not the reader
            if in_lane and not more:
                more.extend(await publish_intents(redis, 10, start=20))

                async def routed() -> bool:
                    return len(consumer._held) >= 30

                await poll(routed, timeout_s=10)
            return await real(ids)

        monkeypatch.setattr(consumer, "_claim_own", reader_routes_meanwhile)
        out = await consume_all(redis, consumer, 30, timeout_s=10)
        assert more and out == [m.intent_id for m in sent + more]
        await redis.aclose()

    run(scenario())


def test_an_entry_finished_while_an_own_pending_read_was_on_its_way_is_not_handled_again(
        redis_url: str, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by the second reader's takeover test once the read-ahead went back to one batch: a consumer
    re-reads its own pending list (after claiming a dead consumer's entries) while a lane commits an entry;
    the reply still lists that entry, the lane drops it before the reply is routed, and it was handled a
    second time. What finished while the read was on its way is not routed."""

    async def scenario() -> None:
        redis = Redis.from_url(redis_url, decode_responses=True)
        sent = await publish_intents(redis, 3)
        release, holding = asyncio.Event(), asyncio.Event()
        calls: list[str] = []
        inner = forward(calls)

        async def handle(delivery: Delivery) -> Effects:
            if delivery.message.intent_id == sent[0].intent_id and not release.is_set():
                holding.set()
                await release.wait()
            return await inner(delivery)  # type: ignore[no-any-return]

        consumer = Consumer(redis, streams.get(Stream.TRADE_INTENT), Service.INTENT_BRIDGE, "intent_bridge@t",
                            handle, settings.bus, metrics=BusMetrics(CollectorRegistry()))
        real_counts = consumer._delivery_counts
        first = keys.stream(Stream.TRADE_INTENT)
        head = (await redis.xrange(first, count=1))[0][0]

        async def counts_while_the_lane_finishes(entries: list[tuple[str, Any]]) -> dict[str, int]:
            found = await real_counts(entries)
            release.set()  # the entry in hand commits now, while the reply waits to be routed

            async def finished() -> bool:
                return head not in consumer._held

            await poll(finished, timeout_s=10)
            return found

        await consumer.setup()
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run(stop))

        await asyncio.wait_for(holding.wait(), 10)
        monkeypatch.setattr(consumer, "_delivery_counts", counts_while_the_lane_finishes)
        await consumer._read_own_pending()
        monkeypatch.setattr(consumer, "_delivery_counts", real_counts)

        async def done() -> bool:
            return await redis.xlen(keys.stream(Stream.APPLY_PLAN)) >= 3 and await drained(redis)

        await poll(done)
        stop.set()
        await asyncio.wait_for(task, 10)
        assert [p.intent_id for p in await plans(redis)] == [m.intent_id for m in sent]
        assert calls.count(sent[0].intent_id) == 1
        await redis.aclose()

    run(scenario())
