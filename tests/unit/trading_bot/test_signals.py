"""The fallback trend-following signal on generated up, down and flat series."""

from __future__ import annotations

import math

import pytest

from common.contracts import MarketState, Side
from services.trading_bot.signals import FALLBACK_MODEL, atr_pct_of, fallback_signal
from tests.helpers import TRACE
from tests.unit.trading_bot.series import series, state_of


def state(mu: float, p_trend: float, regime: str = "TREND") -> MarketState:
    rest = (1.0 - p_trend) / 2
    return MarketState(source="marketdata", trace_id=TRACE, symbol="BTCUSDT", sigma=0.002, mu=mu,
                       ts_strength=abs(mu) / 0.002, p_trend=p_trend, p_mr=rest, p_chop=rest, regime=regime,
                       atr_pct=0.005)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_up_series_buys_with_high_confidence(seed: int) -> None:
    """A steadily rising market in a TREND state gives BUY with confidence above 0.9."""
    highs, lows, closes = series(0.002, 0.002, seed=seed)
    st = state_of(highs, lows, closes)
    assert st.regime == "TREND" and st.mu > 0
    signal = fallback_signal(closes, st.atr_pct, st)
    assert signal is not None
    assert signal.side is Side.BUY
    assert signal.model == FALLBACK_MODEL
    assert 0.9 < signal.confidence < 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_down_series_sells_with_high_confidence(seed: int) -> None:
    """The mirror image: a falling market in a TREND state gives SELL with confidence above 0.9."""
    highs, lows, closes = series(-0.002, 0.002, seed=seed)
    st = state_of(highs, lows, closes)
    signal = fallback_signal(closes, st.atr_pct, st)
    assert signal is not None
    assert signal.side is Side.SELL
    assert 0.9 < signal.confidence < 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_driftless_market_stays_below_min_confidence(seed: int) -> None:
    """A random walk without drift (a CHOP state) leaves the confidence under the 0.55 threshold."""
    highs, lows, closes = series(0.0, 0.002, seed=seed)
    st = state_of(highs, lows, closes)
    assert st.regime != "TREND"
    signal = fallback_signal(closes, st.atr_pct, st)
    assert signal is not None
    assert 0.5 <= signal.confidence < 0.55


def test_flat_series_gives_no_signal() -> None:
    """A price that never moves has no EMA spread, hence no side at all."""
    closes = [100.0] * 60
    assert fallback_signal(closes, 0.0, None) is None


def test_too_few_klines_give_no_signal() -> None:
    """Before ema_slow closes the EMAs are not warm: no signal."""
    _, _, closes = series(0.002, 0.002, n=20)
    assert fallback_signal(closes, 0.005, None) is None


def test_no_long_against_a_strong_down_trend() -> None:
    """An EMA cross upward while the market state says strong down trend is vetoed (confidence 0)."""
    _, _, closes = series(0.002, 0.002)
    signal = fallback_signal(closes, 0.005, state(mu=-0.001, p_trend=0.8))
    assert signal is not None
    assert signal.side is Side.BUY
    assert signal.confidence == 0.0
    assert signal.note == "against_trend"


def test_weak_opposing_trend_leaves_confidence_at_half() -> None:
    """A state trending the other way, but weakly (p_trend below 0.5), gives weight 0: confidence 0.5."""
    _, _, closes = series(0.002, 0.002)
    signal = fallback_signal(closes, 0.005, state(mu=-0.001, p_trend=0.3, regime="CHOP"))
    assert signal is not None and signal.confidence == 0.5


def test_confidence_formula_without_market_state() -> None:
    """Without a market state the weight is 0.5: confidence = 0.5 + 0.25·tanh(|spread|/atr_pct)."""
    from common.maths.indicators import ema_series

    highs, lows, closes = series(0.001, 0.002)
    atr = atr_pct_of(highs, lows, closes)
    assert atr is not None
    fast, slow = ema_series(closes, 9)[-1], ema_series(closes, 21)[-1]
    assert fast is not None and slow is not None
    expected = 0.5 + 0.25 * math.tanh(abs(fast - slow) / closes[-1] / atr)
    signal = fallback_signal(closes, atr, None)
    assert signal is not None
    assert signal.confidence == pytest.approx(expected, rel=1e-12)


def test_confidence_grows_with_trend_probability() -> None:
    """The same cross is surer in a state with a higher p_trend in its direction."""
    _, _, closes = series(0.001, 0.002)
    weak = fallback_signal(closes, 0.005, state(mu=0.001, p_trend=0.4))
    strong = fallback_signal(closes, 0.005, state(mu=0.001, p_trend=0.9))
    assert weak is not None and strong is not None
    assert 0.5 < weak.confidence < strong.confidence


def test_atr_pct_of_matches_atr_over_close() -> None:
    """atr_pct is Wilder's ATR(14) of the window divided by the last close."""
    highs = [11.0] * 20
    lows = [9.0] * 20
    closes = [10.0] * 20
    assert atr_pct_of(highs, lows, closes) == pytest.approx(0.2)
    assert atr_pct_of(highs[:10], lows[:10], closes[:10]) is None
