"""The backtest's exchange is the paper exchange's fill model: the same orders and marks give the same fills,
positions, rejections and wallet as :class:`common.exchange.paper.PaperExchange` over Redis."""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

from backtest.exchange import ExchangeFill, SimExchange
from common.contracts.enums import FillKind, Side
from common.exchange.base import ConditionalKind, Fill
from common.exchange.errors import OrderRejected
from tests.unit.exchange.paper.env import RULES, SETTINGS, Env, run

D = Decimal
SYMBOL = "BTCUSDT"


def fill_facts(fill: Fill) -> tuple[Any, ...]:
    return (fill.symbol, fill.side, fill.qty, fill.price, fill.fee, fill.reduce_only, fill.realized_pnl)


def test_a_random_session_fills_as_the_paper_exchange_does() -> None:
    """Marks, market orders (opening, adding, reducing, flipping, reduce-only), stops and take-profits in a
    seeded random order: every fill, rejection code, position and the wallet agree with the paper exchange."""
    rng = random.Random(7)
    env = Env()
    sim = SimExchange(dict(RULES), SETTINGS)
    mark = D("60000")
    log_sim: list[Any] = []
    log_paper: list[Any] = []

    async def body() -> None:
        nonlocal mark
        await env.ex.start()
        for i in range(150):
            mark = (mark * D(1 + rng.uniform(-0.01, 0.01))).quantize(D("0.1"))
            await env.mark(SYMBOL, str(mark))
            sim.marks[SYMBOL] = mark
            action = rng.random()
            if action < 0.5:
                side = rng.choice([Side.BUY, Side.SELL])
                qty = D(rng.choice(["0.001", "0.01", "0.05", "0.1"]))
                reduce_only = rng.random() < 0.3
                cid = f"qt-order-{i}"
                try:
                    order = sim.place_market_order(SYMBOL, side, qty, cid, reduce_only=reduce_only,
                                                   ts_ms=env.clock.now)
                    log_sim.append(("fill", *fill_facts(order.fills[0])))
                except OrderRejected as e:
                    log_sim.append(("rejected", e.code))
                try:
                    order = await env.ex.place_market_order(SYMBOL, side, qty, cid, reduce_only=reduce_only)
                    log_paper.append(("fill", *fill_facts(order.fills[0])))
                except OrderRejected as e:
                    log_paper.append(("rejected", e.code))
            elif action < 0.75:
                kind = rng.choice([ConditionalKind.STOP_MARKET, ConditionalKind.TAKE_PROFIT_MARKET])
                side = rng.choice([Side.BUY, Side.SELL])
                trigger = (mark * D(1 + rng.uniform(-0.02, 0.02))).quantize(D("0.1"))
                close_position = kind is ConditionalKind.TAKE_PROFIT_MARKET
                qty = None if close_position else D("0.01")
                cid = f"qt-cond-{i}"
                try:
                    sim.place_conditional(SYMBOL, kind, side, trigger, cid, close_position=close_position,
                                          quantity=qty)
                    log_sim.append(("placed", cid))
                except OrderRejected as e:
                    log_sim.append(("rejected", e.code))
                try:
                    await env.ex.place_conditional(SYMBOL, kind, side, trigger, cid, close_position=close_position,
                                                   quantity=qty)
                    log_paper.append(("placed", cid))
                except OrderRejected as e:
                    log_paper.append(("rejected", e.code))
            for event in sim.check_triggers(SYMBOL, env.clock.now):
                if isinstance(event, ExchangeFill):
                    log_sim.append(("event", event.kind, *fill_facts(event.fill)))
            for event in await env.ex.check_triggers(SYMBOL):
                log_paper.append(("event", event.kind, *fill_facts(event.fill)))
            held = (await env.ex.positions()).get(SYMBOL)
            mine = sim.positions.get(SYMBOL)
            theirs = (held.position_amt, held.entry_price) if held is not None else None
            ours = (mine.qty, mine.entry_price) if mine is not None else None
            assert ours == theirs, i
            env.clock.now += 1000
        balance = await env.ex.balance()
        assert balance.wallet_balance == sim.account.wallet_balance

    run(body(), timeout_s=60)
    assert log_sim == log_paper
    kinds = {entry[0] for entry in log_sim}
    assert {"fill", "rejected", "placed", "event"} <= kinds, "the session exercised every path"
    assert any(e[0] == "event" and e[1] is FillKind.STOP for e in log_sim)
