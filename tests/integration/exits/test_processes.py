"""exitbrain and harvest_proposal as real processes over a real Redis, on seeded positions, prices,
market states, ticks and proposals: the apply.plan entries they publish (decoded as ApplyPlan)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis

from common import keys
from common.contracts import (
    Action,
    ExitbrainPnl,
    ExitReason,
    HarvestProposal,
    HarvestStage,
    MarketTick,
    PositionSide,
    decode,
    encode,
    now_ms,
)
from common.market import price_mapping
from common.maths.levels import adaptive_levels, level_prices
from common.positions import PositionRecord
from common.streams import Service
from tests.helpers import hex16, poll_sync
from tests.integration.exits.fleet import (
    PLAN_KEY,
    PNL_KEY,
    PROPOSAL_KEY,
    TICK_KEY,
    D,
    market_state,
    plans_in,
    proposals_in,
    service,
)

PLAN = hex16("entry-plan")


@pytest.fixture
def r(redis_url: str) -> Any:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


def seed_position(r: Any, *, stop: str = "48500", tp: str = "52000", entry: str = "50000") -> PositionRecord:
    position = PositionRecord(symbol="BTCUSDT", side=PositionSide.LONG, quantity=D("0.05"), entry_price=D(entry),
                              leverage=10, stop_loss=D(stop), take_profit=D(tp), plan_id=PLAN,
                              created_at=now_ms(), updated_at=now_ms(), trace_id=hex16("trace"))
    r.hset(keys.position("BTCUSDT"), mapping=position.to_hash())
    return position


def set_price(r: Any, price: str) -> None:
    r.hset(keys.market_price("BTCUSDT"), mapping=price_mapping(D(price), D(price), now_ms()))


def add(r: Any, key: str, fields: dict[str, str]) -> None:
    r.xadd(key, fields)  # type: ignore[arg-type]


def tick(price: str) -> dict[str, str]:
    return encode(MarketTick(source=Service.MARKETDATA, trace_id=hex16("tick"), symbol="BTCUSDT",
                             price=D(price), mark_price=D(price)))


def logged(log: str, event: str) -> list[dict[str, Any]]:
    lines = []
    for line in log.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("event") == event:
            lines.append(record)
    return lines


def test_exitbrain_tightens_the_stop_then_closes_on_the_kill_score(redis_url: str, r: Any, tmp_path: Path) -> None:
    """A seeded long (entry 50000, stop 48500 = 3 %, 10×) with a trending market: exitbrain asks for the
    leverage-aware 2 % stop (UPDATE_STOP stop_loss 49000), remembers the market at entry, and reports PnL;
    once the regime flips it publishes one FULL_CLOSE_PROPOSED kill_score (score ≥ 0.70, k_regime_flip 1)
    and nothing more, and logs the decision."""
    seed_position(r)
    set_price(r, "50000")
    r.hset(keys.marketstate("BTCUSDT"), mapping=market_state())
    with service("exitbrain", redis_url, tmp_path) as proc:
        poll_sync(lambda: r.xlen(PLAN_KEY) >= 1)
        [stop] = plans_in(r.xrange(PLAN_KEY))
        assert (stop.action, stop.reason, stop.new_stop_loss, stop.position_plan_id) == (
            Action.UPDATE_STOP, ExitReason.STOP_LOSS, D("49000"), PLAN)
        assert stop.plan_id == hex16(f"{PLAN}|UPDATE_STOP|49000") and stop.source == Service.EXITBRAIN
        state = r.hgetall(keys.exit_state("BTCUSDT"))
        assert (state["position_plan_id"], state["stage"], state["stop_loss"]) == (PLAN, "0", "49000")
        assert (state["sigma_at_entry"], state["ts_strength_at_entry"]) == ("0.01", "0.5")
        poll_sync(lambda: r.xlen(PNL_KEY) >= 1)
        pnl = decode(ExitbrainPnl, r.xrange(PNL_KEY)[0][1])
        assert (pnl.mark_price, pnl.unrealized_pnl, pnl.r_multiple) == (D("50000"), D("0"), 0.0)
        assert pnl.kill_score == pytest.approx(0.5, abs=1e-3)

        r.hset(keys.marketstate("BTCUSDT"), mapping=market_state(flipped=True))
        poll_sync(lambda: r.xlen(PLAN_KEY) >= 2)
        pnl_seen = r.xlen(PNL_KEY)
        poll_sync(lambda: r.xlen(PNL_KEY) >= pnl_seen + 3)  # three more evaluations went by

        plans = plans_in(r.xrange(PLAN_KEY))
        assert len(plans) == 2
        kill = plans[1]
        assert (kill.action, kill.reason, kill.close_pct) == (Action.FULL_CLOSE_PROPOSED, ExitReason.KILL_SCORE, 100.0)
        assert kill.kill_score is not None and kill.kill_score >= 0.70
        assert (kill.k_regime_flip, kill.k_sigma_spike, kill.k_ts_drop) == (1.0, 0.0, 0.0)
        assert kill.plan_id == hex16(f"{PLAN}|kill_score|0")
        assert r.hget(keys.exit_state("BTCUSDT"), "closing") == "kill_score"
    [line] = [x for x in logged(proc.log(), "exit_plan_proposed") if x["reason"] == "kill_score"]
    assert line["plan_id"] == kill.plan_id and line["k_regime_flip"] == 1.0 and line["symbol"] == "BTCUSDT"


def test_a_tick_through_the_stop_closes_in_software(redis_url: str, r: Any, tmp_path: Path) -> None:
    """No price hash: only market.tick entries (read from the latest) move exitbrain. A long whose stop is
    already the adaptive 2 % (49000) gets no stop update; ticks at 48900 give one FULL_CLOSE_PROPOSED
    stop_loss, whatever the ticks that follow."""
    seed_position(r, stop="49000")
    with service("exitbrain", redis_url, tmp_path):
        def closed() -> bool:
            add(r, TICK_KEY, tick("48900"))  # exitbrain reads from "$": tick until it has seen one
            return r.xlen(PLAN_KEY) >= 1

        poll_sync(closed, interval_s=0.05)
        seen = r.xlen(PNL_KEY)

        def evaluated_twice_more() -> bool:
            add(r, TICK_KEY, tick("48800"))
            return r.xlen(PNL_KEY) >= seen + 2

        poll_sync(evaluated_twice_more, interval_s=0.1)

        [plan] = plans_in(r.xrange(PLAN_KEY))
        assert (plan.action, plan.reason, plan.plan_id) == (Action.FULL_CLOSE_PROPOSED, ExitReason.STOP_LOSS,
                                                            hex16(f"{PLAN}|stop_loss|0"))


def test_repeated_harvest_proposals_give_one_plan(redis_url: str, r: Any, tmp_path: Path) -> None:
    """harvest.proposal TP1 (trigger 51600) published three times (and once for another position) while the
    mark (52800) is past the position's TP1 (51788) and TP2 (52694): the marks harvest nothing (the ladder is
    harvest_proposal's), the proposal gives one PARTIAL_CLOSE_PROPOSED harvest_tp1 of 30 % carrying its
    trace id; every proposal is acknowledged by the group exitbrain."""
    seed_position(r, stop="49000")
    set_price(r, "52800")
    proposal = HarvestProposal(source=Service.HARVEST_PROPOSAL, trace_id=hex16("proposal"), symbol="BTCUSDT",
                               position_plan_id=PLAN, stage=HarvestStage.TP1, trigger_price=D("51600"),
                               close_pct=30.0, new_stop_loss=D("50050"), r_multiple=1.6)
    stranger = proposal.model_copy(update={"position_plan_id": hex16("another")})
    with service("exitbrain", redis_url, tmp_path) as proc:
        poll_sync(lambda: r.xlen(PNL_KEY) >= 3)  # the mark past TP2 evaluated a few times first
        assert [p.action for p in plans_in(r.xrange(PLAN_KEY))] == []
        for message in (proposal, stranger, proposal, proposal):
            add(r, PROPOSAL_KEY, encode(message))

        def all_acked() -> bool:
            groups = r.xinfo_groups(PROPOSAL_KEY)
            return bool(groups) and groups[0]["pending"] == 0 and groups[0]["last-delivered-id"] == r.xrevrange(
                PROPOSAL_KEY, count=1)[0][0]

        poll_sync(all_acked)
        seen = r.xlen(PNL_KEY)
        poll_sync(lambda: r.xlen(PNL_KEY) >= seen + 2)  # and a few times after
        harvests = [p for p in plans_in(r.xrange(PLAN_KEY)) if p.action is Action.PARTIAL_CLOSE_PROPOSED]
        assert [(p.reason, p.close_pct, p.trace_id) for p in harvests] == [
            (ExitReason.HARVEST_TP1, 30.0, proposal.trace_id)]
        assert harvests[0].plan_id == hex16(f"{PLAN}|harvest_tp1|1")
        assert r.hget(keys.exit_state("BTCUSDT"), "proposed") == "TP1"
        assert r.hget(keys.exit_state("BTCUSDT"), "stage") == "1"
    ignored = [x["reason"] for x in logged(proc.log(), "proposal_ignored")]
    assert sorted(ignored) == ["not_the_current_position", "stage_done", "stage_done"]


def test_harvest_proposal_proposes_each_stage_and_exitbrain_plans_it_once(redis_url: str, r: Any,
                                                                           tmp_path: Path) -> None:
    """Both processes on ticks only: ticks past TP1 give one TP1 proposal (close 30 %, the R multiple at the
    mark), ticks past TP2 one TP2 proposal; apply.plan holds one harvest plan per stage, each from its
    proposal (the proposal's trace id): the stages reach exitbrain only through harvest.proposal."""
    position = seed_position(r, stop="49000", tp="51000")
    levels = adaptive_levels(10, 0.02, 0.02)
    prices = level_prices(PositionSide.LONG, position.entry_price, levels)
    above_tp1, above_tp2 = str(prices.tp1 + 1), str(prices.tp2 + 1)
    with service("harvest_proposal", redis_url, tmp_path), service("exitbrain", redis_url, tmp_path):
        def proposed(stage: HarvestStage, price: str) -> Any:
            def check() -> bool:
                add(r, TICK_KEY, tick(price))
                return any(p.stage is stage for p in proposals_in(r.xrange(PROPOSAL_KEY)))
            return check

        poll_sync(proposed(HarvestStage.TP1, above_tp1), interval_s=0.05)
        poll_sync(proposed(HarvestStage.TP2, above_tp2), interval_s=0.05)

        def both_planned() -> bool:
            reasons = [p.reason for p in plans_in(r.xrange(PLAN_KEY))]
            return ExitReason.HARVEST_TP1 in reasons and ExitReason.HARVEST_TP2 in reasons

        poll_sync(both_planned)
        groups = r.xinfo_groups(PROPOSAL_KEY)
        poll_sync(lambda: r.xinfo_groups(PROPOSAL_KEY)[0]["pending"] == 0 and r.xinfo_groups(PROPOSAL_KEY)[0][
            "last-delivered-id"] == r.xrevrange(PROPOSAL_KEY, count=1)[0][0])
        assert groups[0]["name"] == Service.EXITBRAIN

        proposals = proposals_in(r.xrange(PROPOSAL_KEY))
        assert [p.stage for p in proposals] == [HarvestStage.TP1, HarvestStage.TP2]
        tp1 = proposals[0]
        assert (tp1.trigger_price, tp1.close_pct, tp1.position_plan_id) == (prices.tp1, 30.0, PLAN)
        assert tp1.r_multiple == pytest.approx(float((D(above_tp1) - D("50000")) / D("1000")))
        harvests = [p for p in plans_in(r.xrange(PLAN_KEY)) if p.action is Action.PARTIAL_CLOSE_PROPOSED]
        assert [p.reason for p in harvests] == [ExitReason.HARVEST_TP1, ExitReason.HARVEST_TP2]
        assert all(p.plan_id == hex16(f"{PLAN}|{p.reason}|{n}") for n, p in enumerate(harvests, 1))
        assert [p.trace_id for p in harvests] == [p.trace_id for p in proposals]


def test_a_position_still_open_after_tp3_is_still_managed(redis_url: str, r: Any, tmp_path: Path) -> None:
    """Fault 7 over Redis: ticks past TP3 make harvest_proposal propose TP1, TP2 and TP3, which exitbrain
    turns into the three harvests; nobody executes them, so the position stays open. A new high then
    still trails its stop (UPDATE_STOP trailing_stop at 0.8 % under it), and close_retry_s (2 s) after the
    TP3 harvest exitbrain closes it in full: FULL_CLOSE_PROPOSED harvest_tp3 under attempt id 1, not the
    harvest's own."""
    position = seed_position(r, stop="49000", tp="51000")
    prices = level_prices(PositionSide.LONG, position.entry_price, adaptive_levels(10, 0.02, 0.02))
    above_tp3, high = str(prices.tp3 + 1), str((prices.tp3 + 500).quantize(D("1")))
    retry_env = {"QT_EXIT__CLOSE_RETRY_S": "2"}
    with service("harvest_proposal", redis_url, tmp_path), service("exitbrain", redis_url, tmp_path, **retry_env):
        def harvested() -> bool:
            add(r, TICK_KEY, tick(above_tp3))
            reasons = [p.reason for p in plans_in(r.xrange(PLAN_KEY))]
            return ExitReason.HARVEST_TP3 in reasons

        poll_sync(harvested, interval_s=0.05)
        assert [p.stage for p in proposals_in(r.xrange(PROPOSAL_KEY))] == [
            HarvestStage.TP1, HarvestStage.TP2, HarvestStage.TP3]
        trail = D(high) * D("0.992")

        def trailed() -> bool:
            add(r, TICK_KEY, tick(high))
            return any(p.action is Action.UPDATE_STOP and p.new_stop_loss == trail
                       for p in plans_in(r.xrange(PLAN_KEY)))

        poll_sync(trailed, interval_s=0.05)
        set_price(r, high)  # the periodic evaluation reads the price hash: no more ticks needed
        poll_sync(lambda: any(p.action is Action.FULL_CLOSE_PROPOSED for p in plans_in(r.xrange(PLAN_KEY))))

        found = plans_in(r.xrange(PLAN_KEY))
        harvests = [p for p in found if p.action is Action.PARTIAL_CLOSE_PROPOSED]
        assert [p.reason for p in harvests] == [ExitReason.HARVEST_TP1, ExitReason.HARVEST_TP2,
                                                ExitReason.HARVEST_TP3]
        [update] = [p for p in found if p.action is Action.UPDATE_STOP and p.new_stop_loss == trail]
        assert update.reason is ExitReason.TRAILING_STOP
        [close] = [p for p in found if p.action is Action.FULL_CLOSE_PROPOSED]
        assert (close.reason, close.close_pct) == (ExitReason.HARVEST_TP3, 100.0)
        assert close.plan_id == hex16(f"{PLAN}|harvest_tp3|3|1") != harvests[2].plan_id
        assert found.index(update) < found.index(close)
        assert r.hget(keys.exit_state("BTCUSDT"), "closing") == "harvest_tp3"
