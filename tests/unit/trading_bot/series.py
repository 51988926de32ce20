"""Generated kline series with known direction, and their market state (for the signal tests)."""

from __future__ import annotations

import math
import random

from common.contracts import MarketState
from common.maths.marketstate import MarketStateEstimator
from tests.helpers import TRACE


def series(drift: float, vol: float, n: int = 120, seed: int = 7, start: float = 100.0
           ) -> tuple[list[float], list[float], list[float]]:
    """(highs, lows, closes) of a log random walk with ``drift`` and ``vol`` per kline."""
    rng = random.Random(seed)
    closes, highs, lows = [], [], []
    x = math.log(start)
    for _ in range(n):
        prev = math.exp(x)
        x += drift + vol * rng.gauss(0.0, 1.0)
        close = math.exp(x)
        wick = abs(rng.gauss(0.0, vol)) * close
        closes.append(close)
        highs.append(max(prev, close) + wick)
        lows.append(min(prev, close) - wick)
    return highs, lows, closes


def state_of(highs: list[float], lows: list[float], closes: list[float], symbol: str = "BTCUSDT") -> MarketState:
    """The market state the estimator gives after the series (as marketdata would publish it)."""
    estimator = MarketStateEstimator()
    value = None
    prev = closes[0]
    for h, lo, c in zip(highs, lows, closes, strict=True):
        value = estimator.update(prev, h, lo, c)
        prev = c
    assert value is not None, "series too short for a market state"
    return MarketState(source="marketdata", trace_id=TRACE, symbol=symbol, sigma=value.sigma, mu=value.mu,
                       ts_strength=value.ts_strength, p_trend=value.p_trend, p_mr=value.p_mr, p_chop=value.p_chop,
                       regime=value.regime, atr_pct=value.atr_pct)
