"""The kill score (DESIGN §7)."""

from __future__ import annotations

import pytest

from common.contracts.enums import PositionSide
from common.maths.kill_score import KillScoreParams, kill_score
from common.maths.marketstate import CHOP, MEAN_REVERSION, TREND, MarketStateValue

HOUR_MS = 3_600_000


def state(
    *,
    regime: str = TREND,
    p_trend: float = 0.8,
    p_mr: float = 0.1,
    p_chop: float = 0.1,
    trend_sign: int = 1,
    sigma: float = 0.01,
    ts_strength: float = 0.5,
) -> MarketStateValue:
    """A market state with only the fields the kill score reads set on purpose."""
    return MarketStateValue(
        sigma=sigma,
        mu=0.005 * trend_sign,
        ts_strength=ts_strength,
        p_trend=p_trend,
        p_mr=p_mr,
        p_chop=p_chop,
        regime=regime,
        atr_pct=0.01,
        trend_sign=trend_sign,
        efficiency_ratio=0.5,
        autocorr=0.0,
    )


def test_nothing_changed_scores_one_half_and_holds() -> None:
    """Same trend, same sigma and strength, age 0: z = 0, score 1/(1+e^0) = 0.5, no close."""
    result = kill_score(PositionSide.LONG, state(), sigma_at_entry=0.01, ts_strength_at_entry=0.5, age_ms=0)

    assert result.score == 0.5
    assert (result.k_regime_flip, result.k_sigma_spike, result.k_ts_drop, result.k_age_penalty) == (0, 0, 0, 0)
    assert result.close is False


def test_trend_lost_alone_closes() -> None:
    """p_trend 0.2 < 0.3 with p_chop + p_mr = 0.8 > 0.5: k_regime_flip 1, z = 1.0,
    score sigmoid(1) = 0.7310585786 ≥ 0.70, so close."""
    now = state(regime=CHOP, p_trend=0.2, p_mr=0.3, p_chop=0.5)

    result = kill_score(PositionSide.LONG, now, sigma_at_entry=0.01, ts_strength_at_entry=0.5, age_ms=0)

    assert result.k_regime_flip == 1.0
    assert result.score == pytest.approx(0.7310585786)
    assert result.close is True


def test_p_trend_at_the_threshold_is_not_lost() -> None:
    """p_trend exactly 0.3 is not below 0.3: no flip while the regime is still the trend."""
    now = state(regime=MEAN_REVERSION, p_trend=0.3, p_mr=0.4, p_chop=0.3)

    result = kill_score(PositionSide.LONG, now, sigma_at_entry=0.01, ts_strength_at_entry=0.5, age_ms=0)

    assert result.k_regime_flip == 0.0


@pytest.mark.parametrize(
    ("side", "trend_sign", "flip"),
    [
        (PositionSide.LONG, -1, 1.0),
        (PositionSide.SHORT, 1, 1.0),
        (PositionSide.LONG, 1, 0.0),
        (PositionSide.SHORT, -1, 0.0),
    ],
)
def test_a_trend_against_the_side_is_a_flip(side: PositionSide, trend_sign: int, flip: float) -> None:
    """A strong trend (p_trend 0.8) whose sign opposes the position flips it; with the side it does not."""
    now = state(trend_sign=trend_sign)

    result = kill_score(side, now, sigma_at_entry=0.01, ts_strength_at_entry=0.5, age_ms=0)

    assert result.k_regime_flip == flip


def test_an_opposing_sign_outside_a_trend_regime_is_no_flip() -> None:
    """A negative slope while the regime is MEAN_REVERSION (and p_trend 0.35) does not flip a long."""
    now = state(regime=MEAN_REVERSION, p_trend=0.35, p_mr=0.45, p_chop=0.2, trend_sign=-1)

    result = kill_score(PositionSide.LONG, now, sigma_at_entry=0.01, ts_strength_at_entry=0.5, age_ms=0)

    assert result.k_regime_flip == 0.0


def test_sigma_spike_is_the_relative_rise_capped_at_two() -> None:
    """sigma 0.015 against 0.01 at entry: k = 0.5, z = 0.25, score 0.5621765009. sigma 0.05: 4 → 2,
    z = 1.0, score 0.7310585786 (close). sigma lower than at entry: 0."""
    spike = kill_score(PositionSide.LONG, state(sigma=0.015), 0.01, 0.5, 0)
    huge = kill_score(PositionSide.LONG, state(sigma=0.05), 0.01, 0.5, 0)
    calmer = kill_score(PositionSide.LONG, state(sigma=0.005), 0.01, 0.5, 0)

    assert spike.k_sigma_spike == pytest.approx(0.5)
    assert spike.score == pytest.approx(0.5621765009)
    assert huge.k_sigma_spike == 2.0
    assert huge.score == pytest.approx(0.7310585786) and huge.close
    assert calmer.k_sigma_spike == 0.0


def test_sigma_spike_is_zero_without_a_sigma_at_entry() -> None:
    """No sigma recorded at entry (0): no spike can be measured."""
    result = kill_score(PositionSide.LONG, state(sigma=0.05), sigma_at_entry=0.0, ts_strength_at_entry=0.5, age_ms=0)

    assert result.k_sigma_spike == 0.0


def test_ts_drop_is_the_fall_in_strength_capped_at_one() -> None:
    """Strength 1.2 at entry, 0.4 now: k = 0.8, z = 0.4, score 0.5986876601. From 3.0 to 0.4: 1.
    Stronger than at entry: 0."""
    drop = kill_score(PositionSide.SHORT, state(trend_sign=-1, ts_strength=0.4), 0.01, 1.2, 0)
    big = kill_score(PositionSide.SHORT, state(trend_sign=-1, ts_strength=0.4), 0.01, 3.0, 0)
    rise = kill_score(PositionSide.SHORT, state(trend_sign=-1, ts_strength=0.9), 0.01, 0.4, 0)

    assert drop.k_ts_drop == pytest.approx(0.8)
    assert drop.score == pytest.approx(0.5986876601)
    assert big.k_ts_drop == 1.0
    assert rise.k_ts_drop == 0.0


def test_age_penalty_grows_over_a_day_then_stops() -> None:
    """6 h: k = 0.25, z = 0.075, score 0.5187412159. 48 h: k = 1, z = 0.3, score 0.5744425168."""
    six = kill_score(PositionSide.LONG, state(), 0.01, 0.5, age_ms=6 * HOUR_MS)
    two_days = kill_score(PositionSide.LONG, state(), 0.01, 0.5, age_ms=48 * HOUR_MS)

    assert six.k_age_penalty == 0.25
    assert six.score == pytest.approx(0.5187412159)
    assert two_days.k_age_penalty == 1.0
    assert two_days.score == pytest.approx(0.5744425168)


def test_components_add_up_in_z() -> None:
    """Flip 1, ts drop 0.241594 and 1 h of age: z = 1 + 0.5·0.241594 + 0.3·(1/24) = 1.133297,
    score 0.7564468354 (the old log's components)."""
    now = state(regime=CHOP, p_trend=0.1, p_mr=0.2, p_chop=0.7, ts_strength=0.258406)

    result = kill_score(PositionSide.LONG, now, 0.01, 0.5, age_ms=HOUR_MS)

    assert result.k_ts_drop == pytest.approx(0.241594)
    assert result.k_age_penalty == pytest.approx(1 / 24)
    assert result.score == pytest.approx(0.7564468354)
    assert result.close


def test_the_threshold_is_a_parameter() -> None:
    """With threshold 0.75 a lone regime flip (0.731) no longer closes; at exactly the score it does."""
    now = state(regime=CHOP, p_trend=0.2, p_mr=0.3, p_chop=0.5)

    strict = kill_score(PositionSide.LONG, now, 0.01, 0.5, 0, KillScoreParams(threshold=0.75))
    at_score = kill_score(PositionSide.LONG, now, 0.01, 0.5, 0, KillScoreParams(threshold=0.7310585786300049))

    assert strict.close is False
    assert at_score.close is True
