"""The bot's window EMAs computed for a whole series at once equal, to the last bit, what trading_bot
computes window by window."""

from __future__ import annotations

import random
import statistics

from hypothesis import given, settings
from hypothesis import strategies as st

from backtest.series import window_ema_last
from common.maths.indicators import ema_last, ema_series
from common.maths.marketstate import _median

prices = st.lists(st.floats(min_value=0.01, max_value=1e6, allow_nan=False, allow_infinity=False), min_size=0,
                  max_size=120)


@settings(max_examples=200, deadline=None)
@given(prices, st.integers(min_value=1, max_value=30), st.integers(min_value=1, max_value=60))
def test_every_window_ema_is_the_bots_bit_for_bit(values: list[float], period: int, window: int) -> None:
    """For every kline n, the EMA of the window ending at n is exactly ``ema_last`` of that window."""
    expected = [ema_last(values[max(0, n - window + 1): n + 1], period) for n in range(len(values))]
    assert window_ema_last(values, period, window) == expected


def test_a_long_series_with_the_bots_own_periods() -> None:
    """ema_fast 9 and ema_slow 21 over 200-kline windows of a 3,000-kline walk: all equal."""
    rng = random.Random(3)
    price, values = 1.19, []
    for _ in range(3000):
        price *= 1 + rng.gauss(0, 0.003)
        values.append(round(price, 4))
    for period in (9, 21):
        got = window_ema_last(values, period, 200)
        assert got == [ema_last(values[max(0, n - 199): n + 1], period) for n in range(len(values))]


@given(prices.filter(bool), st.integers(min_value=1, max_value=30))
def test_ema_last_is_the_last_of_ema_series(values: list[float], period: int) -> None:
    """The fallback signal's EMA (``ema_last``) is the batch series' last value, exactly."""
    assert ema_last(values, period) == ema_series(values, period)[-1]


@given(st.lists(st.floats(min_value=-1, max_value=1, allow_nan=False), min_size=1, max_size=40))
def test_the_market_states_median_is_statistics_median(values: list[float]) -> None:
    """The MAD clip's median equals ``statistics.median`` (the market state does not move)."""
    assert _median(values) == statistics.median(values)

