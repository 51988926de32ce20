"""Paper exchange: conditional orders."""

from __future__ import annotations

from typing import TypeVar

import pytest

from common.contracts.enums import FillKind, Side
from common.exchange.base import ConditionalKind, ConditionalStatus
from common.exchange.errors import (
    DuplicateClientOrderId,
    OrderNotFound,
)
from tests.unit.exchange.paper.env import D, Env, rejected, scenario

T = TypeVar("T")

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
