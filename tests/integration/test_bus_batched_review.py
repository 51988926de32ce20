"""A second reading of the ``batched`` consumer: scripted interleavings against a real Redis.

Each test drives one interleaving exactly — asyncio events inside the handler and inside a wrapped
``common.bus.consumer.commit`` decide what runs when; nothing waits on a sleep. Ten of them reproduced
faults this reading found (a lost batch reply doubling plans, a check that was not answered taken as an
answer, claimed entries out of order, trimmed entries lost or handled twice, a takeover's held entries
claimed by another, a dead letter too large to publish, a handler left running after a lost fence); they
failed before the consumer was fixed and pass now.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from common import keys, streams
from common.backoff import pause as real_pause
from common.bus import Consumer, Delivery, Effects, Fence, FenceLost
from common.bus import consumer as consumer_module
from common.bus.consumer import ensure_group, heartbeat_dead
from common.bus.effects import commit as real_commit
from common.bus.metrics import BusMetrics
from common.config import Settings
from common.contracts import DeadLetter, TradeIntent, decode
from common.streams import Service, Stream
from ops.redis_server import EmbeddedRedis, answers, free_port
from tests.helpers import entry_plan, fast_settings, intent, poll, run
from tests.integration.test_bus import plans, publish_intents

KEY = keys.stream(Stream.TRADE_INTENT)
GROUP = Service.INTENT_BRIDGE
NAME = "intent_bridge@t"
Commit = Callable[..., Awaitable[None]]


def bus(redis_url: str, **over: Any) -> Settings:
    base: dict[str, Any] = {"batch_size": 5, "retry_initial_ms": 20, "retry_max_ms": 40, "max_deliveries": 4,
                            "claim_idle_ms": 60_000}
    base.update(over)
    return fast_settings(redis_url, **base)


def make(redis: Redis, settings: Settings, handler: Any, name: str = NAME, *, batched: bool = True,
         **extra: Any) -> Consumer:
    return Consumer(redis, streams.get(Stream.TRADE_INTENT), GROUP, name, handler, settings.bus,
                    metrics=BusMetrics(CollectorRegistry()), batched=batched, **extra)


class Recorder:
    """intent_bridge's shape (one apply.plan per intent) with scripted hooks per intent: ``before`` runs
    (and may block, or raise) before the effects are returned."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.before: dict[str, Callable[[Delivery], Awaitable[None]]] = {}

    async def __call__(self, delivery: Delivery) -> Effects:
        assert isinstance(delivery.message, TradeIntent)
        intent_id = delivery.message.intent_id
        self.calls.append((intent_id, delivery.deliveries))
        hook = self.before.get(intent_id)
        if hook is not None:
            await hook(delivery)
        return Effects().publish(Stream.APPLY_PLAN, entry_plan(delivery.message))

    def ids(self) -> list[str]:
        return [intent_id for intent_id, _ in self.calls]


def ack_size(kwargs: dict[str, Any]) -> int:
    ack = kwargs.get("ack")
    return 0 if ack is None else 1 if isinstance(ack[2], str) else len(ack[2])


@pytest.fixture
def scripted_commit(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Callable[..., Awaitable[None]]], None]]:
    """Replace the consumer's ``commit`` by ``script(real, n, *args, **kwargs)`` (``n``: the 0-based number
    of the call)."""
    real = real_commit

    def install(script: Callable[..., Awaitable[None]]) -> None:
        calls = 0

        async def scripted(*args: Any, **kwargs: Any) -> None:
            nonlocal calls
            n = calls
            calls += 1
            await script(real, n, *args, **kwargs)

        monkeypatch.setattr(consumer_module, "commit", scripted)

    yield install


async def started(consumer: Consumer, stop: asyncio.Event) -> asyncio.Task[None]:
    await consumer.setup()
    return asyncio.create_task(consumer.run(stop))


async def finish(task: asyncio.Task[None], stop: asyncio.Event) -> None:
    stop.set()
    await asyncio.wait_for(task, 10)


async def pending_count(redis: Redis) -> int:
    summary: Any = await redis.xpending(KEY, GROUP)
    return int(summary["pending"])


async def last_delivered(redis: Redis) -> str:
    for g in await redis.xinfo_groups(KEY):
        if str(g["name"]) == GROUP:
            return str(g["last-delivered-id"])
    raise AssertionError("no group")


async def settled(redis: Redis, n: int, *consumers: Consumer) -> bool:
    """``n`` plans out, nothing pending or unread in the group, and nothing held by ``consumers`` (a lane that
    still holds entries may still commit: after a lost reply the group is drained before the lane is)."""
    if any(c._held for c in consumers):
        return False
    if await redis.xlen(keys.stream(Stream.APPLY_PLAN)) < n or await pending_count(redis):
        return False
    newest: Any = await redis.xrevrange(KEY, count=1)
    return await last_delivered(redis) == str(newest[0][0])


async def entries(redis: Redis, key: str, **bounds: Any) -> list[tuple[str, dict[str, str]]]:
    reply: Any = await redis.xrange(key, **bounds)
    return [(str(entry_id), dict(fields)) for entry_id, fields in reply]


async def dead_letters(redis: Redis) -> list[DeadLetter]:
    return [decode(DeadLetter, raw) for _, raw in await entries(redis, keys.dlq_stream(Stream.TRADE_INTENT))]


def plan_ids(out: list[Any]) -> list[str]:
    return [p.intent_id or "" for p in out]


async def deliver_to(redis: Redis, name: str, count: int) -> list[str]:
    """Read ``count`` new entries as consumer ``name`` (a consumer that then died holding them)."""
    await ensure_group(redis, KEY, GROUP)
    reply: Any = await redis.xreadgroup(GROUP, name, {KEY: ">"}, count=count)
    return [str(entry_id) for entry_id, _ in reply[0][1]]


# --- stop ------------------------------------------------------------------------------------------------


def test_a_stop_between_handle_and_commit_finishes_what_was_delivered(redis_url: str, scripted_commit: Any) -> None:
    """The stop comes while the first batch's commit is held back: the consumer reads nothing more, commits
    every entry it was delivered (at most two batches), each once and in order; the rest stays unread."""
    settings = bus(redis_url)

    async def scenario() -> None:
        redis = Redis.from_url(redis_url, decode_responses=True)
        sent = await publish_intents(redis, 20)
        in_commit, release = asyncio.Event(), asyncio.Event()

        async def script(real: Commit, n: int, *args: Any, **kwargs: Any) -> None:
            if n == 0:
                in_commit.set()
                await release.wait()
            await real(*args, **kwargs)

        scripted_commit(script)
        stop = asyncio.Event()
        task = await started(make(redis, settings, Recorder()), stop)
        await asyncio.wait_for(in_commit.wait(), 10)
        stop.set()
        release.set()
        await asyncio.wait_for(task, 10)
        delivered = [i for i, _ in await entries(redis, KEY, max=await last_delivered(redis))]
        assert 5 <= len(delivered) <= 10
        assert plan_ids(await plans(redis)) == [m.intent_id for m in sent[:len(delivered)]]
        assert await pending_count(redis) == 0
        await redis.aclose()

    run(scenario(), 20)


def test_a_stop_while_a_batch_fails_leaves_the_failed_entry_and_those_after_it_pending(redis_url: str) -> None:
    """Batch 2's third entry fails and the stop comes right then: the two entries before it are committed
    with batch 1; it and everything after stay pending (not a plan out for them); a restart finishes them
    once each, in order."""
    settings = bus(redis_url, retry_initial_ms=60_000, retry_max_ms=60_000)

    async def scenario() -> None:
        redis = Redis.from_url(redis_url, decode_responses=True)
        sent = await publish_intents(redis, 10)
        stop = asyncio.Event()
        first = Recorder()

        async def fail_and_stop(delivery: Delivery) -> None:
            stop.set()
            raise RuntimeError("refused")

        first.before[sent[7].intent_id] = fail_and_stop
        # batch 1 (0..4) is held in its handler until the reader holds batch 2 as well
        consumer = make(redis, settings, first)
        first.before[sent[0].intent_id] = lambda d: poll(lambda: _held(consumer, 10), timeout_s=10)
        task = await started(consumer, stop)
        await asyncio.wait_for(task, 10)
        assert plan_ids(await plans(redis)) == [m.intent_id for m in sent[:7]]
        assert await pending_count(redis) == 3  # 7, 8, 9: delivered, not acknowledged
        second = Recorder()
        stop = asyncio.Event()
        task = await started(make(redis, settings, second), stop)
        await poll(lambda: settled(redis, 10))
        await finish(task, stop)
        assert second.ids() == [m.intent_id for m in sent[7:]]
        assert plan_ids(await plans(redis)) == [m.intent_id for m in sent]
        await redis.aclose()

    run(scenario(), 20)


async def _held(consumer: Consumer, n: int) -> bool:
    return len(consumer._held) >= n


# --- fence -----------------------------------------------------------------------------------------------


def test_a_fence_lost_before_the_second_batch_commits_nothing_of_it(redis_url: str, scripted_commit: Any) -> None:
    """The lease changes hands between batch 1's commit and batch 2's: batch 1's plans are out, batch 2's
    commit raises FenceLost with nothing of it written, its entries stay pending, the consumer stops."""
    settings = bus(redis_url)

    async def scenario() -> None:
        redis = Redis.from_url(redis_url, decode_responses=True)
        await redis.set(keys.apply_lease(), "me")
        sent = await publish_intents(redis, 10)

        async def script(real: Commit, n: int, *args: Any, **kwargs: Any) -> None:
            if n == 1:
                await redis.set(keys.apply_lease(), "the successor")
            await real(*args, **kwargs)

        scripted_commit(script)
        handler = Recorder()
        consumer = make(redis, settings, handler, fence=Fence(keys.apply_lease(), "me"))
        handler.before[sent[0].intent_id] = lambda d: poll(lambda: _held(consumer, 10), timeout_s=10)
        task = await started(consumer, asyncio.Event())
        with pytest.raises(FenceLost):
            await asyncio.wait_for(task, 10)
        assert plan_ids(await plans(redis)) == [m.intent_id for m in sent[:5]]
        rows = await redis.xpending_range(KEY, GROUP, min="-", max="+", count=20)
        assert [str(r["message_id"]) for r in rows] == [i for i, _ in await entries(redis, KEY)][5:]
        await redis.aclose()

    run(scenario(), 20)


def test_a_fence_lost_while_the_next_batch_is_handled_stops_that_handling(redis_url: str,
                                                                          scripted_commit: Any) -> None:
    """Batch 1's commit meets a lost fence while batch 2 is in its handler. By the time ``run`` raises
    FenceLost no handler of this consumer may still be running (the fence is lost: its work belongs to the
    successor)."""
    settings = bus(redis_url)

    async def scenario() -> None:
        redis = Redis.from_url(redis_url, decode_responses=True)
        await redis.set(keys.apply_lease(), "me")
        sent = await publish_intents(redis, 10)
        in_batch_2, ended = asyncio.Event(), asyncio.Event()
        outcome: list[str] = []
        handling: list[asyncio.Task[Any] | None] = []

        async def script(real: Commit, n: int, *args: Any, **kwargs: Any) -> None:
            if n == 0:
                await in_batch_2.wait()
                await redis.set(keys.apply_lease(), "the successor")
            await real(*args, **kwargs)

        async def batch_2(delivery: Delivery) -> None:
            handling.append(asyncio.current_task())
            in_batch_2.set()
            try:
                await asyncio.Event().wait()  # an exchange call that takes its time
            except asyncio.CancelledError:
                outcome.append("cancelled")
                raise
            finally:
                ended.set()

        scripted_commit(script)
        handler = Recorder()
        consumer = make(redis, settings, handler, fence=Fence(keys.apply_lease(), "me"))
        handler.before[sent[0].intent_id] = lambda d: poll(lambda: _held(consumer, 10), timeout_s=10)
        handler.before[sent[5].intent_id] = batch_2
        task = await started(consumer, asyncio.Event())
        with pytest.raises(FenceLost):
            await asyncio.wait_for(task, 10)
        ended_with_run = ended.is_set()
        for orphan in handling:  # if it is still running, end it here so that the loop closes
            if orphan is not None and not orphan.done():
                orphan.cancel()
                await asyncio.gather(orphan, return_exceptions=True)
        assert ended_with_run and outcome == ["cancelled"]
        await redis.aclose()

    run(scenario(), 20)


# --- deliveries ------------------------------------------------------------------------------------------


def test_a_handler_failing_its_last_allowed_try_inside_a_batch_is_dead_lettered_in_its_place(
        redis_url: str) -> None:
    """Entry 5 of a batch of 10 arrives on its 4th delivery (max_deliveries 4) and fails: entries 0-4 are
    committed, 5 is dead-lettered next (no 5th handler call), then 6-9 are handled — in that order."""
    settings = bus(redis_url, batch_size=10)

    async def scenario() -> None:
        redis = Redis.from_url(redis_url, decode_responses=True)
        sent = await publish_intents(redis, 10)
        ids = await deliver_to(redis, NAME, 10)  # delivered once each (a crash before any commit)
        for _ in range(2):  # entry 5 twice more (claimed to and fro)
            await redis.xclaim(KEY, GROUP, NAME, min_idle_time=0, message_ids=[ids[5]])
        handler = Recorder()
        seen_at_6: list[tuple[int, int]] = []

        async def refuse(delivery: Delivery) -> None:
            raise RuntimeError("refused")

        async def at_6(delivery: Delivery) -> None:
            seen_at_6.append((int(await redis.xlen(keys.stream(Stream.APPLY_PLAN))),
                              int(await redis.xlen(keys.dlq_stream(Stream.TRADE_INTENT)))))

        handler.before[sent[5].intent_id] = refuse
        handler.before[sent[6].intent_id] = at_6
        stop = asyncio.Event()
        task = await started(make(redis, settings, handler), stop)
        await poll(lambda: settled(redis, 9))
        await finish(task, stop)
        assert [d for i, d in handler.calls if i == sent[5].intent_id] == [4]  # once, on its 4th delivery
        assert handler.ids() == [m.intent_id for m in sent]
        assert seen_at_6 == [(5, 1)]
        assert plan_ids(await plans(redis)) == [m.intent_id for i, m in enumerate(sent) if i != 5]
        [letter] = await dead_letters(redis)
        assert (letter.origin_id, letter.deliveries) == (ids[5], 5)
        assert letter.error.startswith("max_deliveries") and "RuntimeError: refused" in letter.error
        await redis.aclose()

    run(scenario(), 20)


# --- outages ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("when", ["before", "after"])
def test_redis_restarted_during_a_batch_commit_loses_and_doubles_nothing(own_redis: EmbeddedRedis,
                                                                        scripted_commit: Any, when: str) -> None:
    """The server (AOF, appendfsync always) is stopped on batch 2's commit — before the MULTI/EXEC reaches
    it, or right after it executed (the reply lost with the server) — and started again. Every plan is out
    once, in stream order."""
    settings = bus(own_redis.url, batch_size=10)

    async def scenario() -> None:
        redis = Redis.from_url(own_redis.url, decode_responses=True)
        sent = await publish_intents(redis, 60)
        restarted: list[asyncio.Task[None]] = []

        async def script(real: Commit, n: int, *args: Any, **kwargs: Any) -> None:
            if restarted or ack_size(kwargs) < 2 or n == 0:
                await real(*args, **kwargs)
                return
            if when == "after":
                await real(*args, **kwargs)
            await asyncio.to_thread(own_redis.stop)
            restarted.append(asyncio.create_task(asyncio.to_thread(_start, own_redis)))
            if when == "after":
                raise RedisConnectionError("Connection closed by server.")
            await real(*args, **kwargs)  # refused: the server is down

        scripted_commit(script)
        stop = asyncio.Event()
        consumer = make(redis, settings, Recorder())
        task = await started(consumer, stop)
        await poll(lambda: _restarted(restarted))
        await poll(lambda: settled(redis, 60, consumer))
        await finish(task, stop)
        assert plan_ids(await plans(redis)) == [m.intent_id for m in sent]
        assert await redis.xlen(keys.dlq_stream(Stream.TRADE_INTENT)) == 0
        await redis.aclose()

    run(scenario(), 25)


def _start(server: EmbeddedRedis) -> None:
    server.start()


async def _restarted(restarted: list[asyncio.Task[None]]) -> bool:
    return bool(restarted) and restarted[0].done()


def test_a_lost_reply_then_an_unanswered_check_doubles_nothing(redis_url: str, scripted_commit: Any,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Batch 1's MULTI/EXEC (10 entries) executes but its reply is lost; the lane's check before the retry
    (is the head still pending?) meets the same outage once; then Redis answers again. Every plan must be
    out once (all ten were out twice before the fix)."""
    settings = bus(redis_url, batch_size=10)

    async def scenario() -> None:
        redis = Redis.from_url(redis_url, decode_responses=True)
        sent = await publish_intents(redis, 10)

        async def script(real: Commit, n: int, *args: Any, **kwargs: Any) -> None:
            await real(*args, **kwargs)
            if n == 0:
                raise RedisConnectionError("Connection reset by peer")

        scripted_commit(script)
        consumer = make(redis, settings, Recorder())
        checks = 0
        recheck = consumer._recheck

        async def flaky_check(lane: Any) -> None:
            nonlocal checks
            checks += 1
            if checks == 1:
                raise RedisConnectionError("Connection refused")
            await recheck(lane)

        monkeypatch.setattr(consumer, "_recheck", flaky_check)
        stop = asyncio.Event()
        task = await started(consumer, stop)
        await poll(lambda: settled(redis, 10, consumer))
        await finish(task, stop)
        assert plan_ids(await plans(redis)) == [m.intent_id for m in sent]
        await redis.aclose()

    run(scenario(), 20)


def test_a_lost_reply_costs_one_backoff_not_one_per_entry_of_the_batch(redis_url: str, scripted_commit: Any,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch of 20 commits, its reply is lost. Finding out that it went through should cost the lane one
    outage backoff, not twenty (with reconnect_max_ms 5 s that is 20 × up to 5 s of a stalled stream)."""
    settings = bus(redis_url, batch_size=20, reconnect_initial_ms=1000, reconnect_max_ms=5000)

    async def scenario() -> None:
        redis = Redis.from_url(redis_url, decode_responses=True)
        sent = await publish_intents(redis, 20)
        waited: list[float] = []

        async def instant_pause(stop: asyncio.Event | None, seconds: float) -> bool:
            waited.append(seconds)
            await asyncio.sleep(0)  # a yield, not a wait: the delays are only counted
            return stop is not None and stop.is_set()

        async def script(real: Commit, n: int, *args: Any, **kwargs: Any) -> None:
            await real(*args, **kwargs)
            if n == 0:
                raise RedisConnectionError("Connection reset by peer")

        monkeypatch.setattr(consumer_module, "pause", instant_pause)
        scripted_commit(script)
        stop = asyncio.Event()
        consumer = make(redis, settings, Recorder())
        task = await started(consumer, stop)
        await poll(lambda: settled(redis, 20, consumer))
        await finish(task, stop)
        assert plan_ids(await plans(redis)) == [m.intent_id for m in sent]  # exactly once: this part holds
        assert len(waited) <= 2, f"{len(waited)} backoff pauses, {sum(waited):.1f} s in all"
        await redis.aclose()

    run(scenario(), 20)


def test_a_lost_reply_then_a_claimed_older_entry_doubles_nothing(redis_url: str, scripted_commit: Any,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Batch 1 (entries 1-10) commits, its reply is lost. While the lane waits out the outage, the entry 0 of
    a consumer found dead meanwhile is claimed into the lane (it goes behind the head). Every plan must be
    out once."""
    settings = bus(redis_url, batch_size=10)

    async def scenario() -> None:
        redis = Redis.from_url(redis_url, decode_responses=True)
        sent = await publish_intents(redis, 11)
        [old] = await deliver_to(redis, "intent_bridge@hostA", 1)
        a_dead, routed_old = asyncio.Event(), asyncio.Event()

        async def script(real: Commit, n: int, *args: Any, **kwargs: Any) -> None:
            await real(*args, **kwargs)
            if n == 0:
                a_dead.set()
                raise RedisConnectionError("Connection reset by peer")

        async def pause_until_routed(stop: asyncio.Event | None, seconds: float) -> bool:
            if a_dead.is_set() and not routed_old.is_set():
                await asyncio.wait_for(routed_old.wait(), 10)
            return await real_pause(stop, seconds)

        async def dead(name: str) -> bool:
            return name == "intent_bridge@hostA" and a_dead.is_set()

        scripted_commit(script)
        monkeypatch.setattr(consumer_module, "pause", pause_until_routed)
        consumer = make(redis, settings, Recorder(), dead=dead)
        route = consumer._route

        def watch_route(entries: list[tuple[str, Any]], counts: dict[str, int]) -> None:
            route(entries, counts)
            if any(entry_id == old for entry_id, _ in entries):
                routed_old.set()

        monkeypatch.setattr(consumer, "_route", watch_route)
        stop = asyncio.Event()
        task = await started(consumer, stop)
        await poll(lambda: settled(redis, 11, consumer))
        await finish(task, stop)
        out = plan_ids(await plans(redis))
        assert sorted(out) == sorted(m.intent_id for m in sent), f"{len(out)} plans for 11 intents"
        await redis.aclose()

    run(scenario(), 20)


# --- claims ----------------------------------------------------------------------------------------------


def _claim_order_case(redis_url: str, batched: bool, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Consumer A died holding entries 0 and 1. B holds 2, 3, 4 (one batch) and is in its handler for 2
    when it learns that A is dead: it claims 0 and 1. The order in which B handles the five entries."""
    settings = bus(redis_url)

    async def scenario() -> list[str]:
        redis = Redis.from_url(redis_url, decode_responses=True)
        sent = await publish_intents(redis, 5)
        old = await deliver_to(redis, "intent_bridge@hostA", 2)
        a_dead, routed_old = asyncio.Event(), asyncio.Event()

        async def dead(name: str) -> bool:
            return name == "intent_bridge@hostA" and a_dead.is_set()

        async def in_hand(delivery: Delivery) -> None:
            a_dead.set()
            await asyncio.wait_for(routed_old.wait(), 10)

        handler = Recorder()
        handler.before[sent[2].intent_id] = in_hand
        consumer = make(redis, settings, handler, batched=batched, dead=dead)
        route = consumer._route

        def watch_route(entries: list[tuple[str, Any]], counts: dict[str, int]) -> None:
            route(entries, counts)
            if {entry_id for entry_id, _ in entries} >= set(old):
                routed_old.set()

        monkeypatch.setattr(consumer, "_route", watch_route)
        stop = asyncio.Event()
        task = await started(consumer, stop)
        await poll(lambda: settled(redis, 5))
        await finish(task, stop)
        assert sorted(plan_ids(await plans(redis))) == sorted(m.intent_id for m in sent)  # each once
        assert plan_ids(await plans(redis)) == handler.ids()
        await redis.aclose()
        return [next(str(i) for i, m in enumerate(sent) if m.intent_id == c) for c in handler.ids()]

    return run(scenario(), 20)


def test_entries_claimed_while_an_unbatched_lane_handles_its_head_go_right_behind_it(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _claim_order_case(redis_url, False, monkeypatch) == ["2", "0", "1", "3", "4"]


def test_entries_claimed_while_a_batch_is_handled_go_right_behind_the_entry_in_hand(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _claim_order_case(redis_url, True, monkeypatch) == ["2", "0", "1", "3", "4"]


def test_entries_claimed_while_a_batch_is_handled_are_handled_once_each_in_their_order(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """What holds today (and after a fix): each entry once, the one in hand first, the claimed ones in
    their order. (Today they come after the whole batch: 2, 3, 4, 0, 1.)"""
    order = _claim_order_case(redis_url, True, monkeypatch)
    assert order[0] == "2" and [i for i in order if i in "01"] == ["0", "1"]


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_batched_consumer_dying_mid_batch_is_taken_over_by_another(redis_url: str, scripted_commit: Any,
                                                                     when: str) -> None:
    """Two batched consumers of one group. A dies in its first batch's commit — before the MULTI/EXEC, or
    after it executed — with its read-ahead batch in hand; its heartbeat goes. B, already running, finds it
    dead (heartbeat_dead), claims what A held and handles it: every plan once, A's entries in their order."""
    settings = bus(redis_url)

    async def scenario() -> None:
        redis = Redis.from_url(redis_url, decode_responses=True)
        redis_a = Redis.from_url(redis_url, decode_responses=True)
        await redis.set(keys.heartbeat(GROUP, "hostA"), "{}", px=60_000)
        sent = await publish_intents(redis, 10)
        in_commit = asyncio.Event()

        async def script(real: Commit, n: int, *args: Any, **kwargs: Any) -> None:
            if args[0] is redis_a and not in_commit.is_set():
                if when == "after":
                    await real(*args, **kwargs)
                in_commit.set()
                await asyncio.Event().wait()  # killed here
            await real(*args, **kwargs)

        scripted_commit(script)
        handler_a = Recorder()
        a = make(redis_a, settings, handler_a, name="intent_bridge@hostA")
        handler_a.before[sent[0].intent_id] = lambda d: poll(lambda: _held(a, 10), timeout_s=10)
        task_a = await started(a, asyncio.Event())
        await asyncio.wait_for(in_commit.wait(), 10)
        handler_b = Recorder()
        stop = asyncio.Event()
        b = make(redis, settings, handler_b, name="intent_bridge@hostB", dead=heartbeat_dead(redis))
        task_b = await started(b, stop)
        more = await publish_intents(redis, 10, start=10)
        await poll(lambda: _plans_of(redis, more))  # B is working
        task_a.cancel()
        await asyncio.gather(task_a, return_exceptions=True)
        await redis.delete(keys.heartbeat(GROUP, "hostA"))
        await poll(lambda: settled(redis, 20, b))
        await finish(task_b, stop)
        out = plan_ids(await plans(redis))
        assert sorted(out) == sorted(m.intent_id for m in sent + more)
        taken_over = [m.intent_id for m in sent[5:]] if when == "after" else [m.intent_id for m in sent]
        assert [i for i in handler_b.ids() if i in taken_over] == taken_over
        await redis.aclose()
        await redis_a.aclose()

    run(scenario(), 20)


async def _plans_of(redis: Redis, messages: list[TradeIntent]) -> bool:
    out = set(plan_ids(await plans(redis)))
    return all(m.intent_id in out for m in messages)


# --- trimming --------------------------------------------------------------------------------------------


def _system_redis_7() -> Path | None:
    """A Redis 7 server binary on this machine (the bundled one is 6.2), if there is one."""
    found = shutil.which("redis-server")
    if found is None:
        return None
    version = subprocess.run([found, "--version"], capture_output=True, text=True, check=False).stdout
    return Path(found) if " v=7." in version else None


@pytest.fixture
def redis7_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A Redis 7 server of this test's own (skipped where none is installed). XCLAIM differs from 6.2:
    Redis 7 drops trimmed entries from the PEL when they are claimed (JUSTID included), and XAUTOCLAIM
    reports them — whatever their idle time — while 6.2 keeps them and returns them as (nil, nil)."""
    binary = _system_redis_7()
    if binary is None:
        pytest.skip("no Redis 7 server on this machine")
    from ops import redis_server

    monkeypatch.setattr(redis_server, "server_binary", lambda: binary)
    server = EmbeddedRedis(free_port(), tmp_path / "redis7")
    server.start()
    assert answers(server.url)
    yield server.url
    server.stop()


@pytest.fixture(params=["6.2", "7"])
def any_redis(request: pytest.FixtureRequest) -> str:
    """The suite's Redis 6.2 or a Redis 7."""
    return str(request.getfixturevalue("redis_url" if request.param == "6.2" else "redis7_url"))


async def trim_to(redis: Redis, n: int) -> None:
    await redis.xtrim(KEY, maxlen=n, approximate=False)


def test_pending_entries_trimmed_before_a_restart_are_dead_lettered_in_their_place(any_redis: str) -> None:
    """The consumer held ten entries when it stopped; the stream was trimmed past the first five. On restart
    those five are dead-lettered (trimmed), in order, and the other five handled as one batch."""
    settings = bus(any_redis, batch_size=10)

    async def scenario() -> None:
        redis = Redis.from_url(any_redis, decode_responses=True)
        sent = await publish_intents(redis, 10)
        ids = await deliver_to(redis, NAME, 10)
        await trim_to(redis, 5)
        handler = Recorder()
        stop = asyncio.Event()
        task = await started(make(redis, settings, handler), stop)
        await poll(lambda: settled(redis, 5))
        await finish(task, stop)
        assert handler.ids() == [m.intent_id for m in sent[5:]]
        letters = await dead_letters(redis)
        assert [(d.origin_id, d.error) for d in letters] == [(i, "trimmed before it was handled") for i in ids[:5]]
        await redis.aclose()

    run(scenario(), 20)


def test_entries_trimmed_while_a_batch_holds_them_are_committed_once(any_redis: str) -> None:
    """The stream is trimmed past the batch in hand, and the held entries' idle time is refreshed (Redis 7
    drops them from the PEL then): they are still handled from memory, each plan once."""
    settings = bus(any_redis, batch_size=10)

    async def scenario() -> None:
        redis = Redis.from_url(any_redis, decode_responses=True)
        sent = await publish_intents(redis, 10)
        handler = Recorder()
        consumer = make(redis, settings, handler)

        async def trim_and_refresh(delivery: Delivery) -> None:
            await publish_intents(redis, 1, start=10)
            await trim_to(redis, 1)
            await consumer._refresh_held()

        handler.before[sent[0].intent_id] = trim_and_refresh
        stop = asyncio.Event()
        task = await started(consumer, stop)
        await poll(lambda: settled(redis, 11, consumer))
        await finish(task, stop)
        assert plan_ids(await plans(redis)) == [m.intent_id for m in sent] + [intent(10).intent_id]
        await redis.aclose()

    run(scenario(), 20)


def _failing_head_trimmed(url: str) -> None:
    """The lane's head fails twice and succeeds on its third try; after its first failure the stream is
    trimmed past it. It must end as a plan or a dead letter, never silently dropped."""
    settings = bus(url, claim_interval_ms=60_000)  # no XAUTOCLAIM turn after the first

    async def scenario() -> None:
        redis = Redis.from_url(url, decode_responses=True)
        [head] = await publish_intents(redis, 1)
        tries = 0

        async def fail_twice(delivery: Delivery) -> None:
            nonlocal tries
            tries += 1
            if tries == 1:
                await publish_intents(redis, 1, start=1)
                await trim_to(redis, 1)
            if tries <= 2:
                raise RuntimeError("refused")

        handler = Recorder()
        handler.before[head.intent_id] = fail_twice
        stop = asyncio.Event()
        task = await started(make(redis, settings, handler), stop)
        await poll(lambda: _plans_of(redis, [intent(1)]))
        await finish(task, stop)
        out = plan_ids(await plans(redis))
        dead_lettered = await redis.xlen(keys.dlq_stream(Stream.TRADE_INTENT))
        assert (out.count(head.intent_id), dead_lettered) in {(1, 0), (0, 1)}, f"tries={tries}"
        await redis.aclose()

    run(scenario(), 20)


def test_a_failing_head_trimmed_while_it_waits_is_retried_from_memory_on_redis_6(redis_url: str) -> None:
    _failing_head_trimmed(redis_url)


def test_a_failing_head_trimmed_while_it_waits_is_not_lost_on_redis_7(redis7_url: str) -> None:
    _failing_head_trimmed(redis7_url)


def test_an_entry_trimmed_in_a_batch_in_hand_is_not_both_handled_and_dead_lettered(
        redis7_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stream is trimmed past the batch in hand and the reader takes its XAUTOCLAIM turn meanwhile. Each
    entry must end as a plan or as a dead letter, not as both."""
    settings = bus(redis7_url, claim_interval_ms=1)

    async def scenario() -> None:
        redis = Redis.from_url(redis7_url, decode_responses=True)
        sent = await publish_intents(redis, 5)
        handler = Recorder()
        consumer = make(redis, settings, handler)
        trimmed, claimed_after = asyncio.Event(), asyncio.Event()
        autoclaim = consumer._autoclaim

        async def watch_autoclaim() -> list[tuple[str, dict[str, str] | None]]:
            was_trimmed = trimmed.is_set()
            out = await autoclaim()
            if was_trimmed:
                claimed_after.set()
            return out

        async def trim_then_wait(delivery: Delivery) -> None:
            await publish_intents(redis, 1, start=5)
            await trim_to(redis, 1)
            trimmed.set()
            await asyncio.wait_for(claimed_after.wait(), 10)

        monkeypatch.setattr(consumer, "_autoclaim", watch_autoclaim)
        handler.before[sent[0].intent_id] = trim_then_wait
        stop = asyncio.Event()
        task = await started(consumer, stop)
        await poll(lambda: _plans_of(redis, [intent(5)]))
        await finish(task, stop)
        planned = set(plan_ids(await plans(redis)))
        letters = [d.origin_id for d in await dead_letters(redis)]
        ids = [i for i, _ in await entries(redis, KEY)]
        both = [m.intent_id for m in sent if m.intent_id in planned] if letters else []
        assert not (letters and both), f"dead-lettered {len(letters)} and planned {len(both)} of 5 ({ids})"
        await redis.aclose()

    run(scenario(), 20)


def test_idle_entries_trimmed_before_they_are_auto_claimed_are_dead_lettered(redis_url: str) -> None:
    """A live consumer A holds four entries and stops making progress; the stream is trimmed past the first
    two. B claims A's idle entries (XAUTOCLAIM): the two trimmed ones are dead-lettered, the others handled,
    and B keeps running."""
    settings = bus(redis_url, claim_idle_ms=1)

    async def scenario() -> None:
        redis = Redis.from_url(redis_url, decode_responses=True)
        sent = await publish_intents(redis, 4)
        await deliver_to(redis, "intent_bridge@hostA", 4)
        await trim_to(redis, 2)
        stop = asyncio.Event()
        task = await started(make(redis, settings, Recorder(), name="intent_bridge@hostB"), stop)

        async def done_or_dead() -> bool:
            return task.done() or await _plans_of(redis, sent[2:])

        await poll(done_or_dead)
        assert not task.done(), f"the consumer stopped: {task.exception()!r}"
        await poll(lambda: _count_dlq(redis, 2))
        await finish(task, stop)
        await redis.aclose()

    run(scenario(), 20)


async def _count_dlq(redis: Redis, n: int) -> bool:
    return int(await redis.xlen(keys.dlq_stream(Stream.TRADE_INTENT))) >= n


# --- idle refresh ----------------------------------------------------------------------------------------


def test_a_refresh_of_the_held_entries_during_a_batch_commit_changes_nothing(redis_url: str,
                                                                           scripted_commit: Any) -> None:
    """The idle refresh (XCLAIM JUSTID of every held entry) runs just before and just after a batch's
    MULTI/EXEC, while the next batch is in hand: each plan once, nothing left pending, no delivery counted."""
    settings = bus(redis_url)

    async def scenario() -> None:
        redis = Redis.from_url(redis_url, decode_responses=True)
        sent = await publish_intents(redis, 10)
        handler = Recorder()
        consumer = make(redis, settings, handler)
        counts: list[int] = []

        async def script(real: Commit, n: int, *args: Any, **kwargs: Any) -> None:
            await consumer._refresh_held()
            await real(*args, **kwargs)
            await consumer._refresh_held()
            rows = await redis.xpending_range(KEY, GROUP, min="-", max="+", count=20)
            counts.extend(int(r["times_delivered"]) for r in rows)

        scripted_commit(script)
        handler.before[sent[0].intent_id] = lambda d: poll(lambda: _held(consumer, 10), timeout_s=10)
        stop = asyncio.Event()
        task = await started(consumer, stop)
        await poll(lambda: settled(redis, 10, consumer))
        await finish(task, stop)
        assert plan_ids(await plans(redis)) == [m.intent_id for m in sent]
        assert counts and set(counts) == {1}
        await redis.aclose()

    run(scenario(), 20)


def test_entries_held_while_a_takeover_pages_through_its_backlog_are_not_claimed_by_another(
        redis_url: str) -> None:
    """B takes over dead A's ten entries with room for three (in_flight_max 3) and its first one is slow: B
    waits for room inside its own-pending read. C, a live consumer of the group, claims what has been idle
    past claim_idle_ms — which may be the seven entries B has not read yet, never the three B holds."""
    settings_b = bus(redis_url, in_flight_max=3, batch_size=2, claim_idle_ms=300)  # the group's settings
    settings_c = bus(redis_url, claim_idle_ms=300, claim_interval_ms=50)

    async def scenario() -> None:
        redis = Redis.from_url(redis_url, decode_responses=True)
        sent = await publish_intents(redis, 10)
        await deliver_to(redis, "intent_bridge@hostA", 10)

        async def dead(name: str) -> bool:
            return name == "intent_bridge@hostA"

        handler_b, handler_c = Recorder(), Recorder()
        release = asyncio.Event()

        async def slow(delivery: Delivery) -> None:
            await asyncio.wait_for(release.wait(), 15)

        handler_b.before[sent[0].intent_id] = slow
        stop = asyncio.Event()
        task_b = await started(make(redis, settings_b, handler_b, name="intent_bridge@hostB", dead=dead), stop)
        await poll(lambda: _async_true(len(handler_b.calls) == 1))
        task_c = await started(make(redis, settings_c, handler_c, name="intent_bridge@hostC"), stop)
        await poll(lambda: _async_true(sent[9].intent_id in handler_c.ids()), timeout_s=10)
        release.set()
        await poll(lambda: settled(redis, 10))
        stop.set()
        await asyncio.wait_for(asyncio.gather(task_b, task_c), 10)
        out = plan_ids(await plans(redis))
        twice = [m.intent_id for m in sent if out.count(m.intent_id) > 1]
        assert not twice, f"{len(twice)} plans out twice; B handled {handler_b.ids()[:3]}"
        await redis.aclose()

    run(scenario(), 20)


async def _async_true(value: bool) -> bool:
    return value


# --- bounds ----------------------------------------------------------------------------------------------


def test_a_batched_consumer_holds_at_most_two_batches_and_in_flight_max(redis_url: str) -> None:
    """Read-ahead: at most two batches (2 × 5) held while a lane works; a takeover of 60 entries with
    in_flight_max 4 holds at most 4. Every entry handled once, in order."""

    async def scenario() -> None:
        redis = Redis.from_url(redis_url, decode_responses=True)
        sent = await publish_intents(redis, 60)
        await deliver_to(redis, "intent_bridge@hostA", 30)
        for bound, settings in [(10, bus(redis_url)), (4, bus(redis_url, in_flight_max=4, batch_size=32))]:
            peak = 0
            holder: list[Consumer] = []

            handler = Recorder()

            async def record(delivery: Delivery, handler: Recorder = handler,
                             holder: list[Consumer] = holder) -> Effects:
                nonlocal peak
                peak = max(peak, len(holder[0]._held))
                await asyncio.sleep(0)  # a yield: lets the reader read ahead if it may
                return await handler(delivery)

            async def dead(name: str) -> bool:
                return name == "intent_bridge@hostA"

            consumer = make(redis, settings, record, dead=dead)
            holder.append(consumer)
            stop = asyncio.Event()
            task = await started(consumer, stop)
            await poll(lambda: settled(redis, 60))
            await finish(task, stop)
            assert 0 < peak <= bound
            assert sorted(plan_ids(await plans(redis))) == sorted(m.intent_id for m in sent)
            await redis.delete(keys.stream(Stream.APPLY_PLAN))
            await redis.xgroup_setid(KEY, GROUP, id="0")
            await redis.xgroup_delconsumer(KEY, GROUP, NAME)
            await deliver_to(redis, "intent_bridge@hostA", 30)
        await redis.aclose()

    run(scenario(), 25)


# --- dead letters ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["many fields", "a long field name"])
def test_any_malformed_entry_can_be_dead_lettered(redis_url: str, shape: str) -> None:
    """A foreign writer adds a malformed entry of 1.5 M characters — 300 fields of 5000, or one field whose
    name is that long. The consumer dead-letters it (capped) and goes on with the entry after it."""
    settings = bus(redis_url)

    async def scenario() -> None:
        redis = Redis.from_url(redis_url, decode_responses=True)
        many = {f"f{i:03}": "x" * 5000 for i in range(300)}
        fields: Any = many if shape == "many fields" else {"n" * 1_500_000: "x"}
        await redis.xadd(KEY, fields)
        [after] = await publish_intents(redis, 1)
        stop = asyncio.Event()
        task = await started(make(redis, settings, Recorder()), stop)

        async def done_or_dead() -> bool:
            return task.done() or await _plans_of(redis, [after])

        await poll(done_or_dead)
        assert not task.done(), f"the consumer stopped: {task.exception()!r}"
        assert await redis.xlen(keys.dlq_stream(Stream.TRADE_INTENT)) == 1
        await finish(task, stop)
        await redis.aclose()

    run(scenario(), 20)
