"""The paper exchange over fakeredis, on a settable clock: what its unit tests share."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import fakeredis
import pytest

from common import keys
from common.config import PaperSettings
from common.contracts.enums import Side
from common.exchange.errors import OrderRejected
from common.exchange.paper import PaperExchange
from common.exchange.rules import SymbolRules, load_rules_file
from common.market import price_mapping

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[4]
RULES = load_rules_file(REPO / "config" / "paper_symbols.json")
NOW = 1_760_000_000_000
SETTINGS = PaperSettings(
    slippage_bps=Decimal("2"), taker_fee=Decimal("0.0005"), starting_balance=Decimal("10000"),
    max_price_age_ms=120_000,
)
D = Decimal


class Clock:
    """A settable clock (epoch ms) shared by the exchange and the price hashes."""

    def __init__(self, now: int = NOW) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def run(coro: Coroutine[Any, Any, T], timeout_s: float = 10.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout=timeout_s))


class Env:
    """One fakeredis, a clock, and a paper exchange over them."""

    def __init__(self, rules: dict[str, SymbolRules] | None = None, redis: Any = None) -> None:
        self.redis = redis if redis is not None else fakeredis.FakeAsyncRedis()
        self.clock = Clock()
        self.rules = rules if rules is not None else RULES
        self.ex = self.exchange()

    def exchange(self) -> PaperExchange:
        return PaperExchange(self.redis, SETTINGS, self.rules, poll_interval_s=0.01, clock=self.clock)

    async def mark(self, symbol: str, mark: str, *, age_ms: int = 0) -> None:
        fields: dict[Any, Any] = price_mapping(D(mark), D(mark), self.clock.now - age_ms)
        await self.redis.hset(keys.market_price(symbol), mapping=fields)

    async def buy(self, symbol: str, qty: str, cid: str = "qt-open", *, reduce_only: bool = False) -> Any:
        return await self.ex.place_market_order(symbol, Side.BUY, D(qty), cid, reduce_only=reduce_only)

    async def sell(self, symbol: str, qty: str, cid: str = "qt-open", *, reduce_only: bool = False) -> Any:
        return await self.ex.place_market_order(symbol, Side.SELL, D(qty), cid, reduce_only=reduce_only)


def scenario(body: Callable[[Env], Coroutine[Any, Any, T]], env: Env | None = None) -> T:
    env = env or Env()
    return run(body(env))


async def rejected(call: Awaitable[Any]) -> OrderRejected:
    with pytest.raises(OrderRejected) as info:
        await call
    return info.value
