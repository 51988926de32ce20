"""``python -m bench``: contract codec, bus throughput against a real Redis, market state and kill score.

Figures are printed, one line each; they depend on the machine and are not asserted anywhere.
"""

from __future__ import annotations

import asyncio
import resource
import tempfile
import time
import tracemalloc
from pathlib import Path

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from common import streams
from common.bus import Consumer, Delivery, Effects, publish
from common.bus.metrics import BusMetrics
from common.config import BusSettings
from common.contracts import ApplyPlan, TradeIntent, decode, encode
from common.contracts.enums import PositionSide
from common.maths.kill_score import KillScoreParams, kill_score
from common.maths.marketstate import MarketStateEstimator, MarketStateParams
from common.streams import Service, Stream
from ops.redis_server import EmbeddedRedis, free_port
from tests.helpers import entry_plan, intent


def line(name: str, value: float, unit: str, extra: str = "") -> None:
    print(f"{name:<44} {value:>14,.0f} {unit}{'  ' + extra if extra else ''}")


def codec(n: int = 20_000) -> None:
    message = intent(1)
    plan = entry_plan(message)
    for contract, sample in ((TradeIntent, message), (ApplyPlan, plan)):
        fields = encode(sample)
        started = time.perf_counter()
        for _ in range(n):
            decode(contract, encode(sample))
        line(f"codec {contract.__name__} encode+decode", n / (time.perf_counter() - started), "msg/s",
             f"{len(fields)} fields")


def marketstate(n: int = 50_000) -> None:
    estimator = MarketStateEstimator(MarketStateParams())
    price = 100.0
    started = time.perf_counter()
    value = None
    for i in range(n):
        price *= 1.0 + (0.001 if i % 7 else -0.004)
        value = estimator.update(price, price * 1.002, price * 0.998, price)
    line("marketstate incremental update", n / (time.perf_counter() - started), "kline/s")
    assert value is not None
    started = time.perf_counter()
    for _ in range(n):
        kill_score(PositionSide.LONG, value, 0.01, 0.5, 3_600_000, KillScoreParams())
    line("kill score", n / (time.perf_counter() - started), "eval/s")


async def bus(url: str, n: int = 5_000) -> None:
    redis = Redis.from_url(url, decode_responses=True)
    await redis.flushall()
    for i in range(n):
        await publish(redis, Service.TRADING_BOT, (Stream.TRADE_INTENT, intent(i)))
    done = asyncio.Event()
    count = 0

    async def handle(delivery: Delivery) -> Effects:
        nonlocal count
        count += 1
        if count == n:
            done.set()
        assert isinstance(delivery.message, TradeIntent)
        return Effects().publish(Stream.APPLY_PLAN, entry_plan(delivery.message))

    settings = BusSettings(batch_size=64, block_ms=100)
    consumer = Consumer(redis, streams.get(Stream.TRADE_INTENT), Service.INTENT_BRIDGE, "bench@local", handle,
                        settings, metrics=BusMetrics(CollectorRegistry()))
    await consumer.setup()
    stop = asyncio.Event()
    tracemalloc.start()
    started = time.perf_counter()
    task = asyncio.create_task(consumer.run(stop))
    await asyncio.wait_for(done.wait(), 300)
    elapsed = time.perf_counter() - started
    stop.set()
    await task
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    line("bus consume-produce (commit + XACK each)", n / elapsed, "entry/s", f"{n} entries, batch 64")
    line("bus consumer peak traced memory", peak / 1024, "KiB")
    assert await redis.xlen(streams.get(Stream.APPLY_PLAN).key) == n
    await redis.aclose()


def main() -> None:
    print("Quantum Trader benchmarks (figures, not limits)")
    codec()
    marketstate()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(free_port(), Path(tmp)) as server:
        asyncio.run(bus(server.url))
    line("process max RSS", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "KiB")


if __name__ == "__main__":
    main()
