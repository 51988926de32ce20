"""Adaptive exit levels and the exit ladder (DESIGN §7, the old adaptive leverage engine).

``LSF = 1/(1+ln(lev+1))``; ``TP1 = base_tp·(0.6+LSF)``, ``TP2 = base_tp·(1.2+LSF/2)``,
``TP3 = base_tp·(1.8+LSF/4)``, ``SL = base_sl·(1+0.8·(1−LSF))``; every TP at least 0.3 %, the SL within
[0.1 %, 2 %] (price-move fractions). The position is harvested at TP1/TP2/TP3 in a split of the original
size that depends on leverage. After TP1 the stop goes to break-even (entry plus round-trip fees), then
a trailing stop follows the best price; a stop only ever tightens, and moves only by a useful step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from decimal import Decimal

from common.contracts.enums import PositionSide
from common.maths.sizing import to_decimal

Split = tuple[float, float, float]


@dataclass(frozen=True, slots=True)
class LevelParams:
    """The constants of the adaptive levels and the exit ladder, with the DESIGN §7 defaults."""

    tp_min: float = 0.003
    sl_min: float = 0.001
    sl_max: float = 0.02
    trailing_callback_frac: float = 0.008
    min_stop_step_frac: float = 0.001
    fee_rate: Decimal = Decimal("0.0005")
    #: harvest split of the original position for leverage up to split_low_max_leverage ...
    split_low: Split = (0.3, 0.3, 0.4)
    split_low_max_leverage: int = 10
    #: ... up to split_mid_max_leverage ...
    split_mid: Split = (0.4, 0.4, 0.2)
    split_mid_max_leverage: int = 30
    #: ... and above
    split_high: Split = (0.5, 0.3, 0.2)


@dataclass(frozen=True, slots=True)
class Levels:
    """Take-profit and stop-loss distances as price-move fractions, and the harvest split."""

    lsf: float
    tp1: float
    tp2: float
    tp3: float
    sl: float
    split: Split


@dataclass(frozen=True, slots=True)
class LevelPrices:
    """The levels as absolute prices for one position."""

    tp1: Decimal
    tp2: Decimal
    tp3: Decimal
    sl: Decimal

    def tp(self, stage: int) -> Decimal:
        """The take-profit price of stage 1, 2 or 3."""
        return (self.tp1, self.tp2, self.tp3)[stage - 1]


def harvest_split(leverage: int, params: LevelParams = LevelParams()) -> Split:
    """The share of the original position harvested at TP1, TP2 and TP3 for this leverage."""
    if leverage <= params.split_low_max_leverage:
        return params.split_low
    if leverage <= params.split_mid_max_leverage:
        return params.split_mid
    return params.split_high


def adaptive_levels(leverage: int, base_sl: float, base_tp: float, params: LevelParams = LevelParams()) -> Levels:
    """Leverage-aware TP1..TP3 and SL from the base stop and target (fractions), with the clamps."""
    if leverage < 1:
        raise ValueError(f"leverage must be at least 1, got {leverage}")
    lsf = 1.0 / (1.0 + math.log(leverage + 1))
    return Levels(
        lsf=lsf,
        tp1=max(base_tp * (0.6 + lsf), params.tp_min),
        tp2=max(base_tp * (1.2 + lsf / 2), params.tp_min),
        tp3=max(base_tp * (1.8 + lsf / 4), params.tp_min),
        sl=min(max(base_sl * (1.0 + 0.8 * (1.0 - lsf)), params.sl_min), params.sl_max),
        split=harvest_split(leverage, params),
    )


def level_prices(side: PositionSide, entry: Decimal, levels: Levels) -> LevelPrices:
    """The levels as prices: take-profits on the winning side of ``entry``, the stop on the losing side."""
    sign = side.sign

    def at(fraction: float) -> Decimal:
        return entry * (1 + sign * to_decimal(fraction))

    return LevelPrices(tp1=at(levels.tp1), tp2=at(levels.tp2), tp3=at(levels.tp3), sl=at(-levels.sl))


def close_pct_of_current(stage_index: int, split: Split) -> float:
    """The percentage of the position still open that stage 1, 2 or 3 closes, so that the stages
    together close the split of the original position (the last stage closes 100 %)."""
    if stage_index not in (1, 2, 3):
        raise ValueError(f"stage_index must be 1, 2 or 3, got {stage_index}")
    if stage_index == 3:
        return 100.0
    return 100.0 * split[stage_index - 1] / sum(split[stage_index - 1 :])


def breakeven_price(side: PositionSide, entry: Decimal, fee_rate: Decimal) -> Decimal:
    """The price at which closing the position pays back both fees: entry ± 2·fee_rate."""
    return entry * (1 + side.sign * 2 * fee_rate)


def trailing_stop(side: PositionSide, best_price: Decimal, callback_pct: float) -> Decimal:
    """The stop ``callback_pct`` (a fraction) behind the best price reached."""
    return best_price * (1 - side.sign * to_decimal(callback_pct))


def tighten(side: PositionSide, current_stop: Decimal | None, proposed: Decimal) -> Decimal:
    """The tighter of the two stops: a stop only ever moves toward the price (long: up, short: down)."""
    if current_stop is None:
        return proposed
    return max(current_stop, proposed) if side is PositionSide.LONG else min(current_stop, proposed)


def stop_moved_enough(current: Decimal | None, proposed: Decimal, min_step_pct: float) -> bool:
    """True when ``proposed`` differs from ``current`` by at least ``min_step_pct`` of it (or there is
    no current stop)."""
    if current is None:
        return True
    return abs(proposed - current) >= current * to_decimal(min_step_pct)


@dataclass(frozen=True, slots=True)
class ExitLadderState:
    """A position's progress on the ladder: stages harvested (0..3), best price seen, stop in force."""

    stage: int
    best_price: Decimal
    stop: Decimal


@dataclass(frozen=True, slots=True)
class Harvest:
    """Close ``close_pct_of_current`` % of what is open at TP ``stage``; the stop is now ``new_stop``."""

    stage: int
    trigger_price: Decimal
    close_pct_of_current: float
    new_stop: Decimal


@dataclass(frozen=True, slots=True)
class MoveStop:
    """Move the stop to ``new_stop``."""

    new_stop: Decimal


@dataclass(frozen=True, slots=True)
class StopHit:
    """The mark crossed the stop in force: close what is left."""

    stop: Decimal


LadderAction = Harvest | MoveStop | StopHit


def start_ladder(entry: Decimal, prices: LevelPrices) -> ExitLadderState:
    """The ladder of a fresh position: no stage reached, best price the entry, stop the level SL."""
    return ExitLadderState(stage=0, best_price=entry, stop=prices.sl)


def _crossed(side: PositionSide, mark: Decimal, level: Decimal) -> bool:
    """True when ``mark`` is at or beyond ``level`` in the position's favour."""
    return mark >= level if side is PositionSide.LONG else mark <= level


def stop_crossed(side: PositionSide, mark: Decimal, stop: Decimal) -> bool:
    """True when ``mark`` is at or beyond ``stop`` against the position."""
    return mark <= stop if side is PositionSide.LONG else mark >= stop


def best_price(side: PositionSide, best: Decimal, mark: Decimal) -> Decimal:
    """The better of the two for the position: the higher for a long, the lower for a short."""
    return max(best, mark) if side is PositionSide.LONG else min(best, mark)


def advance(
    side: PositionSide,
    entry: Decimal,
    mark: Decimal,
    state: ExitLadderState,
    prices: LevelPrices,
    split: Split,
    params: LevelParams = LevelParams(),
) -> tuple[ExitLadderState, list[LadderAction]]:
    """One mark price through the ladder: the new state and what to do.

    The stop in force is checked first (``StopHit``, nothing else). Then every take-profit the mark has
    reached and not yet harvested gives a ``Harvest``, in order, each at most once; TP1 moves the stop
    to break-even. From TP1 on, the trailing stop follows the best price; its moves come out on the
    ``Harvest`` of the same mark or, between harvests, as ``MoveStop`` when they tighten the stop by at
    least ``min_stop_step_frac``. After TP3 the ladder has no stage left and does nothing more (this is
    harvest_proposal's walk; exitbrain manages a position still open after TP3 on its own).
    """
    if state.stage >= 3:
        return state, []
    if stop_crossed(side, mark, state.stop):
        return state, [StopHit(stop=state.stop)]

    better = best_price(side, state.best_price, mark)
    stage, stop = state.stage, state.stop
    actions: list[LadderAction] = []
    while stage < 3 and _crossed(side, mark, prices.tp(stage + 1)):
        stage += 1
        if stage == 1:
            stop = tighten(side, stop, breakeven_price(side, entry, params.fee_rate))
        stop = tighten(side, stop, trailing_stop(side, better, params.trailing_callback_frac))
        actions.append(
            Harvest(
                stage=stage,
                trigger_price=prices.tp(stage),
                close_pct_of_current=close_pct_of_current(stage, split),
                new_stop=stop,
            )
        )
    if not actions and stage >= 1:
        trailed = tighten(side, stop, trailing_stop(side, better, params.trailing_callback_frac))
        if trailed != stop and stop_moved_enough(stop, trailed, params.min_stop_step_frac):
            stop = trailed
            actions.append(MoveStop(new_stop=stop))
    return replace(state, stage=stage, best_price=better, stop=stop), actions
