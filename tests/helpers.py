"""Small helpers for tests: building messages, running coroutines with a deadline, polling."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from decimal import Decimal
from typing import Any, TypeVar

from common.config import BusSettings, Settings, load_settings
from common.contracts import ApplyPlan, TradeIntent
from common.ids import entry_plan_id, hex16

T = TypeVar("T")
TRACE = "0123456789abcdef"


def run(coro: Coroutine[Any, Any, T], timeout_s: float = 60.0) -> T:
    """Run ``coro`` in a fresh event loop, failing after ``timeout_s``."""
    return asyncio.run(asyncio.wait_for(coro, timeout_s))


def intent(i: int, symbol: str = "BTCUSDT") -> TradeIntent:
    """A valid trade.intent numbered ``i``."""
    return TradeIntent(
        source="trading_bot", trace_id=hex16(f"trace{i}"), intent_id=hex16(f"intent{i}"), symbol=symbol,
        side="BUY", confidence=0.7, entry_price=Decimal("100"), stop_loss=Decimal("97"),
        take_profit=Decimal("104"), position_size_usd=Decimal("200"), leverage=10,
        model="fallback-trend-following", atr_pct=0.01, regime="TREND",
    )


def entry_plan(source_intent: TradeIntent, source: str = "intent_bridge") -> ApplyPlan:
    """The entry plan an intent becomes (deterministic plan_id)."""
    return ApplyPlan(
        source=source, trace_id=source_intent.trace_id, plan_id=entry_plan_id(source_intent.intent_id),
        symbol=source_intent.symbol, action="ENTRY_PROPOSED", side=source_intent.side, qty=Decimal("0.02"),
        order_type="MARKET", reduce_only=False, leverage=source_intent.leverage,
        entry_price=source_intent.entry_price, stop_loss=source_intent.stop_loss,
        take_profit=source_intent.take_profit, intent_id=source_intent.intent_id,
    )


def fast_settings(redis_url: str, **bus: Any) -> Settings:
    """Settings pointed at ``redis_url`` with fast bus timings (overridable)."""
    base = {"block_ms": 100, "claim_idle_ms": 300, "claim_interval_ms": 100, "max_deliveries": 3,
            "reconnect_initial_ms": 20, "reconnect_max_ms": 300, "socket_timeout_s": 2.0}
    base.update(bus)
    return load_settings(redis_url=redis_url, bus=BusSettings(**base))


async def poll(check: Callable[[], Awaitable[bool]], timeout_s: float = 20.0, interval_s: float = 0.02) -> None:
    """Wait until ``check()`` is true; AssertionError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s}s")


def poll_sync(check: Callable[[], bool], timeout_s: float = 20.0, interval_s: float = 0.02) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s}s")
