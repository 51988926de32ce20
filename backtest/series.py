"""The bot's window EMAs for a whole series at once, bit for bit.

trading_bot computes, on every closed kline, the EMAs of its window — the last ``window`` closes —
from scratch (:func:`common.maths.indicators.ema_last`: seeded with the mean of the window's first
``period`` closes, then ``ema += alpha·(x − ema)`` over the rest). A backtest knows every window in
advance, so it runs that same recursion for all of them side by side: numpy's elementwise subtraction,
multiplication and addition are the IEEE operations Python's floats perform, in the same order, so each
value equals the bot's to the last bit (the tests compare them). The seeds are summed left to right as
Python's ``sum`` does before 3.12; from 3.12 on (compensated float sums) ``sum`` itself seeds them.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np

from common.maths.indicators import ema_series

_SEQUENTIAL_SUM = sys.version_info < (3, 12)


def window_ema_last(values: Sequence[float], period: int, window: int) -> list[float | None]:
    """For each ``n``: ``ema_last(values[max(0, n − window + 1) : n + 1], period)``."""
    if period < 1 or window < 1:
        raise ValueError("period and window must be at least 1")
    n = len(values)
    plain = [float(v) for v in values]
    # the first windows grow from the first close: one recursion from the start
    out: list[float | None] = ema_series(plain[: min(n, window)], period)
    if n <= window or window < period:
        return out + [None] * (n - len(out))
    first, last = 1, n - window  # starts of the full windows that end after index window - 1
    x = np.asarray(plain, dtype=np.float64)
    count = last - first + 1
    if _SEQUENTIAL_SUM:
        total = np.zeros(count)
        for j in range(period):
            total = total + x[first + j : first + j + count]
    else:
        total = np.array([sum(plain[s : s + period]) for s in range(first, last + 1)])
    ema = total / period
    alpha = 2.0 / (period + 1)
    for j in range(period, window):
        ema = ema + alpha * (x[first + j : first + j + count] - ema)
    out.extend(ema.tolist())
    return out
