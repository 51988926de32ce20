"""apply_layer's gates and actions on the paper exchange, through real Redis streams."""

from __future__ import annotations

import asyncio

import pytest

from common import keys
from common.contracts import Decision, ExitReason, FillKind, now_ms
from common.ess import tripped
from common.exchange.base import ConditionalStatus
from common.policy import Limits, Policy
from tests.helpers import poll, run
from tests.integration.apply_layer.harness import D, Harness, running
from tests.plans import close, entry, update_stop


def test_entry_executes_records_position_protection_and_cooldown(redis_url: str) -> None:
    """An entry fills at mark + slippage, publishes EXECUTE and one execution.result, writes the position
    hash with its plan_id, places stop-loss and take-profit on the exchange and starts the cooldown."""

    async def scenario() -> None:
        async with running(redis_url) as h:
            plan = entry("e1", qty="0.010")
            await h.send(plan)
            result = await h.result(plan)
            assert (result.decision, result.executed, result.error) == (Decision.EXECUTE, True, "")
            assert result.client_order_id == f"qt-{plan.plan_id}"
            assert result.filled_qty == D("0.010") and result.avg_price == D("50010")  # 2 bps, on the tick
            assert result.fee == D("0.250050")  # 0.05 % of 500.10
            [fill] = await h.fills()
            assert (fill.kind, fill.qty, fill.price, fill.position_after) == (FillKind.ENTRY, D("0.010"),
                                                                             D("50010"), D("0.010"))
            assert fill.plan_id == plan.plan_id and fill.position_plan_id == plan.plan_id
            position = await h.position()
            assert position is not None
            assert (position.side.value, position.quantity, position.entry_price) == ("LONG", D("0.010"), D("50010"))
            assert position.plan_id == plan.plan_id and position.trace_id == plan.trace_id
            assert position.sl_order_id == f"qt-{plan.plan_id}-sl" and position.tp_order_id == f"qt-{plan.plan_id}-tp"
            stop = await h.paper.get_conditional("BTCUSDT", position.sl_order_id)
            assert stop.status is ConditionalStatus.NEW and stop.trigger_price == D("48500")
            ttl = await h.redis.pttl(keys.cooldown("BTCUSDT"))
            assert 890_000 < ttl <= 900_000

    run(scenario())


def test_duplicate_plan_is_skipped_and_orders_once(redis_url: str) -> None:
    """A plan published twice executes once; the second gets SKIP duplicate_plan; one exchange order."""

    async def scenario() -> None:
        async with running(redis_url) as h:
            plan = entry("dup")
            await h.send(plan, plan)
            second = await h.result(plan, n=2)
            first = (await h.results(plan.plan_id))[0]
            assert first.decision is Decision.EXECUTE
            assert (second.decision, second.error) == (Decision.SKIP, "duplicate_plan")
            assert len(await h.fills()) == 1
            assert (await h.paper.positions())["BTCUSDT"].position_amt == D("0.01")

    run(scenario())


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("ess", "ess_tripped"),
        ("not_listed", "symbol_not_tradable"),
        ("cooldown", "cooldown_active"),
        ("stale", "stale_plan"),
        ("allowlist", "risk_limit:allowlist"),
        ("max_open_positions", "risk_limit:max_open_positions"),
        ("margin", "risk_limit:margin_per_trade"),
        ("notional", "risk_limit:total_notional"),
        ("leverage", "risk_limit:max_leverage"),
        ("drift", "risk_limit:reconcile_drift"),
    ],
)
def test_entry_gates(redis_url: str, case: str, expected: str) -> None:
    """Each entry gate skips the entry with its reason code and places no order."""

    async def scenario() -> None:
        async with running(redis_url, prices={"BTCUSDT": "50000", "ETHUSDT": "3000"}) as h:
            plan = entry(case)
            limits = Limits(max_open_positions=5, max_margin_per_trade_usd=D("500"),
                            max_total_notional_usd=D("25000"), max_leverage=20)
            allow = ("BTCUSDT", "ETHUSDT", "NOTLISTEDUSDT")
            if case == "ess":
                await h.redis.hset(keys.ess(), mapping=tripped("test", "pytest").to_hash())
            elif case == "not_listed":
                plan = entry(case, symbol="NOTLISTEDUSDT")
            elif case == "cooldown":
                await h.redis.set(keys.cooldown("BTCUSDT"), "x", px=60_000)
            elif case == "stale":
                plan = entry(case, ts=now_ms() - 301_000)
            elif case == "allowlist":
                allow = ("ETHUSDT",)
            elif case == "max_open_positions":
                limits = limits.model_copy(update={"max_open_positions": 1})
                opened = entry("eth-first", symbol="ETHUSDT", qty="0.1", price="3000")
                await h.send(opened)
                assert (await h.result(opened)).decision is Decision.EXECUTE
            elif case == "margin":
                plan = entry(case, qty="0.2")  # 10,000 notional / 10x = 1,000 margin > 500
            elif case == "notional":
                limits = limits.model_copy(update={"max_total_notional_usd": D("400")})
            elif case == "leverage":
                plan = entry(case, leverage=25)
            elif case == "drift":
                await h.redis.hset(keys.reconcile_drift("BTCUSDT"), mapping={"kind": "QTY_MISMATCH"})
            policy = Policy(allowlist=allow, limits=limits)
            await h.redis.hset(keys.policy_current(), mapping=policy.to_hash())
            await h.send(plan)
            result = await h.result(plan)
            assert (result.decision, result.error, result.executed) == (Decision.SKIP, expected, False)
            assert plan.symbol not in await h.paper.positions()
            assert await h.position(plan.symbol) is None

    run(scenario())


def test_full_close_deletes_position_and_cancels_protection(redis_url: str) -> None:
    """A full close sends a reduce-only order for the whole position, deletes the hash, cancels the
    stop-loss and take-profit, and publishes an EXIT fill with the reason."""

    async def scenario() -> None:
        async with running(redis_url) as h:
            opened = entry("open")
            await h.send(opened)
            await h.result(opened)
            await h.set_price("BTCUSDT", "51000")
            plan = close("close", opened.plan_id)
            await h.send(plan)
            result = await h.result(plan)
            assert (result.decision, result.reduce_only, result.filled_qty) == (Decision.EXECUTE, True, D("0.01"))
            assert result.avg_price == D("50989.8")  # 51000 less 2 bps, on the 0.1 tick
            assert await h.position() is None
            assert await h.paper.positions() == {}
            assert await h.paper.open_conditionals("BTCUSDT") == []
            exit_fill = (await h.fills())[-1]
            assert (exit_fill.kind, exit_fill.reason, exit_fill.position_after) == (FillKind.EXIT,
                                                                                    ExitReason.MANUAL, D(0))
            assert exit_fill.position_plan_id == opened.plan_id and exit_fill.reduce_only

    run(scenario())


def test_partial_close_rounds_down_and_closes_a_dust_remainder(redis_url: str) -> None:
    """A partial close takes pct x position rounded down to the step; when what would be left is below
    the minimum notional, the whole position is closed."""

    async def scenario() -> None:
        async with running(redis_url, prices={"BTCUSDT": "50000"}) as h:
            opened = entry("p-open", qty="0.007")
            await h.send(opened)
            await h.result(opened)
            first = close("p1", opened.plan_id, pct=30.0, reason="harvest_tp1")
            await h.send(first)
            assert (await h.result(first)).filled_qty == D("0.002")  # 0.0021 rounded down to 0.001
            position = await h.position()
            assert position is not None and position.quantity == D("0.005")
            second = close("p2", opened.plan_id, pct=70.0, reason="harvest_tp2")
            await h.send(second)
            # 0.0035 -> 0.003 leaves 0.002 x 50,000 = 100.0 >= min notional 100: kept
            assert (await h.result(second)).filled_qty == D("0.003")
            third = close("p3", opened.plan_id, pct=60.0, reason="harvest_tp3")
            await h.send(third)
            # 0.0012 -> 0.001 would leave 0.001 x 50,000 = 50 < 100: all of it goes
            assert (await h.result(third)).filled_qty == D("0.002")
            assert await h.position() is None

    run(scenario())


@pytest.mark.parametrize(("case", "expected"), [("stale", "stale_plan"), ("none", "no_position"),
                                                ("dust", "below_step")])
def test_exit_gates(redis_url: str, case: str, expected: str) -> None:
    """An exit naming another position's plan is stale; no position is no_position; a quantity that
    rounds to zero is below_step. No order is placed."""

    async def scenario() -> None:
        async with running(redis_url) as h:
            opened = entry("x-open", qty="0.01")
            if case != "none":
                await h.send(opened)
                await h.result(opened)
            plan = {"stale": close("x1", "f" * 16), "none": close("x2", opened.plan_id),
                    "dust": close("x3", opened.plan_id, pct=5.0)}[case]
            await h.send(plan)
            result = await h.result(plan)
            assert (result.decision, result.error) == (Decision.SKIP, expected)
            if case != "none":
                assert (await h.paper.positions())["BTCUSDT"].position_amt == D("0.01")

    run(scenario())


def test_exits_go_through_kill_switch_cooldown_and_limits(redis_url: str) -> None:
    """With the kill switch tripped, the cooldown active and limits at zero, an exit still executes."""

    async def scenario() -> None:
        async with running(redis_url) as h:
            opened = entry("k-open")
            await h.send(opened)
            await h.result(opened)
            await h.redis.hset(keys.ess(), mapping=tripped("drawdown", "governor").to_hash())
            policy = Policy(allowlist=(), limits=Limits(max_open_positions=0, max_total_notional_usd=D("1")))
            await h.redis.hset(keys.policy_current(), mapping=policy.to_hash())
            plan = close("k-close", opened.plan_id, reason="ess_flatten")
            await h.send(plan)
            assert (await h.result(plan)).decision is Decision.EXECUTE
            assert await h.position() is None

    run(scenario())


def test_update_stop_replaces_the_exchange_stop(redis_url: str) -> None:
    """UPDATE_STOP places the new stop (qt-<plan>-sl) before cancelling the old one and records it."""

    async def scenario() -> None:
        async with running(redis_url) as h:
            opened = entry("s-open")
            await h.send(opened)
            await h.result(opened)
            plan = update_stop("s-move", opened.plan_id, "49500.04")
            await h.send(plan)
            assert (await h.result(plan)).decision is Decision.EXECUTE
            position = await h.position()
            assert position is not None
            assert position.stop_loss == D("49500.0") and position.sl_order_id == f"qt-{plan.plan_id}-sl"
            assert position.stop_reason == "trailing_stop"
            old = await h.paper.get_conditional("BTCUSDT", f"qt-{opened.plan_id}-sl")
            new = await h.paper.get_conditional("BTCUSDT", position.sl_order_id)
            assert old.status is ConditionalStatus.CANCELED and new.status is ConditionalStatus.NEW
            assert new.trigger_price == D("49500.0")

    run(scenario())


def test_exchange_stop_fill_becomes_an_execution_result(redis_url: str) -> None:
    """The mark crossing the exchange-side stop fills it: execution.result STOP with the stop's reason,
    the position hash deleted, and the take-profit cancelled."""

    async def scenario() -> None:
        async with running(redis_url) as h:
            opened = entry("t-open")
            await h.send(opened)
            await h.result(opened)
            await h.set_price("BTCUSDT", "48400")

            async def stopped() -> bool:
                return any(f.kind is FillKind.STOP for f in await h.fills())

            await poll(stopped, timeout_s=15)
            stop_fill = next(f for f in await h.fills() if f.kind is FillKind.STOP)
            assert stop_fill.reason is ExitReason.STOP_LOSS and stop_fill.position_after == D(0)
            assert stop_fill.plan_id == f"qt-{opened.plan_id}-sl" and stop_fill.position_plan_id == opened.plan_id
            assert stop_fill.qty == D("0.01") and stop_fill.price == D("48390.3")
            await poll(lambda: _none(h))
            assert await h.paper.open_conditionals("BTCUSDT") == []

    run(scenario())


def test_permanent_rejection_is_an_error_with_the_code(redis_url: str) -> None:
    """An order the exchange refuses for good gives ERROR exchange:<code> and no position."""

    async def scenario() -> None:
        async with running(redis_url, prices={"BTCUSDT": "50000"}) as h:
            policy = Policy(allowlist=("BTCUSDT",), limits=Limits(max_margin_per_trade_usd=D("1000000"),
                                                                  max_total_notional_usd=D("100000000")))
            await h.redis.hset(keys.policy_current(), mapping=policy.to_hash())
            plan = entry("big", qty="5", leverage=10)  # 250,000 notional: 25,000 margin > 10,000 balance
            await h.send(plan)
            result = await h.result(plan)
            assert (result.decision, result.error) == (Decision.ERROR, "exchange:-2019")
            assert await h.position() is None

    run(scenario())


async def _none(h: object) -> bool:
    from tests.integration.apply_layer.harness import Harness

    assert isinstance(h, Harness)
    return await h.position() is None


def test_a_close_that_meets_the_exchanges_own_stop_is_skipped_not_an_error(redis_url: str) -> None:
    """Found by the stop-crossing benchmark: the exchange's stop fills the position a moment before
    exitbrain's close reaches apply_layer, whose event of that fill has not arrived yet. The close is
    rejected (-2022, nothing to reduce); apply_layer books the exchange's fill from its trade history at
    once and the close is SKIP no_position — not ERROR exchange:-2022 with the stop fill booked later."""

    async def scenario() -> None:
        h = Harness(redis_url)
        await h.paper.start()
        await h.set_price("BTCUSDT", "50000")
        stop = asyncio.Event()
        await h.consumer.setup()
        consumer = asyncio.create_task(h.consumer.run(stop))  # no exchange-event loop: the event never comes
        try:
            opened = entry("raced")
            await h.send(opened)
            await h.result(opened)
            await h.set_price("BTCUSDT", "48400")
            fired = await h.paper.check_triggers("BTCUSDT")  # the stop fills; its event is not delivered yet
            assert len(fired) == 1 and await h.paper.positions() == {}
            assert await h.position() is not None  # not booked yet
            plan = close("raced-close", opened.plan_id)
            await h.send(plan)
            result = await h.result(plan)
            assert (result.decision, result.error) == (Decision.SKIP, "no_position")
            assert await h.position() is None
            [stop_fill] = [f for f in await h.fills() if f.kind is FillKind.STOP]
            assert stop_fill.reason is ExitReason.STOP_LOSS and stop_fill.position_after == D(0)
        finally:
            stop.set()
            await h.paper.close()
            await asyncio.wait_for(consumer, 10)
            await h.redis.aclose()

    run(scenario())
