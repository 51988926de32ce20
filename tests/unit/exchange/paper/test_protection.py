"""The paper exchange's protective orders behave as Binance's: one close-position conditional per type and
direction (-4130), quantity-based reduce-only stops side by side and replaced without a gap, and the
conditionals the exchange ends without a fill coming out of events() as ConditionalEnded."""

from __future__ import annotations

import asyncio
import json

import pytest

from common.contracts.enums import FillKind, Side
from common.exchange.base import ConditionalEnded, ConditionalKind, ConditionalStatus, ExchangeEvent, OrderEvent
from common.exchange.errors import OrderNotFound
from common.exchange.rules import load_rules_file
from tests.helpers import poll
from tests.unit.exchange.paper.env import REPO, D, Env, rejected, scenario

STOP, TP = ConditionalKind.STOP_MARKET, ConditionalKind.TAKE_PROFIT_MARKET
CLOSE_POSITION_EXISTS = "An open stop or take profit order with GTE and closePosition in the direction is existing."


def test_a_second_close_position_stop_in_one_direction_is_4130() -> None:
    """With a closePosition SELL stop resting, a second one is -4130 with Binance's message; a closePosition
    SELL take-profit beside it, and a closePosition BUY stop (the other direction), are accepted."""

    async def body(env: Env) -> None:
        await env.mark("BTCUSDT", "50000")
        await env.buy("BTCUSDT", "0.010", "qt-e")
        await env.ex.place_conditional("BTCUSDT", STOP, Side.SELL, D("49000"), "qt-e-sl")
        error = await rejected(env.ex.place_conditional("BTCUSDT", STOP, Side.SELL, D("49500"), "qt-e-sl2"))
        assert (error.code, error.message) == (-4130, CLOSE_POSITION_EXISTS)
        await env.ex.place_conditional("BTCUSDT", TP, Side.SELL, D("51000"), "qt-e-tp")
        await env.ex.place_conditional("BTCUSDT", STOP, Side.BUY, D("52000"), "qt-e-buy")
        with pytest.raises(OrderNotFound):
            await env.ex.get_conditional("BTCUSDT", "qt-e-sl2")
        await env.ex.cancel_conditional("BTCUSDT", "qt-e-sl")
        await env.ex.place_conditional("BTCUSDT", STOP, Side.SELL, D("49500"), "qt-e-sl3")  # free again

    scenario(body)


def test_quantity_based_stops_rest_together_and_replace_without_a_gap() -> None:
    """Reduce-only stops for the position's quantity: the new one is placed while the old one rests, the
    old one is cancelled after; the new one fires for the position. The closePosition take-profit expires
    with the position, and events() says so."""

    async def body(env: Env) -> None:
        await env.mark("BTCUSDT", "50000")
        await env.buy("BTCUSDT", "0.010", "qt-e")
        await env.ex.place_conditional("BTCUSDT", TP, Side.SELL, D("53000"), "qt-e-tp")
        await env.ex.place_conditional("BTCUSDT", STOP, Side.SELL, D("49000"), "qt-e-sl-1",
                                       close_position=False, quantity=D("0.010"))
        await env.ex.place_conditional("BTCUSDT", STOP, Side.SELL, D("49500"), "qt-e-sl-2",
                                       close_position=False, quantity=D("0.010"))
        assert [c.client_algo_id for c in await env.ex.open_conditionals("BTCUSDT")] == [
            "qt-e-tp", "qt-e-sl-1", "qt-e-sl-2"]
        await env.ex.cancel_conditional("BTCUSDT", "qt-e-sl-1")
        await env.mark("BTCUSDT", "49400")
        [fired] = await env.ex.check_triggers("BTCUSDT")
        assert (fired.kind, fired.origin_id, fired.fill.qty) == (FillKind.STOP, "qt-e-sl-2", D("0.010"))
        assert await env.ex.positions() == {}
        [ended] = env.ex.take_ended()
        assert (ended.client_algo_id, ended.status) == ("qt-e-tp", ConditionalStatus.EXPIRED)
        assert ended.ts_ms == env.clock.now
        assert await env.ex.open_conditionals() == []

    scenario(body)


def test_a_stop_above_the_position_closes_the_position_and_no_more() -> None:
    """A reduce-only stop of 0.020 on a 0.010 long fills 0.010 and leaves no short (capped at the position;
    not confirmed from Binance's docs)."""

    async def body(env: Env) -> None:
        await env.mark("BTCUSDT", "50000")
        await env.buy("BTCUSDT", "0.010", "qt-e")
        await env.ex.place_conditional("BTCUSDT", STOP, Side.SELL, D("49000"), "qt-e-sl",
                                       close_position=False, quantity=D("0.020"))
        await env.mark("BTCUSDT", "48900")
        [fired] = await env.ex.check_triggers("BTCUSDT")
        assert fired.fill.qty == D("0.010") and await env.ex.positions() == {}

    scenario(body)


def test_a_quantity_stop_outlives_its_position_and_is_cancelled_when_it_fires() -> None:
    """When the position is closed by a market order, its closePosition take-profit expires but the
    quantity-based stop stays open (as Binance is not documented to expire it); firing with nothing to
    reduce cancels it with "Reduce Only reject", and no fill."""

    async def body(env: Env) -> None:
        await env.mark("BTCUSDT", "50000")
        await env.buy("BTCUSDT", "0.010", "qt-e")
        await env.ex.place_conditional("BTCUSDT", TP, Side.SELL, D("53000"), "qt-e-tp")
        await env.ex.place_conditional("BTCUSDT", STOP, Side.SELL, D("49000"), "qt-e-sl",
                                       close_position=False, quantity=D("0.010"))
        await env.sell("BTCUSDT", "0.010", "qt-x", reduce_only=True)
        assert [c.client_algo_id for c in await env.ex.open_conditionals()] == ["qt-e-sl"]
        await env.mark("BTCUSDT", "48000")
        assert await env.ex.check_triggers("BTCUSDT") == []
        assert (await env.ex.get_conditional("BTCUSDT", "qt-e-sl")).status is ConditionalStatus.CANCELED
        ended = env.ex.take_ended()
        assert [(e.client_algo_id, e.status, e.reason) for e in ended] == [
            ("qt-e-tp", ConditionalStatus.EXPIRED, ""),
            ("qt-e-sl", ConditionalStatus.CANCELED, "Reduce Only reject"),
        ]
        assert len(await env.ex.fills_since("BTCUSDT", 0)) == 2  # the entry and the close only

    scenario(body)


def test_expired_and_rejected_conditionals_come_out_of_events() -> None:
    """expire_conditional / reject_conditional end an open conditional as the exchange would; events()
    yields ConditionalEnded for each (with the reason), and fills as before."""

    async def body(env: Env) -> None:
        await env.mark("BTCUSDT", "50000")
        await env.buy("BTCUSDT", "0.010", "qt-e")
        for name in ("a", "b", "c"):
            await env.ex.place_conditional("BTCUSDT", STOP, Side.SELL, D("49000"), f"qt-e-sl-{name}",
                                           close_position=False, quantity=D("0.005"))
        seen: list[OrderEvent] = []

        async def consume() -> None:
            async for event in env.ex.events():
                seen.append(event)

        task = asyncio.create_task(consume())
        await env.ex.expire_conditional("BTCUSDT", "qt-e-sl-a", "GTE condition unsatisfied")
        await env.ex.reject_conditional("BTCUSDT", "qt-e-sl-b", "Margin is insufficient.")
        with pytest.raises(OrderNotFound):
            await env.ex.expire_conditional("BTCUSDT", "qt-e-sl-a")  # no longer open
        await env.mark("BTCUSDT", "48500")

        async def all_three() -> bool:
            return len(seen) == 3

        await poll(all_three, timeout_s=5)
        await env.ex.close()
        await asyncio.wait_for(task, timeout=5)
        ends = [e for e in seen if isinstance(e, ConditionalEnded)]
        fills = [e for e in seen if isinstance(e, ExchangeEvent)]
        assert [(e.client_algo_id, e.status, e.reason) for e in ends] == [
            ("qt-e-sl-a", ConditionalStatus.EXPIRED, "GTE condition unsatisfied"),
            ("qt-e-sl-b", ConditionalStatus.REJECTED, "Margin is insufficient."),
        ]
        assert [(f.origin_id, f.fill.qty) for f in fills] == [("qt-e-sl-c", D("0.005"))]
        assert (await env.ex.get_conditional("BTCUSDT", "qt-e-sl-b")).status is ConditionalStatus.REJECTED

    scenario(body)


def test_the_rules_file_has_brackets_and_no_max_leverage() -> None:
    """config/paper_symbols.json is Binance-shaped: no maxLeverage in its exchangeInfo; the max leverage
    comes from its leverageBracket list (the first bracket's initialLeverage)."""
    path = REPO / "config" / "paper_symbols.json"
    info = json.loads(path.read_text(encoding="utf-8"))
    assert not [e["symbol"] for e in info["symbols"] if "maxLeverage" in e]
    rules = load_rules_file(path)
    assert {s: r.max_leverage for s, r in rules.items()} == {
        "BTCUSDT": 125, "ETHUSDT": 125, "SOLUSDT": 100, "XRPUSDT": 75, "ANKRUSDT": 50, "RIVERUSDT": 20,
        "HYPEUSDT": 50, "币安人生USDT": 20,
    }
    assert all(r.leverage_brackets for r in rules.values())
