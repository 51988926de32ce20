"""The kill score of an open position (DESIGN §7, exitbrain).

``z = 1.0·k_regime_flip + 0.5·k_sigma_spike + 0.5·k_ts_drop + 0.3·k_age_penalty`` and
``kill_score = 1/(1+e^−z)``; the position is closed in full when ``kill_score ≥ 0.70``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from common.contracts.enums import PositionSide
from common.maths.marketstate import TREND, MarketStateValue

DAY_MS = 24 * 60 * 60 * 1000


@dataclass(frozen=True, slots=True)
class KillScoreParams:
    """Weights, threshold and horizons of the kill score, with the DESIGN §7 defaults."""

    w_regime_flip: float = 1.0
    w_sigma_spike: float = 0.5
    w_ts_drop: float = 0.5
    w_age_penalty: float = 0.3
    threshold: float = 0.70
    #: the age at which the age penalty reaches 1
    horizon_ms: int = DAY_MS
    #: trend lost: p_trend below this ...
    trend_lost_p_trend: float = 0.3
    #: ... and p_chop + p_mr above this
    trend_lost_p_other: float = 0.5
    sigma_spike_cap: float = 2.0
    ts_drop_cap: float = 1.0


@dataclass(frozen=True, slots=True)
class KillScore:
    """The kill score, its components (as published on the exit plan) and the verdict."""

    score: float
    k_regime_flip: float
    k_sigma_spike: float
    k_ts_drop: float
    k_age_penalty: float
    close: bool


def _clip(x: float, low: float, high: float) -> float:
    return min(max(x, low), high)


def regime_flipped(side: PositionSide, now: MarketStateValue, params: KillScoreParams = KillScoreParams()) -> bool:
    """True when the regime turned against the position: the trend is lost, or the market trends the
    other way."""
    trend_lost = now.p_trend < params.trend_lost_p_trend and now.p_chop + now.p_mr > params.trend_lost_p_other
    against = now.regime == TREND and now.trend_sign == -side.sign
    return trend_lost or against


def kill_score(
    side: PositionSide,
    now: MarketStateValue,
    sigma_at_entry: float,
    ts_strength_at_entry: float,
    age_ms: int,
    params: KillScoreParams = KillScoreParams(),
) -> KillScore:
    """Score a position of ``side`` opened ``age_ms`` ago, given the market state now and at entry."""
    k_regime_flip = 1.0 if regime_flipped(side, now, params) else 0.0
    k_sigma_spike = (
        _clip(now.sigma / sigma_at_entry - 1.0, 0.0, params.sigma_spike_cap) if sigma_at_entry > 0.0 else 0.0
    )
    k_ts_drop = _clip(ts_strength_at_entry - now.ts_strength, 0.0, params.ts_drop_cap)
    k_age_penalty = _clip(age_ms / params.horizon_ms, 0.0, 1.0)
    z = (
        params.w_regime_flip * k_regime_flip
        + params.w_sigma_spike * k_sigma_spike
        + params.w_ts_drop * k_ts_drop
        + params.w_age_penalty * k_age_penalty
    )
    score = 1.0 / (1.0 + math.exp(-z))
    return KillScore(
        score=score,
        k_regime_flip=k_regime_flip,
        k_sigma_spike=k_sigma_spike,
        k_ts_drop=k_ts_drop,
        k_age_penalty=k_age_penalty,
        close=score >= params.threshold,
    )
