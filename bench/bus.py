"""Bus hops through the project's :class:`~common.bus.Consumer` (contracts decoded, effects committed with
the XACK) beside a bare redis-py loop doing the least the same job needs (XREADGROUP of 100, forward and
XACK in one MULTI per batch), on the same Redis, in the same run."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from bench.report import Row
from common import streams
from common.bus import Consumer, Delivery, Effects
from common.bus.effects import Publish, queue_ops
from common.bus.metrics import BusMetrics
from common.config import BusSettings
from common.contracts import ApplyPlan, ExecutionResult, TradeIntent
from common.ids import entry_plan_id, hex16
from common.streams import Service, Stream

#: the hops of the three-hop chain: (stream read, group, stream written)
CHAIN = ((Stream.TRADE_INTENT, Service.INTENT_BRIDGE, Stream.APPLY_PLAN),
         (Stream.APPLY_PLAN, Service.APPLY_LAYER, Stream.EXECUTION_RESULT),
         (Stream.EXECUTION_RESULT, Service.HARVEST_BRAIN, None))
BARE_COUNT = 100


def intent(i: int) -> TradeIntent:
    return TradeIntent(
        source=Service.TRADING_BOT, trace_id=hex16(f"trace{i}"), intent_id=hex16(f"intent{i}"),
        symbol=f"S{i % 50:03d}USDT", side="BUY", confidence=0.7, entry_price=Decimal("100"),
        stop_loss=Decimal("97"), take_profit=Decimal("104"), position_size_usd=Decimal("200"), leverage=10,
        model="fallback-trend-following", atr_pct=0.01, regime="TREND")


def plan_of(source: TradeIntent) -> ApplyPlan:
    """What intent_bridge makes of an intent (a full contract, validated)."""
    return ApplyPlan(
        source=Service.INTENT_BRIDGE, trace_id=source.trace_id, plan_id=entry_plan_id(source.intent_id),
        symbol=source.symbol, action="ENTRY_PROPOSED", side=source.side, qty=Decimal("0.02"), order_type="MARKET",
        reduce_only=False, leverage=source.leverage, entry_price=source.entry_price, stop_loss=source.stop_loss,
        take_profit=source.take_profit, intent_id=source.intent_id)


def fill_of(plan: ApplyPlan) -> ExecutionResult:
    assert plan.side is not None and plan.qty is not None and plan.entry_price is not None
    return ExecutionResult(
        source=Service.APPLY_LAYER, trace_id=plan.trace_id, fill_id=f"f-{plan.plan_id}", plan_id=plan.plan_id,
        symbol=plan.symbol, side=plan.side, qty=plan.qty, price=plan.entry_price, fee=Decimal("0.001"),
        fee_asset="USDT", reduce_only=False, kind="ENTRY", position_after=plan.qty, position_plan_id=plan.plan_id)


async def _fill(redis: Redis, n: int) -> None:
    """``n`` trade intents in trade.intent, and every group of the chain at 0."""
    await redis.flushall()
    for stream, group, _ in CHAIN:
        await redis.xgroup_create(streams.get(stream).key, group, id="0", mkstream=True)
    for at in range(0, n, 1000):
        async with redis.pipeline(transaction=False) as pipe:
            queue_ops(pipe, [Publish(Stream.TRADE_INTENT, intent(i)) for i in range(at, min(n, at + 1000))])
            await pipe.execute()


async def _drained(redis: Redis, stream: str, group: str, n: int) -> None:
    """Wait until ``n`` entries of ``stream`` are acknowledged by ``group``."""
    key = streams.get(stream).key
    while True:
        info: Any = await redis.xinfo_groups(key)
        row = next(g for g in info if str(g["name"]) == group)
        if int(row["pending"]) == 0 and str(row["last-delivered-id"]) != "0-0" and \
                await redis.xlen(key) >= n and await _all_read(redis, key, row):
            return
        await asyncio.sleep(0.005)


async def _all_read(redis: Redis, key: str, group: Any) -> bool:
    last: Any = await redis.xrevrange(key, count=1)
    return bool(last) and str(last[0][0]) == str(group["last-delivered-id"])


# --- the bare loop -----------------------------------------------------------------------------------


async def bare_hop(redis: Redis, source: str, group: str, target: str | None, n: int) -> None:
    """The floor: XREADGROUP COUNT 100, then the forwards and one XACK in one MULTI; raw fields."""
    key = streams.get(source).key
    out = streams.get(target).key if target else None
    done = 0
    while done < n:
        reply: Any = await redis.xreadgroup(group, "bare", {key: ">"}, count=BARE_COUNT, block=100)
        if not reply:
            continue
        entries = reply[0][1]
        async with redis.pipeline(transaction=True) as pipe:
            if out is not None:
                for _, fields in entries:
                    pipe.xadd(out, fields, maxlen=50_000, approximate=True)
            pipe.xack(key, group, *[entry_id for entry_id, _ in entries])
            await pipe.execute()
        done += len(entries)


# --- the project's consumer ----------------------------------------------------------------------------


def _handler(target: str | None) -> Callable[[Delivery], Awaitable[Effects]]:
    async def forward(delivery: Delivery) -> Effects:
        message = delivery.message
        if target == Stream.APPLY_PLAN:
            assert isinstance(message, TradeIntent)
            return Effects().publish(target, plan_of(message))
        if target == Stream.EXECUTION_RESULT:
            assert isinstance(message, ApplyPlan)
            return Effects().publish(target, fill_of(message))
        return Effects()

    return forward


async def project_hops(redis: Redis, hops: tuple[tuple[str, str, str | None], ...], n: int,
                       settings: BusSettings) -> None:
    stop = asyncio.Event()
    consumers = [Consumer(redis, streams.get(source), group, f"bench@{group}", _handler(target), settings,
                          service=group, metrics=BusMetrics(CollectorRegistry()), **_options(group))
                 for source, group, target in hops]
    tasks = [asyncio.create_task(c.run(stop)) for c in consumers]
    try:
        last_source, last_group, _ = hops[-1]
        await _drained(redis, last_source, last_group, n)
    finally:
        stop.set()
        await asyncio.gather(*tasks)


def _options(group: str) -> dict[str, Any]:
    """What the services pass: apply_layer's plans run in lanes by symbol; intent_bridge commits a lane's
    entries in batches; harvest_brain (its ledger read-modify-write) one entry at a time."""
    if group == Service.APPLY_LAYER:
        return {"lane": lambda m: getattr(m, "symbol", "")}
    return {"batched": group == Service.INTENT_BRIDGE}


async def _timed(redis: Redis, n: int, run: Callable[[], Awaitable[None]]) -> float:
    await _fill(redis, n)
    started = time.perf_counter()
    await run()
    return n / (time.perf_counter() - started)


async def measure(url: str, *, n: int = 20_000, rounds: int = 3) -> list[Row]:
    """Rows: one hop, three hops; project vs bare, alternated ``rounds`` times (medians)."""
    redis = Redis.from_url(url, decode_responses=True)
    settings = BusSettings()
    one, three = CHAIN[:1], CHAIN
    figures: dict[str, list[float]] = {"one_bare": [], "one": [], "three_bare": [], "three": []}
    try:
        for _ in range(rounds):
            figures["one_bare"].append(await _timed(redis, n, lambda: bare_hop(redis, *one[0], n)))
            figures["one"].append(await _timed(redis, n, lambda: project_hops(redis, one, n, settings)))
            figures["three_bare"].append(await _timed(redis, n, lambda: _gathered(redis, three, n)))
            figures["three"].append(await _timed(redis, n, lambda: project_hops(redis, three, n, settings)))
    finally:
        await redis.aclose()
    med = {k: statistics.median(v) for k, v in figures.items()}
    return [
        Row("bus_one_hop", "one bus hop: Consumer, contracts, commit+XACK", med["one"], "entry/s",
            "bare redis-py loop", med["one_bare"], "≥ 50 % of the floor", med["one"] >= 0.5 * med["one_bare"],
            {"entries": n, "rounds": rounds, "batch_size": settings.batch_size, "samples": figures}),
        Row("bus_three_hops", "three hops intent→plan→fill→harvest_brain", med["three"], "entry/s",
            "bare loop, three hops", med["three_bare"], "≥ 40 % of the floor",
            med["three"] >= 0.4 * med["three_bare"], {"entries": n, "rounds": rounds}),
    ]


async def _gathered(redis: Redis, hops: tuple[tuple[str, str, str | None], ...], n: int) -> None:
    await asyncio.gather(*(bare_hop(redis, *hop, n) for hop in hops))
