"""Incremental indicators and their batch forms."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.maths.indicators import Atr, Ema, Rsi, atr_series, ema_series, rsi_series, true_range


def test_ema_seeds_with_the_mean_then_smooths() -> None:
    """EMA(3): alpha 0.5, seeded with mean(1, 2, 3) = 2, then 2 + 0.5·(4 − 2) = 3, 3 + 0.5·(5 − 3) = 4."""
    ema = Ema(3)

    values = [ema.update(x) for x in [1.0, 2.0, 3.0, 4.0, 5.0]]

    assert values == [None, None, 2.0, 3.0, 4.0]


def test_rsi_uses_wilder_smoothing() -> None:
    """RSI(2) over 1, 2, 1, 2, 3: changes +1, −1, +1, +1.

    Seed: gain (1+0)/2 = 0.5, loss (0+1)/2 = 0.5 -> 50. Then gain (0.5+1)/2 = 0.75, loss 0.25 -> RS 3 -> 75;
    gain 0.875, loss 0.125 -> RS 7 -> 87.5.
    """
    rsi = Rsi(2)

    values = [rsi.update(x) for x in [1.0, 2.0, 1.0, 2.0, 3.0]]

    assert values == [None, None, 50.0, 75.0, 87.5]


def test_rsi_is_100_without_losses_and_50_without_moves() -> None:
    """Only gains: 100. No movement at all: 50."""
    assert rsi_series([1.0, 2.0, 3.0, 4.0], 2)[-1] == 100.0
    assert rsi_series([5.0, 5.0, 5.0, 5.0], 2)[-1] == 50.0


def test_true_range_reaches_back_to_the_previous_close() -> None:
    """A gap: high 11, low 10.5 after a close at 9 gives max(0.5, |11 − 9|, |10.5 − 9|) = 2."""
    assert true_range(11.0, 10.5, 9.0) == 2.0
    assert true_range(11.0, 10.5, None) == 0.5


def test_atr_uses_true_range_and_wilder_smoothing() -> None:
    """ATR(2) over five bars with true ranges 2, 2, 3, 4, 2 (the last a gap up from 9).

    Seed (2+2)/2 = 2, then (2+3)/2 = 2.5, (2.5+4)/2 = 3.25, (3.25+2)/2 = 2.625.
    """
    bars = [(10.0, 8.0, 9.0), (11.0, 9.0, 10.0), (13.0, 10.0, 12.0), (12.0, 8.0, 9.0), (11.0, 10.5, 10.8)]
    atr = Atr(2)

    values = [atr.update(*bar) for bar in bars]

    assert values == [None, 2.0, 2.5, 3.25, 2.625]


def test_a_period_below_one_is_rejected() -> None:
    """Period 0 makes no average."""
    with pytest.raises(ValueError):
        Ema(0)
    with pytest.raises(ValueError):
        rsi_series([1.0, 2.0], 0)


prices = st.lists(st.floats(min_value=1.0, max_value=1000.0), min_size=0, max_size=60)


@settings(max_examples=60, deadline=None)
@given(values=prices, period=st.integers(min_value=1, max_value=10))
def test_incremental_ema_and_rsi_equal_their_batch_forms(values: list[float], period: int) -> None:
    """Feeding values one by one gives exactly the batch series, warm-up Nones included."""
    ema, rsi = Ema(period), Rsi(period)

    assert [ema.update(v) for v in values] == ema_series(values, period)
    assert [rsi.update(v) for v in values] == rsi_series(values, period)


@settings(max_examples=60, deadline=None)
@given(
    bars=st.lists(
        st.tuples(
            st.floats(min_value=1.0, max_value=1000.0),
            st.floats(min_value=0.0, max_value=0.2),
            st.floats(min_value=0.0, max_value=1.0),
        ),
        max_size=60,
    ),
    period=st.integers(min_value=1, max_value=10),
)
def test_incremental_atr_equals_its_batch_form(bars: list[tuple[float, float, float]], period: int) -> None:
    """Feeding bars one by one gives exactly the batch ATR series."""
    highs = [mid * (1 + spread) for mid, spread, _ in bars]
    lows = [mid * (1 - spread) for mid, spread, _ in bars]
    closes = [lo + (hi - lo) * where for hi, lo, (_, _, where) in zip(highs, lows, bars, strict=True)]
    atr = Atr(period)

    incremental = [atr.update(h, lo, c) for h, lo, c in zip(highs, lows, closes, strict=True)]

    assert incremental == atr_series(highs, lows, closes, period)
