"""The order rate cap: a token bucket where waiting exits are served before waiting entries."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from decimal import Decimal

from common.contracts import Side
from common.exchange.base import (
    Balance,
    ConditionalKind,
    ConditionalOrder,
    Exchange,
    ExchangePosition,
    Fill,
    OrderEvent,
    OrderResult,
)
from common.exchange.rules import SymbolRules

EXIT, ENTRY = 0, 1  # lower goes first


class OrderThrottle:
    """At most ``rate_per_s`` orders per second with bursts of ``burst``; exits first when it binds."""

    def __init__(self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate_per_s
        self.burst = burst
        self.tokens = float(burst)
        self.clock = clock
        self.updated = clock()
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._wake: asyncio.TimerHandle | None = None

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    @asynccontextmanager
    async def slot(self, priority: int) -> AsyncIterator[None]:
        await self.acquire(priority)
        yield

    async def acquire(self, priority: int) -> None:
        self._refill()
        if not self._waiters and self.tokens >= 1:
            self.tokens -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._seq), future))
        self._serve()
        await future

    def _serve(self) -> None:
        self._refill()
        while self._waiters and self.tokens >= 1:
            _, _, future = heapq.heappop(self._waiters)
            if future.done():
                continue
            self.tokens -= 1
            future.set_result(None)
        if self._waiters and self._wake is None:
            delay = (1 - self.tokens) / self.rate
            self._wake = asyncio.get_running_loop().call_later(max(delay, 0.001), self._woken)

    def _woken(self) -> None:
        self._wake = None
        self._serve()


class ThrottledExchange(Exchange):
    """An exchange whose order calls pass the throttle (reduce-only and protective orders as exits) and,
    right before each one leaves — every resend included — ``before_send`` (apply_layer: the lease check,
    so that no order is sent by an instance that may have lost its lease)."""

    def __init__(self, inner: Exchange, throttle: OrderThrottle,
                 before_send: Callable[[], None] | None = None) -> None:
        self.inner = inner
        self.throttle = throttle
        self.before_send = before_send or (lambda: None)
        self.name = inner.name

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    async def symbol_rules(self) -> dict[str, SymbolRules]:
        return await self.inner.symbol_rules()

    async def mark_price(self, symbol: str) -> Decimal:
        return await self.inner.mark_price(symbol)

    async def set_leverage(self, symbol: str, leverage: int) -> int:
        self.before_send()
        return await self.inner.set_leverage(symbol, leverage)

    async def place_market_order(self, symbol: str, side: Side, qty: Decimal, client_order_id: str, *,
                                 reduce_only: bool) -> OrderResult:
        await self.throttle.acquire(EXIT if reduce_only else ENTRY)
        self.before_send()
        return await self.inner.place_market_order(symbol, side, qty, client_order_id, reduce_only=reduce_only)

    async def get_order(self, symbol: str, client_order_id: str) -> OrderResult:
        return await self.inner.get_order(symbol, client_order_id)

    async def place_conditional(self, symbol: str, kind: ConditionalKind, side: Side, trigger_price: Decimal,
                                client_algo_id: str, *, close_position: bool = True,
                                quantity: Decimal | None = None) -> ConditionalOrder:
        await self.throttle.acquire(EXIT)
        self.before_send()
        return await self.inner.place_conditional(symbol, kind, side, trigger_price, client_algo_id,
                                                  close_position=close_position, quantity=quantity)

    async def get_conditional(self, symbol: str, client_algo_id: str) -> ConditionalOrder:
        return await self.inner.get_conditional(symbol, client_algo_id)

    async def cancel_conditional(self, symbol: str, client_algo_id: str) -> None:
        await self.throttle.acquire(EXIT)
        self.before_send()
        await self.inner.cancel_conditional(symbol, client_algo_id)

    async def open_conditionals(self, symbol: str | None = None) -> list[ConditionalOrder]:
        return await self.inner.open_conditionals(symbol)

    async def positions(self) -> dict[str, ExchangePosition]:
        return await self.inner.positions()

    async def balance(self) -> Balance:
        return await self.inner.balance()

    async def fills_since(self, symbol: str, since_ms: int) -> list[Fill]:
        return await self.inner.fills_since(symbol, since_ms)

    def events(self) -> AsyncIterator[OrderEvent]:
        return self.inner.events()
