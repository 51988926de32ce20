"""Paper exchange: liquidation."""

from __future__ import annotations

from typing import TypeVar

from common.contracts.enums import FillKind, Side
from common.exchange.base import ConditionalKind, ConditionalStatus
from tests.unit.exchange.paper.env import D, Env, scenario

T = TypeVar("T")

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
