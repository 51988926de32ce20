"""exitbrain's pure decisions: the risk exits on marks (stop, kill score, time exit, break-even, trailing,
close retries) whatever the ladder stage, harvest proposals turned into plans, and the PnL view."""

from __future__ import annotations

import hashlib
import math
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.contracts import Action, ApplyPlan, ExitReason, HarvestStage, MarketState, PositionSide
from common.ids import stop_text
from common.maths.kill_score import KillScoreParams
from common.positions import PositionRecord
from services.exitbrain import plans
from services.exitbrain.decide import (
    ExitParams,
    PnlThrottle,
    evaluate,
    on_proposal,
    pnl,
    position_levels,
    start,
)
from services.exitbrain.exit_state import ExitState
from tests.unit.exitbrain.builders import HOUR_MS, PLAN, T0, D, market, position, proposal

LONG, SHORT = PositionSide.LONG, PositionSide.SHORT
PARAMS = ExitParams()
STAGES = {1: HarvestStage.TP1, 2: HarvestStage.TP2, 3: HarvestStage.TP3}


def hex16(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def walk(pos: PositionRecord, marks: list[Decimal], state: ExitState | None = None,
         params: ExitParams = PARAMS, now: int = T0) -> tuple[ExitState, list[list[ApplyPlan]]]:
    """Evaluate ``marks`` in order, carrying the state; the plans of each mark."""
    steps = []
    for mark in marks:
        out = evaluate(pos, state, mark, None, now, params)
        state = out.state
        steps.append(out.plans)
    assert state is not None
    return state, steps


def through(pos: PositionRecord, stage: int, state: ExitState | None = None, *, now: int = T0,
            mkt: MarketState | None = None) -> tuple[ExitState, list[list[ApplyPlan]]]:
    """harvest_proposal's proposals TP1..``stage`` (each at its level) turned into plans, in order; the
    state after them and the plans of each."""
    prices, _ = position_levels(pos, start(pos, None, PARAMS, T0), PARAMS)
    steps = []
    for n in range(1, stage + 1):
        out = on_proposal(proposal(STAGES[n], str(prices.tp(n))), pos, state, mkt, now, PARAMS)
        assert not out.ignored, out.ignored
        state = out.state
        steps.append(out.plans)
    assert state is not None
    return state, steps


def actions(steps: list[ApplyPlan]) -> list[tuple[Action, ExitReason | None]]:
    return [(p.action, p.reason) for p in steps]


# --- kill score -----------------------------------------------------------------------------------


def test_kill_score_below_the_threshold_holds_and_remembers_the_market_at_entry() -> None:
    """First sight at sigma 0.01, strength 0.5: z = 0, score 0.5, no plan; 12 h later sigma 0.015 and
    strength 0.3: k_sigma 0.5, k_ts 0.2, k_age 0.5, z = 0.25 + 0.1 + 0.15 = 0.5, score 0.622459 < 0.70,
    still no plan, and the market at entry is not overwritten."""
    pos = position()
    first = evaluate(pos, None, D("100.2"), market(), T0, PARAMS)
    assert first.plans == [] and first.kill is not None and first.kill.score == 0.5
    assert (first.state.sigma_at_entry, first.state.ts_strength_at_entry) == (0.01, 0.5)

    later = evaluate(pos, first.state, D("100.2"), market(sigma=0.015, ts_strength=0.3), T0 + 12 * HOUR_MS, PARAMS)

    assert later.plans == []
    assert later.kill is not None
    assert (later.kill.k_sigma_spike, later.kill.k_ts_drop, later.kill.k_age_penalty) == pytest.approx((0.5, 0.2, 0.5))
    assert later.kill.score == pytest.approx(1 / (1 + math.exp(-0.5)))
    assert (later.state.sigma_at_entry, later.state.ts_strength_at_entry) == (0.01, 0.5)


def test_kill_score_crossing_the_threshold_closes_in_full_with_its_components() -> None:
    """The trend lost on top of the above: z = 1.0 + 0.5 = 1.5, score 0.817574 ≥ 0.70 → one
    FULL_CLOSE_PROPOSED kill_score carrying the score and its four components; afterwards nothing more."""
    pos = position()
    entry = evaluate(pos, None, D("100.2"), market(), T0, PARAMS).state
    now = T0 + 12 * HOUR_MS

    out = evaluate(pos, entry, D("100.2"), market(sigma=0.015, ts_strength=0.3, flipped=True), now, PARAMS)

    [plan] = out.plans
    assert (plan.action, plan.reason, plan.close_pct) == (Action.FULL_CLOSE_PROPOSED, ExitReason.KILL_SCORE, 100.0)
    assert plan.kill_score == pytest.approx(0.8175744762)
    assert (plan.k_regime_flip, plan.k_sigma_spike, plan.k_ts_drop, plan.k_age_penalty) == pytest.approx(
        (1.0, 0.5, 0.2, 0.5))
    assert plan.plan_id == hex16(f"{PLAN}|kill_score|0") and plan.position_plan_id == PLAN
    assert out.state.closing == "kill_score"
    again = evaluate(pos, out.state, D("100.2"), market(sigma=0.015, ts_strength=0.3, flipped=True), now, PARAMS)
    assert again.plans == []


def test_a_regime_against_the_position_since_entry_has_not_turned() -> None:
    """Opened with the trend already lost: the flip neither counts nor is reported (score 0.5, k_regime_flip
    0); once a trend has been seen, losing it again counts: 0.731 ≥ 0.70 closes."""
    pos = position()
    chop = evaluate(pos, None, D("100.2"), market(flipped=True), T0, PARAMS)
    assert chop.plans == [] and chop.kill is not None
    assert (chop.kill.score, chop.kill.k_regime_flip, chop.state.regime_armed) == (0.5, 0.0, False)

    trend = evaluate(pos, chop.state, D("100.2"), market(), T0, PARAMS)
    assert trend.plans == [] and trend.state.regime_armed

    lost = evaluate(pos, trend.state, D("100.2"), market(flipped=True), T0, PARAMS)
    [plan] = lost.plans
    assert (plan.reason, plan.k_regime_flip, plan.kill_score) == (ExitReason.KILL_SCORE, 1.0,
                                                                  pytest.approx(1 / (1 + math.exp(-1))))


def test_the_threshold_is_the_configured_one() -> None:
    """The same 0.8176 does not close under a threshold of 0.82."""
    params = ExitParams(kill=KillScoreParams(threshold=0.82))
    pos = position()
    entry = evaluate(pos, None, D("100.2"), market(), T0, params).state

    out = evaluate(pos, entry, D("100.2"), market(sigma=0.015, ts_strength=0.3, flipped=True), T0 + 12 * HOUR_MS,
                   params)

    assert out.plans == [] and out.kill is not None and not out.kill.close


def test_no_kill_score_before_a_market_state_is_seen() -> None:
    """Without a market state there is no score (and no plan); the first one seen becomes the entry's."""
    pos = position()
    blind = evaluate(pos, None, D("100.2"), None, T0, PARAMS)
    assert blind.kill is None and blind.state.sigma_at_entry is None

    seen = evaluate(pos, blind.state, D("100.2"), market(sigma=0.02, ts_strength=0.1), T0 + HOUR_MS, PARAMS)

    assert (seen.state.sigma_at_entry, seen.state.ts_strength_at_entry) == (0.02, 0.1)
    assert seen.kill is not None and seen.kill.k_sigma_spike == 0.0


# --- the take-profit ladder belongs to harvest_proposal ------------------------------------------------


@pytest.mark.parametrize("side", [LONG, SHORT])
def test_marks_through_tp1_tp2_tp3_give_no_harvest(side: PositionSide) -> None:
    """exitbrain does not walk the ladder: marks at and past TP1, TP2 and TP3 give no PARTIAL_CLOSE, leave
    the stage at 0 with nothing proposed, and the stop where it was (no break-even without TP1's proposal).
    The TP1 proposal that follows is then still turned into its harvest."""
    pos = position(side)
    prices, _ = position_levels(pos, start(pos, None, PARAMS, T0), PARAMS)
    beyond = prices.tp3 + (prices.tp3 - pos.entry_price)

    state, steps = walk(pos, [prices.tp1, prices.tp2, prices.tp3, beyond])

    assert steps == [[], [], [], []]
    assert (state.stage, state.proposed, state.ladder_stop) == (0, frozenset(), pos.stop_loss)
    out = on_proposal(proposal(HarvestStage.TP1, str(prices.tp1)), pos, state, None, T0, PARAMS)
    assert actions(out.plans)[0] == (Action.PARTIAL_CLOSE_PROPOSED, ExitReason.HARVEST_TP1)


@pytest.mark.parametrize(("side", "breakeven"), [(LONG, "100.1"), (SHORT, "99.9")])
def test_proposals_tp1_tp2_tp3_leave_exactly_the_split(side: PositionSide, breakeven: str) -> None:
    """10× (split 0.3/0.3/0.4): the TP1 proposal closes 30 % and moves the stop to break-even (entry ± 2
    fees), TP2 3/7 of the rest, TP3 all of it: 10 units leave as 3, 3 and 4, one harvest per stage with
    the DESIGN §4 ids; at TP3 the trailing stop (0.8 % from TP3) is asked for as well."""
    pos = position(side)
    prices, split = position_levels(pos, start(pos, None, PARAMS, T0), PARAMS)
    assert split == (0.3, 0.3, 0.4)

    state, steps = through(pos, 3)

    harvest1, stop1 = steps[0]
    assert (harvest1.action, harvest1.reason, harvest1.close_pct) == (Action.PARTIAL_CLOSE_PROPOSED,
                                                                      ExitReason.HARVEST_TP1, 30.0)
    assert (stop1.action, stop1.reason, stop1.new_stop_loss) == (Action.UPDATE_STOP, ExitReason.BREAKEVEN, D(breakeven))
    [harvest2] = steps[1]
    harvest3, stop3 = steps[2]
    assert (harvest2.reason, harvest3.reason) == (ExitReason.HARVEST_TP2, ExitReason.HARVEST_TP3)
    trail = prices.tp3 * (1 - side.sign * D("0.008"))
    assert (stop3.action, stop3.reason, stop3.new_stop_loss) == (Action.UPDATE_STOP, ExitReason.TRAILING_STOP,
                                                                 Decimal(stop_text(trail)))
    open_qty, closed = 10.0, []
    for plan in (harvest1, harvest2, harvest3):
        closed.append(open_qty * plan.close_pct / 100)
        open_qty -= closed[-1]
    assert closed == pytest.approx([3.0, 3.0, 4.0], abs=1e-9)
    assert [p.plan_id for p in (harvest1, harvest2, harvest3)] == [
        hex16(f"{PLAN}|harvest_tp{n}|{n}") for n in (1, 2, 3)]
    assert state.stage == 3 and state.proposed == frozenset({"TP1", "TP2", "TP3"})
    assert state.tp3_proposed_at == T0


def test_a_repeated_proposal_gives_one_plan_per_stage() -> None:
    """TP1 proposed three times: the first becomes the TP1 harvest (30 %) and the break-even stop, with the
    proposal's trace id; the repeats are ignored as stage_done, and so is a TP1 proposal after TP2."""
    pos = position()
    prices, _ = position_levels(pos, start(pos, None, PARAMS, T0), PARAMS)
    tp1 = proposal(HarvestStage.TP1, str(prices.tp1))

    first = on_proposal(tp1, pos, None, None, T0, PARAMS)
    [harvest, stop] = first.plans
    assert (harvest.reason, harvest.close_pct, harvest.trace_id) == (ExitReason.HARVEST_TP1, 30.0, tp1.trace_id)
    assert harvest.plan_id == plans.exit_plan_id(PLAN, ExitReason.HARVEST_TP1, 1)
    assert (stop.reason, stop.new_stop_loss) == (ExitReason.BREAKEVEN, D("100.1"))
    state = first.state
    for _ in range(2):
        again = on_proposal(tp1, pos, state, None, T0, PARAMS)
        assert (again.plans, again.ignored) == ([], "stage_done")
    after_tp2, _ = through(pos, 2)
    assert on_proposal(tp1, pos, after_tp2, None, T0, PARAMS).ignored == "stage_done"


def test_a_proposal_past_a_stage_harvests_each_missing_stage_in_order() -> None:
    """A TP2 proposal at stage 0: TP1 (30 %) then TP2 (3/7 of the rest), stage 2."""
    pos = position()
    prices, _ = position_levels(pos, start(pos, None, PARAMS, T0), PARAMS)

    out = on_proposal(proposal(HarvestStage.TP2, str(prices.tp2)), pos, None, None, T0, PARAMS)

    harvests = [p for p in out.plans if p.action is Action.PARTIAL_CLOSE_PROPOSED]
    assert [(p.reason, p.close_pct) for p in harvests] == [(ExitReason.HARVEST_TP1, 30.0),
                                                           (ExitReason.HARVEST_TP2, pytest.approx(300 / 7))]
    assert out.state.stage == 2 and out.state.proposed == frozenset({"TP1", "TP2"})


@pytest.mark.parametrize(
    ("case", "reason"),
    [("other_position", "not_the_current_position"), ("no_position", "no_position"),
     ("trail_stage", "stop_stage"), ("closing", "closing")],
)
def test_proposals_that_are_ignored_say_why(case: str, reason: str) -> None:
    """A proposal for another entry plan, for no position, a stop-only stage, or a position being closed
    gives no plan and names the reason."""
    pos = position()
    prop = proposal(HarvestStage.TP1, "100.5")
    state = None
    if case == "other_position":
        prop = proposal(HarvestStage.TP1, "100.5", plan_id="bbbbbbbbbbbbbbbb")
    elif case == "trail_stage":
        prop = proposal(HarvestStage.TRAIL, "100.5", close_pct=0.0)
    elif case == "closing":
        state = evaluate(pos, None, D("99.5"), None, T0, PARAMS).state
        assert state.closing == "stop_loss"

    out = on_proposal(prop, None if case == "no_position" else pos, state, None, T0, PARAMS)

    assert (out.plans, out.ignored) == ([], reason)


# --- the stop: leverage-aware, break-even, trailing -----------------------------------------------------


def test_the_leverage_aware_stop_tightens_the_position_stop() -> None:
    """A 3 % stop at 10× clamps to the 2 % SL: one UPDATE_STOP stop_loss to 98 (long) / 102 (short); the
    next mark proposes nothing more."""
    for side, stop, tp, expected in ((LONG, "97", "104", D("98")), (SHORT, "103", "96", D("102"))):
        pos = position(side, stop=stop, tp=tp)
        state, steps = walk(pos, [D("100"), D("100")])
        [plan] = steps[0]
        assert (plan.action, plan.reason, plan.new_stop_loss) == (Action.UPDATE_STOP, ExitReason.STOP_LOSS, expected)
        assert plan.plan_id == hex16(f"{PLAN}|UPDATE_STOP|{expected}")
        assert steps[1] == [] and state.stop_loss == expected


def test_a_position_stop_tighter_than_the_adaptive_one_is_kept() -> None:
    """Stop 99.5 is tighter than the adaptive 99.22: no UPDATE_STOP, and 99.5 is the stop in force."""
    state, steps = walk(position(), [D("100")])

    assert steps == [[]] and state.ladder_stop == D("99.5")
    _, hit = walk(position(), [D("99.5")], state)
    assert [(p.action, p.reason) for p in hit[0]] == [(Action.FULL_CLOSE_PROPOSED, ExitReason.STOP_LOSS)]


@pytest.mark.parametrize(("side", "breakeven", "inside"), [(LONG, "100.1", "100.11"), (SHORT, "99.9", "99.89")])
def test_after_tp1_the_break_even_stop_closes_with_reason_breakeven(side: PositionSide, breakeven: str,
                                                                    inside: str) -> None:
    """After TP1 the stop in force is break-even (the trail from TP1 is looser): a mark just inside it
    holds, one at it closes in full with reason breakeven (as apply_layer books the exchange stop's fill),
    plan id sha256(position_plan_id|breakeven|1)."""
    pos = position(side)
    state, _ = through(pos, 1)
    assert state.ladder_stop == D(breakeven)

    held, _ = walk(pos, [D(inside)], state)
    _, hit = walk(pos, [D(breakeven)], held)

    [close] = hit[0]
    assert (close.action, close.reason, close.plan_id) == (Action.FULL_CLOSE_PROPOSED, ExitReason.BREAKEVEN,
                                                           hex16(f"{PLAN}|breakeven|1"))


def test_a_rounded_stop_keeps_the_reason_it_was_placed_for() -> None:
    """After TP1 the position's own stop (100.2, rounded up by the exchange's tick, recorded as breakeven)
    is tighter than the software break-even 100.1: crossing it closes with reason breakeven, not
    trailing_stop."""
    state, _ = through(position(), 1)
    rounded = position(stop="100.2").with_changes(stop_reason="breakeven")

    _, hit = walk(rounded, [D("100.15")], state)

    assert actions(hit[0]) == [(Action.FULL_CLOSE_PROPOSED, ExitReason.BREAKEVEN)]


@pytest.mark.parametrize(
    ("side", "stop", "tp", "path", "peak", "sign"),
    [
        (LONG, "99", "101.12", ["100.5", "TP1", "101.25", "100.8", "100.45"], "101.25", -1),
        (SHORT, "101", "98.88", ["99.5", "TP1", "98.75", "99.2", "99.53"], "98.75", 1),
    ],
)
def test_trailing_up_then_down_triggers_at_exactly_the_callback_from_the_peak(
    side: PositionSide, stop: str, tp: str, path: list[str], peak: str, sign: int
) -> None:
    """Past TP1 (its proposal; TP2 not reached) the stop trails the best price at 0.8 %: the peak 101.25
    puts it at 101.25·0.992 = 100.44 (UPDATE_STOP trailing_stop); on the way down 100.45 holds and 100.44
    closes in full with reason trailing_stop (mirrored for a short: 98.75·1.008 = 99.54)."""
    pos = position(side, stop=stop, tp=tp)
    prices, _ = position_levels(pos, start(pos, None, PARAMS, T0), PARAMS)
    assert min(prices.tp1, prices.tp2) < D(peak) < max(prices.tp1, prices.tp2)  # past TP1, short of TP2
    expected = D(peak) * (1 + sign * D("0.008"))
    state: ExitState | None = None
    steps: list[list[ApplyPlan]] = []
    for step in path:
        if step == "TP1":
            out = on_proposal(proposal(HarvestStage.TP1, str(prices.tp1)), pos, state, None, T0, PARAMS)
        else:
            out = evaluate(pos, state, D(step), None, T0, PARAMS)
        state = out.state
        steps.append(out.plans)

    assert [p.reason for p in steps[1]] == [ExitReason.HARVEST_TP1, ExitReason.TRAILING_STOP]
    [trail] = steps[2]
    assert (trail.action, trail.reason, trail.new_stop_loss) == (Action.UPDATE_STOP, ExitReason.TRAILING_STOP,
                                                                  expected)
    assert steps[3] == [] and steps[4] == []
    assert state is not None
    _, hit = walk(pos, [expected], state)
    [close] = hit[0]
    assert (close.action, close.reason, close.plan_id) == (Action.FULL_CLOSE_PROPOSED, ExitReason.TRAILING_STOP,
                                                           hex16(f"{PLAN}|trailing_stop|1"))


def test_no_trailing_before_tp1() -> None:
    """Before TP1 the leverage-aware stop holds: a new best price (even past TP1, its proposal not in)
    moves no stop."""
    pos = position(stop="99", tp="101.12")

    state, steps = walk(pos, [D("101.25"), D("101.5")])

    assert steps == [[], []] and state.ladder_stop == D("99") and state.peak_price == D("101.5")


def test_a_small_trail_move_proposes_nothing() -> None:
    """Past TP1 at 101.25 (stop 100.44), a new best of 101.3 would trail to 100.4896: 0.0496 is under
    0.1 % of 100.44, so no UPDATE_STOP; 101.4 trails to 100.5888 (+0.1488): UPDATE_STOP."""
    pos = position(stop="99", tp="101.12")
    state, _ = through(pos, 1)
    state, _ = walk(pos, [D("101.25")], state)
    assert state.stop_loss == D("100.44")

    _, steps = walk(pos, [D("101.3"), D("101.4")], state)

    assert steps[0] == []
    [plan] = steps[1]
    assert plan.new_stop_loss == D("100.5888")


@settings(max_examples=60, deadline=None)
@given(moves=st.lists(st.integers(min_value=-60, max_value=60), min_size=1, max_size=50), short=st.booleans())
def test_the_stop_only_ever_tightens(moves: list[int], short: bool) -> None:
    """On any path of marks (with harvest_proposal's proposal of each stage the mark reaches) every
    UPDATE_STOP is tighter than the stop before it and the stop asked for never loosens (long: up,
    short: down)."""
    side = SHORT if short else LONG
    pos = position(side, stop="101" if short else "99", tp="98.88" if short else "101.12")
    prices, _ = position_levels(pos, start(pos, None, PARAMS, T0), PARAMS)
    state: ExitState | None = None
    mark, held = D("100"), pos.stop_loss
    assert held is not None
    for move in moves:
        mark = max(mark + D(move) / 100, D("1"))
        outs = [evaluate(pos, state, mark, None, T0, PARAMS)]
        reached = [n for n in (1, 2, 3) if (mark - prices.tp(n)) * side.sign >= 0]
        if reached and not outs[0].state.closing:
            outs.append(on_proposal(proposal(STAGES[max(reached)], str(mark)), pos, outs[0].state, None, T0,
                                    PARAMS))
        for out in outs:
            for plan in out.plans:
                if plan.action is Action.UPDATE_STOP:
                    assert plan.new_stop_loss is not None
                    assert (plan.new_stop_loss - held) * side.sign > 0
                    held = plan.new_stop_loss
        state = outs[-1].state
        assert state.stop_loss == held
        if state.closing:
            break


# --- fault 7: a position still open after TP3 is managed like any other --------------------------------


def test_a_position_still_open_after_tp3_keeps_every_risk_exit() -> None:
    """Regression for fault 7 (exitbrain returned no plan once stage 3 was reached, so a position whose
    TP3 close failed or was partial was abandoned). TP1..TP3 proposed, the position still open: a new best
    price trails the stop (UPDATE_STOP trailing_stop); a mark through the stop in force closes in full
    (trailing_stop, stage 3); a kill score over the threshold closes in full (kill_score with its
    components); and with nothing else, close_retry_ms after TP3 a FULL_CLOSE harvest_tp3 appears under
    an id other than the TP3 harvest's, again under a new id after another close_retry_ms."""
    pos = position(created_at=T0 - 12 * HOUR_MS)
    prices, _ = position_levels(pos, start(pos, None, PARAMS, T0), PARAMS)
    entry = evaluate(pos, None, D("100.2"), market(), T0 - 12 * HOUR_MS, PARAMS).state
    stage3, steps = through(pos, 3, entry, mkt=market())
    assert stage3.stage == 3
    harvest3 = steps[2][0]
    stop_in_force = prices.tp3 * D("0.992")
    assert stage3.ladder_stop == stop_in_force

    # the trailing stop follows a new best price
    trailed = evaluate(pos, stage3, D("101.5"), market(), T0 + 1_000, PARAMS)
    [update] = trailed.plans
    assert (update.action, update.reason, update.new_stop_loss) == (Action.UPDATE_STOP, ExitReason.TRAILING_STOP,
                                                                    D("100.688"))

    # the stop in force crossed
    hit = evaluate(pos, stage3, stop_in_force, market(), T0 + 1_000, PARAMS)
    [close] = hit.plans
    assert (close.action, close.reason, close.close_pct) == (Action.FULL_CLOSE_PROPOSED, ExitReason.TRAILING_STOP,
                                                             100.0)
    assert close.plan_id == hex16(f"{PLAN}|trailing_stop|3") and hit.state.closing == "trailing_stop"

    # the kill score over the threshold
    killed = evaluate(pos, stage3, prices.tp3, market(sigma=0.015, ts_strength=0.3, flipped=True), T0 + 1_000,
                      PARAMS)
    [kill] = killed.plans
    assert (kill.action, kill.reason) == (Action.FULL_CLOSE_PROPOSED, ExitReason.KILL_SCORE)
    assert kill.kill_score == pytest.approx(0.8175744762) and kill.k_regime_flip == 1.0

    # the TP3 harvest did not close the position: it is closed in full, retried until it is
    waiting = evaluate(pos, stage3, prices.tp3, market(), T0 + 119_999, PARAMS)
    assert waiting.plans == []
    retry = evaluate(pos, waiting.state, prices.tp3, market(), T0 + 120_000, PARAMS)
    [first] = retry.plans
    assert (first.action, first.reason, first.close_pct) == (Action.FULL_CLOSE_PROPOSED, ExitReason.HARVEST_TP3,
                                                             100.0)
    assert first.plan_id == plans.exit_plan_id(PLAN, ExitReason.HARVEST_TP3, 3, 1) != harvest3.plan_id
    in_flight = evaluate(pos, retry.state, prices.tp3, market(), T0 + 200_000, PARAMS)
    assert in_flight.plans == []
    again = evaluate(pos, in_flight.state, prices.tp3, market(), T0 + 240_000, PARAMS)
    [second] = again.plans
    assert second.reason is ExitReason.HARVEST_TP3
    assert second.plan_id == plans.exit_plan_id(PLAN, ExitReason.HARVEST_TP3, 3, 2) not in (first.plan_id,
                                                                                           harvest3.plan_id)


def test_a_stop_crossed_during_the_tp3_harvest_is_retried_under_its_own_reason() -> None:
    """At stage 3 the stop is crossed (FULL_CLOSE trailing_stop) while the TP3 harvest is still out: the
    full close in flight holds the TP3 retry back, and is itself proposed again close_retry_ms later."""
    pos = position()
    stage3, _ = through(pos, 3)
    hit = evaluate(pos, stage3, stage3.ladder_stop, None, T0 + 1_000, PARAMS)
    assert actions(hit.plans) == [(Action.FULL_CLOSE_PROPOSED, ExitReason.TRAILING_STOP)]

    held = evaluate(pos, hit.state, stage3.ladder_stop, None, T0 + 120_000, PARAMS)
    retry = evaluate(pos, held.state, stage3.ladder_stop, None, T0 + 121_000, PARAMS)

    assert held.plans == []
    [plan] = retry.plans
    assert (plan.reason, plan.plan_id) == (ExitReason.TRAILING_STOP,
                                           plans.exit_plan_id(PLAN, ExitReason.TRAILING_STOP, 3, 1))


# --- time exit ------------------------------------------------------------------------------------------


def test_a_position_held_max_hold_is_closed_by_time() -> None:
    """max_hold 1 h: at 59 min 59.999 s nothing; at 1 h one FULL_CLOSE time_exit, sha256(position_plan_id|
    time_exit|0); also after TP3 (stage 3)."""
    params = ExitParams(max_hold_ms=HOUR_MS)
    pos = position()

    young = evaluate(pos, None, D("100.2"), None, T0 + HOUR_MS - 1, params)
    old = evaluate(pos, young.state, D("100.2"), None, T0 + HOUR_MS, params)

    assert young.plans == []
    [plan] = old.plans
    assert (plan.action, plan.reason, plan.plan_id) == (Action.FULL_CLOSE_PROPOSED, ExitReason.TIME_EXIT,
                                                        hex16(f"{PLAN}|time_exit|0"))
    stage3, _ = through(pos, 3)
    late = evaluate(pos, stage3, stage3.peak_price, None, T0 + HOUR_MS, params)
    assert actions(late.plans) == [(Action.FULL_CLOSE_PROPOSED, ExitReason.TIME_EXIT)]


def test_no_time_exit_when_max_hold_is_zero() -> None:
    """max_hold 0 (the default): a position 30 days old is not closed by time."""
    assert PARAMS.max_hold_ms == 0
    pos = position()

    out = evaluate(pos, None, D("100.2"), None, T0 + 30 * 24 * HOUR_MS, PARAMS)

    assert out.plans == [] and not out.state.closing


# --- ids, fresh state, PnL ----------------------------------------------------------------------------


def test_plan_ids_are_deterministic() -> None:
    """The same decisions from two independent evaluations are the same plans; ids follow DESIGN §4 and a
    stop's id does not depend on how its price is written."""
    pos = position(stop="97", tp="104")
    a = evaluate(pos, None, D("100"), None, T0, PARAMS).plans
    b = evaluate(pos, None, D("100"), None, T0 + 999, PARAMS).plans

    assert [p.plan_id for p in a] == [p.plan_id for p in b] == [hex16(f"{PLAN}|UPDATE_STOP|98")]
    assert plans.stop_plan_id(PLAN, D("100.10")) == plans.stop_plan_id(PLAN, D("100.1")) == hex16(
        f"{PLAN}|UPDATE_STOP|100.1")
    assert plans.exit_plan_id(PLAN, ExitReason.KILL_SCORE, 2) == hex16(f"{PLAN}|kill_score|2")


def test_a_new_entry_plan_starts_the_exit_state_afresh() -> None:
    """A state left by the previous position (stage 2, closing) is replaced for a position of another entry
    plan: stage 0, nothing proposed, best price its entry."""
    old = position()
    state, _ = through(old, 2)
    state, _ = walk(old, [D("99")], state)
    assert state.stage == 2 and state.closing

    new = position(plan_id="cccccccccccccccc", entry="101")
    out = evaluate(new, state, D("101"), None, T0, PARAMS)

    assert (out.state.position_plan_id, out.state.stage, out.state.proposed, out.state.closing) == (
        "cccccccccccccccc", 0, frozenset(), "")
    assert out.state.peak_price == D("101")


@pytest.mark.parametrize(("side", "stop", "mark"), [(LONG, "99", "101.5"), (SHORT, "101", "98.5")])
def test_pnl_reports_unrealized_and_r_multiple(side: PositionSide, stop: str, mark: str) -> None:
    """10 units, 1 % initial risk per unit (1.0): a 1.5 move in favour is 15 unrealized and 1.5 R."""
    pos = position(side, stop=stop, tp="102" if side is LONG else "98")
    state = start(pos, None, PARAMS, T0)

    entry = pnl(pos, state, D(mark), None, T0)

    assert (entry.unrealized_pnl, entry.r_multiple, entry.kill_score) == (D("15.0"), pytest.approx(1.5), 0.0)
    assert (entry.symbol, entry.position_plan_id, entry.mark_price) == ("BTCUSDT", PLAN, D(mark))


def test_pnl_is_throttled_per_symbol() -> None:
    """One entry per symbol per interval: due at first, not 4.999 s later, due again at 5 s."""
    throttle = PnlThrottle(5000)
    assert throttle.due("BTCUSDT", T0)
    throttle.mark("BTCUSDT", T0)
    assert not throttle.due("BTCUSDT", T0 + 4999) and throttle.due("ETHUSDT", T0 + 4999)
    assert throttle.due("BTCUSDT", T0 + 5000)


def test_a_full_close_that_did_not_happen_is_proposed_again() -> None:
    """A stop crossed gives one FULL_CLOSE; while it is in flight nothing more is proposed; if the position
    is still there after close_retry_ms the close is proposed again under a new attempt id (an exit is
    never dropped because its first plan failed)."""
    params = ExitParams(close_retry_ms=120_000)
    pos = position()
    state, _ = walk(pos, [D("100")])
    first = evaluate(pos, state, D("99.4"), None, T0 + 1_000, params)
    assert [p.action for p in first.plans] == [Action.FULL_CLOSE_PROPOSED]
    waiting = evaluate(pos, first.state, D("99.4"), None, T0 + 60_000, params)
    assert waiting.plans == []
    again = evaluate(pos, waiting.state, D("99.4"), None, T0 + 122_000, params)
    [retry] = again.plans
    assert retry.reason is ExitReason.STOP_LOSS and retry.plan_id != first.plans[0].plan_id
    assert retry.plan_id == plans.exit_plan_id(PLAN, ExitReason.STOP_LOSS, 0, 1)
    assert again.state.close_attempts == 2
