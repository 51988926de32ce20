"""exitbrain and harvest_proposal (real processes) against apply_layer in-process on the paper exchange:
positions opened by entry plans are closed by the kill score, reduced by a harvest stage that
harvest_proposal proposes and exitbrain plans, and their stop moved by the trailing stop — on the exchange
too — until the trailing stop closes them."""

from __future__ import annotations

from pathlib import Path

from common import keys
from common.contracts import Action, ApplyPlan, Decision, ExitReason, FillKind, decode
from common.exchange.base import ConditionalStatus
from common.streams import Stream
from services.exitbrain.decide import ExitParams, position_levels, start
from tests.helpers import poll, run
from tests.integration.apply_layer.harness import D, Harness, running
from tests.integration.exits.fleet import market_state, service
from tests.plans import entry


async def plans(h: Harness) -> list[ApplyPlan]:
    return [decode(ApplyPlan, f) for _, f in await h.redis.xrange(keys.stream(Stream.APPLY_PLAN))]


async def executed(h: Harness, reason: ExitReason, action: Action) -> ApplyPlan:
    """The exitbrain plan of ``action`` and ``reason`` once apply_layer has executed it."""
    found: list[ApplyPlan] = []

    async def done() -> bool:
        found[:] = [p for p in await plans(h) if p.reason is reason and p.action is action]
        return bool(found) and any(r.decision is Decision.EXECUTE for r in await h.results(found[0].plan_id))

    await poll(done, timeout_s=20)
    return found[0]


def test_a_position_is_closed_by_the_kill_score(redis_url: str, tmp_path: Path) -> None:
    """An entry fills in a trending market; exitbrain remembers that market; the regime flips and its
    FULL_CLOSE_PROPOSED kill_score is executed: the position hash is gone and the exit fill carries the
    reason kill_score for the whole quantity."""

    async def scenario() -> None:
        async with running(redis_url) as h:
            await h.redis.hset(keys.marketstate("BTCUSDT"), mapping=market_state())
            with service("exitbrain", redis_url, tmp_path):
                opened = entry("kill", qty="0.05")
                await h.send(opened)
                assert (await h.result(opened)).decision is Decision.EXECUTE

                async def remembered() -> bool:
                    state = await h.redis.hgetall(keys.exit_state("BTCUSDT"))
                    return state.get("position_plan_id") == opened.plan_id and state.get("sigma_at_entry") == "0.01"

                await poll(remembered)
                await h.redis.hset(keys.marketstate("BTCUSDT"), mapping=market_state(flipped=True))
                kill = await executed(h, ExitReason.KILL_SCORE, Action.FULL_CLOSE_PROPOSED)

                assert await h.position() is None
                assert kill.position_plan_id == opened.plan_id and kill.k_regime_flip == 1.0
                exit_fill = [f for f in await h.fills() if f.plan_id == kill.plan_id]
                assert [(f.kind, f.reason, f.qty, f.position_after) for f in exit_fill] == [
                    (FillKind.EXIT, ExitReason.KILL_SCORE, D("0.05"), D("0"))]

    run(scenario(), timeout_s=90)


def test_a_position_is_harvested_trailed_and_closed_by_its_trailing_stop(redis_url: str, tmp_path: Path) -> None:
    """Entry 0.05 BTC at 50010 (stop 48500, target 53000, 10×). exitbrain moves the stop to the 2 %
    leverage-aware level (49009.8); the mark rises to 52700, past TP1 (≈52684), and exitbrain alone
    harvests nothing; harvest_proposal (started then) proposes TP1, which exitbrain turns into a 30 %
    harvest (0.015) and a stop trailed to 0.8 % under the best price; a new high of 52900 trails it to
    52476.8 — on the exchange as well; the mark falling through it closes the rest with reason
    trailing_stop."""

    async def scenario() -> None:
        async with running(redis_url) as h:
            with service("exitbrain", redis_url, tmp_path):
                opened = entry("harvest", qty="0.05", take_profit=D("53000"))
                await h.send(opened)
                assert (await h.result(opened)).decision is Decision.EXECUTE

                first_stop = await executed(h, ExitReason.STOP_LOSS, Action.UPDATE_STOP)
                assert first_stop.new_stop_loss == D("49009.8")  # 50010 · 0.98
                position = await h.position()
                assert position is not None and position.stop_loss == D("49009.8")
                prices, _ = position_levels(position, start(position, None, ExitParams(), 0), ExitParams())
                assert D("52683") < prices.tp1 < D("52700") < D("52900") < D("53000") < prices.tp2

                await h.set_price("BTCUSDT", "52700")

                async def peak_seen() -> bool:
                    return await h.redis.hget(keys.exit_state("BTCUSDT"), "peak_price") == "52700"

                # exitbrain has seen the mark past TP1 (its trailing anchor) and harvested nothing itself
                await poll(peak_seen)
                assert [p.action for p in await plans(h)] == [Action.ENTRY_PROPOSED, Action.UPDATE_STOP]
                with service("harvest_proposal", redis_url, tmp_path):
                    harvest = await executed(h, ExitReason.HARVEST_TP1, Action.PARTIAL_CLOSE_PROPOSED)
                    assert harvest.close_pct == 30.0
                    first_trail = await executed(h, ExitReason.TRAILING_STOP, Action.UPDATE_STOP)
                    assert first_trail.new_stop_loss == D("52278.4")  # 52700 · 0.992

                    async def reduced_and_trailed() -> bool:
                        p = await h.position()
                        return p is not None and p.quantity == D("0.035") and p.stop_loss == D("52278.4")

                    await poll(reduced_and_trailed)

                    await h.set_price("BTCUSDT", "52900")

                    async def trailed_again() -> bool:
                        p = await h.position()
                        return p is not None and p.stop_loss == D("52476.8")  # 52900 · 0.992

                    await poll(trailed_again)
                    position = await h.position()
                    assert position is not None and position.stop_reason == "trailing_stop"
                    stop = await h.paper.get_conditional("BTCUSDT", position.sl_order_id)
                    assert (stop.status, stop.trigger_price) == (ConditionalStatus.NEW, D("52476.8"))
                    trails = [p for p in await plans(h) if p.action is Action.UPDATE_STOP]
                    assert [p.new_stop_loss for p in trails] == [D("49009.8"), D("52278.4"), D("52476.8")]

                    await h.set_price("BTCUSDT", "52400")

                    async def closed() -> bool:
                        return await h.position() is None

                    await poll(closed)
                fills = await h.fills()
                assert sum(f.qty for f in fills if f.kind is not FillKind.ENTRY) == D("0.05")
                assert fills[-1].reason is ExitReason.TRAILING_STOP and fills[-1].position_after == 0
                harvests = [p for p in await plans(h) if p.action is Action.PARTIAL_CLOSE_PROPOSED]
                assert [p.reason for p in harvests] == [ExitReason.HARVEST_TP1]
                assert harvests[0].trace_id != harvests[0].plan_id  # it came from a proposal, with its trace

    run(scenario(), timeout_s=90)
