"""A position's exit ladder from its own levels. harvest_proposal walks its take-profits (it owns the ladder);
exitbrain takes from it only the leverage-aware stop and the harvest split of a proposed stage.

The base stop and target are the position's stop-loss and take-profit as price-move fractions of its
entry; the adaptive TP1..TP3 and SL follow from them and the leverage (``common.maths.levels``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common.config import Settings
from common.maths.levels import LevelParams, LevelPrices, Split, adaptive_levels, level_prices
from common.positions import PositionRecord


@dataclass(frozen=True)
class LadderParams:
    """The ladder's constants (``[exit]`` settings) and the fallbacks for a position without levels."""

    levels: LevelParams = field(default_factory=LevelParams)
    #: base stop distance for a position that has no stop-loss (the trading mathematician's minimum)
    default_sl: float = 0.03
    #: base target = base stop x this, for a position that has no take-profit
    reward_risk: float = 1.33

    @classmethod
    def from_settings(cls, settings: Settings) -> LadderParams:
        return cls(levels=cls.levels_from(settings), default_sl=settings.signal.min_sl_frac,
                   reward_risk=settings.signal.reward_risk)

    @staticmethod
    def levels_from(settings: Settings) -> LevelParams:
        e = settings.exit
        return LevelParams(tp_min=e.tp_min, sl_min=e.sl_min, sl_max=e.sl_max,
                           trailing_callback_frac=e.trailing_callback_frac,
                           min_stop_step_frac=e.min_stop_step_frac, fee_rate=e.fee_rate,
                           split_low=e.split_low, split_low_max_leverage=e.split_low_max_leverage,
                           split_mid=e.split_mid, split_mid_max_leverage=e.split_mid_max_leverage,
                           split_high=e.split_high)


def base_fractions(position: PositionRecord, params: LadderParams) -> tuple[float, float]:
    """The position's stop and target as price-move fractions of its entry (a missing or misplaced one —
    a stop already moved past entry — falls back to the trading mathematician's defaults)."""
    entry, sign = position.entry_price, position.side.sign
    base_sl = params.default_sl
    if position.stop_loss is not None and (entry - position.stop_loss) * sign > 0:
        base_sl = float(abs(entry - position.stop_loss) / entry)
    base_tp = base_sl * params.reward_risk
    if position.take_profit is not None and (position.take_profit - entry) * sign > 0:
        base_tp = float(abs(position.take_profit - entry) / entry)
    return base_sl, base_tp


def levels_of(position: PositionRecord, base_sl: float, base_tp: float,
              params: LadderParams) -> tuple[LevelPrices, Split]:
    """The adaptive TP1..TP3 and SL prices of the position (leverage-aware) and its harvest split."""
    levels = adaptive_levels(position.leverage, base_sl, base_tp, params.levels)
    return level_prices(position.side, position.entry_price, levels), levels.split
