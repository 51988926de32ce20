"""Adaptive levels and the exit ladder (DESIGN §7)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.contracts.enums import PositionSide
from common.maths.levels import (
    ExitLadderState,
    Harvest,
    LevelParams,
    LevelPrices,
    Levels,
    MoveStop,
    StopHit,
    adaptive_levels,
    advance,
    breakeven_price,
    close_pct_of_current,
    level_prices,
    start_ladder,
    stop_moved_enough,
    tighten,
    trailing_stop,
)

LONG, SHORT = PositionSide.LONG, PositionSide.SHORT
D = Decimal

# base_sl 1 %, base_tp 1.33 %. LSF = 1/(1 + ln(lev+1)):
#   lev 1: 1/(1 + 0.693147) = 0.590616    lev 5: 1/(1 + 1.791759) = 0.358197
#   lev 10: 1/(1 + 2.397895) = 0.294300   lev 20: 1/(1 + 3.044522) = 0.247248
#   lev 50: 1/(1 + 3.931826) = 0.202765
# lev 1: TP1 0.0133·1.190616 = 0.0158352, TP2 0.0133·1.495308 = 0.0198876,
#        TP3 0.0133·1.947654 = 0.0259038, SL 0.01·(1 + 0.8·0.409384) = 0.0132751
LEVEL_TABLE = [
    (1, 0.590616, 0.0158352, 0.0198876, 0.0259038, 0.0132751, (0.3, 0.3, 0.4)),
    (5, 0.358197, 0.0127440, 0.0183420, 0.0251310, 0.0151344, (0.3, 0.3, 0.4)),
    (10, 0.294300, 0.0118942, 0.0179171, 0.0249185, 0.0156456, (0.3, 0.3, 0.4)),
    (20, 0.247248, 0.0112684, 0.0176042, 0.0247621, 0.0160220, (0.4, 0.4, 0.2)),
    (50, 0.202765, 0.0106768, 0.0173084, 0.0246142, 0.0163779, (0.5, 0.3, 0.2)),
]


@pytest.mark.parametrize(("lev", "lsf", "tp1", "tp2", "tp3", "sl", "split"), LEVEL_TABLE)
def test_levels_follow_the_leverage_formulas(
    lev: int, lsf: float, tp1: float, tp2: float, tp3: float, sl: float, split: tuple[float, float, float]
) -> None:
    """TP1..TP3 and SL from LSF, and the split by leverage band, for 1×, 5×, 10×, 20×, 50×."""
    levels = adaptive_levels(lev, base_sl=0.01, base_tp=0.0133)

    assert levels.lsf == pytest.approx(lsf, abs=1e-6)
    assert (levels.tp1, levels.tp2, levels.tp3) == pytest.approx((tp1, tp2, tp3), abs=1e-7)
    assert levels.sl == pytest.approx(sl, abs=1e-7)
    assert levels.split == split


@pytest.mark.parametrize("lev", [1, 5, 10, 20, 50])
def test_the_sizing_stop_of_three_percent_clamps_to_two(lev: int) -> None:
    """base_sl 3 % only grows under the formula (factor ≥ 1), so the SL clamps to 2 % at every leverage."""
    assert adaptive_levels(lev, base_sl=0.03, base_tp=0.0399).sl == 0.02


def test_small_bases_clamp_to_the_minimums() -> None:
    """base_tp 0.1 % at 1×: TP1 0.00119, TP2 0.00150, TP3 0.00195 all rise to 0.3 %;
    base_sl 0.05 %: 0.0005·1.327507 = 0.00066 rises to 0.1 %."""
    levels = adaptive_levels(1, base_sl=0.0005, base_tp=0.001)

    assert (levels.tp1, levels.tp2, levels.tp3, levels.sl) == (0.003, 0.003, 0.003, 0.001)


def test_split_bands_end_at_10_and_30() -> None:
    """10× is still the low band, 11× the middle, 30× the middle, 31× the high."""
    assert adaptive_levels(10, 0.01, 0.01).split == (0.3, 0.3, 0.4)
    assert adaptive_levels(11, 0.01, 0.01).split == (0.4, 0.4, 0.2)
    assert adaptive_levels(30, 0.01, 0.01).split == (0.4, 0.4, 0.2)
    assert adaptive_levels(31, 0.01, 0.01).split == (0.5, 0.3, 0.2)


def test_level_prices_sit_on_each_side_of_the_entry() -> None:
    """Long at 200 with TP 1 %/2 %/3 % and SL 0.5 %: 202, 204, 206 and 199; a short mirrors them."""
    levels = Levels(lsf=0.3, tp1=0.01, tp2=0.02, tp3=0.03, sl=0.005, split=(0.3, 0.3, 0.4))

    long_prices = level_prices(LONG, D("200"), levels)
    short_prices = level_prices(SHORT, D("200"), levels)

    assert long_prices == LevelPrices(tp1=D("202"), tp2=D("204"), tp3=D("206"), sl=D("199"))
    assert short_prices == LevelPrices(tp1=D("198"), tp2=D("196"), tp3=D("194"), sl=D("201"))


@pytest.mark.parametrize(
    ("split", "pcts"),
    [
        ((0.3, 0.3, 0.4), (30.0, 42.857142857, 100.0)),  # 0.3/1, 0.3/0.7, all
        ((0.4, 0.4, 0.2), (40.0, 66.666666667, 100.0)),  # 0.4/1, 0.4/0.6
        ((0.5, 0.3, 0.2), (50.0, 60.0, 100.0)),  # 0.5/1, 0.3/0.5
    ],
)
def test_close_pct_of_current_reproduces_the_original_split(
    split: tuple[float, float, float], pcts: tuple[float, float, float]
) -> None:
    """Each stage closes the share of what is left that makes the stages close the original split."""
    assert [close_pct_of_current(i, split) for i in (1, 2, 3)] == pytest.approx(list(pcts))


def test_close_pct_of_current_rejects_unknown_stages() -> None:
    """There are three stages."""
    with pytest.raises(ValueError):
        close_pct_of_current(4, (0.3, 0.3, 0.4))


def test_breakeven_covers_both_fees() -> None:
    """Entry 100, fee 0.05 %: a long breaks even at 100.1, a short at 99.9."""
    assert breakeven_price(LONG, D("100"), D("0.0005")) == D("100.1")
    assert breakeven_price(SHORT, D("100"), D("0.0005")) == D("99.9")


def test_trailing_stop_is_the_callback_behind_the_best_price() -> None:
    """0.8 % behind 110: 109.12 for a long, 110.88 above 110 for a short."""
    assert trailing_stop(LONG, D("110"), 0.008) == D("109.12")
    assert trailing_stop(SHORT, D("110"), 0.008) == D("110.88")


def test_tighten_only_moves_the_stop_toward_the_price() -> None:
    """Long keeps the higher stop, short the lower; with no stop yet the proposal stands."""
    assert tighten(LONG, D("99"), D("98")) == D("99")
    assert tighten(LONG, D("99"), D("99.5")) == D("99.5")
    assert tighten(SHORT, D("101"), D("102")) == D("101")
    assert tighten(SHORT, D("101"), D("100.5")) == D("100.5")
    assert tighten(LONG, None, D("97")) == D("97")


def test_stop_moved_enough_needs_the_minimum_step() -> None:
    """From 100 a 0.1 % step is 0.1: 100.1 and 99.9 are enough, 100.09 is not."""
    assert stop_moved_enough(D("100"), D("100.1"), 0.001)
    assert stop_moved_enough(D("100"), D("99.9"), 0.001)
    assert not stop_moved_enough(D("100"), D("100.09"), 0.001)
    assert stop_moved_enough(None, D("100"), 0.001)


# A ladder whose TP1 is close enough to the entry that the trailing stop there (100.5·0.992 = 99.696)
# is below break-even (100.1), so the break-even stop is what TP1 leaves.
LONG_PRICES = LevelPrices(tp1=D("100.5"), tp2=D("101.5"), tp3=D("102.5"), sl=D("98"))
SHORT_PRICES = LevelPrices(tp1=D("99.5"), tp2=D("98.5"), tp3=D("97.5"), sl=D("102"))
SPLIT = (0.3, 0.3, 0.4)


def walk(
    side: PositionSide, prices: LevelPrices, marks: list[str]
) -> tuple[ExitLadderState, list[list[Harvest | MoveStop | StopHit]]]:
    state = start_ladder(D("100"), prices)
    steps = []
    for mark in marks:
        state, actions = advance(side, D("100"), D(mark), state, prices, SPLIT)
        steps.append(actions)
    return state, steps


@pytest.mark.parametrize(
    ("side", "prices", "marks", "breakeven", "stop_after_tp2"),
    [
        (LONG, LONG_PRICES, ["100.2", "100.5", "101.5", "102.5"], D("100.1"), D("100.688")),  # 101.5·0.992
        (SHORT, SHORT_PRICES, ["99.8", "99.5", "98.5", "97.5"], D("99.9"), D("99.288")),  # 98.5·1.008
    ],
)
def test_walking_through_tp1_tp2_tp3_harvests_exactly_the_split(
    side: PositionSide, prices: LevelPrices, marks: list[str], breakeven: Decimal, stop_after_tp2: Decimal
) -> None:
    """TP1 closes 30 % and moves the stop to break-even; TP2 closes 3/7 of the rest; TP3 closes all:
    10 units leave 3, 3 and 4 closed."""
    state, steps = walk(side, prices, marks)

    assert steps[0] == []
    harvests = [step[0] for step in steps[1:]]
    assert all(isinstance(h, Harvest) for h in harvests)
    assert [h.stage for h in harvests if isinstance(h, Harvest)] == [1, 2, 3]
    open_qty, closed = 10.0, []
    for h in harvests:
        assert isinstance(h, Harvest)
        closed.append(open_qty * h.close_pct_of_current / 100)
        open_qty -= closed[-1]
    assert closed == pytest.approx([3.0, 3.0, 4.0], abs=1e-9)
    assert isinstance(harvests[0], Harvest) and harvests[0].new_stop == breakeven
    assert isinstance(harvests[1], Harvest) and harvests[1].new_stop == stop_after_tp2
    assert state.stage == 3


def test_a_repeated_mark_harvests_once() -> None:
    """The same mark at TP1 twice: one Harvest, then nothing (the stop is where it was)."""
    _, steps = walk(LONG, LONG_PRICES, ["100.5", "100.5", "100.6"])

    assert len(steps[0]) == 1 and isinstance(steps[0][0], Harvest)
    assert steps[1] == []
    assert not any(isinstance(a, Harvest) for a in steps[2])


def test_a_gap_through_two_targets_harvests_both_in_order() -> None:
    """A mark beyond TP2 from stage 0 gives TP1 then TP2, each once."""
    state, steps = walk(LONG, LONG_PRICES, ["101.6"])

    assert [a.stage for a in steps[0] if isinstance(a, Harvest)] == [1, 2]
    assert state.stage == 2


def test_the_initial_stop_is_hit_at_the_sl_price() -> None:
    """Before TP1 the stop is the level SL: 98.01 does nothing, 98 is a StopHit."""
    _, steps = walk(LONG, LONG_PRICES, ["98.01", "98"])

    assert steps == [[], [StopHit(stop=D("98"))]]


def test_trailing_triggers_at_exactly_the_callback_from_the_peak() -> None:
    """Past TP1 (TP2 far away), up in steps of 1 to 110 (each step moves the trail by more than
    0.1 %), then down: the stop is 110·0.992 = 109.12; 109.13 holds, 109.12 is hit."""
    prices = LevelPrices(tp1=D("100.5"), tp2=D("200"), tp3=D("300"), sl=D("98"))
    state = start_ladder(D("100"), prices)
    steps = []
    for mark in [*(str(p) for p in range(101, 111)), "109.5", "109.13"]:
        state, actions = advance(LONG, D("100"), D(mark), state, prices, SPLIT)
        steps.append(actions)

    assert steps[9] == [MoveStop(new_stop=D("109.12"))]
    assert state.stop == D("109.12")
    assert steps[-2] == [] and steps[-1] == []
    _, hit = advance(LONG, D("100"), D("109.12"), state, prices, SPLIT)
    assert hit == [StopHit(stop=D("109.12"))]


def test_trailing_moves_only_by_the_minimum_step() -> None:
    """Past TP2 at 101.6 (stop 101.6·0.992 = 100.7872), a new best of 101.65 would trail
    to 100.8368: 0.0496 < 0.1 % of 100.7872, so no MoveStop; 101.8 trails to 100.9856 (+0.198): MoveStop."""
    state, steps = walk(LONG, LONG_PRICES, ["101.6", "101.65", "101.8"])

    assert steps[1] == []
    assert steps[2] == [MoveStop(new_stop=D("100.9856"))]
    assert state.stop == D("100.9856")


def test_after_tp3_the_ladder_is_done() -> None:
    """Everything is closed at TP3: later marks, even through the stop, do nothing."""
    state, _ = walk(LONG, LONG_PRICES, ["102.5"])

    assert advance(LONG, D("100"), D("90"), state, LONG_PRICES, SPLIT) == (state, [])


@settings(max_examples=80, deadline=None)
@given(moves=st.lists(st.integers(min_value=-40, max_value=40), min_size=1, max_size=60), short=st.booleans())
def test_the_stop_only_ever_tightens(moves: list[int], short: bool) -> None:
    """On any path of marks the stop of a long never falls and the stop of a short never rises."""
    side, prices = (SHORT, SHORT_PRICES) if short else (LONG, LONG_PRICES)
    state = start_ladder(D("100"), prices)
    mark = D("100")
    for move in moves:
        mark = max(mark + D(move) / 100, D("1"))
        before = state.stop
        state, actions = advance(side, D("100"), mark, state, prices, SPLIT, LevelParams())
        if side is LONG:
            assert state.stop >= before
        else:
            assert state.stop <= before
        if any(isinstance(a, StopHit) for a in actions):
            break
