"""harvest_proposal's pure ladder walk: one proposal per stage reached, with its numbers."""

from __future__ import annotations

import pytest

from common.contracts import HarvestProposal, HarvestStage, PositionSide, decode, encode
from common.exit_levels import LadderParams, base_fractions, levels_of
from services.harvest_proposal.propose import Ladder, propose
from tests.unit.exitbrain.builders import PLAN, T0, D, position

PARAMS = LadderParams()


def walk(pos: object, marks: list[D], ladder: Ladder | None = None) -> tuple[Ladder, list[list[HarvestProposal]]]:
    from common.positions import PositionRecord

    assert isinstance(pos, PositionRecord)
    steps = []
    for mark in marks:
        ladder, out = propose(pos, ladder, mark, T0, PARAMS)
        steps.append(out)
    assert ladder is not None
    return ladder, steps


@pytest.mark.parametrize(("side", "breakeven"), [(PositionSide.LONG, "100.1"), (PositionSide.SHORT, "99.9")])
def test_each_stage_reached_is_proposed_once_with_its_numbers(side: PositionSide, breakeven: str) -> None:
    """TP1, TP2, TP3 each give one proposal, in order: trigger price the level, close 30 %, 3/7 and 100 %
    of what is open, the stop after TP1 at break-even, the R multiple at the mark (0.5 % initial risk); a
    mark short of TP1, a repeated mark, and a stage reached again after a dip propose nothing."""
    pos = position(side)
    base_sl, base_tp = base_fractions(pos, PARAMS)
    prices, _ = levels_of(pos, base_sl, base_tp, PARAMS)

    below = pos.entry_price + (prices.tp1 - pos.entry_price) / 2
    _, steps = walk(pos, [below, prices.tp1, prices.tp1, below, prices.tp2, prices.tp3, prices.tp3,
                          prices.tp1, prices.tp3])

    assert steps[0] == [] and all(step == [] for step in (steps[2], steps[3], steps[6], steps[7], steps[8]))
    [tp1], [tp2], [tp3] = steps[1], steps[4], steps[5]
    assert [p.stage for p in (tp1, tp2, tp3)] == [HarvestStage.TP1, HarvestStage.TP2, HarvestStage.TP3]
    assert [p.trigger_price for p in (tp1, tp2, tp3)] == [prices.tp1, prices.tp2, prices.tp3]
    assert [p.close_pct for p in (tp1, tp2, tp3)] == pytest.approx([30.0, 300 / 7, 100.0])
    assert tp1.new_stop_loss == D(breakeven)
    assert tp1.r_multiple == pytest.approx(float(abs(prices.tp1 - 100)) / 0.5)
    assert (tp1.position_plan_id, tp1.symbol, tp1.source) == (PLAN, "BTCUSDT", "harvest_proposal")
    assert decode(HarvestProposal, encode(tp1)) == tp1


@pytest.mark.parametrize(("leverage", "split", "pcts"), [
    (10, (0.3, 0.3, 0.4), [30.0, 300 / 7, 100.0]),
    (20, (0.4, 0.4, 0.2), [40.0, 200 / 3, 100.0]),
    (50, (0.5, 0.3, 0.2), [50.0, 60.0, 100.0]),
])
@pytest.mark.parametrize("side", [PositionSide.LONG, PositionSide.SHORT])
def test_a_mark_past_tp3_proposes_every_stage_in_order_with_the_split(
        side: PositionSide, leverage: int, split: tuple[float, float, float], pcts: list[float]) -> None:
    """A mark that jumps past TP3 gives TP1, TP2 and TP3 in that order at once, each closing the share of
    what is open that keeps the leverage's split of the original (the last 100 %): 10 units leave as the
    split says; later marks propose nothing more."""
    pos = position(side, leverage=leverage)
    base_sl, base_tp = base_fractions(pos, PARAMS)
    prices, levels_split = levels_of(pos, base_sl, base_tp, PARAMS)
    assert levels_split == split
    beyond = prices.tp3 + (prices.tp3 - pos.entry_price)

    ladder, steps = walk(pos, [beyond, beyond, prices.tp3])

    assert [p.stage for p in steps[0]] == [HarvestStage.TP1, HarvestStage.TP2, HarvestStage.TP3]
    assert [p.close_pct for p in steps[0]] == pytest.approx(pcts)
    assert [p.trigger_price for p in steps[0]] == [prices.tp1, prices.tp2, prices.tp3]
    open_qty, closed = 10.0, []
    for p in steps[0]:
        closed.append(open_qty * p.close_pct / 100)
        open_qty -= closed[-1]
    assert closed == pytest.approx([10 * share for share in split], abs=1e-9)
    assert steps[1] == steps[2] == [] and ladder.state.stage == 3


def test_a_mark_through_the_stop_proposes_nothing() -> None:
    """A stop is exitbrain's to act on: a mark below the ladder's stop gives no proposal and leaves the
    ladder at stage 0; TP1 reached afterwards is still proposed."""
    pos = position()
    base_sl, base_tp = base_fractions(pos, PARAMS)
    prices, _ = levels_of(pos, base_sl, base_tp, PARAMS)

    ladder, steps = walk(pos, [prices.sl - 1, prices.tp1])

    assert steps[0] == [] and [p.stage for p in steps[1]] == [HarvestStage.TP1] and ladder.state.stage == 1


def test_a_restart_proposes_again_with_the_same_trace() -> None:
    """Without its ladder (a restart) the stage is proposed again, with the same deterministic trace id:
    proposals, not orders — exitbrain keeps one plan per stage."""
    pos = position()
    base_sl, base_tp = base_fractions(pos, PARAMS)
    prices, _ = levels_of(pos, base_sl, base_tp, PARAMS)

    _, first = walk(pos, [prices.tp1])
    _, again = walk(pos, [prices.tp1])

    assert [p.stage for p in again[0]] == [HarvestStage.TP1]
    assert again[0][0].trace_id == first[0][0].trace_id


def test_a_new_entry_plan_restarts_the_ladder() -> None:
    """A ladder at stage 3 of one position does not hold back the next position of the symbol."""
    old = position()
    base_sl, base_tp = base_fractions(old, PARAMS)
    prices, _ = levels_of(old, base_sl, base_tp, PARAMS)
    ladder, _ = walk(old, [prices.tp3])
    assert ladder.state.stage == 3

    _, steps = walk(position(plan_id="cccccccccccccccc"), [prices.tp1], ladder)

    assert [(p.stage, p.position_plan_id) for p in steps[0]] == [(HarvestStage.TP1, "cccccccccccccccc")]


def test_a_stop_moved_past_entry_falls_back_to_the_default_risk() -> None:
    """A long whose stop already sits above entry (break-even) has no usable stop distance: base_sl is the
    trading mathematician's 3 %; the target still comes from its take-profit."""
    base_sl, base_tp = base_fractions(position(stop="100.1", tp="104"), PARAMS)

    assert (base_sl, base_tp) == (0.03, pytest.approx(0.04))
