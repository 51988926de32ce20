"""Paper exchange: market orders, their rejections, exactly once."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any, TypeVar

import pytest
import redis.asyncio.client
from redis.exceptions import ConnectionError as RedisConnectionError

from common import keys
from common.exchange.base import OrderStatus
from common.exchange.errors import (
    DuplicateClientOrderId,
    OrderNotFound,
    TemporaryError,
    UnknownOutcome,
)
from tests.unit.exchange.paper.env import RULES, D, Env, rejected, scenario

T = TypeVar("T")

# --- market orders -------------------------------------------------------------------------------


def test_market_buy_fills_at_mark_plus_slippage_and_charges_the_taker_fee() -> None:
    """A BUY fills in full at mark × (1 + 2 bps) on the tick; fee = qty × price × 0.05 % off the wallet."""

    async def body(env: Env) -> None:
        await env.mark("BTCUSDT", "50000")
        order = await env.buy("BTCUSDT", "0.010")
        assert order.status is OrderStatus.FILLED
        assert (order.executed_qty, order.avg_price) == (D("0.010"), D("50010.0"))
        assert order.fee == D("0.25005")
        assert order.fills[0].fee_asset == "USDT"
        assert order.order_id.isdigit() and order.fills[0].fill_id.startswith("paper-")
        balance = await env.ex.balance()
        assert balance.wallet_balance == D("9999.74995")
        position = (await env.ex.positions())["BTCUSDT"]
        assert (position.position_amt, position.entry_price, position.leverage) == (D("0.010"), D("50010.0"), 20)
        assert position.unrealized_pnl == D("-0.1")  # mark 50000 vs entry 50010

    scenario(body)


def test_fill_price_is_rounded_to_the_tick_against_the_taker() -> None:
    """ETH mark 3000.03: BUY 3000.630006 → 3000.63, SELL 2999.429994 → 2999.43 (tick 0.01)."""

    async def body(env: Env) -> None:
        await env.mark("ETHUSDT", "3000.03")
        bought = await env.buy("ETHUSDT", "0.100", "qt-a")
        sold = await env.sell("ETHUSDT", "0.100", "qt-b", reduce_only=True)
        assert (bought.avg_price, sold.avg_price) == (D("3000.63"), D("2999.43"))
        assert sold.fills[0].realized_pnl == D("-0.12")  # (2999.43 − 3000.63) × 0.1

    scenario(body)


def test_closing_a_long_realizes_pnl_against_the_entry_and_books_both_fees() -> None:
    """Open 0.01 at 50010.0, close at 51000 × (1 − 2 bps) = 50989.8: PnL 9.798, fees 0.25005 + 0.254949."""

    async def body(env: Env) -> None:
        await env.mark("BTCUSDT", "50000")
        await env.buy("BTCUSDT", "0.010", "qt-a")
        await env.mark("BTCUSDT", "51000")
        close = await env.sell("BTCUSDT", "0.010", "qt-b", reduce_only=True)
        assert close.avg_price == D("50989.8")
        assert close.fills[0].realized_pnl == D("9.798")
        assert close.fee == D("0.254949")
        assert await env.ex.positions() == {}
        balance = await env.ex.balance()
        assert balance.wallet_balance == D("10009.293001")
        assert balance.available_balance == D("10009.293001")
        assert await env.redis.hget(keys.paper_account(), "fees") == b"0.50499900"

    scenario(body)


def test_an_order_larger_than_the_position_flips_it_at_the_fill_price() -> None:
    """One-way mode: long 0.010, SELL 0.030 (not reduce-only) closes the long and opens 0.020 short."""

    async def body(env: Env) -> None:
        await env.mark("BTCUSDT", "50000")
        await env.buy("BTCUSDT", "0.010", "qt-a")
        flip = await env.sell("BTCUSDT", "0.030", "qt-b")
        assert flip.fills[0].realized_pnl == D("-0.2")  # (49990 − 50010) × 0.01
        position = (await env.ex.positions())["BTCUSDT"]
        assert (position.position_amt, position.entry_price) == (D("-0.020"), D("49990.0"))

    scenario(body)


def test_adding_to_a_position_averages_the_entry() -> None:
    """Two buys of 0.010 at 50010.0 and 52010.4 give an entry VWAP of 51010.2."""

    async def body(env: Env) -> None:
        await env.mark("BTCUSDT", "50000")
        await env.buy("BTCUSDT", "0.010", "qt-a")
        await env.mark("BTCUSDT", "52000")
        await env.buy("BTCUSDT", "0.010", "qt-b")
        position = (await env.ex.positions())["BTCUSDT"]
        assert (position.position_amt, position.entry_price) == (D("0.020"), D("51010.2"))

    scenario(body)


def test_a_reduce_only_larger_than_the_position_fills_only_the_position() -> None:
    """Long 0.010, reduce-only SELL 0.025: 0.010 executes (orig 0.025) and the position is flat."""

    async def body(env: Env) -> None:
        await env.mark("BTCUSDT", "50000")
        await env.buy("BTCUSDT", "0.010", "qt-a")
        close = await env.sell("BTCUSDT", "0.025", "qt-b", reduce_only=True)
        assert (close.orig_qty, close.executed_qty, close.status) == (D("0.025"), D("0.010"), OrderStatus.FILLED)
        assert close.fills[0].qty == D("0.010")
        assert await env.ex.positions() == {}

    scenario(body)


def test_reduce_only_below_min_notional_is_accepted() -> None:
    """-4164 exempts reduce-only: closing 0.001 BTC (50 USDT < 100) of a 0.003 long fills."""

    async def body(env: Env) -> None:
        await env.mark("BTCUSDT", "50000")
        await env.buy("BTCUSDT", "0.003", "qt-a")
        close = await env.sell("BTCUSDT", "0.001", "qt-b", reduce_only=True)
        assert close.executed_qty == D("0.001")
        assert (await env.ex.positions())["BTCUSDT"].position_amt == D("0.002")

    scenario(body)


# --- rejections ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("symbol", "qty", "code", "message"),
    [
        ("FOOUSDT", "1", -1121, "Invalid symbol."),
        ("BTCUSDT", "0", -4003, "Quantity less than or equal to zero."),
        ("BTCUSDT", "0.0015", -1111, "Precision is over the maximum defined for this asset."),
        ("SOLUSDT", "1.5", -1111, "Precision is over the maximum defined for this asset."),
        ("BTCUSDT", "121", -4005, "Quantity greater than max quantity."),
        (
            "BTCUSDT", "0.001", -4164,
            "Order's notional must be no smaller than 100 (unless you choose reduce only).",
        ),
        (
            "SOLUSDT", "1", -4164,
            "Order's notional must be no smaller than 5 (unless you choose reduce only).",
        ),
        ("BTCUSDT", "5.000", -2019, "Margin is insufficient."),
    ],
)
def test_market_order_rejections_carry_binance_codes(symbol: str, qty: str, code: int, message: str) -> None:
    """Each rule violation is OrderRejected with Binance's code and message, and books nothing."""

    async def body(env: Env) -> None:
        await env.mark("BTCUSDT", "50000")
        await env.mark("SOLUSDT", "4.5")
        error = await rejected(env.buy(symbol, qty, "qt-x"))
        assert (error.code, error.message, error.reason_code) == (code, message, f"exchange:{code}")
        with pytest.raises(OrderNotFound):
            await env.ex.get_order(symbol, "qt-x")
        assert await env.ex.positions() == {}
        assert (await env.ex.balance()).wallet_balance == D("10000")

    scenario(body)


def test_margin_check_uses_leverage_and_available_balance() -> None:
    """At 20× 3.9 BTC (IM 9,751.95 + fee 97.52) fits in 10,000; another 0.1 BTC does not (-2019)."""

    async def body(env: Env) -> None:
        await env.mark("BTCUSDT", "50000")
        await env.buy("BTCUSDT", "3.900", "qt-a")
        balance = await env.ex.balance()
        # wallet 10000 − 97.5195 fee; IM 3.9 × 50010 / 20 = 9751.95; uPnL (50000 − 50010) × 3.9 = −39
        assert balance.wallet_balance == D("9902.4805")
        assert balance.available_balance == D("111.5305")
        assert balance.unrealized_pnl == D("-39")
        error = await rejected(env.buy("BTCUSDT", "0.100", "qt-b"))
        assert error.code == -2019
        assert await env.ex.set_leverage("BTCUSDT", 125) == 125  # now IM of 0.1 is 40.008
        added = await env.buy("BTCUSDT", "0.100", "qt-c")
        assert added.executed_qty == D("0.100")

    scenario(body)


def test_a_symbol_that_is_not_trading_is_an_invalid_symbol() -> None:
    """A listed symbol whose status is not TRADING is refused like an unknown one (-1121)."""
    rules = {**RULES, "SOLUSDT": replace(RULES["SOLUSDT"], status="SETTLING")}

    async def body(env: Env) -> None:
        await env.mark("SOLUSDT", "150")
        assert (await rejected(env.buy("SOLUSDT", "1"))).code == -1121

    scenario(body, Env(rules))


def test_quantity_below_min_qty_is_rejected() -> None:
    """LOT_SIZE minQty above the step: 0.002 BTC under a 0.005 minimum is -4004."""
    rules = {**RULES, "BTCUSDT": replace(RULES["BTCUSDT"], min_qty=D("0.005"))}

    async def body(env: Env) -> None:
        await env.mark("BTCUSDT", "50000")
        error = await rejected(env.buy("BTCUSDT", "0.002"))
        assert (error.code, error.message) == (-4004, "Quantity less than min quantity.")

    scenario(body, Env(rules))


def test_reduce_only_without_a_position_or_on_the_wrong_side_is_rejected() -> None:
    """-2022 with no position, and for a BUY reduce-only against a long."""

    async def body(env: Env) -> None:
        await env.mark("BTCUSDT", "50000")
        assert (await rejected(env.sell("BTCUSDT", "0.010", "qt-a", reduce_only=True))).code == -2022
        await env.buy("BTCUSDT", "0.010", "qt-b")
        error = await rejected(env.buy("BTCUSDT", "0.010", "qt-c", reduce_only=True))
        assert (error.code, error.message) == (-2022, "ReduceOnly Order is rejected.")
        assert (await env.ex.positions())["BTCUSDT"].position_amt == D("0.010")

    scenario(body)


def test_leverage_above_the_symbol_maximum_is_rejected() -> None:
    """set_leverage returns what was accepted; above maxLeverage (125 for BTC, 75 for XRP) is -4028."""

    async def body(env: Env) -> None:
        assert await env.ex.set_leverage("XRPUSDT", 75) == 75
        error = await rejected(env.ex.set_leverage("XRPUSDT", 76))
        assert (error.code, error.message) == (-4028, "Leverage 76 is not valid")
        assert (await rejected(env.ex.set_leverage("BTCUSDT", 126))).code == -4028
        assert (await rejected(env.ex.set_leverage("BTCUSDT", 0))).code == -4028
        assert await env.redis.hget(keys.paper_leverage(), "XRPUSDT") == b"75"

    scenario(body)


def test_default_leverage_is_20_or_the_symbol_maximum_if_lower() -> None:
    """A position opened without set_leverage carries min(20, maxLeverage)."""
    rules = {**RULES, "SOLUSDT": replace(RULES["SOLUSDT"], max_leverage=10)}

    async def body(env: Env) -> None:
        await env.mark("SOLUSDT", "150")
        await env.mark("ETHUSDT", "3000")
        await env.buy("SOLUSDT", "1", "qt-a")
        await env.buy("ETHUSDT", "0.010", "qt-b")
        held = await env.ex.positions()
        assert (held["SOLUSDT"].leverage, held["ETHUSDT"].leverage) == (10, 20)

    scenario(body, Env(rules))


def test_no_mark_price_or_a_stale_one_is_a_temporary_error() -> None:
    """Without a mark, or with one older than max_price_age_ms, an order is TemporaryError (retry)."""

    async def body(env: Env) -> None:
        with pytest.raises(TemporaryError):
            await env.buy("BTCUSDT", "0.010", "qt-a")
        await env.mark("BTCUSDT", "50000", age_ms=120_001)
        with pytest.raises(TemporaryError):
            await env.buy("BTCUSDT", "0.010", "qt-a")
        with pytest.raises(TemporaryError):
            await env.ex.mark_price("BTCUSDT")
        await env.mark("BTCUSDT", "50000", age_ms=120_000)
        assert (await env.buy("BTCUSDT", "0.010", "qt-a")).executed_qty == D("0.010")
        assert await env.ex.mark_price("BTCUSDT") == D("50000")

    scenario(body)


# --- exactly once --------------------------------------------------------------------------------


def test_a_repeated_client_order_id_is_4116_and_never_fills_twice() -> None:
    """The resend of a placed order is DuplicateClientOrderId(-4116) — even with the price gone stale —
    and the position, the wallet and the fill log show one fill."""

    async def body(env: Env) -> None:
        await env.mark("BTCUSDT", "50000")
        first = await env.buy("BTCUSDT", "0.010", "qt-plan1")
        with pytest.raises(DuplicateClientOrderId) as info:
            await env.buy("BTCUSDT", "0.010", "qt-plan1")
        assert (info.value.code, info.value.message) == (-4116, "ClientOrderId is duplicated.")
        env.clock.now += 600_000  # the mark is now stale: still a duplicate, not a retry
        with pytest.raises(DuplicateClientOrderId):
            await env.buy("BTCUSDT", "0.010", "qt-plan1")
        assert await env.ex.get_order("BTCUSDT", "qt-plan1") == first
        assert (await env.ex.positions())["BTCUSDT"].position_amt == D("0.010")
        assert (await env.ex.balance()).wallet_balance == D("9999.74995")
        assert len(await env.ex.fills_since("BTCUSDT", 0)) == 1

    scenario(body)


def test_concurrent_sends_of_one_client_id_fill_once() -> None:
    """Two racing sends of the same client id: one fills, the other is -4116 (WATCH, not luck)."""

    async def body(env: Env) -> None:
        await env.mark("BTCUSDT", "50000")
        results = await asyncio.gather(
            env.buy("BTCUSDT", "0.010", "qt-same"), env.buy("BTCUSDT", "0.010", "qt-same"), return_exceptions=True
        )
        assert sorted(type(r).__name__ for r in results) == ["DuplicateClientOrderId", "OrderResult"]
        assert (await env.ex.positions())["BTCUSDT"].position_amt == D("0.010")

    scenario(body)


def test_concurrent_orders_on_many_symbols_lose_no_update() -> None:
    """Eight concurrent orders over four symbols: the wallet is charged exactly the sum of their fees."""

    async def body(env: Env) -> None:
        for symbol, mark in (("BTCUSDT", "50000"), ("ETHUSDT", "3000"), ("SOLUSDT", "150"), ("XRPUSDT", "2")):
            await env.mark(symbol, mark)
        orders = [
            ("BTCUSDT", "0.010"), ("ETHUSDT", "0.100"), ("SOLUSDT", "2"), ("XRPUSDT", "100.0"),
        ] * 2
        filled = await asyncio.gather(
            *(env.buy(symbol, qty, f"qt-{i}") for i, (symbol, qty) in enumerate(orders))
        )
        fees = sum((o.fee for o in filled), D(0))
        assert (await env.ex.balance()).wallet_balance == D(10000) - fees
        held = await env.ex.positions()
        assert {s: p.position_amt for s, p in held.items()} == {
            "BTCUSDT": D("0.020"), "ETHUSDT": D("0.200"), "SOLUSDT": D("4"), "XRPUSDT": D("200.0"),
        }

    scenario(body)


def test_a_redis_failure_during_exec_is_an_unknown_outcome(monkeypatch: pytest.MonkeyPatch) -> None:
    """If EXEC itself fails the order may or may not exist: UnknownOutcome (query it), not a retry."""

    async def broken(self: Any, raise_on_error: bool = True) -> list[Any]:
        raise RedisConnectionError("connection reset")

    async def body(env: Env) -> None:
        await env.mark("BTCUSDT", "50000")
        monkeypatch.setattr(redis.asyncio.client.Pipeline, "execute", broken)
        with pytest.raises(UnknownOutcome):
            await env.buy("BTCUSDT", "0.010", "qt-a")

    scenario(body)
