"""Paper exchange: its book across restarts, the fill log, the event stream, the rules file."""

from __future__ import annotations

import asyncio
from typing import TypeVar

import pytest

from common import keys
from common.config import load_settings
from common.contracts.enums import FillKind, Side
from common.exchange.base import ConditionalKind, ExchangeEvent
from common.exchange.errors import (
    DuplicateClientOrderId,
)
from common.exchange.paper import PaperExchange, store
from tests.unit.exchange.paper.env import NOW, REPO, D, Env, scenario

T = TypeVar("T")

# --- restart, fill log, events -------------------------------------------------------------------


def test_a_new_instance_over_the_same_redis_sees_the_same_book() -> None:
    """Restart: orders, positions, balance, leverage and open conditionals survive, and the new
    instance fires the old instance's stop."""

    async def body(env: Env) -> None:
        await env.mark("BTCUSDT", "50000")
        await env.mark("ETHUSDT", "3000")
        await env.ex.set_leverage("ETHUSDT", 10)
        order = await env.buy("BTCUSDT", "0.010", "qt-b")
        await env.buy("ETHUSDT", "0.500", "qt-e")
        await env.ex.place_conditional("BTCUSDT", ConditionalKind.STOP_MARKET, Side.SELL, D("49000"), "qt-b-sl")
        before = (await env.ex.positions(), await env.ex.balance(), await env.ex.open_conditionals())
        await env.ex.close()

        reborn = env.exchange()
        await reborn.start()  # must not reset the account
        assert await reborn.get_order("BTCUSDT", "qt-b") == order
        assert (await reborn.positions(), await reborn.balance(), await reborn.open_conditionals()) == before
        assert (await reborn.positions())["ETHUSDT"].leverage == 10
        with pytest.raises(DuplicateClientOrderId):
            await reborn.place_market_order("BTCUSDT", Side.BUY, D("0.010"), "qt-b", reduce_only=False)
        await env.mark("BTCUSDT", "49000")
        [event] = await reborn.check_triggers("BTCUSDT")
        assert event.origin_id == "qt-b-sl"

    scenario(body)


def test_start_opens_the_account_at_the_starting_balance_once() -> None:
    """start() writes the starting balance on a fresh Redis and leaves an existing wallet alone."""

    async def body(env: Env) -> None:
        await env.ex.start()
        assert await env.redis.hget(keys.paper_account(), "wallet_balance") == b"10000"
        await env.mark("BTCUSDT", "50000")
        await env.buy("BTCUSDT", "0.010")
        await env.exchange().start()
        assert await env.redis.hget(keys.paper_account(), "wallet_balance") == b"9999.74995000"

    scenario(body)


def test_fills_since_returns_every_fill_of_the_symbol_from_that_time() -> None:
    """Order fills, conditional fills and liquidations at or after since_ms, oldest first, one symbol."""

    async def body(env: Env) -> None:
        await env.mark("BTCUSDT", "50000")
        await env.mark("ETHUSDT", "3000")
        await env.buy("BTCUSDT", "0.010", "qt-1")  # t0
        env.clock.now += 1_000
        await env.buy("ETHUSDT", "0.100", "qt-2")  # t0+1000, other symbol
        await env.mark("BTCUSDT", "50000")
        await env.buy("BTCUSDT", "0.010", "qt-3")  # t0+1000
        await env.ex.place_conditional("BTCUSDT", ConditionalKind.STOP_MARKET, Side.SELL, D("49000"), "qt-3-sl")
        env.clock.now += 1_000
        await env.mark("BTCUSDT", "48000")
        [event] = await env.ex.check_triggers("BTCUSDT")  # t0+2000
        since = await env.ex.fills_since("BTCUSDT", NOW + 1_000)
        assert [f.client_order_id for f in since] == ["qt-3", "qt-3-sl"]
        assert since[1] == event.fill
        assert [f.ts_ms for f in since] == [NOW + 1_000, NOW + 2_000]
        assert len(await env.ex.fills_since("BTCUSDT", NOW)) == 3
        assert await env.ex.fills_since("BTCUSDT", NOW + 2_001) == []

    scenario(body)


def test_the_fill_log_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-symbol fill log keeps the newest FILL_LOG_MAX fills and drops the oldest."""
    monkeypatch.setattr(store, "FILL_LOG_MAX", 3)

    async def body(env: Env) -> None:
        for i in range(5):
            env.clock.now += 1
            await env.mark("BTCUSDT", "50000")
            await env.buy("BTCUSDT", "0.010", f"qt-{i}")
        assert [f.client_order_id for f in await env.ex.fills_since("BTCUSDT", 0)] == ["qt-2", "qt-3", "qt-4"]
        assert await env.redis.zcard(keys.paper_fills("BTCUSDT")) == 3

    scenario(body)


def test_events_yields_triggered_fills_and_ends_on_close() -> None:
    """events() polls open symbols, yields the stop's fill once, and finishes after close()."""

    async def body(env: Env) -> None:
        await env.mark("BTCUSDT", "50000")
        await env.buy("BTCUSDT", "0.010", "qt-e")
        await env.ex.place_conditional("BTCUSDT", ConditionalKind.STOP_MARKET, Side.SELL, D("49000"), "qt-e-sl")
        seen: list[ExchangeEvent] = []
        first = asyncio.Event()

        async def consume() -> None:
            async for event in env.ex.events():
                seen.append(event)
                first.set()

        task = asyncio.create_task(consume())
        await env.mark("BTCUSDT", "48500")
        await asyncio.wait_for(first.wait(), timeout=5)
        await env.ex.close()
        await asyncio.wait_for(task, timeout=5)
        assert [(e.kind, e.origin_id, e.fill.price) for e in seen] == [(FillKind.STOP, "qt-e-sl", D("48490.3"))]

    scenario(body)


def test_from_settings_reads_the_rules_file() -> None:
    """The factory builds the exchange from Settings: rules from config/paper_symbols.json."""

    async def body(env: Env) -> None:
        settings = load_settings(config_dir=str(REPO / "config"))
        exchange = PaperExchange.from_settings(env.redis, settings)
        rules = await exchange.symbol_rules()
        assert rules["BTCUSDT"].tick_size == D("0.1") and rules["币安人生USDT"].max_leverage == 20

    scenario(body)
