"""Incremental indicators (O(1) per update) and their batch forms: EMA, Wilder RSI, Wilder ATR.

Each incremental indicator returns ``None`` until it is warm; the batch functions return one value
(or ``None``) per input, equal to feeding the incremental one value by value.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence


def _check_period(period: int) -> None:
    if period < 1:
        raise ValueError(f"period must be at least 1, got {period}")


class Ema:
    """Exponential moving average, ``alpha = 2/(period+1)``, seeded with the mean of the first ``period``
    values (warm after ``period`` values)."""

    def __init__(self, period: int) -> None:
        _check_period(period)
        self.period = period
        self.alpha = 2.0 / (period + 1)
        self._count = 0
        self._seed_sum = 0.0
        self.value: float | None = None

    def update(self, x: float) -> float | None:
        """Add one value; return the EMA, or ``None`` before ``period`` values."""
        self._count += 1
        if self.value is not None:
            self.value += self.alpha * (x - self.value)
        else:
            self._seed_sum += x
            if self._count == self.period:
                self.value = self._seed_sum / self.period
        return self.value


class _WilderAverage:
    """Wilder's smoothing: the simple mean of the first ``period`` inputs, then
    ``avg = (avg·(period−1) + x)/period``."""

    def __init__(self, period: int) -> None:
        _check_period(period)
        self.period = period
        self._count = 0
        self._seed_sum = 0.0
        self.value: float | None = None

    def update(self, x: float) -> float | None:
        self._count += 1
        if self.value is not None:
            self.value = (self.value * (self.period - 1) + x) / self.period
        else:
            self._seed_sum += x
            if self._count == self.period:
                self.value = self._seed_sum / self.period
        return self.value


class Rsi:
    """Wilder's RSI over closes (warm after ``period + 1`` closes). 100 when there were no losses,
    50 when the price did not move at all."""

    def __init__(self, period: int = 14) -> None:
        _check_period(period)
        self.period = period
        self._gain = _WilderAverage(period)
        self._loss = _WilderAverage(period)
        self._prev: float | None = None
        self.value: float | None = None

    def update(self, close: float) -> float | None:
        """Add one close; return the RSI (0..100) or ``None`` while warming up."""
        prev, self._prev = self._prev, close
        if prev is None:
            return None
        change = close - prev
        gain = self._gain.update(max(change, 0.0))
        loss = self._loss.update(max(-change, 0.0))
        if gain is None or loss is None:
            return None
        if loss == 0.0:
            self.value = 50.0 if gain == 0.0 else 100.0
        else:
            self.value = 100.0 - 100.0 / (1.0 + gain / loss)
        return self.value


class Atr:
    """Wilder's average true range (warm after ``period`` bars). The true range of a bar is
    ``max(high − low, |high − prev_close|, |low − prev_close|)``; the first bar has no previous close
    and uses ``high − low``."""

    def __init__(self, period: int = 14) -> None:
        _check_period(period)
        self.period = period
        self._avg = _WilderAverage(period)
        self._prev_close: float | None = None
        self.value: float | None = None

    def update(self, high: float, low: float, close: float) -> float | None:
        """Add one bar; return the ATR or ``None`` while warming up."""
        self.value = self._avg.update(true_range(high, low, self._prev_close))
        self._prev_close = close
        return self.value


def true_range(high: float, low: float, prev_close: float | None) -> float:
    """One bar's true range; ``high − low`` when there is no previous close."""
    if prev_close is None:
        return high - low
    return max(high - low, abs(high - prev_close), abs(low - prev_close))


def ema_series(values: Sequence[float], period: int) -> list[float | None]:
    """The EMA after each value (``None`` before the first ``period`` values)."""
    _check_period(period)
    alpha = 2.0 / (period + 1)
    out: list[float | None] = [None] * len(values)
    if len(values) < period:
        return out
    ema = sum(values[:period]) / period
    out[period - 1] = ema
    for i in range(period, len(values)):
        ema += alpha * (values[i] - ema)
        out[i] = ema
    return out


def ema_last(values: Sequence[float], period: int) -> float | None:
    """The EMA after the last value, ``ema_series(values, period)[-1]`` to the last bit (the same
    operations in the same order, without the list), ``None`` before ``period`` values."""
    _check_period(period)
    if len(values) < period:
        return None
    alpha = 2.0 / (period + 1)
    ema = sum(values[:period]) / period
    for x in itertools.islice(values, period, None):
        ema += alpha * (x - ema)
    return ema


def _wilder_series(inputs: Sequence[float], period: int) -> list[float | None]:
    out: list[float | None] = [None] * len(inputs)
    if len(inputs) < period:
        return out
    avg = sum(inputs[:period]) / period
    out[period - 1] = avg
    for i in range(period, len(inputs)):
        avg = (avg * (period - 1) + inputs[i]) / period
        out[i] = avg
    return out


def rsi_series(closes: Sequence[float], period: int = 14) -> list[float | None]:
    """Wilder's RSI after each close (``None`` for the first ``period`` closes)."""
    _check_period(period)
    changes = [b - a for a, b in itertools.pairwise(closes)]
    gains = _wilder_series([max(c, 0.0) for c in changes], period)
    losses = _wilder_series([max(-c, 0.0) for c in changes], period)
    out: list[float | None] = [None] * len(closes)
    for i, (gain, loss) in enumerate(zip(gains, losses, strict=True), start=1):
        if gain is None or loss is None:
            continue
        out[i] = (50.0 if gain == 0.0 else 100.0) if loss == 0.0 else 100.0 - 100.0 / (1.0 + gain / loss)
    return out


def atr_series(
    highs: Sequence[float], lows: Sequence[float], closes: Sequence[float], period: int = 14
) -> list[float | None]:
    """Wilder's ATR after each bar (``None`` for the first ``period − 1`` bars)."""
    _check_period(period)
    if not len(highs) == len(lows) == len(closes):
        raise ValueError("highs, lows and closes must have the same length")
    ranges = [true_range(highs[i], lows[i], closes[i - 1] if i > 0 else None) for i in range(len(closes))]
    return _wilder_series(ranges, period)
