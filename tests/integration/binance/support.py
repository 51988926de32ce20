"""Helpers of the Binance adapter tests: an adapter against the fake, run to completion; waiting with
a deadline; collecting events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from pydantic import SecretStr

from common.config import BinanceSettings
from common.exchange.base import OrderEvent, client_order_id
from common.exchange.binance import BinanceExchange
from common.exchange.placement import RetryPolicy
from tests.fakes.fake_binance import DEFAULT_API_KEY, DEFAULT_API_SECRET, FakeBinance, FakeBinanceServer
from tests.helpers import poll

T = TypeVar("T")
ORDER = "/fapi/v1/order"
ALGO = "/fapi/v1/algoOrder"
OPEN_ALGOS = "/fapi/v1/openAlgoOrders"
ALL_ALGOS = "/fapi/v1/allAlgoOrders"
TRADES = "/fapi/v1/userTrades"
FAST = RetryPolicy(max_retries=5, backoff_initial_ms=10, backoff_max_ms=50)


def settings(server: FakeBinanceServer, **overrides: Any) -> BinanceSettings:
    values: dict[str, Any] = {
        "api_key": SecretStr(DEFAULT_API_KEY),
        "api_secret": SecretStr(DEFAULT_API_SECRET),
        "base_url": server.base_url,
        "timeout_s": 0.5,
        "backoff_initial_ms": 10,
        "backoff_max_ms": 50,
        "poll_interval_s": 0.2,
        "fills_wait_s": 0.4,
    }
    values.update(overrides)
    return BinanceSettings(**values)


async def started(server: FakeBinanceServer, **overrides: Any) -> BinanceExchange:
    exchange = BinanceExchange(settings(server, **overrides))
    await exchange.start()
    return exchange


def run(server: FakeBinanceServer, body: Callable[[BinanceExchange], Awaitable[T]], **overrides: Any) -> T:
    """Start an adapter against the fake, run ``body`` with it, close it (all within 30 s)."""

    async def main() -> T:
        exchange = await started(server, **overrides)
        try:
            return await body(exchange)
        finally:
            await exchange.close()

    return asyncio.run(asyncio.wait_for(main(), 30))


async def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll a plain condition until it holds (AssertionError after ``timeout_s``)."""

    async def check() -> bool:
        return condition()

    await poll(check, timeout_s=timeout_s)


async def stream_ready(ex: BinanceExchange, fake: FakeBinance) -> None:
    """Until the user stream is up and its catch-up poll on connecting has chosen what to poll (it reads
    the positions once it did): what the test does next reaches the adapter through the stream alone."""
    await wait_until(lambda: ex.user_stream_connected and bool(fake.requests("/fapi/v3/positionRisk")))


async def collect(events: AsyncIterator[OrderEvent], into: list[OrderEvent]) -> None:
    async for event in events:
        into.append(event)


def cid(plan: str, suffix: str = "") -> str:
    return client_order_id(plan.ljust(16, "0")[:16], suffix)
