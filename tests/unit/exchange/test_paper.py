"""The paper exchange against fakeredis: fills, Binance's rejections, conditionals, liquidation,
restart and the fill log. Async code runs under ``asyncio.run`` with a timeout (no pytest-asyncio)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any, TypeVar

import pytest
import redis.asyncio.client
from redis.exceptions import ConnectionError as RedisConnectionError

from common import keys
from common.config import load_settings
from common.contracts.enums import FillKind, Side
from common.exchange.base import ConditionalKind, ConditionalStatus, ExchangeEvent, OrderStatus
from common.exchange.errors import (
    DuplicateClientOrderId,
    OrderNotFound,
    TemporaryError,
    UnknownOutcome,
)
from common.exchange.paper import PaperExchange, store
from tests.unit.exchange.paper_env import NOW, REPO, RULES, D, Env, rejected, scenario

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


# --- conditional orders --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("opening", "kind", "trigger", "not_yet", "fill_price", "fill_kind", "pnl"),
    [
        (Side.BUY, ConditionalKind.STOP_MARKET, "49000.0", "49000.1", "48990.2", FillKind.STOP, "-10.198"),
        (Side.BUY, ConditionalKind.TAKE_PROFIT_MARKET, "51000.0", "50999.9", "50989.8", FillKind.TAKE_PROFIT, "9.798"),
        (Side.SELL, ConditionalKind.STOP_MARKET, "51000.0", "50999.9", "51010.2", FillKind.STOP, "-10.202"),
        (Side.SELL, ConditionalKind.TAKE_PROFIT_MARKET, "49000.0", "49000.1", "49009.8", FillKind.TAKE_PROFIT, "9.802"),
    ],
    ids=["long-stop", "long-take-profit", "short-stop", "short-take-profit"],
)
def test_conditionals_trigger_exactly_at_the_crossing(
    opening: Side, kind: ConditionalKind, trigger: str, not_yet: str, fill_price: str, fill_kind: FillKind, pnl: str
) -> None:
    """A close-position conditional holds one tick short of its trigger and fires at the trigger:
    the position closes at mark ∓ slippage with the fee, the order is FINISHED, the event carries its id."""

    async def body(env: Env) -> None:
        await env.mark("BTCUSDT", "50000")
        await env.ex.place_market_order("BTCUSDT", opening, D("0.010"), "qt-entry", reduce_only=False)
        placed = await env.ex.place_conditional("BTCUSDT", kind, opening.opposite, D(trigger), "qt-entry-p")
        assert placed.status is ConditionalStatus.NEW and placed.algo_id.isdigit()
        await env.mark("BTCUSDT", not_yet)
        assert await env.ex.check_triggers("BTCUSDT") == []
        await env.mark("BTCUSDT", trigger)
        [event] = await env.ex.check_triggers("BTCUSDT")
        assert (event.kind, event.origin_id) == (fill_kind, "qt-entry-p")
        fill = event.fill
        assert (fill.side, fill.qty, fill.price) == (opening.opposite, D("0.010"), D(fill_price))
        assert fill.fee == D(fill_price) * D("0.010") * D("0.0005")
        assert fill.realized_pnl == D(pnl) and fill.reduce_only
        assert await env.ex.positions() == {}
        assert (await env.ex.get_conditional("BTCUSDT", "qt-entry-p")).status is ConditionalStatus.FINISHED
        assert await env.ex.open_conditionals() == []
        assert await env.ex.check_triggers("BTCUSDT") == []  # fires once

    scenario(body)


@pytest.mark.parametrize(
    ("kind", "trigger"),
    [(ConditionalKind.STOP_MARKET, "50000.0"), (ConditionalKind.STOP_MARKET, "50100.0"),
     (ConditionalKind.TAKE_PROFIT_MARKET, "49900.0")],
)
def test_a_conditional_that_would_fire_at_once_is_2021(kind: ConditionalKind, trigger: str) -> None:
    """A SELL stop at or above the mark, or a SELL take-profit below it, is -2021 and not stored."""

    async def body(env: Env) -> None:
        await env.mark("BTCUSDT", "50000")
        error = await rejected(env.ex.place_conditional("BTCUSDT", kind, Side.SELL, D(trigger), "qt-p-sl"))
        assert (error.code, error.message) == (-2021, "Order would immediately trigger.")
        with pytest.raises(OrderNotFound):
            await env.ex.get_conditional("BTCUSDT", "qt-p-sl")

    scenario(body)


def test_conditional_client_algo_id_is_unique() -> None:
    """A second conditional with the same client algo id is -4116, even after the first was cancelled."""

    async def body(env: Env) -> None:
        await env.mark("BTCUSDT", "50000")
        await env.ex.place_conditional("BTCUSDT", ConditionalKind.STOP_MARKET, Side.SELL, D("49000"), "qt-p-sl")
        with pytest.raises(DuplicateClientOrderId):
            await env.ex.place_conditional("BTCUSDT", ConditionalKind.STOP_MARKET, Side.SELL, D("48000"), "qt-p-sl")
        await env.ex.cancel_conditional("BTCUSDT", "qt-p-sl")
        with pytest.raises(DuplicateClientOrderId):
            await env.ex.place_conditional("BTCUSDT", ConditionalKind.STOP_MARKET, Side.SELL, D("48000"), "qt-p-sl")
        assert (await env.ex.get_conditional("BTCUSDT", "qt-p-sl")).trigger_price == D("49000")

    scenario(body)


def test_cancel_conditional_then_cancel_again_is_not_found() -> None:
    """Cancel makes it CANCELED and no longer open; a second cancel (or an unknown id) is OrderNotFound."""

    async def body(env: Env) -> None:
        await env.mark("BTCUSDT", "50000")
        await env.ex.place_conditional("BTCUSDT", ConditionalKind.STOP_MARKET, Side.SELL, D("49000"), "qt-p-sl")
        await env.ex.cancel_conditional("BTCUSDT", "qt-p-sl")
        assert (await env.ex.get_conditional("BTCUSDT", "qt-p-sl")).status is ConditionalStatus.CANCELED
        assert await env.ex.open_conditionals("BTCUSDT") == []
        with pytest.raises(OrderNotFound):
            await env.ex.cancel_conditional("BTCUSDT", "qt-p-sl")
        with pytest.raises(OrderNotFound):
            await env.ex.cancel_conditional("BTCUSDT", "qt-nope")

    scenario(body)


def test_conditional_parameters_are_checked() -> None:
    """Trigger off the tick is -1111; quantity with close-position is -1106; reduce-only without one -1102."""

    async def body(env: Env) -> None:
        await env.mark("BTCUSDT", "50000")
        stop = ConditionalKind.STOP_MARKET
        error = await rejected(env.ex.place_conditional("BTCUSDT", stop, Side.SELL, D("49000.05"), "qt-a"))
        assert error.code == -1111
        error = await rejected(
            env.ex.place_conditional("BTCUSDT", stop, Side.SELL, D("49000"), "qt-b", quantity=D("0.010"))
        )
        assert error.code == -1106
        error = await rejected(
            env.ex.place_conditional("BTCUSDT", stop, Side.SELL, D("49000"), "qt-c", close_position=False)
        )
        assert error.code == -1102
        error = await rejected(env.ex.place_conditional("NOPEUSDT", stop, Side.SELL, D("49000"), "qt-d"))
        assert error.code == -1121

    scenario(body)


def test_closing_the_position_expires_its_conditionals() -> None:
    """A market close of the position leaves no conditional open: stop and take-profit are EXPIRED."""

    async def body(env: Env) -> None:
        await env.mark("BTCUSDT", "50000")
        await env.buy("BTCUSDT", "0.010", "qt-e")
        await env.ex.place_conditional("BTCUSDT", ConditionalKind.STOP_MARKET, Side.SELL, D("49000"), "qt-e-sl")
        await env.ex.place_conditional("BTCUSDT", ConditionalKind.TAKE_PROFIT_MARKET, Side.SELL, D("51000"), "qt-e-tp")
        assert [c.client_algo_id for c in await env.ex.open_conditionals("BTCUSDT")] == ["qt-e-sl", "qt-e-tp"]
        await env.sell("BTCUSDT", "0.010", "qt-x", reduce_only=True)
        assert await env.ex.open_conditionals() == []
        for cid in ("qt-e-sl", "qt-e-tp"):
            assert (await env.ex.get_conditional("BTCUSDT", cid)).status is ConditionalStatus.EXPIRED
        await env.mark("BTCUSDT", "48000")
        assert await env.ex.check_triggers("BTCUSDT") == []

    scenario(body)


def test_a_triggered_stop_expires_the_take_profit() -> None:
    """When the stop closes the position, the take-profit of that position expires in the same step."""

    async def body(env: Env) -> None:
        await env.mark("BTCUSDT", "50000")
        await env.buy("BTCUSDT", "0.010", "qt-e")
        await env.ex.place_conditional("BTCUSDT", ConditionalKind.STOP_MARKET, Side.SELL, D("49000"), "qt-e-sl")
        await env.ex.place_conditional("BTCUSDT", ConditionalKind.TAKE_PROFIT_MARKET, Side.SELL, D("51000"), "qt-e-tp")
        await env.mark("BTCUSDT", "48900")
        [event] = await env.ex.check_triggers("BTCUSDT")
        assert event.origin_id == "qt-e-sl"
        assert (await env.ex.get_conditional("BTCUSDT", "qt-e-tp")).status is ConditionalStatus.EXPIRED
        assert await env.ex.open_conditionals() == []

    scenario(body)


def test_a_reduce_only_conditional_with_a_quantity_closes_that_quantity() -> None:
    """close_position=False, quantity 0.004 of a 0.010 long: 0.006 stays, the other conditionals stay open."""

    async def body(env: Env) -> None:
        await env.mark("BTCUSDT", "50000")
        await env.buy("BTCUSDT", "0.010", "qt-e")
        await env.ex.place_conditional(
            "BTCUSDT", ConditionalKind.TAKE_PROFIT_MARKET, Side.SELL, D("51000"), "qt-e-tp1",
            close_position=False, quantity=D("0.004"),
        )
        await env.ex.place_conditional("BTCUSDT", ConditionalKind.STOP_MARKET, Side.SELL, D("49000"), "qt-e-sl")
        await env.mark("BTCUSDT", "51000")
        [event] = await env.ex.check_triggers("BTCUSDT")
        assert (event.kind, event.fill.qty) == (FillKind.TAKE_PROFIT, D("0.004"))
        assert (await env.ex.positions())["BTCUSDT"].position_amt == D("0.006")
        assert [c.client_algo_id for c in await env.ex.open_conditionals()] == ["qt-e-sl"]

    scenario(body)


def test_a_conditional_with_no_position_expires_without_a_fill() -> None:
    """A stop that fires with nothing to close becomes EXPIRED and yields no event."""

    async def body(env: Env) -> None:
        await env.mark("BTCUSDT", "50000")
        await env.ex.place_conditional("BTCUSDT", ConditionalKind.STOP_MARKET, Side.SELL, D("49000"), "qt-p-sl")
        await env.mark("BTCUSDT", "48000")
        assert await env.ex.check_triggers("BTCUSDT") == []
        assert (await env.ex.get_conditional("BTCUSDT", "qt-p-sl")).status is ConditionalStatus.EXPIRED
        assert await env.ex.fills_since("BTCUSDT", 0) == []

    scenario(body)


def test_a_stale_mark_triggers_nothing() -> None:
    """A mark older than max_price_age_ms is not acted on (a dead feed must not fire stops)."""

    async def body(env: Env) -> None:
        await env.mark("BTCUSDT", "50000")
        await env.buy("BTCUSDT", "0.010", "qt-e")
        await env.ex.place_conditional("BTCUSDT", ConditionalKind.STOP_MARKET, Side.SELL, D("49000"), "qt-e-sl")
        await env.mark("BTCUSDT", "48000", age_ms=120_001)
        assert await env.ex.check_triggers("BTCUSDT") == []
        assert (await env.ex.get_conditional("BTCUSDT", "qt-e-sl")).status is ConditionalStatus.NEW

    scenario(body)


# --- liquidation ---------------------------------------------------------------------------------


def test_a_long_is_liquidated_at_its_liquidation_price() -> None:
    """Long 0.1 BTC at 50010.0, 20×: LP = 50010 × 0.95 / 0.996 = 47700.3; the mark at 47700.4 holds,
    at 47700.3 the position closes there as ``autoclose-<n>`` with the fee, and its stop expires."""

    async def body(env: Env) -> None:
        await env.mark("BTCUSDT", "50000")
        await env.buy("BTCUSDT", "0.100", "qt-e")
        await env.ex.place_conditional("BTCUSDT", ConditionalKind.TAKE_PROFIT_MARKET, Side.SELL, D("55000"), "qt-e-tp")
        assert (await env.ex.positions())["BTCUSDT"].liquidation_price == D("47700.3")
        await env.mark("BTCUSDT", "47700.4")
        assert await env.ex.check_triggers("BTCUSDT") == []
        await env.mark("BTCUSDT", "47700.3")
        [event] = await env.ex.check_triggers("BTCUSDT")
        assert event.kind is FillKind.LIQUIDATION and event.origin_id.startswith("autoclose-")
        assert (event.fill.side, event.fill.qty, event.fill.price) == (Side.SELL, D("0.100"), D("47700.3"))
        assert event.fill.realized_pnl == D("-230.97")
        assert event.fill.fee == D("2.385015")
        assert await env.ex.positions() == {}
        # 10000 − 2.5005 (entry fee) − 230.97 − 2.385015
        assert (await env.ex.balance()).wallet_balance == D("9764.144485")
        order = await env.ex.get_order("BTCUSDT", event.origin_id)
        assert order.fills == (event.fill,)
        assert (await env.ex.get_conditional("BTCUSDT", "qt-e-tp")).status is ConditionalStatus.EXPIRED

    scenario(body)


def test_short_liquidation_price_follows_the_formula() -> None:
    """Short 0.1 at 49990.0, 10×: LP = 49990 × 1.1 / 1.004 = 54769.9 (tick 0.1); crossing it liquidates."""

    async def body(env: Env) -> None:
        await env.ex.set_leverage("BTCUSDT", 10)
        await env.mark("BTCUSDT", "50000")
        await env.sell("BTCUSDT", "0.100", "qt-e")
        position = (await env.ex.positions())["BTCUSDT"]
        assert (position.leverage, position.liquidation_price) == (10, D("54769.9"))
        await env.mark("BTCUSDT", "54769.8")
        assert await env.ex.check_triggers("BTCUSDT") == []
        await env.mark("BTCUSDT", "55000")
        [event] = await env.ex.check_triggers("BTCUSDT")
        assert (event.kind, event.fill.side, event.fill.price) == (FillKind.LIQUIDATION, Side.BUY, D("54769.9"))

    scenario(body)


def test_a_stop_met_before_the_liquidation_price_fires_first() -> None:
    """A gap through both the stop (48000) and the LP (47700.3): the stop was crossed first, so it
    closes the position and no liquidation happens."""

    async def body(env: Env) -> None:
        await env.mark("BTCUSDT", "50000")
        await env.buy("BTCUSDT", "0.100", "qt-e")
        await env.ex.place_conditional("BTCUSDT", ConditionalKind.STOP_MARKET, Side.SELL, D("48000"), "qt-e-sl")
        await env.mark("BTCUSDT", "47000")
        events = await env.ex.check_triggers("BTCUSDT")
        assert [(e.kind, e.origin_id) for e in events] == [(FillKind.STOP, "qt-e-sl")]
        assert events[0].fill.price == D("46990.6")

    scenario(body)


def test_a_liquidation_price_met_before_the_stop_liquidates_first() -> None:
    """A stop set beyond the LP (47000 < 47700.3) and a gap to 46500: the liquidation came first, at the
    LP, and the stop expires with the position instead of filling."""

    async def body(env: Env) -> None:
        await env.mark("BTCUSDT", "50000")
        await env.buy("BTCUSDT", "0.100", "qt-e")
        await env.ex.place_conditional("BTCUSDT", ConditionalKind.STOP_MARKET, Side.SELL, D("47000"), "qt-e-sl")
        await env.mark("BTCUSDT", "46500")
        events = await env.ex.check_triggers("BTCUSDT")
        assert [(e.kind, e.fill.price) for e in events] == [(FillKind.LIQUIDATION, D("47700.3"))]
        assert (await env.ex.get_conditional("BTCUSDT", "qt-e-sl")).status is ConditionalStatus.EXPIRED

    scenario(body)


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
